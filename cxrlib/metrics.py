r"""Exact, chunked image↔report retrieval metrics, label-aware metrics and patient-bootstrap CIs.

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

**Bootstrap CIs** (``n_boot > 0`` with ``patient_ids``): PATIENTS are resampled with replacement (all rows of a
drawn patient come along, for both directions); each metric is recomputed from the fixed per-query values,
i.e. the gallery stays fixed and only the query set is resampled — the CI covers query-sampling variability
(which patients were evaluated), not gallery variability. ``{key}_lo`` / ``{key}_hi`` are the 2.5 / 97.5
percentiles of the replicates. Resampling rows instead of patients would understate the CI when patients
contribute several correlated rows; pass ``patient_ids=np.arange(N)`` if rows really are independent.

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
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
import torch
from numba import njit, prange
from tqdm.auto import tqdm

__all__ = [
    "NORM_TOLERANCE",
    "DirectionMetrics",
    "PerQueryMetrics",
    "retrieval_metrics",
    "per_query_metrics",
    "bootstrap_replicates",
    "bootstrap_ci",
    "float32_dot_error_bound",
    "TABLE_KEYS",
    "metrics_table",
    "chance_levels",
]

NORM_TOLERANCE: float = 1e-2
"""Rows whose L2 norm differs from 1 by more than this are rejected."""

_CHUNK_BYTES = 256 * 2**20
_MAX_CHUNK_ROWS = 16384
_TOPK_MARGIN = 8
_TILE = 32  # at most 32: _scan_tile returns a uint32 bit mask per tile
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
# numba kernels
# ----------------------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _dot64(X, i, Y, j):  # pragma: no cover - compiled
    """float64 dot product of float32 rows X[i], Y[j] in a fixed order (identical rows → identical result).

    Each product of two float32 numbers is exact in float64; four interleaved partial sums, then
    ``(s0 + s1) + (s2 + s3)``. Commutative in its two arguments bit for bit."""
    d = X.shape[1]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    k = 0
    while k + 4 <= d:
        s0 += np.float64(X[i, k]) * np.float64(Y[j, k])
        s1 += np.float64(X[i, k + 1]) * np.float64(Y[j, k + 1])
        s2 += np.float64(X[i, k + 2]) * np.float64(Y[j, k + 2])
        s3 += np.float64(X[i, k + 3]) * np.float64(Y[j, k + 3])
        k += 4
    while k < d:
        s0 += np.float64(X[i, k]) * np.float64(Y[j, k])
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def _row_hashes(bits):  # pragma: no cover - compiled
    """64-bit hash of each row of a float32 array viewed as uint32 (``-0.0`` hashed like ``0.0``)."""
    n, d = bits.shape
    out = np.empty(n, np.uint64)
    neg0 = np.uint64(0x80000000)
    mul = np.uint64(0x100000001B3)
    sh = np.uint64(29)
    for i in range(n):
        h = np.uint64(0x9E3779B97F4A7C15)
        for k in range(d):
            w = np.uint64(bits[i, k])
            if w == neg0:
                w = np.uint64(0)
            h = (h ^ w) * mul
            h ^= h >> sh
        out[i] = h
    return out


@njit(cache=True)
def _rows_equal_rep(X, rep):  # pragma: no cover - compiled
    """ok[i] = (X[i] == X[rep[i]]) element-wise (value equality)."""
    n, d = X.shape
    ok = np.ones(n, np.bool_)
    for i in range(n):
        j = rep[i]
        if j != i:
            for k in range(d):
                if X[i, k] != X[j, k]:
                    ok[i] = False
                    break
    return ok


@njit(cache=True)
def _thresholds(img, U, uid, m):  # pragma: no cover - compiled
    """b_row[i] = img_i · U[uid_i] (float64); b_col[u] = max of b_row over the rows of text u."""
    n = img.shape[0]
    b_row = np.empty(n, np.float64)
    for i in range(n):
        b_row[i] = _dot64(img, i, U, uid[i])
    b_col = np.full(m, -np.inf)
    for i in range(n):
        u = uid[i]
        if b_row[i] > b_col[u]:
            b_col[u] = b_row[i]
    return b_row, b_col


@njit(cache=True, inline="always")
def _insert2(tv, ti, a, n, cap, s, j):  # pragma: no cover - compiled
    """Insert (s, j) into the descending buffer tv[a, :cap] / ti[a, :cap] holding n entries; returns the new
    n. Precondition: n < cap or s > tv[a, cap - 1]. Equal values keep their arrival order."""
    if n < cap:
        pos = n
        n += 1
    else:
        pos = cap - 1
    while pos > 0 and tv[a, pos - 1] < s:
        tv[a, pos] = tv[a, pos - 1]
        ti[a, pos] = ti[a, pos - 1]
        pos -= 1
    tv[a, pos] = s
    ti[a, pos] = j
    return n


@njit(cache=True, inline="always")
def _insert_key(keys, a, n, cap, k):  # pragma: no cover - compiled
    """Insert k into the descending buffer keys[a, :cap] holding n entries; returns the new n."""
    if n < cap:
        pos = n
        n += 1
    else:
        pos = cap - 1
    while pos > 0 and keys[a, pos - 1] < k:
        keys[a, pos] = keys[a, pos - 1]
        pos -= 1
    keys[a, pos] = k
    return n


@njit(cache=True, inline="always")
def _insert3(tv, ti, a, b, n, cap, s, j):  # pragma: no cover - compiled
    """As :func:`_insert2` for the buffer tv[a, b, :cap] / ti[a, b, :cap]."""
    if n < cap:
        pos = n
        n += 1
    else:
        pos = cap - 1
    while pos > 0 and tv[a, b, pos - 1] < s:
        tv[a, b, pos] = tv[a, b, pos - 1]
        ti[a, b, pos] = ti[a, b, pos - 1]
        pos -= 1
    tv[a, b, pos] = s
    ti[a, b, pos] = j
    return n


@njit(cache=True, inline="always")
def _key(bits):  # pragma: no cover - compiled
    """Order-preserving int32 key of a float32 given its int32 bit pattern (finite values; -0.0 < 0.0)."""
    return np.int32(bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@njit(cache=True, inline="always")
def _scan_tile(srow, brow, base, n, rlo, rhi, clo, chi, cmin, ccnt):  # pragma: no cover - compiled
    """Branch-free scan of srow[base:base+n] (vectorised by LLVM for a constant n; int32 arithmetic keeps
    the vectors wide). Returns the number of scores > rhi, whether a score lies inside a threshold window, a
    bit mask of the scores above their column's top-L minimum (bit jj ↔ element base + jj; n <= 32) and the
    largest score's key; adds the column counts (scores > chi) to ccnt."""
    one = np.int32(1)
    zero = np.int32(0)
    c = zero
    fw = zero
    fc = np.uint32(0)
    m = np.int32(-(2**31))
    for jj in range(n):
        j = base + jj
        s = srow[j]
        h = chi[j]
        c += one if s > rhi else zero
        ccnt[j] += one if s > h else zero
        fw |= one if (((s >= rlo) & (s <= rhi)) | ((s >= clo[j]) & (s <= h))) else zero
        fc |= (np.uint32(1) << np.uint32(jj)) if s > cmin[j] else np.uint32(0)
        k = _key(brow[j])
        m = k if k > m else m
    return c, fw, fc, m


@njit(cache=True)
def _pass_block(
    S, SI, nrows, r0, c0, c1, bi, img, U, uid, b_row, row_lo, row_hi, b_col, col_lo, col_hi,
    cnt_part, tv_part, ti_part, tn_part, col_cnt, col_tv, col_ti, col_tn, col_min, tkey, tflag, tmask, ttop,
):  # fmt: skip  # pragma: no cover - compiled
    """The work of one column block [c0, c1) of a score chunk, for every row of the chunk; see _fused_pass.

    Per row, a vectorised pass over tiles of _TILE columns counts the scores above the thresholds (both
    directions) and records per tile whether it holds a slow-path element and its largest score. The row's
    top-L can only contain elements >= theta = the L-th largest tile maximum, so only tiles flagged or
    with a maximum >= theta are re-scanned element by element (exact float64 window checks, top-L inserts).
    """
    lr = tv_part.shape[2]
    lc = col_tv.shape[1]
    w = c1 - c0
    nft = w // _TILE
    ntiles = nft + (1 if nft * _TILE < w else 0)
    clo = col_lo[c0:c1]
    chi = col_hi[c0:c1]
    cmin = col_min[c0:c1]
    ccnt = col_cnt[c0:c1]
    for r in range(nrows):
        i = r0 + r
        ui = uid[i]
        rlo = row_lo[i]
        rhi = row_hi[i]
        bthr = b_row[i]
        srow = S[r, c0:c1]
        brow = SI[r, c0:c1]
        cnt = 0
        ntop = 0  # top-lr tile maxima (keys), descending, in ttop[bi, :]
        for t in range(ntiles):
            if t < nft:
                c, fw, fc, m = _scan_tile(srow, brow, t * _TILE, _TILE, rlo, rhi, clo, chi, cmin, ccnt)
            else:
                c, fw, fc, m = _scan_tile(
                    srow, brow, t * _TILE, w - t * _TILE, rlo, rhi, clo, chi, cmin, ccnt
                )
            cnt += c
            tflag[bi, t] = fw
            tmask[bi, t] = fc
            tkey[bi, t] = m
            if lr > 0 and (ntop < lr or m > ttop[bi, lr - 1]):
                ntop = _insert_key(ttop, bi, ntop, lr, m)
        theta = ttop[bi, lr - 1] if (lr > 0 and ntop == lr) else -(2**31)
        n = 0
        rmin = np.float32(-np.inf)
        for t in range(ntiles):
            flag = tflag[bi, t]
            cmask = tmask[bi, t]
            row_cand = lr > 0 and tkey[bi, t] >= theta
            if flag == 0 and cmask == 0 and not row_cand:
                continue
            j0 = t * _TILE
            j1 = min(w, j0 + _TILE)
            if flag != 0:  # a score inside a threshold window: exact float64 check (rare)
                for j in range(j0, j1):
                    s = srow[j]
                    u = c0 + j
                    h = chi[j]
                    in_r = (s >= rlo) & (s <= rhi)
                    in_c = (s >= clo[j]) & (s <= h)
                    if (in_r or in_c) and ui != u:
                        e = _dot64(img, i, U, u)
                        if in_r and e >= bthr:
                            cnt += 1
                        if in_c and e >= b_col[u]:
                            ccnt[j] += 1
            if row_cand:
                for j in range(j0, j1):
                    s = srow[j]
                    if s > rmin and _key(brow[j]) >= theta:
                        n = _insert3(tv_part, ti_part, bi, r, n, lr, s, c0 + j)
                        if n == lr:
                            rmin = tv_part[bi, r, lr - 1]
            j = j0
            while cmask != 0:  # the scores above their column's top-L minimum
                if cmask & np.uint32(1):
                    s = srow[j]
                    if s > cmin[j]:
                        u = c0 + j
                        col_tn[u] = _insert2(col_tv, col_ti, u, col_tn[u], lc, s, i)
                        if col_tn[u] == lc:
                            cmin[j] = col_tv[u, lc - 1]
                cmask >>= np.uint32(1)
                j += 1
        cnt_part[bi, r] = cnt
        tn_part[bi, r] = n


@njit(parallel=True, cache=True)
def _fused_pass(
    S, SI, nrows, r0, img, U, uid, b_row, row_lo, row_hi, b_col, col_lo, col_hi, blocks,
    cnt_part, tv_part, ti_part, tn_part, col_cnt, col_tv, col_ti, col_tn, col_min, tkey, tflag, tmask, ttop,
):  # fmt: skip  # pragma: no cover - compiled
    """One pass over a score chunk S[:nrows] (image rows r0..r0+nrows × all M unique texts); SI is S's int32
    view (for order-preserving keys).

    Columns are split into blocks (one per thread); each block keeps partial row statistics
    (cnt_part[b, r], row top-L buffers tv/ti/tn_part[b, r]) and owns its columns' statistics outright
    (col_cnt, col_tv/ti/tn, col_min), so no two threads write the same memory.

    Counting (both directions): an irrelevant item (uid[i] != u) counts when its exact score >= the
    relevant threshold b. float32 decides outside [lo, hi] = [b - tau, b + tau] (rounded outwards); inside the
    window the float64 score decides. Relevant items never exceed hi (their exact score <= b).
    Top-L buffers hold the L largest float32 scores (insert when strictly above the current minimum).
    """
    nb = blocks.shape[0] - 1
    for bi in prange(nb):
        _pass_block(
            S, SI, nrows, r0, blocks[bi], blocks[bi + 1], bi, img, U, uid, b_row, row_lo, row_hi, b_col,
            col_lo, col_hi, cnt_part, tv_part, ti_part, tn_part, col_cnt, col_tv, col_ti, col_tn, col_min,
            tkey, tflag, tmask, ttop,
        )  # fmt: skip


@njit(cache=True)
def _merge_rows(
    nrows, r0, cnt_part, tv_part, ti_part, tn_part, row_cnt, row_tv, row_ti, row_tn
):  # pragma: no cover
    """Merge the per-block partial row statistics of one chunk into the global row arrays."""
    nb = cnt_part.shape[0]
    cap = row_tv.shape[1]
    for r in range(nrows):
        i = r0 + r
        c = 0
        for b in range(nb):
            c += cnt_part[b, r]
        row_cnt[i] = c
        if cap > 0:
            ptr = np.zeros(nb, np.int64)
            n = 0
            while n < cap:
                best = -1
                bv = np.float32(0.0)
                for b in range(nb):
                    if ptr[b] < tn_part[b, r]:
                        v = tv_part[b, r, ptr[b]]
                        if best < 0 or v > bv:
                            best = b
                            bv = v
                if best < 0:
                    break
                row_tv[i, n] = bv
                row_ti[i, n] = ti_part[best, r, ptr[best]]
                ptr[best] += 1
                n += 1
            row_tn[i] = n


@njit(cache=True, inline="always")
def _label_scores(rel, kk, kpos, rq, P, AP, q):  # pragma: no cover - compiled
    """P@k and AP@k (columns of kpos = effective cut-offs, ascending) from the relevance list rel[:kk]."""
    hits = 0
    apsum = 0.0
    j = 0
    nk = kpos.shape[0]
    for t in range(kk):
        if rel[t]:
            hits += 1
            apsum += hits / (t + 1.0)
        while j < nk and kpos[j] == t + 1:
            k = kpos[j]
            P[q, j] = hits / k
            AP[q, j] = apsum / min(k, rq) if rq > 0 else 0.0
            j += 1


@njit(parallel=True, cache=True)
def _finalize_topk(tv, ti, tn, Xq, Xg, qlab, glab, rq, kk, kpos, tau, P, AP, fallback):  # pragma: no cover
    """Label metrics from each query's float32 top-L buffer (descending). Exact unless flagged in fallback.

    No near-tie (consecutive float32 gaps > 2 tau) among the first kk + 1 entries → the float32 order is the
    exact order. Otherwise the buffer is re-scored in float64 and sorted pessimistically (score desc,
    irrelevant first); this is exact when the kk-th exact score exceeds every item outside the buffer
    (all <= smallest buffered float32 + tau), else the query is flagged for a full float64 re-scoring.
    """
    nq = tv.shape[0]
    g_size = Xg.shape[0]
    for q in prange(nq):
        n = tn[q]
        m = min(kk + 1, n)
        tie = False
        for j in range(m - 1):
            if np.float64(tv[q, j]) - np.float64(tv[q, j + 1]) <= 2.0 * tau:
                tie = True
                break
        rel = np.empty(n, np.bool_)
        if not tie:
            for j in range(kk):
                rel[j] = glab[ti[q, j]] == qlab[q]
        else:
            s64 = np.empty(n, np.float64)
            for j in range(n):
                g = ti[q, j]
                s64[j] = _dot64(Xq, q, Xg, g)
                rel[j] = glab[g] == qlab[q]
            # insertion sort: score descending, irrelevant (False) before relevant among exact ties
            for a in range(1, n):
                sv = s64[a]
                rv = rel[a]
                p = a
                while p > 0 and (s64[p - 1] < sv or (s64[p - 1] == sv and rel[p - 1] and not rv)):
                    s64[p] = s64[p - 1]
                    rel[p] = rel[p - 1]
                    p -= 1
                s64[p] = sv
                rel[p] = rv
            if n < g_size and not (s64[kk - 1] > np.float64(tv[q, n - 1]) + tau):
                fallback[q] = True
                continue
        _label_scores(rel, kk, kpos, rq[q], P, AP, q)


@njit(parallel=True, cache=True)
def _fallback_topk(qs, Xq, Xg, qlab, glab, rq, kk, kpos, P, AP):  # pragma: no cover - compiled
    """Exact label metrics for the queries qs from their full float64 score vectors."""
    g_size = Xg.shape[0]
    for t in prange(qs.shape[0]):
        q = qs[t]
        s = np.empty(g_size, np.float64)
        n_irr = 0
        for g in range(g_size):
            s[g] = _dot64(Xq, q, Xg, g)
            if glab[g] != qlab[q]:
                n_irr += 1
        perm = np.empty(g_size, np.int64)  # irrelevant first, then a stable sort by descending score
        a = 0
        b = n_irr
        for g in range(g_size):
            if glab[g] != qlab[q]:
                perm[a] = g
                a += 1
            else:
                perm[b] = g
                b += 1
        neg = np.empty(g_size, np.float64)
        for g in range(g_size):
            neg[g] = -s[perm[g]]
        order = np.argsort(neg, kind="mergesort")
        rel = np.empty(kk, np.bool_)
        for j in range(kk):
            rel[j] = glab[perm[order[j]]] == qlab[q]
        _label_scores(rel, kk, kpos, rq[q], P, AP, q)


# ----------------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------------
def _to_numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # float16 / bfloat16 → float32 is exact
        return t.numpy()
    return np.asarray(x)


def _embeddings(x: object, modality: str) -> np.ndarray:
    a = _to_numpy(x)
    if a.ndim != 2:
        raise ValueError(f"{modality}_emb must be 2-D (N, D); got shape {a.shape}.")
    if a.shape[0] == 0:
        raise ValueError(f"{modality}_emb has N = 0 rows: there is nothing to evaluate (empty split?).")
    if a.shape[1] == 0:
        raise ValueError(f"{modality}_emb has D = 0 columns.")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{modality}_emb must be numeric; got dtype {a.dtype}.")
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(a32).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{modality}_emb has NaN/inf values in {bad.size} row(s), the first at row {int(bad[0])} "
            f"(after float32 conversion). Fix or drop those rows (and the matching rows of the other "
            "modality, labels and patient_ids) before computing metrics."
        )
    norms = np.sqrt(np.einsum("ij,ij->i", a32, a32, dtype=np.float64))
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        bad = np.flatnonzero(off)
        raise ValueError(
            f"{modality}_emb is not L2-normalised: {bad.size} row(s) have |norm - 1| > {NORM_TOLERANCE}, "
            f"the first at row {int(bad[0])} (norm {norms[bad[0]]:.6g}). Normalise first, e.g. "
            "x = x / x.norm(dim=-1, keepdim=True) (torch) or x / np.linalg.norm(x, axis=1, keepdims=True)."
        )
    return a32


def _label_codes(labels: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    lab = _to_numpy(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) (one per row of the embeddings); got {lab.shape}.")
    if lab.dtype == np.bool_:
        lab = lab.astype(np.int64)
    elif np.issubdtype(lab.dtype, np.floating):
        bad = ~np.isfinite(lab) | (lab != np.round(lab))
        if bad.any():
            raise ValueError(
                f"labels must be integers; row {int(np.flatnonzero(bad)[0])} holds {lab[bad][0]!r}."
            )
        lab = lab.astype(np.int64)
    elif not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers (e.g. 0 normal / 1 abnormal); got dtype {lab.dtype}.")
    values, codes = np.unique(lab, return_inverse=True)
    return values, codes.astype(np.int64)


def _normalise_ks(ks: Sequence[int]) -> tuple[int, ...]:
    try:
        kl = [int(k) for k in ks]
    except TypeError as exc:
        raise ValueError(f"ks must be a sequence of positive integers; got {ks!r}.") from exc
    if not kl or any(k < 1 or k != kk for k, kk in zip(kl, ks, strict=True)):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks!r}.")
    return tuple(sorted(set(kl)))


def _dedup_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uid (N,) int64 in order of first appearance and first_rows (M,) for rows equal by value."""
    h = _row_hashes(X.view(np.uint32))
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if not _rows_equal_rep(X, first[inv]).all():  # a hash collision: fall back to an exact row sort
        canon = np.ascontiguousarray(X + np.float32(0.0))  # -0.0 → 0.0
        v = canon.view(np.dtype((np.void, canon.shape[1] * canon.itemsize))).ravel()
        _, first, inv = np.unique(v, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
    order = np.argsort(first, kind="stable")
    relabel = np.empty_like(order)
    relabel[order] = np.arange(order.size)
    return relabel[inv].astype(np.int64), first[order].astype(np.int64)


def float32_dot_error_bound(d: int, max_norm_x: float = 1.0, max_norm_y: float = 1.0) -> float:
    """Worst-case error of a float32 dot product of two D-vectors (any summation order, with or without
    FMA): ``gamma_D * ||x|| * ||y||`` with ``gamma_D = D u / (1 - D u)``, ``u = 2**-24`` (Higham, Thm 3.1,
    and Cauchy–Schwarz), inflated by 1 % for safety."""
    du = d * _U32
    if du >= 0.5:
        raise ValueError(f"D = {d} is too large for the float32 error bound.")
    return 1.01 * du / (1.0 - du) * max_norm_x * max_norm_y + 1e-30


def _window(b: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 [lo, hi] containing [b - tau, b + tau] (rounded outwards)."""
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
def _fp32_matmul():
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
    img = _embeddings(image_emb, "image")
    txt = _embeddings(text_emb, "text")
    if img.shape != txt.shape:
        raise ValueError(
            f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape (N, D): row i of each "
            "is one image–report pair."
        )
    ks_t = _normalise_ks(ks)
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
    n, d = img.shape

    uid, first = _dedup_rows(txt)
    U = np.ascontiguousarray(txt[first])
    del txt
    m = U.shape[0]
    w = np.bincount(uid, minlength=m).astype(np.int64)

    has_labels = labels is not None
    if has_labels:
        values, lab = _label_codes(labels, n)
        nl = values.size
        counts = np.bincount(uid * nl + lab, minlength=m * nl).reshape(m, nl)
        tlab = (nl - 1 - np.argmax(counts[:, ::-1], axis=1)).astype(np.int64)  # tie → larger label
        conflicts = int(((counts > 0).sum(axis=1) > 1).sum())
        rq_i2t = np.bincount(tlab, minlength=nl)[lab].astype(np.int64)
        rq_t2i = np.bincount(lab, minlength=nl)[tlab].astype(np.int64)
        kmax = max(ks_t)
        kk_i2t, kk_t2i = min(kmax, m), min(kmax, n)
        lr, lc = min(kmax + _TOPK_MARGIN, m), min(kmax + _TOPK_MARGIN, n)
    else:
        lab = tlab = np.zeros(0, np.int64)
        conflicts = 0
        lr = lc = kk_i2t = kk_t2i = 0

    norm_img = float(np.sqrt(np.einsum("ij,ij->i", img, img, dtype=np.float64)).max())
    norm_txt = float(np.sqrt(np.einsum("ij,ij->i", U, U, dtype=np.float64)).max())
    tau = float32_dot_error_bound(d, norm_img, norm_txt)
    b_row, b_col = _thresholds(img, U, uid, m)
    row_lo, row_hi = _window(b_row, tau)
    col_lo, col_hi = _window(b_col, tau)

    if chunk_size is None:
        chunk = max(1, min(n, _MAX_CHUNK_ROWS, _CHUNK_BYTES // (4 * m)))
    else:
        chunk = min(int(chunk_size), n)
    nb = max(1, min(numba.get_num_threads(), m))
    blocks = np.linspace(0, m, nb + 1).round().astype(np.int64)

    S = np.empty((chunk, m), np.float32)
    SI = S.view(np.int32)
    S_t = torch.from_numpy(S)
    Ut = torch.from_numpy(U).T
    img_t = torch.from_numpy(img)
    cnt_part = np.zeros((nb, chunk), np.int64)
    n_tiles = (int(np.diff(blocks).max()) + _TILE - 1) // _TILE
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
            _fused_pass(
                S, SI, rows, r0, img, U, uid, b_row, row_lo, row_hi, b_col, col_lo, col_hi, blocks,
                cnt_part, tv_part, ti_part, tn_part, col_cnt, col_tv, col_ti, col_tn, col_min, tkey, tflag, tmask, ttop,
            )  # fmt: skip
            _merge_rows(rows, r0, cnt_part, tv_part, ti_part, tn_part, row_cnt, row_tv, row_ti, row_tn)
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
    nq = tv.shape[0]
    kpos = np.array([min(k, g_size) for k in ks], np.int64)
    P = np.zeros((nq, len(ks)), np.float64)
    AP = np.zeros((nq, len(ks)), np.float64)
    fallback = np.zeros(nq, np.bool_)
    _finalize_topk(tv, ti, tn, Xq, Xg, qlab, glab, rq, kk, kpos, tau, P, AP, fallback)
    qs = np.flatnonzero(fallback).astype(np.int64)
    if qs.size:
        _fallback_topk(qs, Xq, Xg, qlab, glab, rq, kk, kpos, P, AP)
    return P, AP, int(qs.size)


def bootstrap_replicates(
    row_values: Mapping[str, np.ndarray],
    cluster_ids: np.ndarray | Sequence[object],
    n_boot: int,
    seed: int = 0,
    median_keys: Iterable[str] = (),
) -> dict[str, np.ndarray]:
    """Cluster-bootstrap replicates of per-row statistics.

    Args:
        row_values: key → (N,) per-row values; the statistic is their mean (their median for ``median_keys``).
        cluster_ids: (N,) the resampling unit of each row (patient ids); any hashable values.
        n_boot: number of replicates B.
        seed: seed of the ``numpy.random.default_rng`` that draws the clusters.
        median_keys: keys whose statistic is the median over rows.

    Returns:
        key → (B,) replicate statistics. Each replicate draws P clusters uniformly with replacement (P = number
        of distinct clusters); a cluster drawn c times contributes all its rows c times. Means use per-cluster
        sums (one (B, P) × (P, K) product); medians use one sort of the rows and a weighted cumulative count.
    """
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}.")
    cl = _to_numpy(cluster_ids)
    keys = list(row_values)
    if not keys:
        return {}
    n = np.asarray(row_values[keys[0]]).shape[0]
    if cl.ndim != 1 or cl.shape[0] != n:
        raise ValueError(
            f"patient_ids/cluster_ids must have shape ({n},) (one per row of the embeddings); got {cl.shape}."
        )
    _, codes = np.unique(cl, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    p = int(codes.max()) + 1
    med = [k for k in median_keys if k in row_values]
    mean_keys = [k for k in keys if k not in med]
    V = np.stack([np.asarray(row_values[k], np.float64) for k in mean_keys], axis=1) if mean_keys else None
    if V is not None and V.shape[0] != n:
        raise ValueError("all row_values arrays must have the same length.")
    sums = None
    if V is not None:
        sums = np.stack([np.bincount(codes, weights=V[:, j], minlength=p) for j in range(V.shape[1])], axis=1)
    sizes = np.bincount(codes, minlength=p).astype(np.float64)
    sorted_med = []
    for k in med:
        v = np.asarray(row_values[k], np.float64)
        order = np.argsort(v, kind="stable")
        sorted_med.append((v[order], codes[order]))

    rng = np.random.default_rng(seed)
    out = {k: np.empty(n_boot) for k in keys}
    batch = max(1, min(n_boot, (32 * 2**20) // (8 * max(p, n))))
    for b0 in range(0, n_boot, batch):
        nb = min(batch, n_boot - b0)
        draws = rng.integers(0, p, size=(nb, p))
        counts = np.bincount((draws + (np.arange(nb) * p)[:, None]).ravel(), minlength=nb * p).reshape(nb, p)
        cf = counts.astype(np.float64)
        if V is not None:
            stat = (cf @ sums) / (cf @ sizes)[:, None]
            for j, k in enumerate(mean_keys):
                out[k][b0 : b0 + nb] = stat[:, j]
        for k, (vs, cs) in zip(med, sorted_med, strict=True):
            cum = np.cumsum(counts[:, cs], axis=1)
            total = cum[:, -1]
            for r in range(nb):
                lo_pos = np.searchsorted(cum[r], (total[r] - 1) // 2, side="right")
                hi_pos = np.searchsorted(cum[r], total[r] // 2, side="right")
                out[k][b0 + r] = 0.5 * (vs[lo_pos] + vs[hi_pos])
    return out


def bootstrap_ci(
    row_values: Mapping[str, np.ndarray],
    cluster_ids: np.ndarray | Sequence[object],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    median_keys: Iterable[str] = (),
) -> dict[str, float]:
    """Percentile cluster-bootstrap CIs: ``{key}_lo`` / ``{key}_hi`` for every key of ``row_values``.

    See :func:`bootstrap_replicates` for the resampling; with ``level=0.95`` the bounds are the 2.5 and 97.5
    percentiles of the replicates. With :class:`PerQueryMetrics` ``pq``:
    ``bootstrap_ci(pq.row_values(), patient_ids, median_keys=pq.median_keys(pq.row_values()))``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level!r}.")
    reps = bootstrap_replicates(row_values, cluster_ids, n_boot, seed=seed, median_keys=median_keys)
    q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
    out: dict[str, float] = {}
    for k, r in reps.items():
        lo, hi = np.percentile(r, q)
        out[f"{k}_lo"] = float(lo)
        out[f"{k}_hi"] = float(hi)
    return out


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
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer; got {n_boot!r}.")
    if n_boot > 0 and patient_ids is None:
        raise ValueError(
            "n_boot > 0 needs patient_ids: the bootstrap resamples patients. Pass the manifest's patient_id "
            "column (or np.arange(N) to resample rows, which ignores within-patient correlation)."
        )
    if patient_ids is not None:
        n = int(image_emb.shape[0]) if getattr(image_emb, "ndim", 0) >= 1 else len(image_emb)
        pid = _to_numpy(patient_ids)
        if pid.ndim != 1 or pid.shape[0] != n:
            raise ValueError(
                f"patient_ids must have shape ({n},) (one per row of the embeddings); got {pid.shape}."
            )
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


#: The columns of the comparison tables of notebooks 02 and 03 (for ``ks=(1, 5, 10)``).
TABLE_KEYS: tuple[str, ...] = (
    "i2t_R@1",
    "i2t_R@5",
    "i2t_R@10",
    "t2i_R@1",
    "t2i_R@5",
    "t2i_R@10",
    "i2t_P@10_label",
    "t2i_P@10_label",
    "i2t_mAP@10_label",
    "t2i_mAP@10_label",
)


def metrics_table(
    results: Mapping[str, Mapping[str, float]], keys: Sequence[str] = TABLE_KEYS, digits: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several models' :func:`retrieval_metrics` as tables: one row per model, one column per key.

    Returns ``(numbers, text)``: ``numbers`` has the point value and, where the bootstrap ran, ``<key>_lo`` /
    ``<key>_hi`` columns (rounded to ``digits``); ``text`` has one column per key formatted as
    ``"0.412 [0.380, 0.447]"`` (or the bare value without CIs) for markdown and the notebooks.
    A key missing from a model's results raises ``KeyError`` naming the model and the key.
    """
    if not results:
        raise ValueError("results is empty; pass {model name: retrieval_metrics(...)}.")
    num_rows, txt_rows = {}, {}
    for name, res in results.items():
        missing = [k for k in keys if k not in res]
        if missing:
            raise KeyError(
                f"{name!r} has no metric(s) {missing}; was retrieval_metrics called with these ks?"
            )
        num, txt = {}, {}
        for k in keys:
            v = round(float(res[k]), digits)
            num[k] = v
            if f"{k}_lo" in res:
                lo, hi = round(float(res[f"{k}_lo"]), digits), round(float(res[f"{k}_hi"]), digits)
                num[f"{k}_lo"], num[f"{k}_hi"] = lo, hi
                txt[k] = f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            else:
                txt[k] = f"{v:.{digits}f}"
        num_rows[name], txt_rows[name] = num, txt
    numbers = pd.DataFrame.from_dict(num_rows, orient="index")
    text = pd.DataFrame.from_dict(txt_rows, orient="index")
    numbers.index.name = text.index.name = "model"
    return numbers, text


def chance_levels(
    text_emb: np.ndarray | torch.Tensor, labels: np.ndarray | Sequence[int], ks: Sequence[int]
) -> dict[str, float]:
    """Expected value of ``R@K`` and ``P@K_label`` under a uniformly random ranking, same counting rules.

    The gallery structure decides chance, so it is computed from the data rather than guessed: with ``M``
    unique texts and ``N`` images, image→text ``R@K = K / M``; text→image, a row whose text is shared by ``m``
    images is a hit when any of them is in the top K: ``1 - C(N - m, K) / C(N, K)``, averaged over rows.
    ``P@K_label`` at chance is the share of the gallery with the query's label (unique texts for i2t, images for
    t2i; a text's label is its rows' majority as in :func:`retrieval_metrics`), averaged over queries.
    """
    X = _embeddings(text_emb, "text")
    n = X.shape[0]
    _, codes = _label_codes(labels, n)
    uid, _first = _dedup_rows(X)
    m_rows = np.bincount(uid)  # images sharing each unique text
    n_uni = m_rows.size
    counts = np.zeros((n_uni, codes.max() + 1), dtype=np.int64)
    np.add.at(counts, (uid, codes), 1)
    text_lab = (
        counts.shape[1] - 1 - np.argmax(counts[:, ::-1], axis=1)
    )  # majority; a tie goes to the larger label
    out: dict[str, float] = {}
    for k in _normalise_ks(ks):
        kk_t, kk_i = min(k, n_uni), min(k, n)
        out[f"i2t_R@{k}"] = kk_t / n_uni
        m = m_rows[uid].astype(np.float64)
        # P(no relevant image in the top K) = prod_{j<K} (N - m - j) / (N - j)
        j = np.arange(kk_i, dtype=np.float64)
        miss = np.prod(np.clip((n - m[:, None] - j) / (n - j), 0.0, None), axis=1)
        out[f"t2i_R@{k}"] = float(np.mean(1.0 - miss))
        share_t = np.bincount(text_lab, minlength=counts.shape[1]) / n_uni
        share_i = np.bincount(codes, minlength=counts.shape[1]) / n
        out[f"i2t_P@{k}_label"] = float(np.mean(share_t[codes]))
        out[f"t2i_P@{k}_label"] = float(np.mean(share_i[text_lab[uid]]))
    return out
