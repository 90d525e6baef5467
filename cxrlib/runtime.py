"""Run-time settings shared by notebooks and library: seeding, device choice, thread count."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device", "set_threads", "torch_threads"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from one integer.

    With ``deterministic=True`` and a CUDA GPU visible, torch is asked for deterministic kernels
    (``torch.use_deterministic_algorithms``, ``warn_only`` so that a CUDA op without a deterministic variant warns
    instead of failing) and cuDNN's autotuner is turned off. In a CPU-only process the flag is not set: the CPU
    kernels this project uses (matmul, convolution, attention, indexing) do not change with it, and setting it
    imports torch's compiler stack (about 2.5 s per process, paid by every notebook). CPU results are
    bit-identical between reruns for a fixed thread count (see :func:`set_threads`); the demo's rerun test and
    ``tests/test_runtime.py`` check that.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the legacy global RNG that third-party code still uses
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU. ``"cuda"`` without a GPU raises a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). "
            "Use device='cpu' (the demo profile does), or install a CUDA build of torch that matches the "
            "server's driver (see README, 'Running the paper profile on a GPU server')."
        )
    return dev


def set_threads(n: int | None) -> int:
    """Fix torch's intra-op thread count (results on CPU depend on it bit-for-bit). ``None``/0 keeps it."""
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch at ``n`` intra-op threads inside the block (0 = unchanged), the previous count restored after it.

    No call when the count is already ``n``: a ``torch.set_num_threads`` call alone can move later float bits.
    """
    before = torch.get_num_threads()
    change = bool(n) and n != before
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)
