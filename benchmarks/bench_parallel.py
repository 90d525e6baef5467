"""Independent trainings side by side (:mod:`cxrlib.parallel`) against one after another, measured in one run.

The workload is notebook 03's loss ablation at the demo's shape (128-d embeddings, 1388 training and 199
validation pairs, the demo's head, loss and batch size; synthetic clustered embeddings, a fixed number of
epochs and no early stopping, so every run does the same work):

- ``sequential`` — the runs one after another in this process at ``run.num_threads`` torch threads (2 on the
  demo machine): what notebook 03 did before the runs went side by side;
- ``side by side`` — :func:`cxrlib.parallel.run_jobs` with ``run.workers`` processes, one thread each (worker
  start-up included: the first call spawns them).

and the same for the two demo backbones' pretraining (random pixels and tokens of the demo's shapes).
Goals, on 2 cores with the workers started: heads >= 1.1x, pretraining >= 1.2x (both measured about 1.3x). The script also checks that
``workers=1`` and ``workers=2`` give the same rows (the same bits), and fails if they do not.

    python benchmarks/bench_parallel.py            # 8 runs (~1 min on 2 cores)
    python benchmarks/bench_parallel.py --quick    # smoke sizes
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _goals import Goal, add_common_arguments, finish, machine_line  # noqa: E402

SCRIPT = "bench_parallel.py"
#: sequential wall time / side-by-side wall time must be at least this (2 cores), once the workers are started
#: (notebooks start them before they need them): projector trainings are small matrices, where a second thread
#: already helps, so the gain is smaller than for the backbones' pretraining.
GOAL_HEADS = 1.1
GOAL_PRETRAIN = 1.2


def _sets(n_train: int, n_val: int, n_test: int, dim: int, seed: int):
    import numpy as np

    from cxrlib.training import EmbeddingSet

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))

    def one(n: int, name: str) -> EmbeddingSet:
        k = rng.integers(0, 8, n)
        img = centres[k] + 0.8 * rng.normal(size=(n, dim))
        txt = centres[k] + 0.8 * rng.normal(size=(n, dim))
        return EmbeddingSet(img, txt, (k % 2).astype(int), name=name)

    return one(n_train, "train"), one(n_val, "val"), one(n_test, "test")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(ap)
    ap.add_argument("--runs", type=int, default=None, help="trainings (default 8, --quick 4)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per training (default 8, --quick 2)")
    args = ap.parse_args(argv)
    runs = args.runs or (4 if args.quick else 8)
    epochs = args.epochs or (2 if args.quick else 8)

    import torch

    from cxrlib.config import load_settings
    from cxrlib.evaluation import _ablation_run, ablation_configs
    from cxrlib.parallel import run_jobs, shutdown_workers
    from cxrlib.runtime import set_threads

    s = load_settings("demo")
    threads = set_threads(s.run.num_threads)
    print(
        f"bench_parallel: {runs} trainings x {epochs} epochs at the demo shape; sequential at {threads} threads vs "
        f"{s.run.workers} workers at 1 thread{' (QUICK: smoke sizes)' if args.quick else ''}; {machine_line()}"
    )
    tr, va, te = _sets(1388, 199, 396, 128, 0)
    proj = s.projector_for(128)
    loss = s.loss.replace(clip_logit_scale_init=14.3)  # the demo backbone's own temperature, about
    cfgs = list(ablation_configs(loss).values())
    jobs = [
        (
            tr,
            va,
            te,
            proj,
            loss.replace(**cfgs[i % 4]),
            s.train.replace(seed=i, epochs=epochs, patience=None, threads=0),
            (1, 5, 10),
            ("i2t_R@10", "t2i_R@10"),
        )
        for i in range(runs)
    ]
    _ablation_run(*jobs[0])  # warm-up (allocator, kernels, numba's cached metric kernels)
    run_jobs(_ablation_run, jobs[:2], workers=s.run.workers, progress=False)  # start the workers

    t0 = time.perf_counter()
    seq = [_ablation_run(*job) for job in jobs]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    par = run_jobs(_ablation_run, jobs, workers=s.run.workers, progress=False)
    t_par = time.perf_counter() - t0
    one = run_jobs(_ablation_run, jobs, workers=1, progress=False)
    if par != one:
        print("FAIL: workers=1 and workers=2 gave different rows; cxrlib.parallel promises the same bits")
        return 1
    print(
        f"heads: sequential ({threads} threads) {t_seq:.2f} s; side by side {t_par:.2f} s; rows equal for "
        f"workers=1 and {s.run.workers} (at {threads} threads the floats differ: {seq[0]} vs {one[0]})"
    )
    goals = [
        Goal(
            "projector trainings (the loss ablation): one after another / side by side",
            t_seq / t_par,
            ">=",
            GOAL_HEADS,
            detail=f"{runs} trainings x {epochs} epochs, demo shape: sequential at {threads} threads {t_seq:.2f} s "
            f"vs {s.run.workers} one-thread workers {t_par:.2f} s (started); same rows for any worker count",
            smoke=args.quick,
        )
    ]

    # the two demo backbones' pretraining (random pixels and tokens of the demo's shapes)
    import numpy as np

    from cxrlib.backbones import demo_model_cfg
    from cxrlib.config import DemoBackboneConfig
    from cxrlib.demo_backbone import _pretrain_job, create_demo_model

    vocab, n_img, steps = 700, 64 * (4 if args.quick else 12), (1 if args.quick else 2)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    init = {k: v.numpy() for k, v in create_demo_model(vocab).state_dict().items()}
    side = demo_model_cfg(vocab)["vision_cfg"]["image_size"]
    x = rng.normal(size=(n_img, 3, side, side)).astype(np.float32)
    tokens = np.zeros((300, 112), np.int64)
    for i, n in enumerate(rng.integers(12, 60, 300)):
        tokens[i, 0], tokens[i, 1 : n - 1], tokens[i, n - 1] = 2, rng.integers(4, vocab, n - 2), 3
    cfg = DemoBackboneConfig(epochs=steps, batch_size=64)
    pjobs = [(vocab, init, x, tokens, rng.integers(0, 300, n_img), cfg, seed) for seed in (0, 1)]
    warm = [(vocab, init, x[:64], tokens, np.arange(64), DemoBackboneConfig(epochs=1), 0)] * 2
    run_jobs(_pretrain_job, warm, workers=s.run.workers, progress=False)  # the workers import open_clip
    t0 = time.perf_counter()
    pseq = [_pretrain_job(*job) for job in pjobs]
    t_pseq = time.perf_counter() - t0
    t0 = time.perf_counter()
    ppar = run_jobs(_pretrain_job, pjobs, workers=s.run.workers, progress=False)
    t_ppar = time.perf_counter() - t0
    shutdown_workers()
    torch.set_num_threads(threads)
    n_steps = steps * n_img // 64
    print(
        f"pretraining: sequential ({threads} threads) {t_pseq:.2f} s; side by side {t_ppar:.2f} s ({n_steps} steps each)"
    )
    del pseq, ppar
    goals.append(
        Goal(
            "the two demo backbones' pretraining: one after another / side by side",
            t_pseq / t_ppar,
            ">=",
            GOAL_PRETRAIN,
            detail=f"2 x {n_steps} CLIP steps of the demo architecture (batch 64): sequential at {threads} threads "
            f"{t_pseq:.2f} s vs {s.run.workers} one-thread workers {t_ppar:.2f} s (started)",
            smoke=args.quick,
        )
    )
    return finish(SCRIPT, goals, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
