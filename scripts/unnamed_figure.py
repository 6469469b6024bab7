"""The README's picture: one unnamed relation in words, by its pretraining handle, and with each learned token.

Reads finished runs (``invrev batch`` output) of one relation and training seed, redraws the first
``--pairs`` held-out pairs with the images' own seeds (the evaluation's, so the tiles are images
the recorded numbers counted), frames each image green where the scorer finds the relation, and
titles each panel with the run's recorded relation accuracy over all its images.

    python scripts/unnamed_figure.py --runs runs --relation painted_on --seed 2 --out docs/unnamed_painted_on.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from invrev import demo, evaluate, generate, measure, runs
from invrev.models import WORLD_MODEL
from invrev.world import scene

PANELS = (("sd", "in words"), ("handle", "by its handle"), ("textual_inversion", "Textual Inversion"),
          ("reversion", "ReVersion"), ("inv_reversion", "Inv-ReVersion"), ("no_inverse", "Inv-ReVersion w/o inverse text"))


def panel(components, relation: str, variant: str, runs_root: Path, seed: int, pairs: int) -> dict:
    """The first ``pairs`` held-out pairs x demo.SAMPLES images of one panel, their hits, and the
    accuracy over every image the run (or, for the handle, the shipped model's report) counted."""
    info = scene.RELATIONS[relation]
    items = measure.items(relation, {"sd": "words", "handle": "handle"}.get(variant, "token"), pairs)
    if variant == "handle":
        manifest = json.loads((Path(WORLD_MODEL).parent / "manifest.json").read_text())
        [row] = [r for r in manifest["words_report"] if r["relation"] == relation]
        accuracy, n, prompt = row["handle"]["relation_accuracy"], row["handle"]["n"], f'"A {info.handle} B"'
    else:
        folder = runs_root / relation / variant / f"seed{seed}"
        metrics = folder / "eval" / "metrics.json"
        if not metrics.is_file():
            raise FileNotFoundError(f"{metrics}: no finished run; run `invrev batch --experiments experiments/unnamed.yaml "
                                    f"--runs {runs_root}` first")
        summary = json.loads(metrics.read_text())["summary"]
        if summary["seed"] != seed:
            raise ValueError(f"{metrics}: evaluated with seed {summary['seed']}, not {seed}")
        shipped = runs.model_fingerprint(WORLD_MODEL)
        if summary.get("model_fingerprint") != shipped:
            raise ValueError(f"{metrics}: evaluated on model {summary.get('model_fingerprint')}, not the shipped "
                             f"{shipped}; its images cannot be redrawn here")
        if variant != "sd":
            generate.load_run_tokens(components, folder)
        accuracy, n = summary["relation_accuracy"], summary["n"]
        prompt = f'"A {info.words} B"' if variant == "sd" else '"A <r> B"'
    images, scores = measure.draw(components, items, seed, demo.SAMPLES)
    return {"images": images, "hits": [bool(s.relation) for s in scores], "accuracy": accuracy, "n": n, "prompt": prompt, "items": items}


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs")
    p.add_argument("--relation", default="painted_on")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--out", default="docs/unnamed_painted_on.png")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if scene.RELATIONS.get(args.relation) is None or scene.RELATIONS[args.relation].named:
        raise ValueError(f"--relation {args.relation!r}: choose an unnamed relation "
                         f"({', '.join(r for r, i in scene.RELATIONS.items() if not i.named)})")
    components = evaluate.components_for_inference(WORLD_MODEL)
    fig, axes = plt.subplots(2, 3, figsize=(13, 1.4 + 2.2 * args.pairs))
    for ax, (variant, name) in zip(axes.flat, PANELS):
        got = panel(components, args.relation, variant, Path(args.runs), args.seed, args.pairs)
        ax.imshow(demo.mosaic(got["images"], got["hits"], args.pairs, demo.SAMPLES, scale=3, frame=3), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"{name}: {got['prompt']}\nrelation accuracy {got['accuracy']:.2f} (n = {got['n']})", fontsize=10)
    pairs = "; ".join(f"A = {it.a.text}, B = {it.b.text}" for it in got["items"])
    fig.suptitle(f"{args.relation}, training seed {args.seed}; held-out pairs, one a row: {pairs}\n{demo.SAMPLES} images a pair, "
                 "the same seeds in every panel; green frame: the scorer finds the relation", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(out)
    return out


if __name__ == "__main__":
    main()
