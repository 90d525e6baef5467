"""Benchmark of :func:`cxrlib.metrics.retrieval_metrics` against the matrix-product floor and a naive version.

Usage::

    python benchmarks/bench_metrics.py              # N = 10k, 50k; 50k also with all texts distinct (~2 min)
    python benchmarks/bench_metrics.py --quick      # N = 2k, 5k: a smoke test (verdicts marked 'smoke')
    python benchmarks/bench_metrics.py --sizes 10000 50000 100000     # + the largest size (several minutes)
    python benchmarks/bench_metrics.py --texts distinct   # only the worst case: M = N unique texts
    python benchmarks/bench_metrics.py --markdown FILE   # also append the markdown rows to FILE

For each N (D = 512, random L2-normalised embeddings with realistic duplicated reports: ~30 % of the studies
use one of 20 "normal" report texts, ~30 % of the studies have two images; binary labels; SYNTHETIC), each
measurement runs in a fresh subprocess, which reports its wall and CPU time and its EXTRA memory: the peak
resident set (``VmHWM`` of ``/proc/self/status``) during the measured call minus the resident set just before
it (after the inputs are made and the imports and warm-up are done). The peak is reset right before the call
(``/proc/self/clear_refs``), so it is the call's own peak; where that reset is refused, the earlier peak is
kept, which can only overstate the extra memory. (``ru_maxrss`` is not used: a child's value keeps its
parent's peak across fork + exec.)

- ``floor``  — the single N x N float32 matrix product (torch, in ~256 MB row chunks, nothing else);
- ``cxrlib`` — ``retrieval_metrics`` (both directions, labels, no bootstrap), after a warm-up call on a tiny
  input so that numba's JIT (or cache load) is not timed; the compile time is reported separately, once with
  an empty numba cache (cold, with ``--jit-cold``) and once with the cache of this checkout;
- ``naive``  — the obvious torch implementation: the full score matrix in memory, ``>=`` counts and
  ``topk`` (skipped, with the reason, when N x N float32 would exceed 8 GB). Where both ran, the metrics are
  compared (the naive version is float32 and breaks top-K ties arbitrarily, so tiny differences are allowed).

Goals (issue 16): at N = 50,000, cxrlib <= 1.5 x floor and extra memory <= 1.5 GB, checked twice: with the
realistic repeated reports (M ~ 27k distinct texts, so cxrlib's N x M product is smaller than the floor's N x N)
and in the worst case, every text distinct (M = N: the same product as the floor). Wherever the naive version
ran (N = 10,000 by default), cxrlib agrees with it. Timings on a shared machine are noisy: the load average is
printed first; ``--repeat`` keeps the best of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _goals import Goal, add_common_arguments, finish, machine_line

__all__ = ["GOAL_N", "GOAL_RATIO", "GOAL_EXTRA_GB", "make_data", "compare", "goals_for", "main"]

SCRIPT = "bench_metrics.py"
D = 512
NAIVE_LIMIT_BYTES = 8e9
GOAL_N = 50_000
GOAL_RATIO = 1.5
GOAL_EXTRA_GB = 1.5
AGREE_TOL = 2e-3
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
# measuring one call: wall, CPU, extra memory (in the worker subprocess)
# ----------------------------------------------------------------------------------------------------------
def status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); a clear error where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError as exc:
        raise SystemExit(f"cannot read /proc/self/status ({exc}): the memory goal needs Linux") from exc
    raise SystemExit(f"/proc/self/status has no {field} line: the memory goal needs Linux")


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set (``/proc/self/clear_refs`` = 5); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Meter:
    """``with Meter() as m: ...`` -> ``m.wall``, ``m.cpu`` (s), ``m.extra_gb`` (peak during the block minus the
    resident set before it, GB), ``m.base_gb``, ``m.peak_reset`` (whether the earlier peak was cleared)."""

    def __enter__(self) -> Meter:
        self.base_kb = status_kb("VmRSS")
        self.peak_reset = reset_peak()
        self.c0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        peak_kb = status_kb("VmHWM")
        self.base_gb = self.base_kb * 1024 / 1e9
        self.extra_gb = max(0, peak_kb - self.base_kb) * 1024 / 1e9

    def result(self) -> dict:
        return {
            "time": self.wall,
            "cpu": self.cpu,
            "extra_gb": self.extra_gb,
            "base_gb": self.base_gb,
            "peak_reset": self.peak_reset,
        }


# ----------------------------------------------------------------------------------------------------------
# the three measured programs (each runs in its own subprocess)
# ----------------------------------------------------------------------------------------------------------
def run_floor(img: np.ndarray, txt: np.ndarray) -> dict:
    import torch

    n = img.shape[0]
    chunk = max(1, min(n, (256 * 2**20) // (4 * n)))
    a = torch.from_numpy(img)
    bT = torch.from_numpy(txt).T
    with Meter() as m:
        S = torch.empty((chunk, n), dtype=torch.float32)
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            torch.matmul(a[r0:r1], bT, out=S[: r1 - r0])
    return m.result()


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
    with Meter() as m:
        metrics = retrieval_metrics(img, txt, labels=labels, ks=KS)
    return {**m.result(), "jit_s": jit_s, "import_s": import_s, "metrics": metrics}


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
    """:func:`naive_metrics`, measured."""
    with Meter() as m:
        out = naive_metrics(img, txt, labels)
    return {**m.result(), "metrics": out}


def naive_metrics(img: np.ndarray, txt: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The obvious implementation: full (N, M) score matrix, >= counts, topk; float32 throughout."""
    import torch

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
    return out


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


def goals_for(
    n: int,
    floor: dict,
    cx: dict,
    naive: dict | None,
    smoke: bool,
    check_speed: bool,
    texts: str = "realistic",
) -> list[Goal]:
    """The verdicts of one case: agreement with the naive version where it ran; with ``check_speed`` (N =
    :data:`GOAL_N`, or the largest size of a quick run) time and memory. ``smoke``: quick sizes, the verdicts
    are marked and stand for nothing. ``texts``: ``"realistic"`` (repeated reports) or ``"distinct"`` (M = N).

    ``floor``/``cx``/``naive``: the workers' results (``time``, ``cpu``, ``extra_gb``, ``metrics``).
    """
    m = int(cx["metrics"]["n_unique_texts"])
    case = f"N={n}, {texts} texts (M={m})"
    goals: list[Goal] = []
    if naive is not None:
        dev, key = compare(cx["metrics"], naive["metrics"])
        goals.append(
            Goal(
                f"{case}: largest deviation of cxrlib from the naive full-matrix version",
                dev, "<=", AGREE_TOL, unit="",
                detail=f"worst key {key or '-'}; naive {naive['time']:.1f} s = {naive['time'] / floor['time']:.2f}x floor, "
                f"{naive['extra_gb']:.2f} GB extra",
                smoke=smoke,
            )
        )  # fmt: skip
    if check_speed:
        ratio = cx["time"] / floor["time"] if floor["time"] > 0 else float("nan")
        goals.append(
            Goal(
                f"{case}: retrieval_metrics time / N x N matmul floor",
                ratio, "<=", GOAL_RATIO,
                detail=f"cxrlib {cx['time']:.1f} s vs floor {floor['time']:.1f} s wall (CPU {cx['cpu']:.1f} / "
                f"{floor['cpu']:.1f} s)",
                smoke=smoke,
            )
        )  # fmt: skip
        goals.append(
            Goal(
                f"{case}: retrieval_metrics extra memory (peak - baseline)",
                cx["extra_gb"], "<=", GOAL_EXTRA_GB, unit=" GB",
                detail=f"VmHWM during the call minus VmRSS before it ({cx['base_gb']:.2f} GB: runtime + inputs)"
                + ("" if cx.get("peak_reset") else "; earlier peak NOT cleared: an upper bound"),
                smoke=smoke,
            )
        )  # fmt: skip
    return goals


def cases_for(sizes: list[int], texts: str, goal_n: int) -> list[tuple[int, bool]]:
    """``(N, duplicates)`` to run: ``texts="both"`` runs realistic texts at every size and the worst case
    (all texts distinct) at ``goal_n`` only; ``"realistic"`` / ``"distinct"``: that kind at every size."""
    if texts == "realistic":
        return [(n, True) for n in sizes]
    if texts == "distinct":
        return [(n, False) for n in sizes]
    return [(n, True) for n in sizes] + [(n, False) for n in sizes if n == goal_n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="values of N (default 10000 50000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--texts",
        choices=("both", "realistic", "distinct"),
        default="both",
        help="realistic: repeated normal reports (M < N); distinct: every row its own report (M = N, the worst "
        "case, cxrlib's product is N x M); both (default): realistic at every N, distinct at the goal's N",
    )
    ap.add_argument("--no-duplicates", action="store_true", help="the same as --texts distinct")
    ap.add_argument(
        "--repeat", type=int, default=1, help="time floor and cxrlib this many times, keep the best"
    )
    ap.add_argument(
        "--jit-cold",
        action="store_true",
        help="also time numba's compile with an empty cache (~30 s, no goal)",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.n, args.seed, not args.no_duplicates)
        return 0
    sizes = args.sizes or ([2000, 5000] if args.quick else [10_000, GOAL_N])
    speed_n = max(sizes) if args.quick else GOAL_N
    texts = "distinct" if args.no_duplicates else args.texts
    cases = cases_for(sizes, texts, speed_n)

    import numba
    import torch

    print(
        f"bench_metrics: D={D}, cases (N, texts)={[(n, 'realistic' if d else 'distinct') for n, d in cases]}, "
        f"torch threads={torch.get_num_threads()}, numba threads={numba.get_num_threads()}"
        f"{' (QUICK: smoke sizes)' if args.quick else ''}; {machine_line()}"
    )
    if args.jit_cold:
        with tempfile.TemporaryDirectory() as cache:
            cold = spawn("jit_cold", 0, args.seed, env={**os.environ, "NUMBA_CACHE_DIR": cache})
        print(f"numba JIT compile (empty cache): {cold['time']:.1f}s (not included in any timing below)")

    goals: list[Goal] = []
    notes: list[str] = []
    for n, dup in cases:
        kind = "realistic" if dup else "distinct"
        floor = min((spawn("floor", n, args.seed, dup) for _ in range(args.repeat)), key=lambda r: r["time"])
        cx = min((spawn("cxrlib", n, args.seed, dup) for _ in range(args.repeat)), key=lambda r: r["time"])
        ratio = cx["time"] / floor["time"]
        m_unique = int(cx["metrics"]["n_unique_texts"])
        check_speed = n == speed_n
        if n * n * 4 > NAIVE_LIMIT_BYTES or (check_speed and n != min(sizes)):
            naive = (
                None  # where the speed goal is checked, the naive version only costs time (N = 10k checks it)
            )
            naive_txt = "naive not run" + (
                f" (N×N float32 = {n * n * 4 / 1e9:.0f} GB > {NAIVE_LIMIT_BYTES / 1e9:.0f} GB)"
                if n * n * 4 > NAIVE_LIMIT_BYTES
                else ""
            )
        else:
            naive = spawn("naive", n, args.seed, dup)
            naive_txt = f"naive {naive['time']:.1f}s ({naive['time'] / floor['time']:.2f}x)"
        print(
            f"N={n} {kind} texts (M={m_unique})  floor {floor['time']:.1f}s  cxrlib {cx['time']:.1f}s "
            f"({ratio:.2f}x floor)  {naive_txt}  extra memory cxrlib {cx['extra_gb']:.2f} GB"
        )
        extra = f"    CPU s floor {floor['cpu']:.1f} cxrlib {cx['cpu']:.1f}; extra memory floor {floor['extra_gb']:.2f} GB"
        if naive is not None:
            extra += f", naive {naive['extra_gb']:.2f} GB"
        extra += (
            f"; baseline before the call {cx['base_gb']:.2f} GB; JIT warm-up (cached) {cx['jit_s']:.2f}s, "
            f"import {cx['import_s']:.1f}s"
        )
        print(extra)
        mt = cx["metrics"]
        print(
            f"    i2t R@1 {mt['i2t_R@1']:.4f} R@10 {mt['i2t_R@10']:.4f} median rank {mt['i2t_median_rank']:.0f}"
            f" | t2i R@1 {mt['t2i_R@1']:.4f} R@10 {mt['t2i_R@10']:.4f} median rank {mt['t2i_median_rank']:.0f}"
            f" | i2t P@10_label {mt['i2t_P@10_label']:.4f} mAP@10_label {mt['i2t_mAP@10_label']:.4f}"
        )
        goals += goals_for(n, floor, cx, naive, smoke=args.quick, check_speed=check_speed, texts=kind)
        if n > speed_n:
            notes.append(
                f"N={n} {kind}: {cx['time']:.1f} s ({ratio:.2f}x floor), {cx['extra_gb']:.2f} GB extra (no goal)"
            )
    if speed_n not in sizes:
        notes.append(
            f"the time/memory goals are stated at N={GOAL_N}; run without --quick/--sizes to check them"
        )
    return finish(SCRIPT, goals, args.markdown, notes)


if __name__ == "__main__":
    sys.exit(main())
