"""The batch on Dask: two batches started at once on one runs folder train each run once; a local
cluster of two worker processes runs the smoke experiment, and a worker killed in the middle of a
run still lets every run finish, each with the record (metrics, learned tokens, training log) a
one-worker batch made; a claim is kept from others while its holder lives and taken over once it
has died.

Three runs of ``experiments/smoke.yaml`` at the run notebook's tiny parameters keep this under
three minutes on two cores.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import nbformat
import psutil
import pytest
import torch
from safetensors.torch import load_file

from invrev import batch, claim, notebooks, runs
from invrev.models import REPO_ROOT

SMOKE = REPO_ROOT / "experiments" / "smoke.yaml"
VARIANTS = ["sd", "textual_inversion", "inv_reversion"]  # no training, training, training with <inv>
TINY = notebooks.TINY["10_run.ipynb"]
NAMES = [f"hanging_from/{v}/seed0" for v in VARIANTS]


@pytest.fixture(scope="module")
def two_at_once(tmp_path_factory):
    """Two `invrev batch --workers 1` started at the same moment on one runs folder."""
    root = tmp_path_factory.mktemp("shared") / "runs"
    command = [sys.executable, "-m", "invrev.cli", "batch", "--experiments", str(SMOKE), "--runs", str(root),
               "--workers", "1", "--variants", *VARIANTS, *[a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
    started = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=tmp_path_factory.mktemp("cwd")) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in started]
    return root, [p.returncode for p in started], outputs


def test_two_batches_at_once_on_one_runs_folder_train_each_run_once(two_at_once):
    root, codes, outputs = two_at_once
    assert codes == [0, 0], outputs
    for name in NAMES:
        done = [out for out in outputs if f"{name}: done in" in out]
        skipped = [out for out in outputs if f"{name}: skipped" in out]
        assert len(done) == 1 and len(skipped) == 1, (name, outputs)
    logged = batch.read_batch_log(root)  # one line per batch; between them every run was done once
    assert len(logged) == 2 and sum(e["runs"]["done"] for e in logged) == len(NAMES)
    assert not list(root.rglob(claim.CLAIM)), "every claim was released"


def test_a_killed_worker_leaves_every_run_complete_and_as_one_worker_made_it(two_at_once, tmp_path, capsys):
    reference = two_at_once[0]  # each run there made by one `--workers 1` batch
    root = tmp_path / "runs"
    target = runs.run_dir(root, "hanging_from", "inv_reversion", 0)
    box = {}

    def run():
        try:
            box["result"] = batch.run_batch(SMOKE, root, workers=2, variants=VARIANTS, dashboard=":0", **TINY)
        except BaseException as err:  # reported by the assertion below
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    pid, kernels = _kill_holder_mid_run(target, thread)
    thread.join(timeout=600)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    result = box["result"]
    assert result.failed == {} and sorted(result.done) == sorted(NAMES)
    assert pid != os.getpid() and not psutil.pid_exists(pid)
    for kernel in kernels:  # the killed worker's notebook kernel exited with it (ipykernel's parent poller)
        try:
            assert kernel.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            pass
    out = capsys.readouterr().out
    assert "Dask: 2 workers on a local cluster, dashboard http" in out
    assert not list(root.rglob(claim.CLAIM)) and not list(root.rglob(".run.partial.ipynb"))
    for name in NAMES:
        mine, theirs = root / name, reference / name
        notebook = nbformat.read(mine / "run.ipynb", as_version=4)
        assert notebook.metadata.papermill.output_path == str(mine / "run.ipynb")
        assert (mine / "batch.json").is_file() and not (mine / "failed.json").exists()
        a, b = (json.loads((f / "eval" / "metrics.json").read_text()) for f in (mine, theirs))
        assert a["images"] == b["images"], name
        assert {k: v for k, v in a["summary"].items() if k != "trained"} == {k: v for k, v in b["summary"].items() if k != "trained"}
        assert sorted(p.name for p in (mine / "learned").glob("*")) == sorted(p.name for p in (theirs / "learned").glob("*"))
        for learned in (mine / "learned").glob("*.safetensors"):
            x, y = load_file(learned), load_file(theirs / "learned" / learned.name)
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f"{name}: {learned.name}"
        assert _losses(mine) == _losses(theirs), name
    assert (target / "learned" / "r.safetensors").is_file()  # the killed run trained something to compare


def _kill_holder_mid_run(folder, thread, timeout: float = 600):
    """SIGKILL the worker process that holds ``folder``'s claim once its training has begun and before
    its notebook is published; returns its pid and its notebook kernel's processes."""
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        log = folder / "log.csv"
        if log.is_file() and len(log.read_text().splitlines()) > 1 and not (folder / "run.ipynb").exists():
            record = claim.owner(folder)
            if record is not None:
                kernels = psutil.Process(record.pid).children(recursive=True)
                os.kill(record.pid, signal.SIGKILL)
                return record.pid, kernels
        time.sleep(0.05)
    raise AssertionError(f"the batch ended before {folder} was seen training")


def _losses(folder) -> list[dict]:
    with open(folder / "log.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


HOLD = "import sys, time; from invrev import claim; c = claim.take(sys.argv[1]); print('held', flush=True); time.sleep(600)"


def test_a_claim_is_kept_while_its_holder_lives_and_taken_over_once_it_died(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert claim.take(folder, wait=0.5) is None
        assert claim.owner(folder).pid == holder.pid and claim.holder(folder).startswith(f"pid {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait()
    lease = claim.take(folder)  # its holder died on this host: taken over at once
    assert lease is not None and claim.owner(folder).pid == os.getpid() and claim.lost(lease) is None
    lease.release()
    assert not (folder / claim.CLAIM).exists()


def test_a_claim_from_another_host_is_taken_over_once_its_lease_passed_unrenewed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / claim.CLAIM).write_text(f"filelock/2\npid=4242\nhost=node7.elsewhere\nmode=lease\ntoken={'ab' * 16}\nduration=1.0\n")
    assert claim.take(folder, lease=1.0) is None  # a pid on another host cannot be probed: alive until its lease passes
    assert claim.holder(folder, lease=1.0) == "pid 4242 on node7.elsewhere"
    time.sleep(1.2)
    lease = claim.take(folder, lease=1.0)
    assert lease is not None and claim.owner(folder, lease=1.0).pid == os.getpid()
    lease.release()
