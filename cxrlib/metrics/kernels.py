r"""The numba-compiled kernels behind :func:`cxrlib.metrics.retrieval.per_query_metrics`.

Nothing here validates its input: the callers in :mod:`cxrlib.metrics.retrieval` and
:mod:`cxrlib.metrics.groups` pass C-contiguous arrays of the dtypes named below. Notation: ``N`` image rows
(queries of image→text), ``M`` unique texts (queries of text→image), ``D`` the embedding width, ``L`` the
length of a top-K buffer (K + margin, clamped to the gallery size). Every kernel is compiled with
``cache=True`` (the machine code is cached next to this file); ``parallel=True`` kernels use numba's thread
pool (``numba.set_num_threads``) and give the same result for any thread count. The kernels carry no type
hints (numba infers the types from the arguments at the first call); their docstrings state the shapes.

Kernels used by the other modules (``__all__``):

- :func:`row_hashes`, :func:`rows_equal_rep` — exact de-duplication of embedding rows (bit patterns).
- :func:`thresholds` — the float64 score of every relevant pair: the rank thresholds of both directions.
- :func:`fused_pass` then :func:`merge_rows` — one float32 score chunk → counts and top-L buffers.
- :func:`finalize_topk`, :func:`fallback_topk` — label P@K / AP@K from the top-L buffers (or a full float64
  re-scoring when near-ties make the buffer's order uncertain).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "TILE",
    "row_hashes",
    "rows_equal_rep",
    "thresholds",
    "fused_pass",
    "merge_rows",
    "finalize_topk",
    "fallback_topk",
]

TILE: int = 32
"""Scores per scan tile of :func:`fused_pass`; at most 32 (``_scan_tile`` returns a uint32 bit mask per
tile)."""


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
def row_hashes(bits):  # pragma: no cover - compiled
    """64-bit hash of each row of a float32 array viewed as uint32 (``-0.0`` hashed like ``0.0``).

    ``bits`` (N, D) uint32 → (N,) uint64."""
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
def rows_equal_rep(X, rep):  # pragma: no cover - compiled
    """ok[i] = (X[i] == X[rep[i]]) element-wise (value equality).

    ``X`` (N, D) float32, ``rep`` (N,) int64 row indices → ``ok`` (N,) bool."""
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
def thresholds(img, U, uid, m):  # pragma: no cover - compiled
    """b_row[i] = img_i · U[uid_i] (float64); b_col[u] = max of b_row over the rows of text u.

    ``img`` (N, D) float32, ``U`` (M, D) float32 unique texts, ``uid`` (N,) int64, ``m`` = M →
    ``(b_row (N,) float64, b_col (M,) float64)``."""
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
    """The work of one column block [c0, c1) of a score chunk, for every row of the chunk; see fused_pass.

    Per row, a vectorised pass over tiles of TILE columns counts the scores above the thresholds (both
    directions) and records per tile whether it holds a slow-path element and its largest score. The row's
    top-L can only contain elements >= theta = the L-th largest tile maximum, so only tiles flagged or
    with a maximum >= theta are re-scanned element by element (exact float64 window checks, top-L inserts).
    """
    lr = tv_part.shape[2]
    lc = col_tv.shape[1]
    w = c1 - c0
    nft = w // TILE
    ntiles = nft + (1 if nft * TILE < w else 0)
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
                c, fw, fc, m = _scan_tile(srow, brow, t * TILE, TILE, rlo, rhi, clo, chi, cmin, ccnt)
            else:
                c, fw, fc, m = _scan_tile(srow, brow, t * TILE, w - t * TILE, rlo, rhi, clo, chi, cmin, ccnt)
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
            j0 = t * TILE
            j1 = min(w, j0 + TILE)
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
def fused_pass(
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

    Shapes: ``S`` (chunk, M) float32 scores (rows ``r0 .. r0 + nrows`` of the N images), ``SI`` its int32
    view; ``img`` (N, D) and ``U`` (M, D) float32; ``uid`` (N,) int64; ``b_row`` / ``row_lo`` / ``row_hi``
    (N,) and ``b_col`` / ``col_lo`` / ``col_hi`` (M,) thresholds (float64) and their float32 windows;
    ``blocks`` (B + 1,) int64 column-block bounds; the per-block row statistics ``cnt_part`` (B, chunk),
    ``tv_part`` / ``ti_part`` (B, chunk, Lr), ``tn_part`` (B, chunk); the column statistics ``col_cnt`` (M,)
    int32, ``col_tv`` / ``col_ti`` (M, Lc), ``col_tn`` (M,), ``col_min`` (M,) float32; per-block scratch
    ``tkey`` / ``tflag`` / ``tmask`` (B, tiles) and ``ttop`` (B, max(Lr, 1)).
    """
    nb = blocks.shape[0] - 1
    for bi in prange(nb):
        _pass_block(
            S, SI, nrows, r0, blocks[bi], blocks[bi + 1], bi, img, U, uid, b_row, row_lo, row_hi, b_col,
            col_lo, col_hi, cnt_part, tv_part, ti_part, tn_part, col_cnt, col_tv, col_ti, col_tn, col_min,
            tkey, tflag, tmask, ttop,
        )  # fmt: skip


@njit(cache=True)
def merge_rows(
    nrows, r0, cnt_part, tv_part, ti_part, tn_part, row_cnt, row_tv, row_ti, row_tn
):  # pragma: no cover
    """Merge the per-block partial row statistics of one chunk into the global row arrays.

    ``cnt_part`` (B, chunk) int64, ``tv_part`` / ``ti_part`` (B, chunk, L) float32 / int64 and ``tn_part``
    (B, chunk) int64 (B = column blocks) → rows ``r0 .. r0 + nrows`` of ``row_cnt`` (N,), ``row_tv`` /
    ``row_ti`` (N, L) and ``row_tn`` (N,) (buffers merged in descending score order)."""
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
def finalize_topk(tv, ti, tn, Xq, Xg, qlab, glab, rq, kk, kpos, tau, P, AP, fallback):  # pragma: no cover
    """Label metrics from each query's float32 top-L buffer (descending). Exact unless flagged in fallback.

    No near-tie (consecutive float32 gaps > 2 tau) among the first kk + 1 entries → the float32 order is the
    exact order. Otherwise the buffer is re-scored in float64 and sorted pessimistically (score desc,
    irrelevant first); this is exact when the kk-th exact score exceeds every item outside the buffer
    (all <= smallest buffered float32 + tau), else the query is flagged for a full float64 re-scoring.

    Shapes: ``tv`` / ``ti`` (Q, L) float32 scores / int64 gallery indices, descending, ``tn`` (Q,) int64
    filled lengths; ``Xq`` (Q, D) and ``Xg`` (G, D) float32 query / gallery rows; ``qlab`` (Q,) and ``glab``
    (G,) int64 label codes; ``rq`` (Q,) int64 number of label-relevant gallery items; ``kk`` = min(max K, G);
    ``kpos`` (len(ks),) int64 effective cut-offs (ascending); outputs ``P`` / ``AP`` (Q, len(ks)) float64 and
    ``fallback`` (Q,) bool.
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
def fallback_topk(qs, Xq, Xg, qlab, glab, rq, kk, kpos, P, AP):  # pragma: no cover - compiled
    """Exact label metrics for the queries qs from their full float64 score vectors.

    ``qs`` (F,) int64 query indices; other arguments as in :func:`finalize_topk`; writes rows ``qs`` of
    ``P`` and ``AP``."""
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
