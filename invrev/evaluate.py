"""Automatic evaluation on the relation world: generate held-out test prompts, score every image.

Entity accuracy, relation accuracy and fusion rate come from the world's exact scorer (no human
study needed), with Wilson 95% intervals over images; so does the reversed rate, how often an image
draws the relation with A and B swapped (a direction check). Prompts use the learned ``<r>`` for trained
variants and the relation in words for ``sd`` (the paper's Table 1 baseline).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from invrev import generate, layout, runs, text
from invrev.models import load_components

METRICS = ("entity", "relation", "fusion")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (sound at 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def components_for_inference(model: str, revision: str = "main"):
    """The model's components, on the GPU when there is one."""
    components = load_components(model, revision)
    return components.to("cuda") if torch.cuda.is_available() else components


def test_prompts(relation: str, variant: str, n: int, placeholder: str = "<r>", split: str = "held_out") -> list[dict]:
    """The relation's held-out (A, B) pairs as prompts: "A <r> B", or "A <words> B" for ``sd``.

    ``split="seen"`` takes pairs of different shapes that pretraining saw instead (the held-out
    pairs are all same-shape; see ``benchmark.is_held_out``); ``split="validation"`` the pairs
    settings and recipes are chosen on (``benchmark.validation_pairs``)."""
    from invrev.world import benchmark, captions, scene

    if relation not in scene.RELATIONS:
        raise ValueError(f"relation {relation!r} is not in the world benchmark; choose from {sorted(scene.RELATIONS)}")
    choose = {"held_out": benchmark.test_pairs, "seen": benchmark.seen_pairs, "validation": benchmark.validation_pairs}
    if split not in choose:
        raise ValueError(f"split={split!r}: choose from {sorted(choose)}")
    pairs = choose[split](relation, n)
    out = []
    for a, b in pairs:
        words = scene.RELATIONS[relation].words if variant == "sd" else placeholder
        out.append({"a": a, "b": b, "prompt": text.fill(captions.template(a, b), words)})
    return out


def image_seeds(seed: int, items: int, samples: int, seen: bool = False) -> list[int]:
    """The image seeds of ``items`` prompts x ``samples`` images, in the order :func:`evaluate` draws them."""
    return [layout.image_seed(seed, i, k, seen=seen) for i in range(items) for k in range(samples)]


def draw(components, relation: str, items: list[dict], texts: list[str], seed: int, samples: int) -> tuple[list, list]:
    """``texts`` (one per item of :func:`test_prompts`) drawn ``samples`` times each at the image seeds
    :func:`evaluate` gives those items and the model's sampling settings; the images and each one's
    scores against its item's (A, B). For prompts other than the evaluation's own on the same images."""
    from invrev.world import scorer

    steps, guidance, scheduler = generate.resolve_sampling(components)
    images = generate.generate(components, [t for t in texts for _ in range(samples)], image_seeds(seed, len(items), samples),
                               steps, guidance, scheduler)
    return images, [scorer.score(image, items[i // samples]["a"], relation, items[i // samples]["b"])
                    for i, image in enumerate(images)]


def evaluate(model: str, relation: str, variant: str, run_folder: str | Path | None, *, seed: int = 0,
             prompts: int = 20, samples: int = 4, steps: int | None = None, guidance: float | None = None,
             scheduler: str | None = None, out: str | Path | None = None, components=None,
             seen_prompts: int = 0, split: str = "held_out", progress: bool = False, keep_images: bool = False) -> dict:
    """Generate ``prompts`` × ``samples`` images and score them; write metrics.json and grid.png to ``out``.

    Sampling settings left None are the model's recommendation (``invrev.json``); the summary
    records the ones used. ``seen_prompts`` > 0 also scores that many seen different-shape pairs
    (``summary["seen"]``), the view the same-shape held-out pairs cannot give. ``keep_images``
    returns the (held-out) images too, as ``image_arrays``."""
    from invrev.world import scorer

    if components is None:
        components = components_for_inference(model)
    steps, guidance, scheduler = generate.resolve_sampling(components, steps, guidance, scheduler)
    if variant != "sd":
        if run_folder is None:
            raise ValueError(f"variant {variant!r} needs --embeddings RUN_FOLDER (only sd uses words)")
        generate.load_run_tokens(components, run_folder)
    items = test_prompts(relation, variant, prompts, split=split)
    seen = test_prompts(relation, variant, seen_prompts, split="seen") if seen_prompts else []
    texts = [it["prompt"] for it in items + seen for _ in range(samples)]
    seeds = image_seeds(seed, len(items), samples) + image_seeds(seed, len(seen), samples, seen=True)
    images = generate.generate(components, texts, seeds, steps, guidance, scheduler, progress=progress)
    records = []
    for i, image in enumerate(images):
        item = (items + seen)[i // samples]
        s = scorer.score(image, item["a"], relation, item["b"])
        records.append({"prompt": texts[i], "seed": seeds[i], "entity": bool(s.entity), "relation": bool(s.relation),
                        "fusion": bool(s.fusion), "reversed": drawn_reversed(image, item["a"], relation, item["b"])})
    records, seen_records = records[: len(items) * samples], records[len(items) * samples:]
    images = images[: len(items) * samples]
    summary = summarise(records)
    if seen_records:
        summary["seen"] = summarise(seen_records)
    summary.update(relation=relation, variant=variant, seed=seed, model=model, split=split, steps=steps, guidance=guidance,
                   scheduler=scheduler or components.scheduler_config["_class_name"],
                   model_fingerprint=runs.model_fingerprint(model), trained=_trained(run_folder))
    result = {"summary": summary, "images": records, **({"seen_images": seen_records} if seen_records else {})}
    if out is not None:
        out = Path(out)
        grid = layout.eval_grid(images, samples)
        # metrics.json last: it is what marks the evaluation done (``recorded``), so the grid is whole by then.
        runs.atomic_write(out / "grid.png", lambda handle: grid.save(handle, format="PNG"))
        runs.atomic_write_json(out / "metrics.json", result)
    if keep_images:
        result["image_arrays"] = images
    return result


def drawn_reversed(image, a, relation: str, b) -> bool:
    """The image draws the relation the wrong way round: it passes as "B <relation> A" (never for a
    symmetric relation, where both are the same scene)."""
    from invrev.world import scene, scorer

    return not scene.ALL_RELATIONS[relation].symmetric and bool(scorer.score(image, b, relation, a).relation)


def recorded(out: str | Path, run_folder: str | Path | None, *, model: str, relation: str, variant: str, seed: int,
             prompts: int, samples: int, steps: int | None = None, guidance: float | None = None) -> dict | None:
    """The held-out metrics already in ``out/metrics.json`` when they were made with these settings,
    of this run's training as it is now, on ``model`` as it is now; else None (evaluate again).

    The batch skips runs by it, and a batch that evaluated a run in its own process leaves the run
    notebook only the display. Settings left None are the model's own (its ``invrev.json``)."""
    from invrev import models

    path = Path(out) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    s, own = metrics["summary"], models.sampling_settings(model)
    wanted = {"n": prompts * samples, "relation": relation, "variant": variant, "seed": seed, "model": model,
              "split": "held_out", "steps": own["steps"] if steps is None else steps,
              "guidance": own["guidance"] if guidance is None else guidance, "trained": _trained(run_folder),
              "model_fingerprint": runs.model_fingerprint(model)}
    return metrics if all(s.get(k) == v for k, v in wanted.items()) else None


def _trained(run_folder: str | Path | None) -> str | None:
    """When the run's training finished (its manifest), so that a retrained run is evaluated again."""
    manifest = Path(run_folder) / "manifest.json" if run_folder is not None else None
    return json.loads(manifest.read_text()).get("finished") if manifest and manifest.is_file() else None


def summarise(records: list[dict]) -> dict:
    n = len(records)
    summary = {"n": n}
    checked = records and all("reversed" in r for r in records)  # records before the direction check lack it
    for key in METRICS + (("reversed",) if checked else ()):
        hits = sum(r[key] for r in records)
        summary[f"{key}_accuracy" if key in ("entity", "relation") else f"{key}_rate"] = hits / n if n else 0.0
        summary[f"{key}_ci95"] = wilson(hits, n)
    return summary
