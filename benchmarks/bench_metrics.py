"""Benchmark of :func:`cxrlib.metrics.retrieval_metrics` against the matrix-product floor and a naive version.

Usage::

    python benchmarks/bench_metrics.py              # N = 10k, 50k, 100k (several minutes on 2 cores)
    python benchmarks/bench_metrics.py --quick      # N = 2k, 5k: a smoke test
    python benchmarks/bench_metrics.py --sizes 10000 50000
    python benchmarks/bench_metrics.py --sizes 50000 --no-duplicates   # worst case: M = N unique texts

For each N (D = 512, random L2-normalised embeddings with realistic duplicated reports: ~30 % of the studies
use one of 20 "normal" report texts, ~30 % of the studies have two images; binary labels), each measurement
runs in a fresh subprocess, which reports its wall time and its peak RSS (``ru_maxrss``, which includes the
python + torch + numba runtime and the two (N, D) float32 input arrays):

- ``floor``  — the single N × N float32 matrix product (torch, in ~256 MB row chunks, nothing else);
- ``cxrlib`` — ``retrieval_metrics`` (both directions, labels, no bootstrap), after a warm-up call on a tiny
  input so that numba's JIT (or cache load) is not timed; the compile time is reported separately, once with
  an empty numba cache (cold) and once with the cache of this checkout;
- ``naive``  — the obvious torch implementation: the full score matrix in memory, ``>=`` counts and
  ``topk`` (skipped, with the reason, when N × N float32 would exceed 8 GB). Where both ran, the metrics are
  compared (the naive version is float32 and breaks top-K ties arbitrarily, so tiny differences are allowed).

Goal: at N = 50 000, cxrlib <= 1.5 × floor and peak RSS <= 1.5 GB; N = 100 000 must complete.
Timings on a shared machine are noisy: the load average is printed first; use ``--repeat`` to keep the best.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

D = 512
NAIVE_LIMIT_BYTES = 8e9
GOAL_N = 50_000
GOAL_RATIO = 1.5
GOAL_RSS_GB = 1.5
KS = (1, 5, 10)


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
def make_data(
    n: int, d: int, seed: int, duplicates: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(img (n, d) float32, txt (n, d) float32, labels (n,) int64), both sides L2-normalised.

    Studies have one image (70 %) or two (30 %) sharing the study's report; 30 % of the studies use one of 20
    "normal" report texts (label 0), the others have a report of their own (label 1 with probability 0.6).
    Images are noisy copies of their report's embedding (cosine ~0.1, a mediocre model: ranks spread widely).
    ``duplicates=False``: one image per study and no shared texts (M = N, the worst case for cxrlib).
    """
    rng = np.random.default_rng(seed)
    sizes = np.where(rng.random(n) < (0.3 if duplicates else 0.0), 2, 1)
    study = np.repeat(np.arange(n), sizes)[:n]
    n_studies = int(study[-1]) + 1
    normal = rng.random(n_studies) < (0.3 if duplicates else 0.0)
    template = rng.integers(0, 20, n_studies)
    own = rng.standard_normal((n_studies, d), dtype=np.float32)
    templates = rng.standard_normal((20, d), dtype=np.float32)
    own[normal] = templates[template[normal]]
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    study_label = np.where(normal, 0, (rng.random(n_studies) < 0.6).astype(np.int64))
    txt = own[study]
    del own
    img = rng.standard_normal((n, d), dtype=np.float32)
    img *= np.float32(1.0 / np.sqrt(d))
    img += np.float32(0.1) * txt
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    return img, txt, study_label[study]


# ----------------------------------------------------------------------------------------------------------
# the three measured programs (each runs in its own subprocess)
# ----------------------------------------------------------------------------------------------------------
def run_floor(img: np.ndarray, txt: np.ndarray) -> dict:
    import torch

    n = img.shape[0]
    chunk = max(1, min(n, (256 * 2**20) // (4 * n)))
    S = torch.empty((chunk, n), dtype=torch.float32)
    a = torch.from_numpy(img)
    bT = torch.from_numpy(txt).T
    t0 = time.perf_counter()
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        torch.matmul(a[r0:r1], bT, out=S[: r1 - r0])
    return {"time": time.perf_counter() - t0}


def run_cxrlib(img: np.ndarray, txt: np.ndarray, labels: np.ndarray) -> dict:
    t0 = time.perf_counter()
    from cxrlib.metrics import retrieval_metrics

    import_s = time.perf_counter() - t0
    # warm-up: a tiny input that goes through every kernel (ties force the full float64 fallback too)
    rng = np.random.default_rng(0)
    w_txt = rng.standard_normal((40, 8)).astype(np.float32)
    w_txt /= np.linalg.norm(w_txt, axis=1, keepdims=True)
    w_img = np.repeat(w_txt[:1], 40, axis=0)
    t0 = time.perf_counter()
    retrieval_metrics(w_img, w_txt, labels=np.arange(40) % 2, ks=(1, 2))
    jit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = retrieval_metrics(img, txt, labels=labels, ks=KS)
    return {"time": time.perf_counter() - t0, "jit_s": jit_s, "import_s": import_s, "metrics": metrics}


def run_jit_cold() -> dict:
    """Compile time with an empty numba cache (NUMBA_CACHE_DIR is set to a fresh folder by the parent)."""
    from cxrlib.metrics import retrieval_metrics

    rng = np.random.default_rng(0)
    w_txt = rng.standard_normal((40, 8)).astype(np.float32)
    w_txt /= np.linalg.norm(w_txt, axis=1, keepdims=True)
    w_img = np.repeat(w_txt[:1], 40, axis=0)
    t0 = time.perf_counter()
    retrieval_metrics(w_img, w_txt, labels=np.arange(40) % 2, ks=(1, 2))
    return {"time": time.perf_counter() - t0}


def run_naive(img: np.ndarray, txt: np.ndarray, labels: np.ndarray) -> dict:
    """The obvious implementation: full (N, M) score matrix, >= counts, topk; float32 throughout."""
    import torch

    t0 = time.perf_counter()
    X = torch.from_numpy(img)
    T = torch.from_numpy(txt)
    lab = torch.from_numpy(labels)
    n = X.shape[0]
    U, uid = torch.unique(T, dim=0, return_inverse=True)
    m = U.shape[0]
    w = torch.bincount(uid, minlength=m)
    counts = torch.zeros((m, 2), dtype=torch.int64).index_put_(
        (uid, lab), torch.ones(n, dtype=torch.int64), True
    )
    tlab = torch.where(counts[:, 1] >= counts[:, 0], 1, 0)
    S = X @ U.T  # (N, M)
    b = S[torch.arange(n), uid]
    i2t_rank = (S >= b[:, None]).sum(1)  # the relevant text counts itself once: 1 + #irrelevant >= b
    b_col = torch.full((m,), -torch.inf).scatter_reduce(0, uid, b, "amax")
    ge = (S >= b_col[None, :]).sum(0)
    rel_ge = torch.zeros(m, dtype=torch.int64).index_add_(0, uid, (b >= b_col[uid]).long())
    t2i_rank_q = 1 + ge - rel_ge
    t2i_rank = t2i_rank_q[uid]
    out: dict[str, float] = {}
    for name, r in (("i2t", i2t_rank.double()), ("t2i", t2i_rank.double())):
        for k in KS:
            out[f"{name}_R@{k}"] = float((r <= k).double().mean())
        out[f"{name}_mean_rank"] = float(r.mean())
        out[f"{name}_median_rank"] = float(np.median(r.numpy()))
        out[f"{name}_MRR"] = float((1.0 / r).mean())
    kmax = max(KS)
    top_i2t = S.topk(kmax, dim=1).indices  # (N, K)
    rel_i2t = (tlab[top_i2t] == lab[:, None]).double()
    rq_i2t = torch.bincount(tlab, minlength=2)[lab].double()
    top_t2i = S.topk(kmax, dim=0).indices.T  # (M, K)
    rel_t2i = (lab[top_t2i] == tlab[:, None]).double()
    rq_t2i = torch.bincount(lab, minlength=2)[tlab].double()
    for name, rel, rq, wt in (("i2t", rel_i2t, rq_i2t, None), ("t2i", rel_t2i, rq_t2i, w.double())):
        hits = rel.cumsum(1)
        prec = hits / torch.arange(1, kmax + 1, dtype=torch.float64)
        for k in KS:
            p = prec[:, k - 1]
            ap = (prec[:, :k] * rel[:, :k]).sum(1) / torch.clamp(
                torch.minimum(rq, torch.tensor(float(k))), min=1
            )
            if wt is None:
                out[f"{name}_P@{k}_label"] = float(p.mean())
                out[f"{name}_mAP@{k}_label"] = float(ap.mean())
            else:
                out[f"{name}_P@{k}_label"] = float((p * wt).sum() / wt.sum())
                out[f"{name}_mAP@{k}_label"] = float((ap * wt).sum() / wt.sum())
    return {"time": time.perf_counter() - t0, "metrics": out}


def worker(mode: str, n: int, seed: int, duplicates: bool) -> None:
    if mode == "jit_cold":
        res = run_jit_cold()
    else:
        img, txt, labels = make_data(n, D, seed, duplicates)
        if mode == "floor":
            res = run_floor(img, txt)
        elif mode == "cxrlib":
            res = run_cxrlib(img, txt, labels)
        elif mode == "naive":
            res = run_naive(img, txt, labels)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    res["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print("RESULT " + json.dumps(res))


# ----------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------
def spawn(mode: str, n: int, seed: int, duplicates: bool = True, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--n", str(n), "--seed", str(seed)]
    if not duplicates:
        cmd.append("--no-duplicates")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} at N={n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def compare(a: dict[str, float], b: dict[str, float]) -> tuple[float, str]:
    """Largest deviation, scaled: rates absolute, ranks relative."""
    worst, key = 0.0, ""
    for k, v in a.items():
        if k not in b:
            continue
        dev = abs(v - b[k]) / max(abs(v), 1.0) if "rank" in k else abs(v - b[k])
        if dev > worst:
            worst, key = dev, k
    return worst, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 2000 and 5000 only (smoke test)")
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="values of N (default 10000 50000 100000)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-duplicates",
        action="store_true",
        help="every row has its own report (M = N): the worst case for cxrlib, whose product is N × M",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="time floor and cxrlib this many times, keep the best"
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.seed, not args.no_duplicates)
        return
    sizes = args.sizes or ([2000, 5000] if args.quick else [10_000, 50_000, 100_000])
    dup = not args.no_duplicates

    import numba
    import torch

    print(
        f"bench_metrics: D={D}, sizes={sizes}, torch threads={torch.get_num_threads()}, "
        f"numba threads={numba.get_num_threads()}, cpus={os.cpu_count()}, "
        f"texts={'realistic duplicates' if dup else 'all distinct (M = N)'}, "
        f"load average={' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory() as cache:
        cold = spawn("jit_cold", 0, args.seed, env={**os.environ, "NUMBA_CACHE_DIR": cache})
    print(f"numba JIT compile (empty cache): {cold['time']:.1f}s (not included in any timing below)")

    verdicts: list[str] = []
    for n in sizes:
        floor = min((spawn("floor", n, args.seed, dup) for _ in range(args.repeat)), key=lambda r: r["time"])
        cx = min((spawn("cxrlib", n, args.seed, dup) for _ in range(args.repeat)), key=lambda r: r["time"])
        ratio = cx["time"] / floor["time"]
        m_unique = int(cx["metrics"]["n_unique_texts"])
        if n * n * 4 > NAIVE_LIMIT_BYTES:
            naive = None
            naive_txt = (
                f"naive skipped (N×N float32 = {n * n * 4 / 1e9:.0f} GB > {NAIVE_LIMIT_BYTES / 1e9:.0f} GB)"
            )
        else:
            naive = spawn("naive", n, args.seed, dup)
            naive_txt = f"naive {naive['time']:.1f}s ({naive['time'] / floor['time']:.2f}x)"
        print(
            f"N={n}  floor {floor['time']:.1f}s  cxrlib {cx['time']:.1f}s ({ratio:.2f}x floor)  {naive_txt}  "
            f"peak RSS cxrlib {cx['rss_gb']:.2f} GB"
        )
        extra = f"    M={m_unique} unique texts; peak RSS floor {floor['rss_gb']:.2f} GB"
        if naive is not None:
            extra += f", naive {naive['rss_gb']:.2f} GB"
        extra += f"; JIT warm-up (cached) {cx['jit_s']:.2f}s, import {cx['import_s']:.1f}s"
        print(extra)
        mt = cx["metrics"]
        print(
            f"    i2t R@1 {mt['i2t_R@1']:.4f} R@10 {mt['i2t_R@10']:.4f} median rank {mt['i2t_median_rank']:.0f}"
            f" | t2i R@1 {mt['t2i_R@1']:.4f} R@10 {mt['t2i_R@10']:.4f} median rank {mt['t2i_median_rank']:.0f}"
            f" | i2t P@10_label {mt['i2t_P@10_label']:.4f} mAP@10_label {mt['i2t_mAP@10_label']:.4f}"
        )
        if naive is not None:
            dev, key = compare(mt, naive["metrics"])
            ok = dev <= 2e-3
            print(
                f"    cxrlib vs naive: largest deviation {dev:.2e} ({key or '-'}) → {'AGREE' if ok else 'DISAGREE'}"
                " (naive: float32 scores, arbitrary top-K tie order)"
            )
            verdicts.append(f"N={n} cxrlib agrees with naive: {'PASS' if ok else 'FAIL'}")
        if n == GOAL_N:
            verdicts.append(
                f"N={n} time ≤ {GOAL_RATIO}x floor: {'PASS' if ratio <= GOAL_RATIO else 'FAIL'} ({ratio:.2f}x)"
            )
            verdicts.append(
                f"N={n} peak RSS ≤ {GOAL_RSS_GB} GB: {'PASS' if cx['rss_gb'] <= GOAL_RSS_GB else 'FAIL'} "
                f"({cx['rss_gb']:.2f} GB)"
            )
        if n >= 100_000:
            verdicts.append(f"N={n} completes: PASS ({cx['time']:.1f}s)")
    print("goals:")
    for v in verdicts:
        print("  " + v)
    if GOAL_N not in sizes:
        print(f"  (the speed/memory goal is checked at N={GOAL_N}; run without --quick to check it)")


if __name__ == "__main__":
    main()
