"""A process pool for the batch: ``workers`` processes, each pinned to one GPU where there are several."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Callable, Iterator


class Pool:
    """``workers`` processes, each pinned to one GPU when there are several; in-process for one."""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers={workers} must be at least 1")
        self.workers = workers
        self.executor = None

    def __enter__(self) -> "Pool":
        if self.workers > 1:
            gpus = _gpus()
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            for i in range(self.workers):
                queue.put(gpus[i % len(gpus)] if len(gpus) > 1 else None)
            self.executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_init_worker, initargs=(queue, self.workers))
        return self

    def run(self, fn: Callable, tasks: dict) -> Iterator[tuple]:
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
