"""Projector training epochs (:mod:`cxrlib.training`) against their forward+backward floor, measured in one run.

- ``epoch`` — the library's own epoch, :func:`cxrlib.training.train_one_epoch`, called the way
  :func:`~cxrlib.training.train_projector` calls it: cached pairs as an :class:`~cxrlib.training.EmbeddingSet`
  moved to the device, :class:`~cxrlib.losses.CompositeLoss`, :func:`~cxrlib.training.build_optimizer`,
  :func:`~cxrlib.training.build_scheduler`, a seeded ``torch.Generator``, the profile's batch size, grad clip
  and ``drop_last``. It pays for the data handling: one permutation per epoch, a gather per batch, the loss
  bookkeeping.
- ``floor`` — the same number of steps with no data handling: the batches are sliced from the same
  permutations BEFORE timing, and each step is only forward + composite loss + ``zero_grad`` + backward +
  grad clip + AdamW step + scheduler step + logit-scale clamp (the optimiser side exactly as configured).

Both start from the same weights and seeds (dropout draws from the global torch generator, seeded alike), so
they do the same arithmetic: the script checks that the final weights agree bit for bit on CPU and stops with
an error when they do not (the floor would then not be the same work).

Goal (issue 16): epoch <= 1.15 x floor, at two shapes, each measured here:

- ``paper``: D = 512 (BiomedCLIP / CLIP ViT-B/16 embeddings), hidden 512, N = 20,480 cached pairs (80 steps of
  256), one epoch per measurement;
- ``demo``: D = 128 (the demo backbone's embedding dim), the profile's head (hidden 512), N = 1,388 pairs (the
  demo's train split), 5 steps of 256, 10 epochs per measurement (an epoch alone is ~0.1 s).

Each measurement is repeated (``--repeats``, interleaved, order alternating) and the fastest of each kind is
kept (the least disturbed on a shared machine); wall time decides, process CPU time is printed beside it.

Usage::

    python benchmarks/bench_training.py                    # both shapes at the goal's sizes (~1 min on 2 cores)
    python benchmarks/bench_training.py --quick            # smoke test (verdicts marked 'smoke')
    python benchmarks/bench_training.py --device cuda      # on a GPU server
    python benchmarks/bench_training.py --markdown FILE    # also append the markdown rows to FILE

Data: random embeddings (Gaussian, text = image + noise, labels 0/1 at random): SYNTHETIC, the step cost does not
depend on the values.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from _goals import Goal, add_common_arguments, finish, machine_line

from cxrlib.config import LossConfig, ProjectorConfig, TrainConfig, load_settings
from cxrlib.losses import CompositeLoss, resolve_logit_scale
from cxrlib.projector import MultiTaskProjector
from cxrlib.runtime import resolve_device, set_threads
from cxrlib.training import EmbeddingSet, build_optimizer, build_scheduler, train_one_epoch

__all__ = ["GOAL", "Shape", "SHAPES", "Timing", "measure_epoch", "measure_floor", "goal_for", "main"]

SCRIPT = "bench_training.py"
#: epoch time / floor time must not exceed this (issue 16).
GOAL = 1.15


@dataclass(frozen=True)
class Shape:
    """A benchmark shape: ``n`` cached pairs of dim ``dim``, ``epochs`` epochs per measurement."""

    name: str
    n: int
    dim: int
    epochs: int
    quick_n: int
    quick_epochs: int


SHAPES: tuple[Shape, ...] = (
    Shape("paper", n=20_480, dim=512, epochs=1, quick_n=2_560, quick_epochs=1),
    Shape("demo", n=1_388, dim=128, epochs=10, quick_n=1_388, quick_epochs=2),
)


@dataclass(frozen=True)
class Timing:
    """Wall and process CPU seconds of one measurement."""

    wall: float
    cpu: float


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_set(n: int, dim: int, seed: int) -> EmbeddingSet:
    """SYNTHETIC cached pairs: image (n, dim), text = image + noise (n, dim), labels (n,) 0/1."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, dim), dtype=np.float32)
    text = image + rng.standard_normal((n, dim), dtype=np.float32)
    return EmbeddingSet(image, text, rng.integers(0, 2, size=n), name=f"synthetic {n}x{dim}")


class Run:
    """A fresh model, loss, optimiser and scheduler, built as :func:`train_projector` builds them."""

    def __init__(
        self,
        data: EmbeddingSet,
        pcfg: ProjectorConfig,
        lcfg: LossConfig,
        tcfg: TrainConfig,
        device: torch.device,
    ) -> None:
        torch.manual_seed(tcfg.seed)
        self.model = MultiTaskProjector(pcfg).to(device)
        self.loss_fn = CompositeLoss(lcfg, train_labels=data.labels).to(device)
        self.optimizer = build_optimizer(self.model, self.loss_fn, tcfg)
        self.scheduler = build_scheduler(self.optimizer, tcfg, tcfg.steps_per_epoch(len(data)))
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(tcfg.seed)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

    def state(self) -> dict[str, torch.Tensor]:
        sd = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        sd.update({f"loss.{k}": v for k, v in self.loss_fn.state_dict().items()})
        return {k: v.detach().cpu().clone() for k, v in sd.items()}


def to_device(data: EmbeddingSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`train_projector` does: ``torch.from_numpy(...).to(device)`` for image, text, labels."""
    return (
        torch.from_numpy(data.image).to(device),
        torch.from_numpy(data.text).to(device),
        torch.from_numpy(data.labels).to(device),
    )


def measure_epoch(run: Run, tensors, tcfg: TrainConfig, epochs: int, device: torch.device) -> Timing:
    """``epochs`` calls of the library's :func:`train_one_epoch` (the path under test)."""
    torch.manual_seed(tcfg.seed + 1)  # dropout draws from the global generator: the floor seeds it alike
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        train_one_epoch(
            run.model, run.loss_fn, run.optimizer, run.scheduler, *tensors,
            batch_size=tcfg.batch_size, generator=run.generator, drop_last=tcfg.drop_last,
            grad_clip=tcfg.grad_clip,
        )  # fmt: skip
    sync(device)
    return Timing(time.perf_counter() - t0, time.process_time() - c0)


def preslice(run: Run, tensors, tcfg: TrainConfig, epochs: int) -> list:
    """The batches the epochs will see, sliced before timing: the permutations are drawn exactly as
    :func:`train_one_epoch` draws them (one ``randperm`` per epoch from the run's generator)."""
    image, text, labels = tensors
    n = image.shape[0]
    stop = n - n % tcfg.batch_size if tcfg.drop_last else n
    out = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=run.generator, device=run.generator.device).to(image.device)
        for s in range(0, stop, tcfg.batch_size):
            idx = perm[s : s + tcfg.batch_size]
            out.append((image[idx].contiguous(), text[idx].contiguous(), labels[idx].contiguous()))
    return out


def measure_floor(run: Run, batches: list, tcfg: TrainConfig, device: torch.device) -> Timing:
    """The floor: the same optimiser steps on pre-sliced batches, nothing else."""
    model, loss_fn, optimizer, scheduler = run.model, run.loss_fn, run.optimizer, run.scheduler
    clamp = loss_fn.cfg.learnable_temperature
    model.train()
    loss_fn.train()
    torch.manual_seed(tcfg.seed + 1)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for img, txt, lbl in batches:
        losses = loss_fn(model(img, txt), lbl)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if tcfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(run.params, tcfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if clamp:
            loss_fn.clamp_logit_scale_()
    sync(device)
    return Timing(time.perf_counter() - t0, time.process_time() - c0)


def measure_handling(tensors, tcfg: TrainConfig, epochs: int, seed: int, device: torch.device) -> float:
    """Seconds of the data handling alone (permutation + gathers, no model): where the difference comes from."""
    image, text, labels = tensors
    n = image.shape[0]
    stop = n - n % tcfg.batch_size if tcfg.drop_last else n
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    acc = torch.zeros((), device=device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=device)
        for s in range(0, stop, tcfg.batch_size):
            idx = perm[s : s + tcfg.batch_size]
            acc += image[idx][0, 0] + text[idx][0, 0] + labels[idx][0]
    float(acc)
    sync(device)
    return time.perf_counter() - t0


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[bool, float]:
    """(bit-identical?, largest absolute difference) of two state dicts."""
    worst = max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)
    return all(torch.equal(a[k], b[k]) for k in a), worst


def goal_for(shape: str, epoch: Timing, floor: Timing, steps: int, handling_s: float, smoke: bool) -> Goal:
    """The verdict of one shape from its best timings (``steps``: optimiser steps per measurement)."""
    ratio = epoch.wall / floor.wall if floor.wall > 0 else float("nan")
    detail = (
        f"{shape} shape: epoch {epoch.wall:.3f} s vs floor {floor.wall:.3f} s wall "
        f"(CPU {epoch.cpu:.3f} / {floor.cpu:.3f} s) for {steps} steps; "
        f"{1e3 * (epoch.wall - floor.wall) / steps:+.2f} ms/step, data handling alone {1e3 * handling_s / steps:.2f} ms/step"
    )
    return Goal(
        f"training epoch / forward+backward floor ({shape})", ratio, "<=", GOAL, detail=detail, smoke=smoke
    )


def bench_shape(shape: Shape, args, settings, device: torch.device) -> Goal:
    n = shape.quick_n if args.quick else shape.n
    epochs = shape.quick_epochs if args.quick else shape.epochs
    tcfg = settings.train.replace(device=str(device))
    pcfg = settings.projector.replace(in_dim=shape.dim, out_dim=shape.dim)
    if shape.name == "paper":  # the paper's head: 512 wide (also the default)
        pcfg = pcfg.replace(hidden_dim=512)
    lcfg, _ = resolve_logit_scale(settings.loss, None)
    data = make_set(n, shape.dim, tcfg.seed)
    tensors = to_device(data, device)
    steps = tcfg.steps_per_epoch(n) * epochs
    print(
        f"[{shape.name}] N={n} pairs, D={shape.dim}, head hidden {pcfg.hidden_dim} depth {pcfg.depth}, batch "
        f"{tcfg.batch_size}, {epochs} epoch(s) = {steps} steps per measurement, grad clip {tcfg.grad_clip}"
    )

    def one(kind: str) -> tuple[Timing, dict[str, torch.Tensor]]:
        run = Run(data, pcfg, lcfg, tcfg, device)
        if kind == "epoch":
            t = measure_epoch(run, tensors, tcfg, epochs, device)
        else:
            batches = preslice(run, tensors, tcfg, epochs)
            t = measure_floor(run, batches, tcfg, device)
            del batches
        return t, run.state()

    one("epoch"), one("floor")  # warm-up: allocator, kernels, first-touch pages
    ep: list[Timing] = []
    fl: list[Timing] = []
    for r in range(args.repeats):
        for kind in ("epoch", "floor") if r % 2 == 0 else ("floor", "epoch"):
            t, st = one(kind)
            (ep if kind == "epoch" else fl).append(t)
            if kind == "epoch":
                st_epoch = st
            else:
                st_floor = st
        equal, worst = same_state(st_epoch, st_floor)
        if not equal and (device.type == "cpu" or worst > 1e-4):
            raise SystemExit(
                f"[{shape.name}] the floor and the epoch ended with different weights (max |diff| {worst:.3g}): "
                "the floor does not run the same steps as cxrlib.training.train_one_epoch; fix the benchmark"
            )
    handling = min(measure_handling(tensors, tcfg, epochs, tcfg.seed, device) for _ in range(3))
    best_ep, best_fl = min(ep, key=lambda t: t.wall), min(fl, key=lambda t: t.wall)
    print(
        f"[{shape.name}] epoch wall {[round(t.wall, 3) for t in ep]} s, floor wall {[round(t.wall, 3) for t in fl]} s; "
        f"final weights identical in every pair: yes"
    )
    print(
        f"[{shape.name}] best: epoch {best_ep.wall:.3f} s ({1e3 * best_ep.wall / steps:.2f} ms/step), floor "
        f"{best_fl.wall:.3f} s ({1e3 * best_fl.wall / steps:.2f} ms/step), ratio {best_ep.wall / best_fl.wall:.3f} "
        f"(CPU-time ratio {best_ep.cpu / best_fl.cpu:.3f}); data handling alone {handling:.4f} s"
    )
    return goal_for(shape.name, best_ep, best_fl, steps, handling, args.quick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap)
    ap.add_argument(
        "--profile", default="demo", help="settings (head, loss, batch size, threads) of this profile"
    )
    ap.add_argument("--device", default=None, help="cpu | cuda | auto (default: the profile's run.device)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the profile's run.num_threads)"
    )
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed measurements of each kind (default 3; quick 2)"
    )
    ap.add_argument("--shapes", nargs="+", default=[s.name for s in SHAPES], choices=[s.name for s in SHAPES])
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 3)
    settings = load_settings(args.profile)
    device = resolve_device(args.device or settings.run.device)
    threads = set_threads(settings.run.num_threads if args.threads is None else args.threads)
    print(
        f"bench_training: profile {args.profile!r}, device {device}, torch {torch.__version__}, {threads} threads, "
        f"{args.repeats} repeats{' (QUICK: smoke sizes)' if args.quick else ''}; {machine_line()}"
    )
    goals = [bench_shape(s, args, settings, device) for s in SHAPES if s.name in args.shapes]
    return finish(SCRIPT, goals, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
