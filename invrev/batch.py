"""Run a planned experiment through the run notebook: skip what is done, keep going past failures.

:func:`run_batch` plans first (``invrev.experiments``: nothing runs unless every run checks out),
then executes ``notebooks/10_run.ipynb`` once per run with papermill into
``<runs>/<relation>/<variant>/seed<k>/run.ipynb``. A run whose training is complete with the same
config and whose evaluation matches the parameters is skipped; a failing run leaves ``failed.json``
and the batch goes on, then names the failures and the CLI exits non-zero. ``joint=K`` first trains
K runs at a time in one process with :func:`invrev.trainer.train_many` (one shared model, K sets of
vectors); the notebooks then find them trained and only evaluate. :func:`invrev.record.collect`
copies the compact record of every run into ``results/latest`` and executes the results notebook there.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from invrev import runs
from invrev.config import TrainConfig
from invrev.experiments import BatchError, Experiment, Job, already_run, load_experiment, plan
from invrev.notebooks import RUN_NOTEBOOK, execute
from invrev.pool import Pool
from invrev.runs import repo_path


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_batch(experiments: str | Path | Mapping | Experiment, runs_root: str | Path = "runs", workers: int = 1,
              joint: int = 0, notebook: str | Path = RUN_NOTEBOOK, *, relations: Sequence[str] | None = None,
              variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None, dry_run: bool = False,
              **params: Any) -> BatchResult:
    """Run relation × variant × seed through ``notebook``; ``params`` override the experiment's.

    ``workers`` processes run notebooks side by side; with several GPUs each worker sees one
    (``CUDA_VISIBLE_DEVICES``). Prints one line per run and returns what was done, skipped and failed.
    """
    if workers < 1:
        raise BatchError(f"workers={workers} must be at least 1")
    experiment = experiments if isinstance(experiments, Experiment) else load_experiment(experiments)
    jobs = plan(experiment, runs_root, notebook, params, relations=relations, variants=variants, seeds=seeds)
    result = BatchResult()
    todo = []
    for job in jobs:
        if already_run(job):
            result.skipped.append(job.name)
            print(f"[{len(result.skipped)}/{len(jobs)}] {job.name}: skipped (complete, same config)", flush=True)
        else:
            todo.append(job)
    if dry_run:
        for job in todo:
            print(f"would run {job.name} -> {job.folder}", flush=True)
        return result
    path = str(repo_path(notebook))
    started, start = runs.timestamp(), time.perf_counter()
    joint_seconds = 0.0
    with Pool(workers) as pool:
        if joint > 0:
            _prepare_jointly(pool, todo, joint)
            joint_seconds = time.perf_counter() - start
        tasks = {job.name: (path, job) for job in todo}
        for count, (name, (error, seconds, line)) in enumerate(pool.run(_run_notebook, tasks), start=len(result.skipped) + 1):
            job = tasks[name][1]
            if error:
                result.failed[job.name] = error
                print(f"[{count}/{len(jobs)}] {job.name}: FAILED after {seconds:.1f} s: {headline(error)}", flush=True)
            else:
                result.done.append(job.name)
                print(f"[{count}/{len(jobs)}] {job.name}: done in {seconds:.1f} s ({line})", flush=True)
    seconds = time.perf_counter() - start
    if todo:
        log_batch(runs_root, {
            "started": started, "finished": runs.timestamp(), "seconds": round(seconds, 1),
            "joint_seconds": round(joint_seconds, 1), "notebook_seconds": round(seconds - joint_seconds, 1),
            "experiment": experiment.source, "relations": relations, "variants": variants, "seeds": seeds,
            "params": params, "workers": workers, "joint": joint, "cpus": os.cpu_count(), "device": _device(),
            "runs": {"done": len(result.done), "skipped": len(result.skipped), "failed": len(result.failed)},
            "git": runs.git_state()})
    print(f"{len(result.done)} run, {len(result.skipped)} skipped, {len(result.failed)} failed in {seconds / 60:.1f} min",
          flush=True)
    for name, error in result.failed.items():
        print(f"  FAILED {name}: {headline(error)} (see {Path(runs_root) / name / 'failed.json'})", flush=True)
    return result


BATCH_LOG = "batches.jsonl"


def log_batch(runs_root: str | Path, entry: Mapping[str, Any]) -> Path:
    """Append one invocation's line to ``<runs_root>/batches.jsonl``: when, how long (the joint phase
    and the notebooks apart), what, where (workers, CPUs, device) and with what outcome. A batch run
    in several invocations (seed by seed, or resumed) has one line each; ``invrev collect`` keeps
    them with the record."""
    path = Path(runs_root) / BATCH_LOG
    lines = path.read_text().splitlines() if path.is_file() else []
    return runs.atomic_write_text(path, "\n".join([*lines, json.dumps(entry, sort_keys=True)]) + "\n")


def read_batch_log(runs_root: str | Path) -> list[dict]:
    path = Path(runs_root) / BATCH_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def headline(error: str) -> str:
    """One line for a failure: its first line, and the first item when that line only announces a
    list (``DataError: 1 problem with the exemplar data:`` would drop the file's name)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        more = f" (+{len(lines) - 2} more)" if len(lines) > 2 else ""
        return f"{lines[0]} {lines[1]}{more}"
    return lines[0] if lines else error


def _prepare_jointly(pool: Pool, todo: list[Job], k: int) -> None:
    """Train and evaluate the runs that still need it in groups of up to ``k`` of one relation, one
    process per group: the model loads once, the group's runs train together (one shared model, K
    sets of vectors), then each is evaluated with the loaded model. The notebooks find them done."""
    from invrev.experiments import evaluated

    pending = sorted((j for j in todo if not (runs.is_complete(j.folder, j.config_json) and evaluated(j))),
                     key=lambda j: (j.relation, j.seed))
    by_relation: dict[str, list[Job]] = {}
    for job in pending:
        by_relation.setdefault(job.relation, []).append(job)
    groups = [jobs[i:i + k] for jobs in by_relation.values() for i in range(0, len(jobs), k)]
    tasks = {", ".join(j.name for j in g): ([(j.name, j.config_json, str(j.folder), j.params) for j in g],) for g in groups}
    for names, (error, train_s, eval_s) in pool.run(_prepare_group, tasks):
        status = f"FAILED ({headline(error)}); their notebooks will retry" if error else "trained and evaluated"
        print(f"joint group [{names}]: {status} (training {train_s:.1f} s, evaluation {eval_s:.1f} s)", flush=True)


def _prepare_group(members: list[tuple[str, str, str, dict]]) -> tuple[str | None, float, float]:
    """Train the group's unfinished runs together, then evaluate each run whose evaluation is missing
    or stale, exactly as the run notebook would. Returns (error, training s, evaluation s)."""
    from invrev import evaluate, models, trainer
    from invrev.experiments import eval_settings

    models.quiet_loading()
    train_s = eval_s = 0.0
    try:
        start = time.perf_counter()
        configs = [TrainConfig.from_params(json.loads(c)) for _, c, _, _ in members]
        folders = [Path(f) for _, _, f, _ in members]
        components = evaluate.components_for_inference(configs[0].model, configs[0].revision)
        todo = [i for i, (_, c, _, _) in enumerate(members) if not runs.is_complete(folders[i], c)]
        if todo:
            trainer.train_many([configs[i] for i in todo], [folders[i] for i in todo], components=components,
                               resume=True, progress=False)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        for (_, _, _, params), folder in zip(members, folders):
            settings = eval_settings(params)
            if evaluate.recorded(folder / "eval", folder, model=params["model"], **settings) is None:
                evaluate.evaluate(params["model"], run_folder=folder, out=folder / "eval", components=components, **settings)
        eval_s = time.perf_counter() - start
        return None, train_s, eval_s
    except Exception as err:  # a batch keeps going: the runs' notebooks retry and record the failure
        return f"{type(err).__name__}: {err}", train_s, eval_s


def _run_notebook(notebook: str, job: Job) -> tuple[str | None, float, str]:
    """Execute the run notebook for one job; record ``batch.json`` or ``failed.json`` in its folder."""
    job.folder.mkdir(parents=True, exist_ok=True)
    failed = job.folder / "failed.json"
    start = time.perf_counter()
    try:
        execute(notebook, job.folder / "run.ipynb", job.params)
    except Exception as err:  # a batch keeps going past a failed run
        seconds = time.perf_counter() - start
        error = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
        runs.atomic_write_json(failed, {"error": error, "seconds": round(seconds, 2), "notebook": "run.ipynb",
                                        "traceback": traceback.format_exc(), "finished": runs.timestamp()})
        return error, seconds, ""
    seconds = time.perf_counter() - start
    failed.unlink(missing_ok=True)
    runs.atomic_write_json(job.folder / "batch.json", {
        "seconds": round(seconds, 2), "notebook": runs.repo_relative(notebook), "parameters": job.params,
        "command": job.command, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "finished": runs.timestamp()})
    s = json.loads((job.folder / "eval" / "metrics.json").read_text())["summary"]
    return None, seconds, f"entity {s['entity_accuracy']:.2f}, relation {s['relation_accuracy']:.2f}"
