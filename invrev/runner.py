"""A run from its config to its evaluation, doing only what its folder does not hold yet.

Training is skipped when the folder holds the run finished with this config
(:func:`invrev.runs.is_complete`), evaluation when it holds the held-out evaluation made with these
settings of that training on this model (:func:`invrev.evaluate.recorded`). The run notebook calls
:func:`prepare` for its one run; a joint batch (``invrev batch --joint K``) for a group of one
relation's runs, which then train together on one loaded model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from invrev import evaluate, models, runs, trainer
from invrev.config import TrainConfig


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did: per run, whether it trained and evaluated it now, and its metrics."""

    trained: tuple[bool, ...]
    evaluated: tuple[bool, ...]
    metrics: tuple[dict, ...]
    train_seconds: float
    eval_seconds: float


def prepare(configs: Sequence[TrainConfig], folders: Sequence[str | Path], settings: Sequence[Mapping],
            components=None, progress: bool = False) -> Prepared:
    """Train the runs not finished with their config (together, on one model), then evaluate each
    run whose evaluation is missing or stale. ``settings`` are each run's evaluation settings
    (:func:`invrev.experiments.eval_settings`); the model is ``configs[0].model`` and is loaded
    only if something is left to do."""
    if not (len(configs) == len(folders) == len(settings)) or not configs:
        raise ValueError(f"{len(configs)} configs, {len(folders)} folders, {len(settings)} settings: give one of each per run")
    if len({(c.model, c.revision) for c in configs}) != 1:
        raise ValueError("runs prepared together must share one model: prepare them apart")
    folders = [Path(f) for f in folders]
    model = configs[0].model

    def loaded():
        nonlocal components
        if components is None:
            models.quiet_loading()
            components = evaluate.components_for_inference(model, configs[0].revision)
        return components

    start = time.perf_counter()
    todo = [i for i, (c, f) in enumerate(zip(configs, folders)) if not runs.is_complete(f, c.to_json())]
    if todo:
        trainer.train_many([configs[i] for i in todo], [folders[i] for i in todo], components=loaded(),
                           resume=True, progress=progress)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics, evaluated = [], []
    for folder, s in zip(folders, settings):
        found = evaluate.recorded(folder / "eval", folder, model=model, **s)
        evaluated.append(found is None)
        metrics.append(found if found is not None else
                       evaluate.evaluate(model, run_folder=folder, out=folder / "eval", components=loaded(), **s))
    return Prepared(tuple(i in todo for i in range(len(configs))), tuple(evaluated), tuple(metrics),
                    train_seconds, time.perf_counter() - start)
