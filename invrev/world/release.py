"""Measuring the world model prompted in words, and shipping it under ``data/world`` with a manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from invrev import runs
from invrev.evaluate import components_for_inference, evaluate
from invrev.world import scene


def report(model: str, prompts: int = 20, samples: int = 4, seed: int = 0, progress: bool = True) -> list[dict]:
    """Per benchmark relation: entity and relation accuracy and fusion rate, the relation in words."""
    components = components_for_inference(model)
    rows = []
    for relation in sorted(scene.RELATIONS):
        summary = evaluate(model, relation, "sd", None, seed=seed, prompts=prompts, samples=samples,
                           components=components)["summary"]
        rows.append({"relation": relation, "named": scene.RELATIONS[relation].named, "words": scene.RELATIONS[relation].words,
                     **{k: summary[k] for k in ("n", "entity_accuracy", "relation_accuracy", "fusion_rate")}})
        if progress:
            print(f"  {relation:13s} entity {summary['entity_accuracy']:.2f}  relation {summary['relation_accuracy']:.2f}  "
                  f"fusion {summary['fusion_rate']:.2f}  (n={summary['n']})", flush=True)
    return rows


def format_report(rows: list[dict]) -> str:
    lines = ["| relation | named in pretraining | prompt words | entity acc. | relation acc. | fusion | n |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['relation']} | {'yes' if r['named'] else 'no'} | {r['words']} | {r['entity_accuracy']:.2f} | "
                     f"{r['relation_accuracy']:.2f} | {r['fusion_rate']:.2f} | {r['n']} |")
    return "\n".join(lines)


def ship(source: str | Path, dest: str | Path = "data/world/model", prompts: int = 20, samples: int = 4) -> Path:
    """Copy a pretrained model to ``dest``, measure it, and write ``manifest.json`` beside it."""
    source, dest = Path(source), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    rows = report(str(dest), prompts, samples)
    files = {str(p.relative_to(dest.parent)): runs.sha256_file(p) for p in sorted(dest.rglob("*")) if p.is_file()}
    bench = dest.parent / "benchmark"
    files.update({str(p.relative_to(dest.parent)): runs.sha256_file(p) for p in sorted(bench.rglob("*")) if p.is_file()})
    info = json.loads((dest / "invrev.json").read_text())
    runs.write_manifest(dest.parent, files=files, model=info, words_report=rows,
                        size_bytes=sum((dest / f).stat().st_size for f in [p.relative_to(dest) for p in dest.rglob("*") if p.is_file()]))
    (dest.parent / "REPORT.md").write_text("# The shipped world model, prompted in words\n\n" + format_report(rows) + "\n")
    return dest
