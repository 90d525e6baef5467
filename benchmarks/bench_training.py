"""One training epoch on cached embeddings: device-tensor slicing vs a per-sample DataLoader, same run.

``cxrlib.training.train_one_epoch`` keeps all embeddings on the device and takes each batch as a slice of one
seeded permutation. The naive alternative is ``DataLoader(TensorDataset(...), batch_size=256, shuffle=True)``,
which indexes every sample separately and re-stacks them with ``default_collate``. Both loops below run the
same model, composite loss, AdamW step and gradient clipping; the script prints

1. the full-epoch times and their ratio (goal ≥ 5×), and
2. the batching overhead alone (the same two loops with no model compute), because the full-epoch ratio is
   bounded by how much of the epoch is model compute: when the forward/backward dominates (CPU, D=512), no
   batching scheme can be 5× faster, and the overhead measurement shows where the difference really lies.

Usage::

    python benchmarks/bench_training.py            # 100k pairs, D=512, batch 256, default head + loss, CPU
    python benchmarks/bench_training.py --quick    # smoke test, 4k pairs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from cxrlib.config import LossConfig, ProjectorConfig, TrainConfig
from cxrlib.losses import CompositeLoss
from cxrlib.projector import MultiTaskProjector
from cxrlib.runtime import resolve_device, seed_everything, set_threads
from cxrlib.training import build_optimizer, train_one_epoch

GOAL = 5.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def setup(n: int, dim: int, cfg: TrainConfig, device: torch.device, seed: int):
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    image = rng.normal(size=(n, dim)).astype(np.float32)
    text = (image + rng.normal(size=(n, dim))).astype(np.float32)
    tensors = tuple(torch.from_numpy(a) for a in (image, text, labels))
    model = MultiTaskProjector(ProjectorConfig(in_dim=dim, out_dim=dim, hidden_dim=dim)).to(device)
    loss_fn = CompositeLoss(LossConfig()).to(device)
    optimizer = build_optimizer(model, loss_fn, cfg)
    return tensors, model, loss_fn, optimizer


def step(model, loss_fn, optimizer, params, img, txt, lbl, grad_clip) -> torch.Tensor:
    losses = loss_fn(model(img, txt), lbl)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    loss_fn.clamp_logit_scale_()
    return losses["total"].detach()


def epoch_sliced(tensors, model, loss_fn, optimizer, cfg: TrainConfig, device, seed: int) -> float:
    """The library's epoch routine (all tensors already on the device)."""
    dev = tuple(t.to(device) for t in tensors)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    train_one_epoch(
        model, loss_fn, optimizer, None, *dev, batch_size=cfg.batch_size, generator=gen,
        drop_last=True, grad_clip=cfg.grad_clip,
    )  # fmt: skip
    sync(device)
    return time.perf_counter() - t0


def epoch_dataloader(tensors, model, loss_fn, optimizer, cfg: TrainConfig, device, seed: int) -> float:
    """The naive loop: per-sample TensorDataset indexing + default_collate, batches moved to the device."""
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(*tensors), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    sync(device)
    t0 = time.perf_counter()
    total = torch.zeros((), device=device)
    for img, txt, lbl in loader:
        img, txt, lbl = img.to(device), txt.to(device), lbl.to(device)
        total += step(model, loss_fn, optimizer, params, img, txt, lbl, cfg.grad_clip)
    float(total)
    sync(device)
    return time.perf_counter() - t0


def overhead_sliced(tensors, cfg: TrainConfig, device, seed: int) -> float:
    dev = tuple(t.to(device) for t in tensors)
    n = dev[0].shape[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=gen, device=device)
    acc = torch.zeros((), device=device)
    for s in range(0, n - n % cfg.batch_size, cfg.batch_size):
        idx = perm[s : s + cfg.batch_size]
        img, txt, lbl = dev[0][idx], dev[1][idx], dev[2][idx]
        acc += img[0, 0] + txt[0, 0] + lbl[0]
    float(acc)
    sync(device)
    return time.perf_counter() - t0


def overhead_dataloader(tensors, cfg: TrainConfig, device, seed: int) -> float:
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(*tensors), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    sync(device)
    t0 = time.perf_counter()
    acc = torch.zeros((), device=device)
    for img, txt, lbl in loader:
        img, txt, lbl = img.to(device), txt.to(device), lbl.to(device)
        acc += img[0, 0] + txt[0, 0] + lbl[0]
    float(acc)
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test with 4096 pairs")
    ap.add_argument("--n", type=int, default=100_000, help="cached pairs (default 100k)")
    ap.add_argument("--dim", type=int, default=512, help="embedding dim (default 512, BiomedCLIP)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=0, help="measurements per loop (default: 1, --quick: 3)")
    args = ap.parse_args()
    n = 4096 if args.quick else args.n
    args.repeats = args.repeats or (3 if args.quick else 1)
    device = resolve_device(args.device)
    threads = set_threads(args.threads or None)
    cfg = TrainConfig(batch_size=args.batch_size)
    steps = n // cfg.batch_size
    print(
        f"one epoch: N={n} pairs, D={args.dim}, batch {cfg.batch_size} ({steps} steps), default projector "
        f"(depth 2, hidden {args.dim}, shared, residual) + composite loss (BCE+SupCon+CLIP), AdamW, grad clip "
        f"{cfg.grad_clip}; device {device}, torch {torch.__version__}, {threads} threads"
    )

    # warm-up (allocator, kernels) on a throwaway model, then each loop from the same fresh state
    tensors, model, loss_fn, opt = setup(min(n, 2048), args.dim, cfg, device, args.seed)
    epoch_sliced(tensors, model, loss_fn, opt, cfg, device, args.seed)
    tensors, _, _, _ = setup(n, args.dim, cfg, device, args.seed)

    # each measurement from the same fresh model state, alternating the order; the minimum over repeats
    # is reported (the least disturbed run on a shared machine)
    t_slices, t_loaders, o_slices, o_loaders = [], [], [], []
    for r in range(args.repeats):
        for kind in ("slice", "loader") if r % 2 == 0 else ("loader", "slice"):
            _, model, loss_fn, opt = setup(8, args.dim, cfg, device, args.seed)
            if kind == "slice":
                t_slices.append(epoch_sliced(tensors, model, loss_fn, opt, cfg, device, args.seed))
                o_slices.append(overhead_sliced(tensors, cfg, device, args.seed))
            else:
                t_loaders.append(epoch_dataloader(tensors, model, loss_fn, opt, cfg, device, args.seed))
                o_loaders.append(overhead_dataloader(tensors, cfg, device, args.seed))
    t_slice, t_loader, o_slice, o_loader = min(t_slices), min(t_loaders), min(o_slices), min(o_loaders)
    print(
        f"repeats: {args.repeats}; sliced epochs {[round(t, 2) for t in t_slices]} s, DataLoader epochs "
        f"{[round(t, 2) for t in t_loaders]} s"
    )

    ratio = t_loader / t_slice
    o_ratio = o_loader / o_slice
    compute = max(t_slice - o_slice, 1e-9)
    # both loops run the same model steps, so their compute shares must agree; when they do not, a busy machine
    # disturbed one loop and the ratio says nothing about batching
    compute_loader = max(t_loader - o_loader, 1e-9)
    consistent = max(compute_loader, compute) / min(compute_loader, compute) <= 1.5
    print(f"full epoch   sliced (train_one_epoch): {t_slice:8.3f} s  ({1e3 * t_slice / steps:.2f} ms/step)")
    print(f"full epoch   per-sample DataLoader:    {t_loader:8.3f} s  ({1e3 * t_loader / steps:.2f} ms/step)")
    print(
        f"speed-up (DataLoader / sliced): {ratio:.2f}x  goal >= {GOAL:.0f}x: "
        + (("PASS" if ratio >= GOAL else "FAIL") if consistent else "UNRELIABLE")
    )
    if not consistent:
        print(
            f"UNRELIABLE: the two loops' model compute differs ({compute:.2f} s vs {compute_loader:.2f} s) although "
            "they run the same steps: the machine was busy during one of them. Rerun on an idle machine or with "
            "more --repeats."
        )
    print(
        f"batching overhead alone  sliced: {o_slice:8.4f} s   DataLoader: {o_loader:8.3f} s   ratio {o_ratio:.0f}x"
    )
    print(
        f"model compute (fwd+bwd+AdamW) ~ {compute:.3f} s = {100 * compute / t_loader:.0f}% of the DataLoader "
        f"epoch; the full-epoch ratio cannot exceed {t_loader / compute:.2f}x "
        f"(= DataLoader epoch / compute) however cheap the batching is"
    )


if __name__ == "__main__":
    main()
