"""Automatic evaluation of a run on the relation world: held-out test prompts drawn and scored
through ``invrev.measure``, written as the run's ``eval/metrics.json`` and ``eval/grid.png``.

Entity accuracy, relation accuracy and fusion rate come from the world's exact scorer (no human
study needed), with Wilson 95% intervals over images; so does the reversed rate, how often an image
draws the relation with A and B swapped (a direction check). Prompts use the learned ``<r>`` for trained
variants and the relation in words for ``sd`` (the paper's Table 1 baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from invrev import generate, layout, measure, runs
from invrev.models import load_components


def components_for_inference(model: str, revision: str = "main"):
    """The model's components, on the GPU when there is one."""
    components = load_components(model, revision)
    return components.to("cuda") if torch.cuda.is_available() else components


def evaluate(model: str, relation: str, variant: str, run_folder: str | Path | None, *, seed: int = 0,
             prompts: int = 20, samples: int = 4, steps: int | None = None, guidance: float | None = None,
             scheduler: str | None = None, out: str | Path | None = None, components=None,
             seen_prompts: int = 0, split: str = "held_out", progress: bool = False, keep_images: bool = False) -> dict:
    """Generate ``prompts`` × ``samples`` images and score them; write metrics.json and grid.png to ``out``.

    Sampling settings left None are the model's recommendation (``invrev.json``); the summary
    records the ones used. ``seen_prompts`` > 0 also scores that many seen different-shape pairs
    (``summary["seen"]``), the view the same-shape held-out pairs cannot give. ``keep_images``
    returns the (held-out) images too, as ``image_arrays``."""
    if components is None:
        components = components_for_inference(model)
    steps, guidance, scheduler = generate.resolve_sampling(components, steps, guidance, scheduler)
    if variant != "sd":
        if run_folder is None:
            raise ValueError(f"variant {variant!r} needs --embeddings RUN_FOLDER (only sd uses words)")
        generate.load_run_tokens(components, run_folder)
    kind = "words" if variant == "sd" else "token"
    items = measure.items(relation, kind, prompts, split=split)
    seen = measure.items(relation, kind, seen_prompts, split="seen") if seen_prompts else []
    # One pass over both, as the recorded images were drawn.
    images, scores = measure.draw(components, items + seen, seed, samples, steps=steps, guidance=guidance,
                                  scheduler=scheduler, progress=progress)
    records = [s.record() for s in scores]
    records, seen_records = records[: len(items) * samples], records[len(items) * samples:]
    images = images[: len(items) * samples]
    summary = measure.summarise(records)
    if seen_records:
        summary["seen"] = measure.summarise(seen_records)
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
