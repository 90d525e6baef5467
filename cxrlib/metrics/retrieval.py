r"""Exact, chunked image↔report retrieval metrics and label-aware metrics (with patient-bootstrap CIs).

Inputs are paired embeddings: row ``i`` of ``image_emb`` (N, D) and row ``i`` of ``text_emb`` (N, D) come
from the same manifest row (one image and the report of its study). Both must be L2-normalised, so that the
cosine similarity is the plain dot product ``score(i, u) = image_i · text_u``.

Semantics (every choice below is deliberate; the notebooks quote this text)
----------------------------------------------------------------------------
**Identical reports are one gallery item.** Identical report strings embed identically (the embedding code
embeds each unique text once and copies the vector to every row that uses it), and a model cannot tell them
apart. The text side is therefore deduplicated by *exact* equality of the embedding rows (after conversion to
float32; ``-0.0 == 0.0``): texts that embed to the same vector — the same string, or strings the text encoder
cannot distinguish, e.g. equal up to its context length — form ONE gallery item. Let ``uid[i]`` be the
unique-text id of row ``i`` (ids in order of first appearance) and ``M`` the number of unique texts.

- **image→text (i2t):** N queries (every image row); the gallery is the M unique texts; the single relevant
  item for image ``i`` is ``uid[i]``.
- **text→image (t2i):** the queries are the texts of all N rows, but rows that share a text give identical
  queries, so each unique text is scored once and weighted by its row count (every t2i number equals the
  per-row average over the N rows). The gallery is the N images; the relevant images of text ``u`` are all rows
  with ``uid[i] == u`` — several images of one study (which share its report) and identical reports of
  different studies.

**Rank, ties counted pessimistically.** The rank of a query is the rank of its best-ranked relevant item,
``rank = 1 + #{irrelevant items with score >= best relevant score}``: an irrelevant item that ties with the
best relevant one is ranked above it. ``R@K`` = fraction of (weighted) queries with ``rank <= K``;
``mean_rank``; ``median_rank`` (``numpy.median`` semantics, i.e. the mean of the two middle values for an even
count; for t2i the median over the N rows); ``MRR`` = mean of ``1 / rank``.

**Label-aware metrics** (when ``labels`` (N,) small integers are given, typically 0 = normal, 1 = abnormal):
an item is relevant when it has the query's label. A deduplicated text's label is the label its rows share;
when its rows disagree, the majority label wins (a tie goes to the larger label value) and the number of such
texts is reported as ``n_text_label_conflicts``. The top-K list is ordered by score, exact ties broken
pessimistically (irrelevant before relevant). ``P@K = (#relevant in top K) / K``;
``AP@K = (1 / min(K, R_q)) * sum_{k <= K} P@k * rel_k`` with ``R_q`` the number of label-relevant gallery
items (``AP@K = 0`` when ``R_q = 0``, which can only happen to an image whose own report was out-voted);
``mAP@K`` is the (weighted) mean. When K exceeds the gallery size G (M for i2t, N for t2i), K = G is used
(keys keep the requested K; ``R@K`` is then 1).

**Exactness.** Results equal those of a float64 brute force on the float32 embeddings: all tie decisions
use float64 dot products computed in one fixed summation order (so identical vectors give identical scores).
The fast path scores in float32; a float32 dot product of D terms is off by at most
``tau = gamma_D * max|x| * max|y|`` (``gamma_D = D u / (1 - D u)``, ``u = 2**-24``; about 3.1e-5 for D = 512,
a rigorous bound), so float32 decides every comparison that is farther than ``tau`` from the threshold and only
items inside the ``± tau`` window around a threshold, or near-tied top-K lists, are re-scored in float64.
Sub-float64-rounding differences (~1e-14) between *different* vectors are not treated as ties.

**Bootstrap CIs** (``n_boot > 0`` with ``patient_ids``): PATIENTS are resampled, see
:mod:`cxrlib.metrics.bootstrap`.

**Memory and speed.** Scores are computed one row-chunk of images at a time (``chunk × M`` float32, about
256 MB by default), never N × N; the rest is O(N · (D + K)). Each chunk is scored ONCE (one float32 matrix
product of the image rows against the M unique texts, full float32 precision enforced) and a numba kernel
derives both directions from it in one fused pass, the columns split among threads (each thread owns its
columns' statistics and keeps partial row statistics, merged after the chunk). Per row, a vectorised scan over
tiles of 32 scores counts the scores above the row's and each column's threshold and records, per tile, the
largest score and whether any score needs the slow path (inside a ``± tau`` window, or above a column's
running top-K minimum); only those tiles, and the few tiles whose maximum can reach the row's top K, are
revisited element by element. Top-K lists are kept as float32 buffers of K + 8 entries and re-scored in
float64 only when near-ties make their order uncertain (a full float64 re-scoring of the query is the last
resort, needed only for massive exact ties). On 2 CPU cores at N = 50 000, D = 512 the whole computation takes
about 0.75× the time of the single N × N float32 matrix product with realistic duplicated reports (the product
is N × M) and about 1.3–1.5× with no duplicates at all (M = N); see ``benchmarks/bench_metrics.py``.

**Input checks.** Shape mismatch, N = 0, NaN/inf (the modality and the first bad row are named), labels or
patient ids of the wrong length and non-normalised rows (``| ||x|| - 1 | > 1e-2``; an ERROR, not a warning:
un-normalised embeddings silently change every ranking) raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import torch
from tqdm.auto import tqdm

from cxrlib.metrics._inputs import (
    NORM_TOLERANCE,
    check_bootstrap_args,
    checked_pair,
    label_codes,
    row_norms,
)
from cxrlib.metrics.bootstrap import bootstrap_ci
from cxrlib.metrics.groups import majority_labels, unique_rows
from cxrlib.metrics.kernels import (
    TILE,
    fallback_topk,
    finalize_topk,
    fused_pass,
    merge_rows,
    thresholds,
)

__all__ = [
    "NORM_TOLERANCE",
    "DirectionMetrics",
    "PerQueryMetrics",
    "per_query_metrics",
    "retrieval_metrics",
    "float32_dot_error_bound",
]

_CHUNK_BYTES = 256 * 2**20
_MAX_CHUNK_ROWS = 16384
_TOPK_MARGIN = 8
_U32 = 2.0**-24


# ----------------------------------------------------------------------------------------------------------
# result containers
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DirectionMetrics:
    """Per-query results of one retrieval direction (``"i2t"`` or ``"t2i"``).

    Q = number of distinct queries: N for i2t, M (unique texts) for t2i.

    - ``ranks`` (Q,) int64 — pessimistic rank of the best relevant item, in ``[1, gallery_size]``.
    - ``weights`` (Q,) int64 — how many manifest rows the query stands for (1 for i2t; row count for t2i).
    - ``row_query`` (N,) int64 — the query of each manifest row (``arange(N)`` for i2t, ``uid`` for t2i).
    - ``precision`` / ``average_precision`` (Q, len(ks)) float64 — label-aware P@K and AP@K per query
      (columns follow ``ks``), or ``None`` without labels.
    - ``gallery_size`` — G (M for i2t, N for t2i).
    - ``n_fallback`` — queries whose top-K list needed a full float64 re-scoring (massive near-ties).
    """

    direction: str
    ranks: np.ndarray
    weights: np.ndarray
    row_query: np.ndarray
    precision: np.ndarray | None
    average_precision: np.ndarray | None
    gallery_size: int
    n_fallback: int = 0


@dataclass(frozen=True)
class PerQueryMetrics:
    """Everything :func:`per_query_metrics` computed; :meth:`summary` turns it into the flat metric dict.

    - ``ks`` — the requested cut-offs (sorted, unique).
    - ``uid`` (N,) int64 — unique-text id of each row; ``n_unique_texts`` = M.
    - ``text_labels`` (M,) — label of each unique text (majority of its rows), ``None`` without labels.
    - ``tau`` — the float32 error bound used for the exact fast path.
    """

    ks: tuple[int, ...]
    uid: np.ndarray
    n_unique_texts: int
    i2t: DirectionMetrics
    t2i: DirectionMetrics
    text_labels: np.ndarray | None = None
    n_text_label_conflicts: int = 0
    tau: float = 0.0
    has_labels: bool = False

    @property
    def n_queries(self) -> int:
        """N, the number of manifest rows (image queries)."""
        return int(self.uid.shape[0])

    def row_values(self) -> dict[str, np.ndarray]:
        """Per-row (N,) float64 values of every metric key; each metric is the mean over rows of its array,
        except ``*_median_rank`` (the median). This is what :func:`bootstrap_ci` resamples."""
        out: dict[str, np.ndarray] = {}
        for d in (self.i2t, self.t2i):
            ranks = d.ranks[d.row_query].astype(np.float64)
            for k in self.ks:
                out[f"{d.direction}_R@{k}"] = (ranks <= k).astype(np.float64)
            out[f"{d.direction}_mean_rank"] = ranks
            out[f"{d.direction}_median_rank"] = ranks
            out[f"{d.direction}_MRR"] = 1.0 / ranks
        if self.has_labels:
            for d in (self.i2t, self.t2i):
                assert d.precision is not None and d.average_precision is not None
                for j, k in enumerate(self.ks):
                    out[f"{d.direction}_P@{k}_label"] = d.precision[d.row_query, j]
                    out[f"{d.direction}_mAP@{k}_label"] = d.average_precision[d.row_query, j]
        return out

    @staticmethod
    def median_keys(keys: Iterable[str]) -> tuple[str, ...]:
        """The keys among ``keys`` whose statistic is the median rather than the mean."""
        return tuple(k for k in keys if k.endswith("_median_rank"))

    def summary(self) -> dict[str, float]:
        """The flat metric dict (point estimates + bookkeeping keys), see the module docstring."""
        vals = self.row_values()
        med = set(self.median_keys(vals))
        out: dict[str, float] = {
            k: float(np.median(v)) if k in med else float(np.mean(v)) for k, v in vals.items()
        }
        out["n_queries"] = self.n_queries
        out["n_unique_texts"] = self.n_unique_texts
        if self.has_labels:
            out["n_text_label_conflicts"] = self.n_text_label_conflicts
        return out


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def float32_dot_error_bound(d: int, max_norm_x: float = 1.0, max_norm_y: float = 1.0) -> float:
    """Worst-case error of a float32 dot product of two D-vectors (any summation order, with or without
    FMA): ``gamma_D * ||x|| * ||y||`` with ``gamma_D = D u / (1 - D u)``, ``u = 2**-24`` (Higham, Thm 3.1,
    and Cauchy–Schwarz), inflated by 1 % for safety."""
    du = d * _U32
    if du >= 0.5:
        raise ValueError(f"D = {d} is too large for the float32 error bound.")
    return 1.01 * du / (1.0 - du) * max_norm_x * max_norm_y + 1e-30


def _window(b: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 [lo, hi] containing [b - tau, b + tau] (rounded outwards); ``b`` (n,) float64 → two (n,)."""
    lo64 = b - tau
    hi64 = b + tau
    lo = lo64.astype(np.float32)
    hi = hi64.astype(np.float32)
    m = lo.astype(np.float64) > lo64
    lo[m] = np.nextafter(lo[m], np.float32(-np.inf))
    m = hi.astype(np.float64) < hi64
    hi[m] = np.nextafter(hi[m], np.float32(np.inf))
    return lo, hi


@contextmanager
def _fp32_matmul() -> Iterator[None]:
    """Force full-precision float32 matmul (``set_float32_matmul_precision('medium')`` would allow bf16
    on CPUs with AMX and TF32 on GPUs, breaking the error bound)."""
    prev = torch.get_float32_matmul_precision()
    if prev != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if prev != "highest":
            torch.set_float32_matmul_precision(prev)


def kernel_threads() -> int:
    """Threads of the parallel numba kernels: torch's intra-op count (``run.num_threads``, ``train.threads``),
    capped at numba's pool. The kernels give the same result for any count (module :mod:`cxrlib.metrics.kernels`)."""
    return max(1, min(torch.get_num_threads(), int(numba.config.NUMBA_NUM_THREADS)))


@contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """numba's kernels at ``n`` threads inside the block, and torch's thread count unchanged after it.

    numba's OpenMP threading layer, when it starts (a process's first numba thread call or parallel kernel), sets
    the process's OpenMP thread count to its pool size (all cores by default), and torch reads that count:
    without this, the first metric computed during a one-thread
    training (the validation metrics of each epoch) would put torch back on every core, change the float bits
    of the next epochs and, with trainings side by side (:mod:`cxrlib.parallel`), oversubscribe the cores."""
    before_torch = torch.get_num_threads()  # first: numba's first call starts its pool and moves it
    before_numba = numba.get_num_threads()
    numba.set_num_threads(int(n))
    try:
        yield
    finally:
        numba.set_num_threads(before_numba)
        if torch.get_num_threads() != before_torch:
            torch.set_num_threads(before_torch)


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def per_query_metrics(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    progress: bool = False,
) -> PerQueryMetrics:
    """Per-query ranks (both directions) and, with ``labels``, per-query P@K / AP@K.

    Args:
        image_emb: (N, D) L2-normalised image embeddings (numpy or torch, any float dtype; scored as float32).
        text_emb: (N, D) L2-normalised report embeddings, row i paired with image row i.
        labels: optional (N,) integer labels (0 normal / 1 abnormal, or any small integer set).
        ks: cut-offs K for R@K, P@K and mAP@K.
        chunk_size: image rows scored per chunk; ``None`` → about 256 MB of float32 scores per chunk.
        progress: show a tqdm bar over chunks.

    Returns:
        :class:`PerQueryMetrics`; ``.summary()`` gives the flat dict of :func:`retrieval_metrics`.
    Memory: O(chunk_size × M + N·(D + K)); never N × N.
    """
    img, txt, ks_t = checked_pair(image_emb, text_emb, ks, chunk_size)
    n, d = img.shape

    uid, first = unique_rows(txt)
    U = np.ascontiguousarray(txt[first])
    del txt
    m = U.shape[0]
    w = np.bincount(uid, minlength=m).astype(np.int64)

    has_labels = labels is not None
    if has_labels:
        values, lab = label_codes(labels, n)
        nl = values.size
        tlab, conflicts = majority_labels(uid, lab, m, nl)
        rq_i2t = np.bincount(tlab, minlength=nl)[lab].astype(np.int64)
        rq_t2i = np.bincount(lab, minlength=nl)[tlab].astype(np.int64)
        kmax = max(ks_t)
        kk_i2t, kk_t2i = min(kmax, m), min(kmax, n)
        lr, lc = min(kmax + _TOPK_MARGIN, m), min(kmax + _TOPK_MARGIN, n)
    else:
        lab = tlab = np.zeros(0, np.int64)
        conflicts = 0
        lr = lc = kk_i2t = kk_t2i = 0

    norm_img = float(row_norms(img).max())
    norm_txt = float(row_norms(U).max())
    tau = float32_dot_error_bound(d, norm_img, norm_txt)
    b_row, b_col = thresholds(img, U, uid, m)
    row_lo, row_hi = _window(b_row, tau)
    col_lo, col_hi = _window(b_col, tau)

    if chunk_size is None:
        chunk = max(1, min(n, _MAX_CHUNK_ROWS, _CHUNK_BYTES // (4 * m)))
    else:
        chunk = min(int(chunk_size), n)
    nb = max(1, min(kernel_threads(), m))
    blocks = np.linspace(0, m, nb + 1).round().astype(np.int64)

    S = np.empty((chunk, m), np.float32)
    SI = S.view(np.int32)
    S_t = torch.from_numpy(S)
    Ut = torch.from_numpy(U).T
    img_t = torch.from_numpy(img)
    cnt_part = np.zeros((nb, chunk), np.int64)
    n_tiles = (int(np.diff(blocks).max()) + TILE - 1) // TILE
    tkey = np.empty((nb, n_tiles), np.int32)
    tflag = np.empty((nb, n_tiles), np.int32)
    tmask = np.empty((nb, n_tiles), np.uint32)
    ttop = np.empty((nb, max(lr, 1)), np.int32)
    tv_part = np.empty((nb, chunk, lr), np.float32)
    ti_part = np.empty((nb, chunk, lr), np.int64)
    tn_part = np.zeros((nb, chunk), np.int64)
    row_cnt = np.zeros(n, np.int64)
    row_tv = np.empty((n, lr), np.float32)
    row_ti = np.empty((n, lr), np.int64)
    row_tn = np.zeros(n, np.int64)
    col_cnt = np.zeros(m, np.int32)
    col_tv = np.empty((m, lc), np.float32)
    col_ti = np.empty((m, lc), np.int64)
    col_tn = np.zeros(m, np.int64)
    col_min = np.full(m, -np.inf if lc > 0 else np.inf, np.float32)

    n_chunks = math.ceil(n / chunk)
    with (
        _fp32_matmul(),
        numba_threads(nb),
        tqdm(total=n_chunks, desc="retrieval metrics", unit="chunk", disable=not progress) as bar,
    ):
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            rows = r1 - r0
            torch.matmul(img_t[r0:r1], Ut, out=S_t[:rows])
            # guard: the paired scores must agree with their float64 values within the bound
            err = np.abs(S[np.arange(rows), uid[r0:r1]].astype(np.float64) - b_row[r0:r1]).max()
            if not err <= tau:
                raise RuntimeError(
                    f"float32 matmul error {err:.3g} exceeds the bound {tau:.3g}: the matmul backend is not "
                    "computing in full float32 (e.g. torch.backends.mkldnn.matmul.fp32_precision = 'bf16'); "
                    "reset it to full precision."
                )
            fused_pass(
                S, SI, rows, r0, img, U, uid, b_row, row_lo, row_hi, b_col, col_lo, col_hi, blocks,
                cnt_part, tv_part, ti_part, tn_part, col_cnt, col_tv, col_ti, col_tn, col_min, tkey, tflag, tmask, ttop,
            )  # fmt: skip
            merge_rows(rows, r0, cnt_part, tv_part, ti_part, tn_part, row_cnt, row_tv, row_ti, row_tn)
            bar.update(1)
    del S, SI, S_t, tv_part, ti_part

    P_i2t = AP_i2t = P_t2i = AP_t2i = None
    nfb_i2t = nfb_t2i = 0
    if has_labels:
        P_i2t, AP_i2t, nfb_i2t = _label_metrics(
            row_tv, row_ti, row_tn, img, U, lab, tlab, rq_i2t, kk_i2t, ks_t, m, tau
        )
        P_t2i, AP_t2i, nfb_t2i = _label_metrics(
            col_tv, col_ti, col_tn, U, img, tlab, lab, rq_t2i, kk_t2i, ks_t, n, tau
        )

    i2t = DirectionMetrics(
        direction="i2t",
        ranks=row_cnt + 1,
        weights=np.ones(n, np.int64),
        row_query=np.arange(n, dtype=np.int64),
        precision=P_i2t,
        average_precision=AP_i2t,
        gallery_size=m,
        n_fallback=nfb_i2t,
    )
    t2i = DirectionMetrics(
        direction="t2i",
        ranks=col_cnt.astype(np.int64) + 1,
        weights=w,
        row_query=uid,
        precision=P_t2i,
        average_precision=AP_t2i,
        gallery_size=n,
        n_fallback=nfb_t2i,
    )
    return PerQueryMetrics(
        ks=ks_t,
        uid=uid,
        n_unique_texts=m,
        i2t=i2t,
        t2i=t2i,
        text_labels=values[tlab] if has_labels else None,
        n_text_label_conflicts=conflicts,
        tau=tau,
        has_labels=has_labels,
    )


def _label_metrics(
    tv: np.ndarray,
    ti: np.ndarray,
    tn: np.ndarray,
    Xq: np.ndarray,
    Xg: np.ndarray,
    qlab: np.ndarray,
    glab: np.ndarray,
    rq: np.ndarray,
    kk: int,
    ks: tuple[int, ...],
    g_size: int,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Label P@K / AP@K of Q queries against a gallery of G items from their top-L buffers.

    ``tv`` / ``ti`` (Q, L), ``tn`` (Q,): the buffers; ``Xq`` (Q, D) / ``Xg`` (G, D) float32 query / gallery
    rows; ``qlab`` (Q,) / ``glab`` (G,) label codes; ``rq`` (Q,) label-relevant gallery sizes;
    ``kk = min(max(ks), G)``. Returns ``(P (Q, len(ks)), AP (Q, len(ks)), number of queries that needed the
    full float64 fallback)``."""
    nq = tv.shape[0]
    kpos = np.array([min(k, g_size) for k in ks], np.int64)
    P = np.zeros((nq, len(ks)), np.float64)
    AP = np.zeros((nq, len(ks)), np.float64)
    fallback = np.zeros(nq, np.bool_)
    finalize_topk(tv, ti, tn, Xq, Xg, qlab, glab, rq, kk, kpos, tau, P, AP, fallback)
    qs = np.flatnonzero(fallback).astype(np.int64)
    if qs.size:
        fallback_topk(qs, Xq, Xg, qlab, glab, rq, kk, kpos, P, AP)
    return P, AP, int(qs.size)


def retrieval_metrics(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    patient_ids: np.ndarray | Sequence[object] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Image→text and text→image retrieval metrics of paired embeddings (semantics: module docstring).

    Args:
        image_emb: (N, D) L2-normalised image embeddings; row i pairs with ``text_emb`` row i.
        text_emb: (N, D) L2-normalised report embeddings (identical reports → identical rows).
        labels: optional (N,) integer labels → ``{dir}_P@{k}_label``, ``{dir}_mAP@{k}_label`` and
            ``n_text_label_conflicts``.
        ks: cut-offs.
        patient_ids: (N,) patient of each row; required when ``n_boot > 0`` (patients are resampled).
        n_boot: bootstrap replicates (0 = no CIs); adds ``{key}_lo`` / ``{key}_hi`` (95 %) for every metric.
        seed: bootstrap seed.
        chunk_size: image rows per score chunk (``None`` → ~256 MB of scores).
        progress: tqdm bar over chunks.

    Returns:
        Flat dict: ``i2t_R@{k}``, ``i2t_mean_rank``, ``i2t_median_rank``, ``i2t_MRR`` (and ``t2i_``), label
        keys, ``n_queries`` (N), ``n_unique_texts`` (M), and the CI keys, each CI right after its metric.
    """
    n_rows = int(image_emb.shape[0]) if getattr(image_emb, "ndim", 0) >= 1 else len(image_emb)
    check_bootstrap_args(n_boot, patient_ids, n_rows)
    pq = per_query_metrics(
        image_emb, text_emb, labels=labels, ks=ks, chunk_size=chunk_size, progress=progress
    )
    point = pq.summary()
    if n_boot == 0:
        return point
    vals = pq.row_values()
    ci = bootstrap_ci(vals, patient_ids, n_boot=n_boot, seed=seed, median_keys=pq.median_keys(vals))
    out: dict[str, float] = {}
    for k, v in point.items():
        out[k] = v
        if f"{k}_lo" in ci:
            out[f"{k}_lo"] = ci[f"{k}_lo"]
            out[f"{k}_hi"] = ci[f"{k}_hi"]
    return out
