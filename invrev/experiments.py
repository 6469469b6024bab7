"""Experiments as data: relations × variants × seeds, checked and planned before anything runs.

An experiment file names relations × variants × seeds and the run notebook's parameters they share::

    relations: [inside, hug]    # quote "on": YAML 1.1 reads a bare on as true
    variants: [sd, inv_reversion]
    seeds: [0, 1, 2]
    params: {steps: 300}        # any parameter of notebooks/10_run.ipynb; the rest keep its defaults

:func:`plan` checks the whole plan (names, parameters, every run's config, the model and the data)
and returns one :class:`Job` per run; :func:`run_config` is the one place a run's config is built
(``invrev train``, the batch and the run notebook all call it). ``invrev.batch`` runs the jobs.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from invrev import models, runs
from invrev.config import VARIANTS, ConfigError, TrainConfig, make_config
from invrev.notebooks import RUN_NOTEBOOK, notebook_parameters
from invrev.runs import repo_path, repo_relative
from invrev.world.scene import RELATIONS, config_overrides

PER_RUN = ("relation", "variant", "seed", "runs_root")  # set by the batch for each run, never by experiments
EXPERIMENT_KEYS = ("relations", "variants", "seeds", "params")
CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


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


def run_config(exemplars: str | Path, variant: str, *, model: str, seed: int, recipe: str | None = None,
               lambda_verb: float | None = None, **overrides: Any) -> TrainConfig:
    """The config of one run: ``invrev train``, the batch and the run notebook build it here.

    ``recipe`` None is the model's own (``invrev.json``: the world recipe for the world model and
    its copies, else SD 1.5's). On the world recipe a benchmark relation brings its words and its
    λ_verb (``invrev.world.scene.RELATIONS``); ``lambda_verb`` None keeps that (or the recipe's).
    ``overrides`` are config fields and win over both.
    """
    models.resolve_model(model)  # a missing model is named before anything reads it
    recipe = recipe or models.recipe_of(model)
    relation = config_overrides(Path(exemplars).name) if recipe == "world" else {}
    if lambda_verb is not None:
        relation["lambda_verb"] = lambda_verb
    return make_config(exemplars, variant, recipe, **{**relation, "model": model, "seed": seed, **overrides})


def notebook_run_config(params: Mapping[str, Any]) -> TrainConfig:
    """:func:`run_config` from the run notebook's parameters, as its config cell calls it: the
    exemplars from ``data_root`` and ``relation``, every parameter named like a config field
    (tests/test_notebooks.py executes that cell against this)."""
    fields = {k: v for k, v in params.items() if k in CONFIG_FIELDS}
    return run_config(f"{params['data_root']}/{params['relation']}", **fields)


def load_experiment(source: str | Path | Mapping) -> Experiment:
    """Read and check an experiment (a YAML file or a mapping): names, seeds, structure."""
    import yaml
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


def plan(experiment: Experiment, runs_root: str | Path, notebook: str | Path = RUN_NOTEBOOK,
         overrides: Mapping[str, Any] | None = None, *, relations: Sequence[str] | None = None,
         variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Job]:
    """Every run of ``experiment`` (narrowed to ``relations``/``variants``/``seeds``), checked."""
    defaults = notebook_parameters(notebook)
    if not defaults:
        raise BatchError(f"{notebook} has no cell tagged 'parameters'")
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
    # The notebook runs from the repository root: a root inside it is given relative, so executed
    # notebooks name no folder of the machine they ran on.
    params = {**defaults, **shared, "runs_root": repo_relative(root)}
    rerun = f"invrev batch --experiments {experiment.source} --runs {runs_root}" + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
    try:
        models.resolve_model(params["model"])
    except models.ModelError as err:
        raise BatchError(str(err)) from err
    jobs = []
    for relation in chosen["relation"]:
        if not (repo_path(params["data_root"]) / relation / "text.json").is_file():
            raise BatchError(f"no exemplars at {params['data_root']}/{relation} (text.json missing)")
        for variant in chosen["variant"]:
            for seed in chosen["seed"]:
                p = {**params, "relation": relation, "variant": variant, "seed": seed}
                try:
                    config = notebook_run_config(p)
                except ConfigError as err:
                    raise BatchError(f"{relation}/{variant}/seed{seed}: {err}") from err
                command = f"{rerun} --relations {relation} --variants {variant} --seeds {seed}"
                jobs.append(Job(relation, variant, seed, runs.run_dir(root, relation, variant, seed), p, config.to_json(), command))
    now = runs.model_fingerprint(params["model"])
    stale = [j for j in jobs if j.folder.is_dir() and runs.recorded_fingerprint(j.folder) not in (None, now)]
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


def already_run(job: Job) -> bool:
    """What the batch skips: trained with this config (:func:`invrev.runs.is_complete`), evaluated
    with these settings of that training on this model (:func:`invrev.evaluate.recorded`), and its
    notebook saved by a run that did not fail (a failed notebook is saved too, beside ``failed.json``)."""
    if (not runs.is_complete(job.folder, job.config_json) or not (job.folder / "run.ipynb").is_file()
            or (job.folder / "failed.json").is_file()):
        return False
    return evaluated(job)


def evaluated(job: Job) -> bool:
    """The run's held-out evaluation is in its folder, made with the job's settings."""
    from invrev import evaluate

    return evaluate.recorded(job.folder / "eval", job.folder, model=job.params["model"], **eval_settings(job.params)) is not None


def eval_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The run notebook's parameters as :func:`invrev.evaluate.evaluate` takes them (model and folders apart)."""
    return {"relation": params["relation"], "variant": params["variant"], "seed": params["seed"],
            "prompts": params["eval_prompts"], "samples": params["eval_samples"], "steps": params["eval_steps"],
            "guidance": params["eval_guidance"]}
