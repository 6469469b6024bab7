"""What a Dask worker runs for the batch: one run's notebook, or a joint group, each under its claim.

Every task may run twice: Dask runs a task again on another worker when its worker dies, and two
batches on one runs folder submit the same runs. So a task first claims its runs (``invrev.claim``)
and leaves those another live process holds; under the claim it looks again at what is done, and it
resumes training from the run's checkpoint (the trainer's ``resume=True``). What it writes becomes
visible whole: records are written atomically (``invrev.runs.atomic_write``), and the executed
notebook is written beside the run as ``.run.partial.ipynb`` and renamed to ``run.ipynb`` only when
it is finished, so a ``run.ipynb`` without ``failed.json`` beside it is a notebook that ran to its
end.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from invrev import claim, runs
from invrev.config import TrainConfig
from invrev.experiments import Job, already_run
from invrev.notebooks import execute

PARTIAL = ".run.partial.ipynb"  # "." first: loaders skip it, as they skip atomic_write's temporary files
HELD_WAIT = 2.0  # seconds a task waits for a run another holds before handing it back to the batch


@dataclass(frozen=True)
class Outcome:
    """How a run's task ended: ``done``, ``failed``, ``skipped`` (found finished under its claim) or
    ``held`` (another batch or worker holds the run: the batch comes back to it later)."""

    status: str
    seconds: float = 0.0
    detail: str = ""


def run_notebook(notebook: str, job: Job) -> Outcome:
    """Execute the run notebook for ``job`` under its claim; ``batch.json`` or ``failed.json`` record how it went."""
    lease = claim.take(job.folder, wait=HELD_WAIT)
    if lease is None:
        return Outcome("held", detail=claim.holder(job.folder))
    try:
        if already_run(job):
            return Outcome("skipped", detail="finished by another batch or worker")
        return _execute(notebook, job, lease)
    finally:
        lease.release()


def _execute(notebook: str, job: Job, lease) -> Outcome:
    failed, final, partial = job.folder / "failed.json", job.folder / "run.ipynb", job.folder / PARTIAL
    # A notebook of an earlier config or attempt must not stand for this one while it runs.
    final.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        execute(notebook, partial, job.params)
    except Exception as err:  # a batch keeps going past a failed run
        seconds = time.perf_counter() - start
        if (why := claim.lost(lease)) is not None:
            return Outcome("held", seconds, f"its claim was lost: {why}")
        error = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
        runs.atomic_write_json(failed, {"error": error, "seconds": round(seconds, 2), "notebook": "run.ipynb",
                                        "traceback": traceback.format_exc(), "finished": runs.timestamp()})
        if partial.is_file():  # the failed notebook is kept for reading, beside failed.json
            _publish(partial, final)
        return Outcome("failed", seconds, error)
    seconds = time.perf_counter() - start
    if (why := claim.lost(lease)) is not None:
        return Outcome("held", seconds, f"its claim was lost: {why}")
    runs.atomic_write_json(job.folder / "batch.json", {
        "seconds": round(seconds, 2), "notebook": runs.repo_relative(notebook), "parameters": job.params,
        "command": job.command, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "finished": runs.timestamp()})
    failed.unlink(missing_ok=True)
    _publish(partial, final)  # last: from here on the run is complete
    s = json.loads((job.folder / "eval" / "metrics.json").read_text())["summary"]
    return Outcome("done", seconds, f"entity {s['entity_accuracy']:.2f}, relation {s['relation_accuracy']:.2f}")


def _publish(partial: Path, final: Path) -> None:
    """Rename the executed notebook into place, naming its final path in papermill's record of it
    (``invrev collect`` reads that path)."""
    import nbformat

    nb = nbformat.read(partial, as_version=4)
    if "papermill" in nb.metadata:
        nb.metadata.papermill["output_path"] = str(final)
    runs.atomic_write_text(final, nbformat.writes(nb))
    partial.unlink()


def prepare_group(members: list[tuple[str, str, str, dict]]) -> tuple[str | None, float, float, list[str]]:
    """Train the group's unfinished runs together, then evaluate each run whose evaluation is missing
    or stale, exactly as the run notebook would; runs another process holds are left to their
    notebooks. Returns (error, training s, evaluation s, the names of the runs left)."""
    leases, held = {}, []
    try:
        for name, _, folder, _ in members:
            lease = claim.take(folder)
            if lease is None:
                held.append(name)
            else:
                leases[name] = lease
        error, train_s, eval_s = _train_and_evaluate([m for m in members if m[0] in leases])
        return error, train_s, eval_s, held
    finally:
        for lease in leases.values():
            lease.release()


def _train_and_evaluate(members: list[tuple[str, str, str, dict]]) -> tuple[str | None, float, float]:
    """The run notebook's own call (``runner.prepare``) for the whole group, on one loaded model."""
    from invrev import runner
    from invrev.experiments import eval_settings

    if not members:
        return None, 0.0, 0.0
    try:
        configs = [TrainConfig.from_params(json.loads(c)) for _, c, _, _ in members]
        done = runner.prepare(configs, [f for _, _, f, _ in members], [eval_settings(p) for *_, p in members])
        return None, done.train_seconds, done.eval_seconds
    except Exception as err:  # a batch keeps going: the runs' notebooks retry and record the failure
        return f"{type(err).__name__}: {err}", 0.0, 0.0
