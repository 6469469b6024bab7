"""Where a batch's tasks run: a Dask LocalCluster on this machine, or a running Dask cluster.

Locally, each worker is one process running one task at a time (a notebook, or a joint group), as
the process pool before it did: ``workers`` processes, one per GPU by default, each pinned to one
GPU (``CUDA_VISIBLE_DEVICES``) where there are several. A running cluster (``dask scheduler`` and
``dask worker`` processes, or ``dask_jobqueue``'s) brings its own workers, which must see the runs
folder, the model and this repository at the same paths as this machine.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import dask
from distributed import Client, LocalCluster, WorkerPlugin


class ClusterError(ValueError):
    """The cluster cannot be started or reached; nothing has run."""


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, dashboard: str = ":8787") -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a LocalCluster of ``workers`` processes (default:
    one per GPU, else one) serving its dashboard at ``dashboard`` (another free port when that one is
    taken; ``":0"``: any). Closing it stops the local cluster, whose workers' notebook kernels then
    exit with them."""
    if scheduler is not None:
        if workers is not None:
            raise ClusterError(f"--workers {workers} is for the local cluster; the cluster at {scheduler} has the workers "
                               "it was started with (start more `dask worker` processes to add some)")
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as err:
            raise ClusterError(f"no Dask scheduler answers at {scheduler} ({err}); start one with `dask scheduler` "
                               "and give the address it prints") from None
        with client:
            yield client
        return
    gpus = visible_gpus()
    workers = workers if workers is not None else max(1, len(gpus))
    if workers < 1:
        raise ClusterError(f"workers={workers} must be at least 1")
    # One thread per worker: a worker runs one notebook at a time. No memory limit: a joint group's
    # model lives in the worker, and the nanny would otherwise kill it as a leak. Torch's threads
    # share the cores out among the workers (Dask would give each worker one). No sampling
    # profiler: it cost each worker 2.5% of a core, with nothing to profile but a wait on papermill.
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                         dashboard_address=dashboard, env=env) as cluster, Client(cluster) as client:
        if len(gpus) > 1:
            client.register_plugin(PinGPU(gpus))
        yield client


class PinGPU(WorkerPlugin):
    """Worker ``i`` of the local cluster sees GPU ``i mod n`` alone; a worker the nanny restarts keeps
    its name, so its GPU. Set before the worker or the notebook kernels it starts touch CUDA."""

    def __init__(self, gpus: list[str]):
        self.gpus = gpus

    def setup(self, worker) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus[int(worker.name) % len(self.gpus)]


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use: ``CUDA_VISIBLE_DEVICES`` when set, else every device torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def describe(client: Client) -> str:
    """One line: how many workers, where, and the dashboard's address."""
    services = client.scheduler_info(n_workers=0).get("services", {})
    where = "a local cluster" if isinstance(client.cluster, LocalCluster) else f"the cluster at {client.scheduler.address}"
    dashboard = f", dashboard {client.dashboard_link}" if "dashboard" in services else ""
    n = len(client.nthreads())
    return f"Dask: {n} worker{'s' if n != 1 else ''} on {where}{dashboard}"


def matmul_gflops(n: int = 512, reps: int = 4, rounds: int = 5) -> float:
    """One core's fp32 matrix speed in GFLOP/s: the best of ``rounds`` rounds of ``reps`` ``n``³
    matmuls on one thread (the best, so that a moment's contention does not read as a slow machine)."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(rounds):
            tick = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            best = min(best, time.perf_counter() - tick)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 * reps / best / 1e9


def core_speed(client: Client) -> float:
    """The workers' median one-core fp32 matmul speed (GFLOP/s), all measured at once.

    Logged with each batch, so that wall times from different machines or days can be compared:
    two batches of the same code are as fast as their machines, which this reads in well under a second.
    """
    speeds = sorted(client.run(matmul_gflops).values())
    return round(speeds[len(speeds) // 2], 1)


def cpus(client: Client) -> int:
    """The CPU cores of the machines the workers run on, each machine counted once."""
    per_host = {address.rsplit(":", 1)[0]: count for address, count in client.run(os.cpu_count).items()}
    return sum(per_host.values())
