"""Experiments as data, run through the run notebook: validate first, skip what is done, keep going.

An experiment file names relations × variants × seeds and the run notebook's parameters they share::

    relations: [inside, hug]    # quote "on": YAML 1.1 reads a bare on as true
    variants: [sd, inv_reversion]
    seeds: [0, 1, 2]
    params: {steps: 300}        # any parameter of notebooks/10_run.ipynb; the rest keep its defaults

:func:`run_batch` checks the whole plan (names, parameters, every run's config, the model and the
data) before anything runs, then executes ``notebooks/10_run.ipynb`` once per run with papermill into
``<runs>/<relation>/<variant>/seed<k>/run.ipynb``. A run whose training is complete with the same
config and whose evaluation matches the parameters is skipped; a failing run leaves ``failed.json``
and the batch goes on, then names the failures and the CLI exits non-zero. ``joint=K`` first trains
K runs at a time in one process with :func:`invrev.trainer.train_many` (one shared model, K sets of
vectors); the notebooks then find them trained and only evaluate. :func:`invrev.record.collect`
copies the compact record of every run into ``results/latest`` and executes the results notebook there.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import difflib
import functools
import json
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from invrev import models, runs
from invrev.config import ConfigError, TrainConfig, VARIANTS, make_config, parse_assignments
from invrev.models import REPO_ROOT

RUN_NOTEBOOK = "notebooks/10_run.ipynb"
PER_RUN = ("relation", "variant", "seed", "runs_root")  # set by the batch for each run, never by experiments
EXPERIMENT_KEYS = ("relations", "variants", "seeds", "params")
KERNEL = "python3"
# Tiny parameters per notebook: what `invrev notebooks` (make notebooks) and the smoke tests run.
TINY = {
    "01_high_frequency_suppressor.ipynb": {"sigmas": [0.8]},
    "02_inverse_relation_text.ipynb": {"pairs": 2, "timesteps": [500], "gen_steps": 2},
    "03_pos_weighted_control_loss.ipynb": {"steps": 2, "every": 1, "batch_size": 2},
    "04_relation_focal_sampling.ipynb": {"draws": 2000},
    "05_world_pretrain.ipynb": {"out": "outputs/notebooks/world_pretrain", "steps": 2, "batch_size": 4, "resume": False},
    "10_run.ipynb": {"steps": 2, "batch_size": 2, "eval_prompts": 2, "eval_samples": 1, "eval_steps": 2},
    "20_results.ipynb": {},
    "30_explorer.ipynb": {"samples": 2, "steps": 2, "seeds": [0]},
}


class BatchError(ValueError):
    """The experiment or its parameters are wrong; nothing has run."""


@dataclass(frozen=True)
class Experiment:
    relations: tuple[str, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    params: dict = field(default_factory=dict)
    source: str = "<mapping>"


@dataclass(frozen=True)
class Job:
    """One run: where it goes, the notebook parameters, and the config they make."""

    relation: str
    variant: str
    seed: int
    folder: Path
    params: dict
    config_json: str
    command: str = ""  # the CLI line that reruns just this run

    @property
    def name(self) -> str:
        return f"{self.relation}/{self.variant}/seed{self.seed}"


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


# Planning: everything is checked before anything runs ----------------------------------------------

def load_experiment(source: str | Path | Mapping) -> Experiment:
    """Read and check an experiment (a YAML file or a mapping): names, seeds, structure."""
    import yaml
    from invrev.world.scene import RELATIONS

    where = str(source) if not isinstance(source, Mapping) else "<mapping>"
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = repo_path(source)
        if not path.is_file():
            raise BatchError(f"experiment file {source} not found (see experiments/*.yaml)")
        data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise BatchError(f"{where}: expected a mapping with keys {list(EXPERIMENT_KEYS)}")
    for key in data:
        if key not in EXPERIMENT_KEYS:
            raise BatchError(f"{where}: unknown key {key!r}{_close(key, EXPERIMENT_KEYS)}")
    relations = _names(data.get("relations"), RELATIONS, "relation", where)
    variants = _names(data.get("variants"), VARIANTS, "variant", where)
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise BatchError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise BatchError(f"{where}: seeds {seeds} repeat a seed")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise BatchError(f"{where}: params must be a mapping of run-notebook parameters, got {params!r}")
    return Experiment(relations, variants, tuple(seeds), params, where)


def _names(value: Any, known: Mapping, kind: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise BatchError(f"{where}: {kind}s must be a non-empty list, choose from {list(known)}")
    for name in value:
        if isinstance(name, bool):
            raise BatchError(f"{where}: {kind} {name!r} is YAML 1.1 reading a bare on/off/yes/no as a boolean; quote it: \"on\"")
        if name not in known:
            raise BatchError(f"{where}: unknown {kind} {name!r}{_close(str(name), known)}; choose from {list(known)}")
    if len(set(value)) != len(value):
        raise BatchError(f"{where}: {kind}s {value} repeat a name")
    return tuple(value)


def _close(key: str, known) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def notebook_parameters(notebook: str | Path = RUN_NOTEBOOK) -> dict[str, Any]:
    """The parameters cell of ``notebook`` as {name: default value}: the defaults' only source."""
    import papermill

    found = papermill.inspect_notebook(str(repo_path(notebook)))
    if not found:
        raise BatchError(f"{notebook} has no cell tagged 'parameters'")
    return {name: ast.literal_eval(p["default"]) for name, p in found.items()}


def run_config(params: Mapping[str, Any]) -> TrainConfig:
    """The config the run notebook builds from its parameters (its config cell, line for line).

    ``lambda_verb = -1.0`` means the relation's own weight (``invrev.world.scene.RELATIONS``); the
    relation's words go into the config as the CLI does, so both write the same ``config.json``.
    """
    from invrev.world.scene import config_overrides

    world = config_overrides(params["relation"])
    if params["lambda_verb"] != -1.0:
        world["lambda_verb"] = params["lambda_verb"]
    return make_config(
        f"{params['data_root']}/{params['relation']}", params["variant"], recipe="world", **world,
        seed=params["seed"], model=params["model"], steps=params["steps"], batch_size=params["batch_size"],
        learning_rate=params["learning_rate"], hf_sigma=params["hf_sigma"],
    )


def plan(experiment: Experiment, runs_root: str | Path, notebook: str | Path = RUN_NOTEBOOK,
         overrides: Mapping[str, Any] | None = None, *, relations: Sequence[str] | None = None,
         variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Job]:
    """Every run of ``experiment`` (narrowed to ``relations``/``variants``/``seeds``), checked."""
    from invrev.models import ModelError, resolve_model

    defaults = notebook_parameters(notebook)
    shared = {**experiment.params, **(overrides or {})}
    for key, value in shared.items():
        if key in PER_RUN:
            raise BatchError(f"{key!r} is set per run by the batch; list it in the experiment instead")
        if key not in defaults:
            raise BatchError(f"{key!r} is not a parameter of {notebook}{_close(key, defaults)}; known: {sorted(defaults)}")
        _check_type(key, value, defaults[key])
    chosen = {}
    for kind, narrow, full in (("relation", relations, experiment.relations), ("variant", variants, experiment.variants),
                               ("seed", seeds, experiment.seeds)):
        extra = [x for x in (narrow or []) if x not in full]
        if extra:
            raise BatchError(f"{kind}s {extra} are not in {experiment.source} ({list(full)})")
        chosen[kind] = [x for x in full if not narrow or x in narrow]
    root = Path(runs_root).resolve()
    params = {**defaults, **shared, "runs_root": str(root)}
    rerun = f"invrev batch --experiments {experiment.source} --runs {runs_root}" + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
    try:
        resolve_model(params["model"])
    except ModelError as err:
        raise BatchError(str(err)) from err
    jobs = []
    for relation in chosen["relation"]:
        if not (repo_path(params["data_root"]) / relation / "text.json").is_file():
            raise BatchError(f"no exemplars at {params['data_root']}/{relation} (text.json missing)")
        for variant in chosen["variant"]:
            for seed in chosen["seed"]:
                p = {**params, "relation": relation, "variant": variant, "seed": seed}
                try:
                    config = run_config(p)
                except ConfigError as err:
                    raise BatchError(f"{relation}/{variant}/seed{seed}: {err}") from err
                command = f"{rerun} --relations {relation} --variants {variant} --seeds {seed}"
                jobs.append(Job(relation, variant, seed, runs.run_dir(root, relation, variant, seed), p, config.to_json(), command))
    now = runs.model_fingerprint(params["model"])
    stale = [j for j in jobs if j.folder.is_dir() and runs.trained_on(j.folder) not in (None, now)]
    if stale:
        raise BatchError(f"{len(stale)} run folder(s) under {root} were trained on another model than {params['model']!r} "
                         f"is now (e.g. {stale[0].folder}); keep them and give a new --runs root, or move them away")
    return jobs


def _check_type(key: str, value: Any, default: Any) -> None:
    """A parameter keeps its default's type (an int may stand for a float; a bool never for a number)."""
    if default is None:
        return
    if isinstance(value, bool) != isinstance(default, bool):
        ok = False
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise BatchError(f"parameter {key!r} must be {type(default).__name__} like its default {default!r}, got {value!r}")


def is_done(job: Job) -> bool:
    """Trained with this config, evaluated with these settings, and its notebook saved."""
    if not runs.is_complete(job.folder, job.config_json) or not (job.folder / "run.ipynb").is_file():
        return False
    metrics = job.folder / "eval" / "metrics.json"
    if not metrics.is_file():
        return False
    s, p = json.loads(metrics.read_text())["summary"], job.params
    own = models.sampling_settings(p["model"])  # what None (the model's own settings) stands for
    steps = own["steps"] if p["eval_steps"] is None else p["eval_steps"]
    guidance = own["guidance"] if p["eval_guidance"] is None else p["eval_guidance"]
    return (s.get("n") == p["eval_prompts"] * p["eval_samples"] and s.get("steps") == steps
            and s.get("guidance") == guidance and s.get("seed") == p["seed"] and s.get("model") == p["model"]
            and s.get("model_fingerprint") == runs.model_fingerprint(p["model"]))


# Running ---------------------------------------------------------------------------------------------

def run_batch(experiments: str | Path | Mapping | Experiment, runs_root: str | Path = "runs", workers: int = 1,
              joint: int = 0, notebook: str | Path = RUN_NOTEBOOK, *, relations: Sequence[str] | None = None,
              variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None, dry_run: bool = False,
              **params: Any) -> BatchResult:
    """Run relation × variant × seed through ``notebook``; ``params`` override the experiment's.

    ``workers`` processes run notebooks side by side; with several GPUs each worker sees one
    (``CUDA_VISIBLE_DEVICES``). Prints one line per run and returns what was done, skipped and failed.
    """
    experiment = experiments if isinstance(experiments, Experiment) else load_experiment(experiments)
    jobs = plan(experiment, runs_root, notebook, params, relations=relations, variants=variants, seeds=seeds)
    result = BatchResult()
    todo = []
    for job in jobs:
        if is_done(job):
            result.skipped.append(job.name)
            print(f"[{len(result.skipped)}/{len(jobs)}] {job.name}: skipped (complete, same config)", flush=True)
        else:
            todo.append(job)
    if dry_run:
        for job in todo:
            print(f"would run {job.name} -> {job.folder}", flush=True)
        return result
    path = str(repo_path(notebook))
    with _Pool(workers) as pool:
        if joint > 0:
            _train_jointly(pool, todo, joint)
        tasks = {job.name: (path, job) for job in todo}
        for count, (name, (error, seconds, line)) in enumerate(pool.run(_run_notebook, tasks), start=len(result.skipped) + 1):
            job = tasks[name][1]
            if error:
                result.failed[job.name] = error
                print(f"[{count}/{len(jobs)}] {job.name}: FAILED after {seconds:.1f} s: {headline(error)}", flush=True)
            else:
                result.done.append(job.name)
                print(f"[{count}/{len(jobs)}] {job.name}: done in {seconds:.1f} s ({line})", flush=True)
    print(f"{len(result.done)} run, {len(result.skipped)} skipped, {len(result.failed)} failed", flush=True)
    for name, error in result.failed.items():
        print(f"  FAILED {name}: {headline(error)} (see {Path(runs_root) / name / 'failed.json'})", flush=True)
    return result


def headline(error: str) -> str:
    """One line for a failure: its first line, and the first item when that line only announces a
    list (``DataError: 1 problem with the exemplar data:`` would drop the file's name)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        more = f" (+{len(lines) - 2} more)" if len(lines) > 2 else ""
        return f"{lines[0]} {lines[1]}{more}"
    return lines[0] if lines else error


def _train_jointly(pool, todo: list[Job], k: int) -> None:
    """Train the runs that still need training, ``k`` at a time, one shared model per group."""
    trainable = [j for j in todo if TrainConfig.from_params(json.loads(j.config_json)).train
                 and not runs.is_complete(j.folder, j.config_json)]
    groups = [trainable[i:i + k] for i in range(0, len(trainable), k)]
    tasks = {", ".join(j.name for j in g): ([j.config_json for j in g], [str(j.folder) for j in g]) for g in groups}
    for names, (error, seconds) in pool.run(_train_group, tasks):
        status = f"FAILED ({headline(error)}); their notebooks will retry" if error else "trained"
        print(f"joint training of {names}: {status} in {seconds:.1f} s", flush=True)


def _train_group(config_jsons: list[str], folders: list[str]) -> tuple[str | None, float]:
    import transformers

    from invrev import trainer

    transformers.utils.logging.disable_progress_bar()

    start = time.perf_counter()
    try:
        configs = [TrainConfig.from_params(json.loads(c)) for c in config_jsons]
        trainer.train_many(configs, folders, resume=True, progress=False)
        return None, time.perf_counter() - start
    except Exception as err:  # a batch keeps going: the runs' notebooks retry and record the failure
        return f"{type(err).__name__}: {err}", time.perf_counter() - start


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
        "seconds": round(seconds, 2), "notebook": str(Path(notebook).relative_to(REPO_ROOT)) if Path(notebook).is_relative_to(REPO_ROOT) else notebook,
        "parameters": job.params, "command": job.command, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "finished": runs.timestamp()})
    s = json.loads((job.folder / "eval" / "metrics.json").read_text())["summary"]
    return None, seconds, f"entity {s['entity_accuracy']:.2f}, relation {s['relation_accuracy']:.2f}"


def execute(notebook: str | Path, out: str | Path, parameters: Mapping[str, Any]) -> None:
    """Execute ``notebook`` into ``out`` with papermill on the ``python3`` kernel, from the repository root.

    The kernel talks over IPC (Unix sockets) rather than TCP where the system has them: local only,
    and without ipykernel's "running over TCP without encryption" warning between the progress lines.
    """
    import papermill

    papermill.execute_notebook(str(notebook), str(out), parameters=dict(parameters), kernel_name=KERNEL,
                               cwd=str(REPO_ROOT), progress_bar=False, kernel_manager_class=_kernel_manager())


@functools.cache
def _kernel_manager() -> type:
    from jupyter_client import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="tcp" if os.name == "nt" else "ipc", config=True)

    return LocalKernelManager


class _Pool:
    """``workers`` processes, each pinned to one GPU when there are several; in-process for one."""

    def __init__(self, workers: int):
        if workers < 1:
            raise BatchError(f"workers={workers} must be at least 1")
        self.workers = workers
        self.executor = None

    def __enter__(self):
        if self.workers > 1:
            gpus = _gpus()
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            for i in range(self.workers):
                queue.put(gpus[i % len(gpus)] if len(gpus) > 1 else None)
            self.executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker, initargs=(queue, self.workers))
        return self

    def run(self, fn, tasks: dict):
        """Yield ``(key, fn(*args))`` for ``tasks = {key: args}`` as each finishes."""
        if self.executor is None:
            for key, args in tasks.items():
                yield key, fn(*args)
            return
        futures = {self.executor.submit(fn, *args): key for key, args in tasks.items()}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=exc[0] is not None)


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _init_worker(queue, workers: int) -> None:
    import queue as queue_module

    import torch

    try:
        gpu = queue.get_nowait()
    except queue_module.Empty:
        gpu = None
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # inherited by the notebook kernels this worker starts
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


# Smoke run of every notebook ---------------------------------------------------------------------

def run_notebooks(out: str | Path = "outputs/notebooks", model: str | None = None) -> list[Path]:
    """Execute every notebook of ``notebooks/`` with :data:`TINY` parameters into ``out`` (the run,
    results and explorer notebooks share ``out/runs``); raises on the first failing notebook."""
    out = Path(out).resolve()
    done = []
    for name, tiny in TINY.items():
        source = REPO_ROOT / "notebooks" / name
        known = notebook_parameters(source)
        params = {**tiny, **({"model": model} if model and "model" in known else {}),
                  **({"runs_root": str(out / "runs")} if "runs_root" in known else {}),
                  **({"ratings_csv": str(out / "runs" / "ratings.csv")} if "ratings_csv" in known else {})}
        start = time.perf_counter()
        execute(source, out / name, params)
        print(f"{name}: executed in {time.perf_counter() - start:.1f} s -> {out / name}", flush=True)
        done.append(out / name)
    return done


def repo_path(path: str | Path) -> Path:
    """A path as given if it exists from here, else relative to the repository (as the notebooks run)."""
    path = Path(path)
    return path if path.exists() or path.is_absolute() else REPO_ROOT / path


# Command line: invrev batch / collect / notebooks ----------------------------------------------

def add_batch_commands(subparsers) -> None:
    """Add ``batch``, ``collect`` and ``notebooks`` to the ``invrev`` command line (called from ``invrev.cli``)."""
    p = subparsers.add_parser("batch", help="run experiments (relation x variant x seed) through the run notebook",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", required=True, help="experiment file, e.g. experiments/full.yaml or experiments/smoke.yaml")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--workers", type=int, default=1, help="notebooks run side by side; one GPU each where several (default 1)")
    p.add_argument("--joint", type=int, default=0, metavar="K", help="first train K runs at a time in one process (default 0: off)")
    p.add_argument("--notebook", default=RUN_NOTEBOOK, help=f"run notebook (default {RUN_NOTEBOOK})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-notebook parameter for every run, e.g. --set steps=100 (JSON values; repeatable)")
    p.add_argument("--relations", nargs="+", help="only these relations of the experiment")
    p.add_argument("--variants", nargs="+", help="only these variants of the experiment")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds of the experiment")
    p.add_argument("--dry-run", action="store_true", help="check the plan and list what would run; run nothing")
    p.set_defaults(func=_batch_command)

    p = subparsers.add_parser("collect", help="copy the compact record of every run into results/latest for the book")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--dest", default="results/latest", help="where the record goes (default: results/latest)")
    p.add_argument("--replace", action="store_true",
                   help="start the record afresh from --runs (default: keep the record's runs that --runs lacks)")
    p.add_argument("--no-execute", action="store_true", help="copy only; do not execute the results notebook")
    p.set_defaults(func=_collect_command)

    p = subparsers.add_parser("notebooks", help="execute every notebook with tiny parameters (a smoke run)")
    p.add_argument("--out", default="outputs/notebooks", help="where the executed notebooks go (default: outputs/notebooks)")
    p.add_argument("--model", help="model for the notebooks that take one (default: their own, the world model)")
    p.set_defaults(func=_notebooks_command)


def _batch_command(args: argparse.Namespace) -> int:
    overrides = parse_assignments(args.set)
    result = run_batch(args.experiments, args.runs, args.workers, args.joint, args.notebook, relations=args.relations,
                       variants=args.variants, seeds=args.seeds, dry_run=args.dry_run, **overrides)
    return 1 if result.failed else 0


def _collect_command(args: argparse.Namespace) -> int:
    from invrev import record

    dest = record.collect(args.runs, args.dest, replace=args.replace, execute=not args.no_execute)
    print(f"compact record of {len(record.load_runs(dest))} runs written to {dest}")
    return 0


def _notebooks_command(args: argparse.Namespace) -> int:
    run_notebooks(args.out, args.model)
    return 0
