"""Executing notebooks with papermill: one call for every notebook the project runs, and the smoke
run of all of them with tiny parameters (``invrev notebooks``, ``make notebooks``, the tests)."""

from __future__ import annotations

import ast
import functools
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from invrev.models import REPO_ROOT
from invrev.paths import RUN_NOTEBOOK  # noqa: F401  (re-exported)
from invrev.runs import repo_path, repo_relative

KERNEL = "python3"
# Tiny parameters per notebook: what `invrev notebooks` (make notebooks) and the smoke tests run.
TINY = {
    "01_high_frequency_suppressor.ipynb": {"sigmas": [0.8]},
    "02_inverse_relation_text.ipynb": {"pairs": 2, "timesteps": [500], "gen_steps": 2},
    "03_pos_weighted_control_loss.ipynb": {"steps": 2, "every": 1, "batch_size": 2},
    "04_relation_focal_sampling.ipynb": {"draws": 2000},
    "05_world_pretrain.ipynb": {"steps": 2, "batch_size": 4, "resume": False},
    "10_run.ipynb": {"steps": 2, "batch_size": 2, "eval_prompts": 2, "eval_samples": 1, "eval_steps": 2},
    "20_results.ipynb": {},
    "30_explorer.ipynb": {"samples": 2, "steps": 2, "seeds": [0]},
}


def notebook_parameters(notebook: str | Path = RUN_NOTEBOOK) -> dict[str, Any]:
    """The parameters cell of ``notebook`` as {name: default value} ({} without one): the
    defaults' only source."""
    import papermill

    found = papermill.inspect_notebook(str(repo_path(notebook)))
    return {name: ast.literal_eval(p["default"]) for name, p in found.items()}


def execute(notebook: str | Path, out: str | Path, parameters: Mapping[str, Any]) -> None:
    """Execute ``notebook`` into ``out`` with papermill on the ``python3`` kernel, from the repository root.

    The kernel talks over IPC (Unix sockets) rather than TCP where the system has them: local only,
    and without ipykernel's "running over TCP without encryption" warning between the progress lines.
    Each kernel's sockets live under a folder of its own: jupyter_client's default names them
    ``kernel-ipc-<n>`` in the working folder, which two batch workers then share, so two kernels
    could bind the same socket ("Invalid Signature", "Kernel didn't respond").

    The kernel does not inherit ``MALLOC_TRIM_THRESHOLD_``, which Dask sets in its workers
    (``distributed.nanny.pre-spawn-environ``): it stops glibc from raising its mmap threshold, so
    torch maps and zeroes every large tensor afresh. A run notebook in a batch worker took three
    times the system time and 20-40% more wall time with it.
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

        def _ip_default(self) -> str:
            if self.transport != "ipc":
                return super()._ip_default()
            return os.path.join(_socket_folder(), uuid.uuid4().hex[:16])  # <folder>/<id>-<port> per channel

        async def _async_pre_start_kernel(self, **kw):
            env = dict(kw.pop("env", os.environ))
            env.pop("MALLOC_TRIM_THRESHOLD_", None)
            return await super()._async_pre_start_kernel(env=env, **kw)

    return LocalKernelManager


@functools.cache
def _socket_folder() -> str:
    """A private folder for this process's kernel sockets (short: Unix socket paths stop at 107 bytes)."""
    return tempfile.mkdtemp(prefix="invrev-kernels-")


def run_notebooks(out: str | Path = "outputs/notebooks", model: str | None = None) -> list[Path]:
    """Execute every notebook of ``notebooks/`` with :data:`TINY` parameters into ``out`` (the run,
    results and explorer notebooks share ``out/runs``; a notebook's own ``out`` folder is
    ``out/<its name without number>``, e.g. ``out/world_pretrain``); raises on the first failing notebook.
    Nothing is written outside ``out``."""
    out = Path(out).resolve()
    done = []
    for name, tiny in TINY.items():
        source = REPO_ROOT / "notebooks" / name
        known = notebook_parameters(source)
        params = {**tiny, **({"model": model} if model and "model" in known else {}),
                  **({"out": repo_relative(out / Path(name).stem.partition("_")[2])} if "out" in known else {}),
                  **({"runs_root": repo_relative(out / "runs")} if "runs_root" in known else {}),
                  **({"ratings_csv": repo_relative(out / "runs" / "ratings.csv")} if "ratings_csv" in known else {})}
        start = time.perf_counter()
        execute(source, out / name, params)
        print(f"{name}: executed in {time.perf_counter() - start:.1f} s -> {out / name}", flush=True)
        done.append(out / name)
    return done
