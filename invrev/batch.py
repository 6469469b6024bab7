"""Run a planned experiment through the run notebook on Dask: skip what is done, keep going past failures.

:func:`run_batch` plans first (``invrev.experiments``: nothing runs unless every run checks out),
then submits one task per run to Dask (``invrev.cluster``: a LocalCluster on this machine, or a
running cluster), which executes ``notebooks/10_run.ipynb`` with papermill into
``<runs>/<relation>/<variant>/seed<k>/run.ipynb`` under the run's claim (``invrev.tasks``). A run
whose training is complete with the same config and whose evaluation matches the parameters is
skipped; a failing run leaves ``failed.json`` and the batch goes on, then names the failures and the
CLI exits non-zero. A run another batch or worker holds is submitted again after the others, until
its holder has finished it (then it counts as skipped) or has died (then this batch takes it over
and resumes it). A task whose worker dies is run again by Dask on another worker. ``joint=K`` first
trains K runs at a time in one task with :func:`invrev.trainer.train_many` (one shared model, K sets
of vectors); the notebooks then find them trained and only evaluate. :func:`invrev.record.collect`
copies the compact record of every run into ``results/latest`` and executes the results notebook there.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from invrev import cluster, runs, tasks
from invrev.experiments import BatchError, Experiment, Job, already_run, evaluated, load_experiment, plan
from invrev.notebooks import RUN_NOTEBOOK
from invrev.runs import repo_path


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_batch(experiments: str | Path | Mapping | Experiment, runs_root: str | Path = "runs", workers: int | None = None,
              joint: int = 0, notebook: str | Path = RUN_NOTEBOOK, *, scheduler: str | None = None,
              relations: Sequence[str] | None = None, variants: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, dry_run: bool = False, dashboard: str = ":8787",
              **params: Any) -> BatchResult:
    """Run relation × variant × seed through ``notebook``; ``params`` override the experiment's.

    Without ``scheduler``, a LocalCluster of ``workers`` processes (default one per GPU, else one)
    runs notebooks side by side, each worker seeing one GPU where there are several, and serves
    Dask's dashboard at ``dashboard``; with it, the Dask cluster at that address does, its workers
    sharing the runs folder. Prints one line per run and returns what was done, skipped and failed.
    """
    if workers is not None and workers < 1:
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
    if not todo:
        print(f"0 run, {len(result.skipped)} skipped, 0 failed: nothing to do", flush=True)
        return result
    path = str(repo_path(notebook))
    started, start = runs.timestamp(), time.perf_counter()
    joint_seconds = 0.0
    with cluster.connect(scheduler, workers, dashboard) as client:
        print(cluster.describe(client), flush=True)
        speed = cluster.core_speed(client)
        if joint > 0:
            _prepare_jointly(client, todo, joint)
            joint_seconds = time.perf_counter() - start
        for job, outcome in _run_notebooks(client, path, todo):
            count = len(result.done) + len(result.skipped) + len(result.failed) + 1
            if outcome.status == "failed":
                result.failed[job.name] = outcome.detail
                print(f"[{count}/{len(jobs)}] {job.name}: FAILED after {outcome.seconds:.1f} s: {headline(outcome.detail)}", flush=True)
            elif outcome.status == "skipped":
                result.skipped.append(job.name)
                print(f"[{count}/{len(jobs)}] {job.name}: skipped ({outcome.detail})", flush=True)
            else:
                result.done.append(job.name)
                print(f"[{count}/{len(jobs)}] {job.name}: done in {outcome.seconds:.1f} s ({outcome.detail})", flush=True)
        where = {"workers": len(client.nthreads()), "cpus": cluster.cpus(client), "matmul_gflops": speed}
    seconds = time.perf_counter() - start
    log_batch(runs_root, {
        "started": started, "finished": runs.timestamp(), "seconds": round(seconds, 1),
        "joint_seconds": round(joint_seconds, 1), "notebook_seconds": round(seconds - joint_seconds, 1),
        "experiment": experiment.source, "relations": relations, "variants": variants, "seeds": seeds,
        "params": params, **where, "joint": joint, "scheduler": scheduler,
        "device": _device(scheduler, [j for j in todo if j.name in result.done]),
        "runs": {"done": len(result.done), "skipped": len(result.skipped), "failed": len(result.failed)},
        "git": runs.git_state()})
    print(f"{len(result.done)} run, {len(result.skipped)} skipped, {len(result.failed)} failed in {seconds / 60:.1f} min",
          flush=True)
    for name, error in result.failed.items():
        print(f"  FAILED {name}: {headline(error)} (see {Path(runs_root) / name / 'failed.json'})", flush=True)
    return result


def _run_notebooks(client, notebook: str, todo: list[Job]) -> Iterator[tuple[Job, tasks.Outcome]]:
    """Yield each job with its outcome as its task finishes. A run held elsewhere is submitted again,
    behind the others (Dask runs earlier submissions first), and named once while it waits."""
    from distributed import as_completed

    futures = {_submit(client, tasks.run_notebook, job.name, notebook, job): job for job in todo}
    waiting = set()
    queue = as_completed(futures)
    for future in queue:
        job = futures.pop(future)
        outcome = _outcome(future, job)
        if outcome.status == "held":
            if job.name not in waiting:
                waiting.add(job.name)
                print(f"  {job.name}: held by {outcome.detail}; coming back to it", flush=True)
            again = _submit(client, tasks.run_notebook, job.name, notebook, job)
            futures[again] = job
            queue.add(again)
        else:
            yield job, outcome


def _outcome(future, job: Job) -> tasks.Outcome:
    """The task's outcome; a task that raised past its retries, or whose workers all died running it
    (Dask's ``KilledWorker``), failed: recorded in the run's ``failed.json`` like a failed notebook."""
    try:
        return future.result()
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        runs.atomic_write_json(job.folder / "failed.json", {"error": error, "notebook": "run.ipynb", "finished": runs.timestamp()})
        return tasks.Outcome("failed", 0.0, error)


def _submit(client, fn: Callable, name: str, *args):
    """One task: retried twice if it raises outside the notebook (a notebook's own failure is its
    outcome), and named after the run in the dashboard; never merged with an earlier submission."""
    key = f"{fn.__name__}-{name.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
    return client.submit(fn, *args, key=key, retries=2, pure=False)


def _prepare_jointly(client, todo: list[Job], k: int) -> None:
    """Train and evaluate the runs that still need it in groups of up to ``k`` of one relation, one
    task per group: the model loads once, the group's runs train together (one shared model, K
    sets of vectors), then each is evaluated with the loaded model. The notebooks find them done."""
    from distributed import as_completed

    pending = sorted((j for j in todo if not (runs.is_complete(j.folder, j.config_json) and evaluated(j))),
                     key=lambda j: (j.relation, j.seed))
    by_relation: dict[str, list[Job]] = {}
    for job in pending:
        by_relation.setdefault(job.relation, []).append(job)
    groups = [jobs[i:i + k] for jobs in by_relation.values() for i in range(0, len(jobs), k)]
    futures = {_submit(client, tasks.prepare_group, g[0].name, [(j.name, j.config_json, str(j.folder), j.params) for j in g]):
               ", ".join(j.name for j in g) for g in groups}
    for future in as_completed(futures):
        try:
            error, train_s, eval_s, held = future.result()
        except Exception as err:  # its workers died, or it raised past its retries: the notebooks retry
            error, train_s, eval_s, held = f"{type(err).__name__}: {err}", 0.0, 0.0, []
        status = f"FAILED ({headline(error)}); their notebooks will retry" if error else "trained and evaluated"
        if held:
            status += f"; {', '.join(held)} held elsewhere, left to their notebooks"
        print(f"joint group [{futures[future]}]: {status} (training {train_s:.1f} s, evaluation {eval_s:.1f} s)", flush=True)


BATCH_LOG = "batches.jsonl"


def log_batch(runs_root: str | Path, entry: Mapping[str, Any]) -> Path:
    """Append one invocation's line to ``<runs_root>/batches.jsonl``: when, how long (the joint phase
    and the notebooks apart), what, where (workers, CPUs, the workers' matmul speed, device) and
    with what outcome. A batch run in several invocations (seed by seed, or resumed) has one line
    each; ``invrev collect`` keeps them with the record. Two batches on one runs folder may finish
    together: each appends under a lease (an atomic create, taken over from a dead holder; renewed
    while held, though an append takes milliseconds)."""
    import filelock

    path = Path(runs_root) / BATCH_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.SoftFileLease(path.parent / f".{BATCH_LOG}.lock", lease_duration=60):
        lines = path.read_text().splitlines() if path.is_file() else []
        return runs.atomic_write_text(path, "\n".join([*lines, json.dumps(entry, sort_keys=True)]) + "\n")


def read_batch_log(runs_root: str | Path) -> list[dict]:
    path = Path(runs_root) / BATCH_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _device(scheduler: str | None, done: list[Job]) -> str:
    """Where the runs ran: this machine's device for the local cluster; on a running cluster, whose
    machines this one may not resemble, the devices the finished runs' manifests name."""
    if scheduler is None:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    named = {json.loads((j.folder / "manifest.json").read_text()).get("device") for j in done if (j.folder / "manifest.json").is_file()}
    return ", ".join(sorted(d for d in named if d)) or "unknown"


def headline(error: str) -> str:
    """One line for a failure: its first line, and the first item when that line only announces a
    list (``DataError: 1 problem with the exemplar data:`` would drop the file's name)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        more = f" (+{len(lines) - 2} more)" if len(lines) > 2 else ""
        return f"{lines[0]} {lines[1]}{more}"
    return lines[0] if lines else error
