"""The main job on the embedded world: learn one relation, then draw it in words and with ``<r>``.

One model load, a line per stage with its time, a progress bar on the two long steps, and a
labelled figure: the same held-out prompts and seeds, the relation in words beside the learned
token. ``invrev demo`` runs it; ``make demo`` sets up first.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from invrev import evaluate, runs, trainer
from invrev.experiments import run_config
from invrev.world.scene import RELATIONS

PROMPTS = 10  # held-out pairs per side; 4 images each
SAMPLES = 4
FIGURE_ROWS = 4  # pairs shown in the figure


def run(relation: str, out: str | Path, benchmark: Path, model: str, *, steps: int | None = None,
        prompts: int = PROMPTS, sampling_steps: int | None = None) -> dict:
    """Train ``inv_reversion`` on ``relation``, evaluate words and ``<r>`` on the same prompts and
    seeds, write the figure; returns both summaries."""
    if relation not in RELATIONS:
        raise ValueError(f"--relation {relation!r}: choose one of {', '.join(sorted(RELATIONS))}")
    out, start = Path(out), time.perf_counter()

    def stage(text: str) -> None:
        print(f"[{time.perf_counter() - start:5.1f} s] {text}", flush=True)

    stage(f"loading the world model ({model})")
    components = evaluate.components_for_inference(model)
    config = run_config(benchmark / relation, "inv_reversion", model=model, seed=0, recipe="world",
                        **({} if steps is None else {"steps": steps, "checkpoint_every": steps}))
    folder = runs.run_dir(out / "runs", relation, "inv_reversion", 0)
    stage(f"learning <r> for {relation!r} from {benchmark / relation} ({config.steps} steps x {config.batch_size})")
    trainer.train(config, folder, components=components, resume=True)
    words = RELATIONS[relation].words
    stage(f"drawing {prompts} held-out pairs x {SAMPLES} in words (\"A {words} B\")")
    base = evaluate.evaluate(model, relation, "sd", None, seed=0, prompts=prompts, samples=SAMPLES, steps=sampling_steps,
                             out=out / "in_words", components=components, progress=True, keep_images=True)
    stage("drawing the same pairs and seeds with the learned token (\"A <r> B\")")
    learned = evaluate.evaluate(model, relation, "inv_reversion", folder, seed=0, prompts=prompts, samples=SAMPLES,
                                steps=sampling_steps,
                                out=folder / "eval", components=components, progress=True, keep_images=True)
    figure = side_by_side(relation, base, learned, out / "demo.png")
    stage("done")
    b, s = base["summary"], learned["summary"]
    print(f"\nrelation {relation!r} on {s['n']} held-out images each "
          f"(sampled at guidance {s['guidance']:g}, {s['steps']} steps, the model's own settings):\n"
          f"  relation accuracy  in words {b['relation_accuracy']:.2f}   with the learned <r> {s['relation_accuracy']:.2f}\n"
          f"  entity accuracy    in words {b['entity_accuracy']:.2f}   with the learned <r> {s['entity_accuracy']:.2f}\n"
          f"figure: {figure}\nlearned tokens: {folder / 'learned'}\nmetrics: {folder / 'eval' / 'metrics.json'}")
    return {"words": b, "learned": s}


GAP = 4  # px of white between and around the mosaic's tiles


def mosaic(images: list[np.ndarray], hits: list[bool], rows: int, columns: int, scale: int = 4,
            frame: int = 4, gap: int = GAP) -> np.ndarray:
    """Tiles ``rows`` x ``columns`` on white, each upscaled (nearest) inside a ``frame`` px border:
    green where the scorer finds the relation, light grey where not."""
    h, w = images[0].shape[0] * scale, images[0].shape[1] * scale
    tile_h, tile_w = h + 2 * frame + gap, w + 2 * frame + gap
    canvas = np.full((rows * tile_h + gap, columns * tile_w + gap, 3), 255, np.uint8)
    for i in range(rows * columns):
        y, x = gap + (i // columns) * tile_h, gap + (i % columns) * tile_w
        canvas[y:y + h + 2 * frame, x:x + w + 2 * frame] = (42, 157, 58) if hits[i] else (200, 200, 200)
        canvas[y + frame:y + frame + h, x + frame:x + frame + w] = images[i].repeat(scale, 0).repeat(scale, 1)
    return canvas


def _row_centres(height: int, rows: int) -> list[float]:
    """The y of each row's centre in a mosaic ``height`` px high (a tile and the gap below it per
    row), in imshow's coordinates, where pixel i is centred on i."""
    tile = (height - GAP) / rows
    return [GAP + tile * r + (tile - GAP - 1) / 2 for r in range(rows)]


def side_by_side(relation: str, base: dict, learned: dict, path: Path) -> Path:
    """Rows: held-out pairs; left: the relation in words, right: the learned ``<r>``, same seeds;
    each image framed green where the scorer finds the relation, grey where not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(FIGURE_ROWS, len(base["images"]) // SAMPLES)
    n = rows * SAMPLES
    words = RELATIONS[relation].words
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 1.15 * rows))
    for ax, result, title in ((axes[0], base, f'in words: "A {words} B"'), (axes[1], learned, 'learned token: "A <r> B"')):
        hits = [r["relation"] for r in result["images"][:n]]
        tiles = mosaic(result["image_arrays"][:n], hits, rows, SAMPLES)
        ax.imshow(tiles, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks(_row_centres(tiles.shape[0], rows))
        labels = []
        for r in range(rows):
            a, _, b = base["images"][r * SAMPLES]["prompt"].removeprefix("a ").partition(f" {words} a ")
            labels.append(f"A = {a}\nB = {b}")
        ax.set_yticklabels(labels if ax is axes[0] else [], fontsize=10)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        s = result["summary"]
        ax.set_title(f"{title}\nrelation accuracy {s['relation_accuracy']:.2f}, entity {s['entity_accuracy']:.2f} "
                     f"(n={s['n']})", fontsize=11)
    fig.suptitle(f"{relation}: the same held-out pairs and seeds, {SAMPLES} per pair; "
                 "green frame: the scorer finds the relation", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
