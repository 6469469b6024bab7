"""Measuring the world model prompted in words, and shipping it under ``data/world`` with a manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from invrev import generate, measure, runs
from invrev.data import write_exemplars
from invrev.evaluate import components_for_inference, evaluate
from invrev.models import SD15_SAMPLING, resolve_model
from invrev.paths import WORLD_MODEL
from invrev.world import benchmark, scene

KEYS = ("n", "entity_accuracy", "relation_accuracy", "fusion_rate", "reversed_rate")


def report(model: str, prompts: int = 20, samples: int = 4, seed: int = 0, progress: bool = True,
           handles: bool = True, swaps: bool = True) -> list[dict]:
    """Per benchmark relation, the relation in words at the model's sampling settings: entity and
    relation accuracy and fusion rate on the held-out (same-shape) pairs and on seen pairs of
    different shapes; for an unnamed relation also prompted by its pretraining handle (the upper
    bound a learned token can hope for); with ``swaps``, the words (or handle) in the world's role
    swap, "B ob <words> A", drawn from the same noise as the forward prompt and scored as "A <words> B"."""
    components = components_for_inference(model)
    rows = []
    for relation in sorted(scene.RELATIONS):
        info = scene.RELATIONS[relation]
        summary = evaluate(model, relation, "sd", None, seed=seed, prompts=prompts, samples=samples,
                           components=components, seen_prompts=prompts)["summary"]
        row = {"relation": relation, "named": info.named, "words": info.words, **{k: summary[k] for k in KEYS},
               "seen": {k: summary["seen"][k] for k in KEYS}}
        if handles and info.handle:
            row["handle"] = {"word": info.handle, **measure.cell(components, relation, "handle", prompts, seed, samples)}
        if swaps:
            said = info.words if info.named else info.handle
            row["swap"] = {"prompt": f"B {scene.SWAP_WORD} {said} A",
                           **measure.cell(components, relation, "swap", prompts, seed, samples)}
        rows.append(row)
        if progress:
            print(f"  {relation:13s} held out: entity {row['entity_accuracy']:.2f} relation {row['relation_accuracy']:.2f}"
                  f" | seen: entity {row['seen']['entity_accuracy']:.2f} relation {row['seen']['relation_accuracy']:.2f}"
                  + (f" | handle {info.handle!r}: relation {row['handle']['relation_accuracy']:.2f}" if "handle" in row else "")
                  + (f" | swap: relation {row['swap']['relation_accuracy']:.2f}" if "swap" in row else "")
                  + f"  (n={row['n']} each)", flush=True)
    return rows


def sweep(model: str, settings: list[dict], pairs: int = 16, samples: int = 1, seed: int = 0,
          progress: bool = True, unnamed: bool = False) -> list[dict]:
    """Each benchmark relation prompted in words on its validation pairs (never the test pairs),
    sampled with each of ``settings`` (dicts of guidance, steps, scheduler, guidance_rescale):
    one row per setting and relation with hit counts, for :func:`format_sweep`. The five named
    relations only, unless ``unnamed`` (their words should fail at any setting; the report checks
    them at the chosen one)."""
    components = components_for_inference(model)
    relations = sorted(r for r, info in scene.RELATIONS.items() if info.named or unnamed)
    items = [it for relation in relations for it in measure.items(relation, "words", pairs, split="validation")]
    rows = []
    for setting in settings:
        steps, guidance, scheduler = generate.resolve_sampling(components, setting.get("steps"), setting.get("guidance"),
                                                               setting.get("scheduler"))
        _, scores = measure.draw(components, items, seed, samples, steps=steps, guidance=guidance, scheduler=scheduler,
                                 batch_size=64, guidance_rescale=setting.get("guidance_rescale"))
        label = {"scheduler": scheduler or components.scheduler_config["_class_name"], "steps": steps,
                 "guidance": guidance, "guidance_rescale": setting.get("guidance_rescale") or 0.0}
        per = {}
        for (relation, _), cell in measure.cells(items, scores, samples).items():
            per[relation] = {**label, "relation": relation, "named": scene.RELATIONS[relation].named, "n": cell["n"],
                             "entity": round(cell["entity_accuracy"] * cell["n"]),
                             "relation_hits": round(cell["relation_accuracy"] * cell["n"]),
                             "fusion": round(cell["fusion_rate"] * cell["n"])}
        rows.extend(per.values())
        if progress:
            named = [r for r in per.values() if r["named"]]
            n = sum(r["n"] for r in named)
            print(f"  {label['scheduler']} {steps} steps, guidance {guidance}, rescale {label['guidance_rescale']}: "
                  f"named entity {sum(r['entity'] for r in named) / n:.2f} relation "
                  f"{sum(r['relation_hits'] for r in named) / n:.2f} (n={n})", flush=True)
    return rows


def choose(rows: list[dict]) -> dict:
    """The best setting by the mean of named entity and relation accuracy on the validation pairs;
    then the cheapest (fewest steps, then lowest guidance) whose named entity and relation
    accuracy both lie within the best one's Wilson 95% intervals: a faster sampler only at equal
    quality, as far as the validation pairs can tell."""
    def key(r):
        return r["scheduler"], r["steps"], r["guidance"], r["guidance_rescale"]

    totals = {}
    for r in rows:
        if r["named"]:
            t = totals.setdefault(key(r), {"n": 0, "entity": 0, "relation": 0})
            t["n"] += r["n"]
            t["entity"] += r["entity"]
            t["relation"] += r["relation_hits"]
    best = max(totals, key=lambda k: (totals[k]["entity"] + totals[k]["relation"]) / totals[k]["n"])
    b = totals[best]
    bounds = {m: measure.wilson(b[m], b["n"]) for m in ("entity", "relation")}
    equal = [k for k, t in totals.items() if all(lo <= t[m] / t["n"] <= hi for m, (lo, hi) in bounds.items())]
    scheduler, steps, guidance, rescale = min(equal, key=lambda k: (k[1], k[2], k[3]))
    return {"guidance": guidance, "steps": steps, "scheduler": scheduler, "guidance_rescale": rescale,
            "best_on_validation": {"scheduler": best[0], "steps": best[1], "guidance": best[2], "guidance_rescale": best[3]}}


def write_sampling(model: str, rows: list[dict]) -> dict:
    """Record the chosen setting (``sampling``) and the sweep it came from in the model's invrev.json
    (replacing a ``sampling_source`` that said the settings were inherited or provisional)."""
    meta = Path(resolve_model(model)) / "invrev.json"
    info = json.loads(meta.read_text())
    chosen = choose(rows)
    best = chosen.pop("best_on_validation")
    info["sampling"] = chosen
    info["sampling_source"] = "this model's own sweep on validation pairs (sampling_sweep)"
    info["sampling_sweep"] = {"rule": " ".join(choose.__doc__.split()), "best_on_validation": best,
                              "pairs": "benchmark.validation_pairs (neither test nor exemplar pairs)", "rows": rows}
    runs.atomic_write_json(meta, info)
    return chosen


def format_sweep(rows: list[dict]) -> str:
    """Per setting: named relations pooled (entity, relation, fusion with Wilson 95%), and the
    unnamed ones' relation accuracy in words (which must stay low), with n."""
    def cell(hits, n):
        if n == 0:
            return "–"
        lo, hi = measure.wilson(hits, n)
        return f"{hits / n:.2f} [{lo:.2f}, {hi:.2f}]"

    keys = list(dict.fromkeys((r["scheduler"], r["steps"], r["guidance"], r["guidance_rescale"]) for r in rows))
    lines = ["| scheduler | steps | guidance | rescale | named: entity | named: relation | named: fusion | n | "
             "unnamed in words: relation | n |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key in keys:
        group = [r for r in rows if (r["scheduler"], r["steps"], r["guidance"], r["guidance_rescale"]) == key]
        named = [r for r in group if r["named"]]
        unnamed = [r for r in group if not r["named"]]
        n, m = sum(r["n"] for r in named), sum(r["n"] for r in unnamed)
        lines.append(f"| {key[0].removesuffix('Scheduler')} | {key[1]} | {key[2]:g} | {key[3]:g} | "
                     f"{cell(sum(r['entity'] for r in named), n)} | {cell(sum(r['relation_hits'] for r in named), n)} | "
                     f"{cell(sum(r['fusion'] for r in named), n)} | {n} | "
                     f"{cell(sum(r['relation_hits'] for r in unnamed), m)} | {m} |")
    return "\n".join(lines)


def format_report(rows: list[dict]) -> str:
    """REPORT.md's table: both views side by side, and the handles' upper bound."""
    lines = ["| relation | named in pretraining | prompt words | held out: entity | held out: relation | held out: fusion "
             "| held out: drawn reversed | seen, different shapes: entity | relation | fusion | n each | handle: relation (entity) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if any("swap" in r for r in rows):
        lines[0] += " role swap \"B ob <words or handle> A\": relation (reversed) |"
        lines[1] += " --- |"
    for r in rows:
        seen, handle, swap = r.get("seen"), r.get("handle"), r.get("swap")
        seen_cells = (f"{seen['entity_accuracy']:.2f} | {seen['relation_accuracy']:.2f} | {seen['fusion_rate']:.2f}"
                      if seen else "– | – | –")
        handle_cell = (f"\"{handle['word']}\": {handle['relation_accuracy']:.2f} ({handle['entity_accuracy']:.2f})"
                       if handle else "–")
        lines.append(f"| {r['relation']} | {'yes' if r['named'] else 'no'} | {r['words']} | {r['entity_accuracy']:.2f} | "
                     f"{r['relation_accuracy']:.2f} | {r['fusion_rate']:.2f} | {r['reversed_rate']:.2f} | {seen_cells} | {r['n']} | {handle_cell} |"
                     + (f" {swap['relation_accuracy']:.2f} ({swap['reversed_rate']:.2f}) |" if swap else ""))
    return "\n".join(lines)


def stages(info: dict) -> list[dict]:
    """A model's training stages, first to last: what each warm start continued from (``invrev.json``'s
    nested ``warm_start``), then the model's own training."""
    chain = []
    while info:
        chain.append(info)
        info = info.get("warm_start")
    return chain[::-1]


def stage_log(stage: int, log: str) -> str:
    """The name :func:`ship` gives stage ``stage``'s (1-based) training log beside the model:
    ``pretrain_log.csv``/``eval_log.csv`` for the first, ``finetune_log.csv``/``finetune_eval_log.csv``
    for the second (the first warm start), ``finetune2_...`` for the third, and so on."""
    if stage <= 1:
        return log
    return f"finetune{stage - 1 if stage > 2 else ''}_" + log.removeprefix("pretrain_")


def ship(source: str | Path, dest: str | Path = WORLD_MODEL, prompts: int = 20, samples: int = 4) -> Path:
    """Copy a pretrained model to ``dest``, measure it, and write ``manifest.json`` beside it."""
    source, dest = Path(source), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    rows = report(str(dest), prompts, samples)
    info = json.loads((dest / "invrev.json").read_text())
    stage = len(stages(info))
    for log in ("pretrain_log.csv", "eval_log.csv"):  # the training's logs, beside the model
        if (source.parent / log).is_file():  # earlier stages' logs stay as they are
            shutil.copy(source.parent / log, dest.parent / stage_log(stage, log))
    files = {str(p.relative_to(dest.parent)): runs.sha256_file(p) for p in sorted(dest.rglob("*")) if p.is_file()}
    bench = dest.parent / "benchmark"
    files.update({str(p.relative_to(dest.parent)): runs.sha256_file(p) for p in sorted(bench.rglob("*")) if p.is_file()})
    runs.write_manifest(dest.parent, files=files, model=info, words_report=rows,
                        size_bytes=sum((dest / f).stat().st_size for f in [p.relative_to(dest) for p in dest.rglob("*") if p.is_file()]))
    (dest.parent / "REPORT.md").write_text(report_markdown(info, rows))
    return dest


def report_markdown(info: dict, rows: list[dict]) -> str:
    """REPORT.md: the sampling settings the numbers were drawn at, the table, and known limits."""
    s = {**SD15_SAMPLING, **info.get("sampling", {})}
    sampler = f"{s['scheduler'] or 'the shipped scheduler'}, {s['steps']} steps, guidance {s['guidance']:g}" + (
        f", guidance rescale {s['guidance_rescale']:g}" if s.get("guidance_rescale") else "")
    return "\n".join([
        "# The shipped world model, prompted in words", "",
        f"Sampled at the model's own settings ({sampler}; chosen on validation pairs, see `invrev.json`'s "
        "`sampling_sweep`). *Held out*: the test pairs, all of one shape each (see `benchmark.is_held_out`). "
        "*Seen, different shapes*: pairs pretraining saw, neither exemplars nor validation pairs. "
        "*Handle*: an unnamed relation prompted by the word pretraining captions use for it, which no "
        "evaluation prompt uses (the upper bound for a learned token).", "",
        format_report(rows), "",
        *[f"Edited after training: {edit['what']}, seed {edit['seed']}, chosen on {edit['chosen_on']} "
          f"(`invrev.json`'s `edits`).\n" for edit in info.get("edits", [])],
        "Known limit: `inside`'s inner entity was drawn 8-10 px wide before this model, and the model drew it as a "
        "round blob (inner shape right 0/6 for triangles, 0/10 for crosses); the renderer now draws it 11-13 px "
        "(`render.INNER`), and this model was trained on that.", ""])


def write_benchmark(root: str | Path, seed: int = 0) -> Path:
    """Render every relation's exemplars into ``root/<relation>/`` + text.json, and the held-out
    test pairs into ``root/test_prompts.json``."""
    root = Path(root)
    for relation in sorted(scene.RELATIONS):
        _, images, templates = benchmark.exemplars(relation, seed)
        write_exemplars(root / relation, images, templates)
    (root / "test_prompts.json").write_text(json.dumps(benchmark.test_prompt_pairs(), indent=1) + "\n")
    return root
