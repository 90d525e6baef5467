"""Independent trainings side by side: one job per CPU core, each at one intra-op thread.

A 2-core machine trains a small model faster as two one-thread processes than as one two-thread process: the
demo's matrices are small, so a second thread adds ~30 % to one training while a second process adds ~100 %
(``benchmarks/bench_parallel.py`` measures it). :func:`run_jobs` runs a list of independent jobs (the two demo
backbones of notebook 02, the heads and the loss ablation of notebook 03) that way:

- this process takes jobs itself and ``workers - 1`` spawned processes take the others, from one shared queue
  (a long job never holds back the short ones behind it);
- every job runs at **one** intra-op thread (here too, for the time of the job), so its result is the same
  bits whoever runs it and however many workers there are: ``workers`` changes the wall time, never a number
  (``tests/test_parallel.py`` checks it);
- the results come back in the order of ``jobs``; a job that fails raises here, naming the job;
- on a GPU (``device`` not ``"cpu"``) or with ``workers <= 1`` the jobs run here one after the other, the GPU
  being the parallel part.

The job function must be importable (a module-level function of cxrlib): spawned workers import it by name.
Its arguments and result travel pickled: numpy arrays, plain Python and configs. Not torch tensors or modules
(torch pickles them as shared-memory file descriptors, which a sandbox may refuse): convert them to numpy.
Scripts (not notebooks) that run jobs in workers need the usual ``if __name__ == "__main__":`` guard, as
for any spawned process.
The global random states (python, numpy, torch) of this process are restored after the jobs it ran, so code
after :func:`run_jobs` sees the same states whichever jobs ran here.
"""

from __future__ import annotations

import atexit
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

__all__ = ["run_jobs", "start_workers", "one_thread", "JobError", "shutdown_workers"]

_EXECUTORS: dict[int, ProcessPoolExecutor] = {}


class JobError(RuntimeError):
    """A job of :func:`run_jobs` failed; the message names the job (its index and description)."""


def _init_worker() -> None:
    """Spawned worker: one thread for OpenMP/MKL and torch before any kernel runs."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def _executor(n: int) -> ProcessPoolExecutor:
    """A pool of ``n`` spawned workers, kept for the life of this process (notebook 03 uses it twice)."""
    ex = _EXECUTORS.get(n)
    if ex is None:
        import multiprocessing

        ex = ProcessPoolExecutor(
            max_workers=n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )
        _EXECUTORS[n] = ex
    return ex


def _is_cpu(device: str) -> bool:
    from cxrlib.runtime import resolve_device

    return resolve_device(str(device)).type == "cpu"


def _import(modules: tuple[str, ...]) -> None:
    import importlib

    for m in modules:
        importlib.import_module(m)


def start_workers(workers: int, device: str = "cpu", modules: Sequence[str] = ()) -> None:
    """Start the ``workers - 1`` processes of :func:`run_jobs` now and have them import ``modules``, without
    waiting: a spawned worker spends seconds importing torch, time this process can spend on other work
    (notebook 03 starts them before its first training). Nothing happens off CPU or with ``workers <= 1``."""
    n_proc = int(workers) - 1
    if n_proc <= 0 or not _is_cpu(device):
        return
    pool = _executor(n_proc)
    for _ in range(n_proc):
        pool.submit(_import, tuple(modules))


def shutdown_workers() -> None:
    """Stop the spawned workers (they are also stopped when this process exits)."""
    while _EXECUTORS:
        _, ex = _EXECUTORS.popitem()
        ex.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_workers)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch at one intra-op thread inside the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _kept_rng() -> Iterator[None]:
    import numpy as np
    import torch

    py, npy, tch = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002
        torch.set_rng_state(tch)


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int = 1,
    device: str = "cpu",
    names: Sequence[str] | None = None,
    desc: str | None = None,
    progress: bool = True,
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, computed by this process and ``workers - 1`` spawned ones (module doc).

    Args:
        fn: a module-level function (spawned workers import it by its qualified name).
        jobs: argument tuples, one per job.
        workers: processes in all, this one included (``run.workers``); ``<= 1`` = all here, in order.
        device: ``"cpu"`` (or ``"auto"`` without a GPU) runs every job at one thread; any other device runs
            them here, one after the other, threads untouched.
        names: one short description per job, used in error messages (default: the index).
        desc: progress-bar label (one tick per finished job).
        progress: show the bar.

    Returns:
        The results, in the order of ``jobs``.

    Raises:
        JobError: a job raised; the message names it and the original error is chained.
    """
    from tqdm.auto import tqdm

    jobs = list(jobs)
    n = len(jobs)
    names = list(names) if names is not None else [f"job {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} jobs")
    results: list[Any] = [None] * n
    bar = tqdm(total=n, desc=desc, disable=not progress or n == 0)

    def here(i: int) -> None:
        try:
            results[i] = fn(*jobs[i])
        except Exception as exc:
            raise JobError(f"{names[i]} failed: {type(exc).__name__}: {exc}") from exc
        bar.update()

    cpu = _is_cpu(device)
    n_proc = min(int(workers), n) - 1 if cpu else 0
    if n_proc <= 0:
        with _kept_rng(), one_thread() if cpu else _nothing():
            for i in range(n):
                here(i)
        bar.close()
        return results

    pool = _executor(n_proc)
    lock = threading.Lock()
    queue = deque(range(n))
    futures: dict[Future, int] = {}

    def take() -> int | None:
        with lock:
            return queue.popleft() if queue else None

    def submit_next(_done: Future | None = None) -> None:
        if _done is not None and (_done.cancelled() or _done.exception() is not None):
            return  # a failure stops the feeding; it is raised below
        i = take()
        if i is not None:
            fut = pool.submit(fn, *jobs[i])
            with lock:
                futures[fut] = i
            fut.add_done_callback(submit_next)

    for _ in range(n_proc):
        submit_next()
    try:
        with _kept_rng(), one_thread():
            while (i := take()) is not None:
                here(i)
        counted: set[Future] = set()
        while True:
            with lock:
                open_ = [f for f in futures if not f.done()]
                finished = [f for f in futures if f.done() and f not in counted]
            for f in finished:
                counted.add(f)
                i = futures[f]
                try:
                    results[i] = f.result()
                except Exception as exc:
                    raise JobError(f"{names[i]} failed in a worker: {type(exc).__name__}: {exc}") from exc
                bar.update()
            if not open_:
                with lock:
                    if not queue and all(f in counted for f in futures):
                        break
                continue
            wait(open_, return_when=FIRST_COMPLETED)
    except BaseException:
        with lock:
            queue.clear()
        for f in list(futures):
            f.cancel()
        raise
    finally:
        bar.close()
    return results


@contextmanager
def _nothing() -> Iterator[None]:
    yield
