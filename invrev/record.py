"""The compact record of a batch: read evaluated runs, and collect them into ``results/latest``.

:func:`load_runs` reads every evaluated run folder under a root (a runs root or a record) in the
paper's order; the results notebook and the book read the record through it. :func:`collect` copies
each run's small files into the record, merging with what an earlier collect left there: runs the
source also holds are replaced, runs it lacks are kept, so collecting a partial ``runs/`` (say, one
new seed on a fresh clone) adds to the record instead of shrinking it. Runs evaluated on a different
model are not mixed in; ``replace=True`` starts the record afresh. A person's ``ratings.csv`` is never
dropped.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from invrev import layout, runs
from invrev.config import VARIANTS
from invrev.experiments import load_experiment
from invrev.models import ModelError, sampling_settings
from invrev.runs import model_fingerprint
from invrev.notebooks import execute as execute_notebook
from invrev.world.scene import RELATIONS

RESULTS_NOTEBOOK = "notebooks/20_results.ipynb"
RECORD_GRID_PROMPTS = 4  # the record keeps the grid rows of a run's first prompts (the book's side-by-side figures)
class CollectError(ValueError):
    """The runs or the record cannot be collected as asked; nothing was written."""


RECORD = ("config.json", "manifest.json", "log.csv", "batch.json", "done.json", "eval/metrics.json", "eval/grid.png",
          "learned/r.safetensors", "learned/inv.safetensors")  # the learned tokens: the explorer and rating work on a clone


def load_runs(root: str | Path) -> list[dict]:
    """Every run folder under ``root`` that has an evaluation, in the paper's order.

    Each item: relation, variant, seed, folder, config, manifest, batch (how the batch ran it, or
    {}), summary and images (from ``eval/metrics.json``), grid and log (paths, or None).
    """
    found = []
    for metrics in sorted(Path(root).glob("*/*/seed*/eval/metrics.json")):
        folder = metrics.parent.parent
        data = json.loads(metrics.read_text())
        read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else {}  # noqa: E731
        found.append({
            "relation": folder.parent.parent.name, "variant": folder.parent.name, "seed": int(folder.name[4:]),
            "folder": folder, "config": read("config.json"), "manifest": read("manifest.json"), "batch": read("batch.json"),
            "summary": data["summary"], "images": data["images"],
            "grid": folder / "eval" / "grid.png" if (folder / "eval" / "grid.png").is_file() else None,
            "log": folder / "log.csv" if (folder / "log.csv").is_file() else None,
        })
    order = {name: i for i, name in enumerate([*RELATIONS, *VARIANTS])}
    return sorted(found, key=lambda r: (order.get(r["relation"], 99), order.get(r["variant"], 99), r["seed"]))


def device(name: str) -> str:
    """A manifest's device as the book shows it (manifests written before ``runs.device_name`` was
    fixed say "1 threads")."""
    return re.sub(r"\b1 threads\b", "1 thread", name)


@dataclass(frozen=True)
class SamplingStatus:
    """How a record's runs were sampled against what their model recommends now: the guidance they
    were drawn at, the model's own, and whether they were made on another model than the one in
    their model folder now (``stale``). The pages that show the record say what it means."""

    sampled: tuple[float, ...]
    recommended: tuple[float, ...]
    stale: bool

    @property
    def current(self) -> bool:
        """The record describes the model as it is, at its own sampling settings."""
        return not self.stale and (not self.sampled or set(self.sampled) == set(self.recommended))


def sampling_status(found: list[dict]) -> SamplingStatus:
    """:class:`SamplingStatus` of the runs ``found`` (:func:`load_runs`)."""
    recorded = sorted({r["summary"].get("guidance") for r in found} - {None})
    names = sorted({r["summary"].get("model") or r["config"].get("model") for r in found} - {None})
    try:
        recommended = sorted({sampling_settings(m)["guidance"] for m in names})
    except ModelError:
        recommended = []
    prints = {r["summary"].get("model_fingerprint") for r in found} - {None}
    stale = bool(prints) and prints != {model_fingerprint(m) for m in names}
    return SamplingStatus(tuple(recorded), tuple(recommended), stale)


@dataclass(frozen=True)
class Coverage:
    """Which runs of an experiment a record holds: ``held`` of ``planned``, from ``seeds``."""

    experiment: str
    held: int
    planned: int
    seeds: tuple[int, ...]

    @property
    def whole(self) -> bool:
        return self.held == self.planned


def coverage(found: list[dict], experiment: str | Path = "experiments/full.yaml") -> Coverage:
    """:class:`Coverage` of the runs ``found`` against ``experiment``."""
    full = load_experiment(experiment)
    planned = {(r, v, k) for r in full.relations for v in full.variants for k in full.seeds}
    held = {(r["relation"], r["variant"], r["seed"]) for r in found} & planned
    return Coverage(str(experiment), len(held), len(planned), tuple(sorted({k for _, _, k in held})))


def collect(runs_root: str | Path = "runs", dest: str | Path = "results/latest", *, replace: bool = False,
            execute: bool = True, results_notebook: str | Path = RESULTS_NOTEBOOK) -> Path:
    """Copy every evaluated run's compact record (and any ``ratings.csv``) from ``runs_root`` into
    ``dest`` (a grid keeps the rows of its first ``RECORD_GRID_PROMPTS`` prompts, which the book
    shows); then, with ``execute``, run the results notebook on it into ``dest/20_results.ipynb`` and
    keep one executed run notebook as ``dest/10_run.ipynb``: what the book shows on a fresh clone.

    Runs already in ``dest`` that ``runs_root`` lacks are kept unless ``replace``; if they were
    evaluated on another model than the new ones, nothing is written and the error says so. The
    new record is built beside ``dest`` and swapped in, so an interrupted collect leaves the old one.
    """
    src, dest = Path(runs_root), Path(dest)
    found = load_runs(src)
    if not found:
        raise CollectError(f"no evaluated runs under {src} (expected <relation>/<variant>/seed<k>/eval/metrics.json)")
    earlier = dest.is_dir() and any(dest.iterdir())
    if earlier and not (dest / "collected.json").is_file():
        raise CollectError(f"{dest} exists and was not written by collect; choose an empty or new folder")
    names = {_name(run, src) for run in found}
    kept = [run for run in load_runs(dest) if _name(run, dest) not in names] if earlier and not replace else []
    _check_one_model(found, kept, src, dest)

    staging = dest.with_name(f".{dest.name}.collecting")
    shutil.rmtree(staging, ignore_errors=True)
    for run in found:
        _copy_record(run, staging / _name(run, src))
    for run in kept:
        shutil.copytree(run["folder"], staging / _name(run, dest))
    if kept:
        print(f"kept {len(kept)} runs of the earlier record that {src} does not hold (collect --replace drops them)", flush=True)
    for ratings in sorted(dest.rglob("ratings.csv")) if earlier else []:  # made there by a person: keep, in both
        _keep_ratings(ratings, src / ratings.relative_to(dest))
    for ratings in sorted(src.rglob("ratings.csv")):
        (staging / ratings.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ratings, staging / ratings.relative_to(src))
    _keep_batch_log(src, dest if kept else None, staging)
    before = json.loads((dest / "collected.json").read_text()) if earlier else {}
    example = _example_run(found, src, staging, dest, before.get("example_run"), kept)
    if not execute and (dest / "20_results.ipynb").is_file():
        shutil.copy2(dest / "20_results.ipynb", staging / "20_results.ipynb")
        print(f"{dest / '20_results.ipynb'} still shows the earlier record: collect without --no-execute refreshes it",
              flush=True)
    merged = load_runs(staging)
    runs.atomic_write_json(staging / "collected.json", {
        "source": _source_name(src), "collected": runs.timestamp(), "git": runs.git_state(), "example_run": example,
        "new": sorted(names), "kept_from_earlier": sorted(_name(run, dest) for run in kept),
        "runs": [_name(run, staging) for run in merged]})
    if dest.exists():
        old = dest.with_name(f".{dest.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(dest)
    if execute:
        execute_notebook(runs.repo_path(results_notebook), dest / "20_results.ipynb", {"runs_root": runs.repo_relative(dest)})
    return dest


def _keep_batch_log(src: Path, earlier: Path | None, staging: Path) -> None:
    """The batch invocations that made the record (``batches.jsonl``): the source's, after the
    earlier record's when runs of it are kept; a line already there is not repeated."""
    from invrev.batch import BATCH_LOG, read_batch_log

    entries = (read_batch_log(earlier) if earlier else []) + read_batch_log(src)
    lines = list(dict.fromkeys(json.dumps(e, sort_keys=True) for e in entries))
    if lines:
        runs.atomic_write_text(staging / BATCH_LOG, "\n".join(lines) + "\n")


def _source_name(src: Path) -> str:
    """Where the runs came from, as the record may say it: relative to the repository, else the folder's name."""
    return runs.repo_relative(src) if src.resolve().is_relative_to(runs.REPO_ROOT) else src.resolve().name


def _example_run(found: list[dict], src: Path, staging: Path, dest: Path, earlier: str | None,
                 kept: list[dict]) -> str | None:
    """Copy the executed run notebook the book shows into ``staging/10_run.ipynb``; returns its run.

    An Inv-ReVersion run of the source first; else the earlier example, if its run is kept as it was;
    else any run of the source that has its notebook."""
    examples = [r for r in found if (r["folder"] / "run.ipynb").is_file()]
    examples.sort(key=lambda r: r["variant"] != "inv_reversion")
    keep_earlier = (dest / "10_run.ipynb").is_file() and earlier in {_name(run, dest) for run in kept}
    if examples and (examples[0]["variant"] == "inv_reversion" or not keep_earlier):
        shutil.copy2(examples[0]["folder"] / "run.ipynb", staging / "10_run.ipynb")
        without_machine_paths(staging / "10_run.ipynb")
        return _name(examples[0], src)
    if keep_earlier:
        shutil.copy2(dest / "10_run.ipynb", staging / "10_run.ipynb")
        return earlier
    return None


def without_machine_paths(notebook: Path) -> None:
    """Write an executed run notebook's absolute runs root as its last part (``runs``), and its
    papermill output path from there on.

    The batch gives papermill a runs root inside the repository relative to it; one outside it stays
    absolute, which the book would show as the folders of the machine the batch ran on (in the
    injected parameters and in printed run folders)."""
    text = notebook.read_text()
    for root in set(re.findall(r'"runs_root": "(/[^"]+)"', text)):  # papermill's record of the parameters
        text = text.replace(root, Path(root).name)
    for out in set(re.findall(r'"output_path": "(/[^"]+)"', text)):  # <root>/<relation>/<variant>/seed<k>/run.ipynb
        text = text.replace(out, Path(*Path(out).parts[-5:]).as_posix())
    notebook.write_text(text)


def _name(run: dict, root: Path) -> str:
    return run["folder"].relative_to(root).as_posix()


def _check_one_model(found: list[dict], kept: list[dict], src: Path, dest: Path) -> None:
    """Refuse to merge runs evaluated on different models (by ``model_fingerprint``, where recorded)."""
    new = {run["summary"].get("model_fingerprint") for run in found} - {None}
    for run in kept:
        old = run["summary"].get("model_fingerprint")
        if old is not None and new and old not in new:
            raise CollectError(
                f"{dest / _name(run, dest)} was evaluated on model {old}, the runs in {src} on {', '.join(sorted(new))}: "
                f"one record must not mix models. Collect with --replace to start {dest} afresh from {src} "
                f"(ratings.csv files are kept), or collect into another --dest")


def _keep_ratings(record: Path, source: Path) -> None:
    """Carry the rows of a ``ratings.csv`` in the record that the source's copy lacks into the source."""
    rows = record.read_text().splitlines(keepends=True)
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, source)
        print(f"kept {record} (not in {source.parent}) as {source}", flush=True)
        return
    have = source.read_text()
    lines = set(have.splitlines(keepends=True))
    missing = [row for row in rows[1:] if row not in lines]
    if missing:
        with source.open("a") as handle:
            handle.write(("" if have.endswith("\n") else "\n") + "".join(missing))
        print(f"kept {len(missing)} rows of {record} that {source} lacked (added to it)", flush=True)


def _copy_record(run: dict, out: Path) -> None:
    for name in RECORD:
        if (run["folder"] / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            if name == "eval/grid.png":
                _record_grid(run, out / name)
            else:
                shutil.copy2(run["folder"] / name, out / name)


def _record_grid(run: dict, dest: Path, prompts: int = RECORD_GRID_PROMPTS) -> None:
    """The rows of a run's ``eval/grid.png`` that hold its first ``prompts`` prompts: what the book
    shows, at a fraction of the bytes."""
    from PIL import Image

    layout.grid_rows(Image.open(run["grid"]), layout.samples_per_prompt(run["images"]), prompts).save(dest)
