"""Shared fixtures: one thread (oversubscribed threads made steps 200x slower here), tiny models;
and a check that the tests write nothing into the repository."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# Written by Python and pytest themselves, not by the tests.
NOT_OURS = ("__pycache__/", ".pytest_cache/")
_BEFORE = pytest.StashKey[set | None]()
_NEW = pytest.StashKey[list]()


def _untracked_and_ignored() -> set[str] | None:
    """Every untracked or ignored file of the repository (``git status --ignored -uall``), or None where
    the tests do not run from a git checkout (an unpacked sdist, no git): then nothing is checked."""
    if shutil.which("git") is None:
        return None
    found = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--ignored", "-uall", "-z", "--", ".",
                            ":(exclude).venv"], capture_output=True, text=True)
    if found.returncode != 0:
        return None
    entries = (entry for entry in found.stdout.split("\0") if entry[:2] in ("??", "!!"))
    return {entry[3:] for entry in entries if not any(part in entry for part in NOT_OURS)}


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = _untracked_and_ignored()


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when a test left a new file in the repository (outputs/, runs/, docs/, ...):
    tests write under tmp_path only. A file made by something else during the run reads the same."""
    before = session.config.stash.get(_BEFORE, None)
    after = _untracked_and_ignored() if before is not None else None
    session.config.stash[_NEW] = new = sorted(after - before) if after is not None else []
    if new:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    new = config.stash.get(_NEW, [])
    if new:
        terminalreporter.write_sep("=", "files written into the repository during the tests", red=True)
        for path in new:
            terminalreporter.write_line(path)


@pytest.fixture(scope="session", autouse=True)
def dask_scratch(tmp_path_factory):
    """Dask's worker folders (the batch runs on Dask) under pytest's temporary folder, in this process
    and in the ones the tests start."""
    import dask

    scratch = tmp_path_factory.mktemp("dask")
    with pytest.MonkeyPatch.context() as patch, dask.config.set({"temporary-directory": str(scratch)}):
        patch.setenv("DASK_TEMPORARY_DIRECTORY", str(scratch))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from invrev.testing import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from invrev.testing import write_tiny_exemplars

    return write_tiny_exemplars(tmp_path_factory.mktemp("data") / "inside")


@pytest.fixture()
def tiny_config(tiny_model, tiny_data):
    from invrev.config import TrainConfig

    def make(**overrides):
        params = dict(exemplars=str(tiny_data), model=str(tiny_model), revision="local", resolution=16,
                      steps=4, batch_size=2, grad_accum=1, checkpoint_every=2, hf_sigma=0.8)
        return TrainConfig.from_params({**params, **overrides})

    return make


@pytest.fixture()
def components(tiny_model):
    from invrev.models import load_components

    return load_components(str(tiny_model))
