"""Independent trainings side by side: one job per CPU core, each at one intra-op thread.

On a 2-core machine two one-thread processes train the demo's small models faster than one two-thread process
(about 1.3x for the projector heads and for the demo backbones, ``benchmarks/bench_parallel.py``), and, more
often, the second core is idle while a notebook does single-threaded work (imports, figures, a one-thread
training): jobs started early (:func:`start_jobs`) use it. :func:`run_jobs` runs a list of independent jobs
(the two demo backbones of notebook 02, the heads and the loss ablation of notebook 03, the 2-D maps of
notebook 04) that way:

- this process takes jobs itself and ``workers - 1`` spawned processes take the others, from one shared queue
  (a long job never holds back the short ones behind it): this process from the front, the workers from the
  back, so the first job, which should be the longest, never waits for a worker to start;
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
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from typing import Any

__all__ = ["run_jobs", "start_jobs", "Jobs", "start_workers", "one_thread", "JobError", "shutdown_workers"]

_EXECUTORS: dict[int, ProcessPoolExecutor] = {}


class JobError(RuntimeError):
    """A job of :func:`run_jobs` failed; the message names the job (its index and description)."""


def _init_worker() -> None:
    """Spawned worker: one thread for every pool (OpenMP and so torch, MKL, OpenBLAS, numba), read by each
    library when it loads; nothing is imported here, so a job that needs no torch does not wait for it."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"


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


def one_thread():
    """torch at one intra-op thread inside the block, restored after it (:func:`cxrlib.runtime.torch_threads`)."""
    from cxrlib.runtime import torch_threads

    return torch_threads(1)


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


class Jobs:
    """A batch of independent jobs: :func:`start_jobs` hands the first ones to the worker processes and
    returns at once; :meth:`result` has this process take what is left, then returns every result in the order
    of the jobs. Between the two, this process is free for other work while the workers compute (notebook 03
    starts its loss ablation before its main training and collects it at the end)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        jobs: Sequence[tuple],
        workers: int,
        device: str,
        names: Sequence[str] | None,
        desc: str | None,
        progress: bool,
    ) -> None:
        self.fn, self.jobs = fn, list(jobs)
        n = len(self.jobs)
        self.names = list(names) if names is not None else [f"job {i}" for i in range(n)]
        if len(self.names) != n:
            raise ValueError(f"names has {len(self.names)} entries for {n} jobs")
        self.cpu = _is_cpu(device)
        self.n_proc = min(int(workers), n) - 1 if self.cpu else 0
        self.desc, self.progress = desc, progress
        self.results: list[Any] = [None] * n
        self._lock = threading.Lock()
        self._queue = deque(range(n))
        self._futures: dict[Future, int] = {}
        self._pool = _executor(self.n_proc) if self.n_proc > 0 else None
        self._collected = False
        for _ in range(max(self.n_proc, 0)):
            self._submit_next()

    def _take(self, last: bool = False) -> int | None:
        with self._lock:
            if not self._queue:
                return None
            return self._queue.pop() if last else self._queue.popleft()

    def _submit_next(self, done: Future | None = None) -> None:
        if done is not None and (done.cancelled() or done.exception() is not None):
            return  # a failure stops the feeding; result() raises it
        # workers take jobs from the end of the list, this process from the start: the first job (put the
        # longest first) never waits for a worker to start
        i = self._take(last=True)
        if i is not None:
            assert self._pool is not None
            fut = self._pool.submit(self.fn, *self.jobs[i])
            with self._lock:
                self._futures[fut] = i
            fut.add_done_callback(self._submit_next)

    def result(self) -> list[Any]:
        """This process takes the jobs no worker has started (one thread each on CPU), then waits for the
        workers. Returns the results in the order of the jobs; raises :class:`JobError` naming a failed job."""
        from tqdm.auto import tqdm

        if self._collected:
            return self.results
        n = len(self.jobs)
        bar = tqdm(total=n, desc=self.desc, disable=not self.progress or n == 0)
        counted: set[Future] = set()
        try:
            with _kept_rng(), one_thread() if self.cpu else nullcontext():
                while (i := self._take()) is not None:
                    try:
                        self.results[i] = self.fn(*self.jobs[i])
                    except Exception as exc:
                        raise JobError(f"{self.names[i]} failed: {type(exc).__name__}: {exc}") from exc
                    bar.update()
            while True:
                with self._lock:
                    open_ = [f for f in self._futures if not f.done()]
                    finished = [f for f in self._futures if f.done() and f not in counted]
                for f in finished:
                    counted.add(f)
                    i = self._futures[f]
                    try:
                        self.results[i] = f.result()
                    except Exception as exc:
                        hint = ""
                        if isinstance(exc, BrokenProcessPool):
                            hint = (
                                " A worker process died before it could run the job: from a script, run the "
                                "jobs under `if __name__ == '__main__':` (spawned workers import the main "
                                "script; python -c and stdin scripts cannot be imported), or set "
                                "run.workers=1; on a small machine it may also have run out of memory."
                            )
                        raise JobError(
                            f"{self.names[i]} failed in a worker: {type(exc).__name__}: {exc}.{hint}"
                        ) from exc
                    bar.update()
                if not open_:
                    with self._lock:
                        if not self._queue and all(f in counted for f in self._futures):
                            break
                    continue
                wait(open_, return_when=FIRST_COMPLETED)
        except BaseException:
            with self._lock:
                self._queue.clear()
            for f in list(self._futures):
                f.cancel()
            raise
        finally:
            bar.close()
        self._collected = True
        return self.results


def start_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int = 1,
    device: str = "cpu",
    names: Sequence[str] | None = None,
    desc: str | None = None,
    progress: bool = True,
) -> Jobs:
    """Hand ``jobs`` to ``workers - 1`` spawned processes now and return a :class:`Jobs`; its ``result()``
    has this process take the rest and returns ``[fn(*job) for job in jobs]``. Arguments as :func:`run_jobs`."""
    return Jobs(fn, jobs, workers, device, names, desc, progress)


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
    return start_jobs(fn, jobs, workers, device, names, desc, progress).result()
