r"""Finding-level (graded) relevance of image↔report retrieval: nDCG@K and finding precision FP@K.

The label metrics of :mod:`cxrlib.metrics.retrieval` only ask "same normal/abnormal label?". Here two rows are
as relevant to each other as their FINDING SETS overlap, so a cardiomegaly query is better answered by a
cardiomegaly report than by a pneumothorax report, although both are "abnormal".

Finding sets (the manifest's ``tags`` column, ``|``-joined, ``""`` = no finding)
-----------------------------------------------------------------------------------
- phantom (SYNTHETIC): the rendered findings of the image (``cardiomegaly``, ``pleural_effusion``,
  ``pneumothorax``, ``nodule``, ``consolidation``, ``edema``, ``atelectasis``), the image's ground truth; every
  abnormal row has at least one, every normal row none. A report-noise row keeps the finding its report missed.
- IU X-ray: the heads of the MeSH *major* terms (``cardiomegaly``, ``opacity``, ``calcified granuloma`` ...),
  ``normal`` left out. A report whose major terms are only ``normal`` and ``no indexing`` is abnormal with an
  empty tag set (rare).
- MIMIC-CXR: the positive CheXpert findings after the uncertainty policy, ``Support Devices`` included (so a
  normal study with a device has the set ``{support_devices}``), ``No Finding`` excluded.
- generic CSV: ``tags_col`` when given; without it every row has an empty set and these metrics are
  meaningless (:func:`cxrlib.evaluation.finding_sets` refuses such a manifest and marks the rare untagged
  abnormal row, see there).

Gain, nDCG@K, FP@K
------------------
The gain of gallery item ``d`` for query ``q`` is the Jaccard index of their finding sets
:math:`F_q, F_d`:

.. math::  g(q, d) = \frac{|F_q \cap F_d|}{|F_q \cup F_d|}, \qquad g(q, d) = 1 \text{ when } F_q = F_d = \emptyset.

Two empty sets have gain 1 by convention: a normal query is perfectly answered by a normal report (or image),
exactly as the label metrics count normal-normal as relevant; a normal and an abnormal item have gain 0. With
the gallery ordered by score (ties pessimistic, below), ``g_r`` the gain at rank ``r`` and
``K' = min(K, G)`` (G = gallery size):

.. math::

    \mathrm{DCG@K} = \sum_{r=1}^{K'} \frac{g_r}{\log_2(r + 1)}, \qquad
    \mathrm{nDCG@K} = \frac{\mathrm{DCG@K}}{\mathrm{IDCG@K}}, \qquad
    \mathrm{FP@K} = \frac{1}{K'} \sum_{r=1}^{K'} g_r,

where IDCG@K is the DCG@K of the best possible ordering of the whole gallery (its gains sorted in decreasing
order), so nDCG@K is in [0, 1] and equals 1 exactly when no ordering of the gallery does better in the top K.
When every gallery gain is 0 (IDCG = 0) nDCG@K is 0, as label AP@K is 0 when nothing is relevant (counted in
``n_zero_ideal``). FP@K ("finding precision") is the mean Jaccard gain of the top K; for a normal/abnormal-only
corpus it reduces to label P@K. Keys: ``{i2t,t2i}_nDCG@{K}_findings`` and ``{i2t,t2i}_FP@{K}_findings``.

Gallery semantics (the same as :mod:`cxrlib.metrics.retrieval`)
------------------------------------------------------------------
Texts are de-duplicated by exact equality of their float32 embedding rows: image→text ranks the M unique texts;
text→image scores each unique text once against all N images and gives its values to every row that uses it,
so every number is a per-row mean over the N rows. The query's own item is NOT excluded (as for label P@K):
its own report / image is part of the gallery. A unique text's finding set is the set shared by most of its
rows; a tie goes to the set with more findings, then to the set of the earliest row (identical reports with
different finding sets are counted as ``n_text_finding_conflicts``). The ranking is by score; exact ties are
ordered pessimistically, the lower gain first (label P@K's "irrelevant before relevant", graded).

Exactness, memory and speed
---------------------------
As the other retrieval metrics: float32 scores one image chunk at a time (``chunk × M``, ~256 MB by default;
never N × N), top-(K + 8) buffers per query in both directions (``torch.topk``), and every near-tie
(float32 gaps within ``2 tau``, :func:`~cxrlib.metrics.retrieval.float32_dot_error_bound`) re-scored in float64
with the fixed-order dot product of the numba kernels, falling back to a full float64 scoring of the query when
the buffer cannot decide (sub-float64-rounding differences between DIFFERENT vectors are not treated as
ties, as in the label metrics). Results equal the float64 brute force
:func:`cxrlib.metrics.reference.reference_finding_metrics`. Gains are computed once per pair of DISTINCT
finding sets (sparse multi-hot products), and IDCG once per distinct query set from the gallery's set
histogram. Cost: about 1.2× the CPU time of :func:`~cxrlib.metrics.per_query_metrics` (the float32 product
dominates; ``torch.topk`` of both directions is most of the rest).

Chance (:func:`finding_chance_levels`) is exact: under a uniformly random ordering every rank has expected gain
:math:`\bar g_q` = the mean gain of the gallery, so :math:`E[\mathrm{FP@K}] = \bar g_q` and
:math:`E[\mathrm{DCG@K}] = \bar g_q \sum_{r \le K'} 1/\log_2(r+1)` (IDCG does not depend on the ordering).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit, prange
from tqdm.auto import tqdm

from cxrlib.metrics._inputs import (
    check_bootstrap_args,
    checked_embeddings,
    checked_pair,
    normalise_ks,
    row_norms,
    to_numpy,
)
from cxrlib.metrics.bootstrap import bootstrap_ci
from cxrlib.metrics.groups import unique_rows
from cxrlib.metrics.kernels import _dot64, thresholds
from cxrlib.metrics.retrieval import _fp32_matmul, float32_dot_error_bound, kernel_threads, numba_threads

__all__ = [
    "UNSPECIFIED_ABNORMALITY",
    "FindingDirection",
    "FindingMetrics",
    "as_finding_sets",
    "jaccard_gain",
    "per_query_finding_metrics",
    "finding_metrics",
    "finding_chance_levels",
]

UNSPECIFIED_ABNORMALITY: str = "unspecified_abnormality"
"""The tag :func:`cxrlib.evaluation.finding_sets` gives an abnormal row whose tag set is empty, so that it is
not mistaken for a normal row (gain 1 against normals)."""

_CHUNK_BYTES = 256 * 2**20
_MAX_CHUNK_ROWS = 16384
_TOPK_MARGIN = 8
_PAIR_BLOCK = 1 << 16


# ----------------------------------------------------------------------------------------------------------
# finding sets and gains
# ----------------------------------------------------------------------------------------------------------
def jaccard_gain(a: Iterable[str], b: Iterable[str]) -> float:
    """The gain of this module for two finding sets: ``|a ∩ b| / |a ∪ b|``, and 1.0 for two empty sets."""
    sa, sb = frozenset(a), frozenset(b)
    union = len(sa | sb)
    return 1.0 if union == 0 else len(sa & sb) / union


def as_finding_sets(findings: Sequence[object], n: int | None = None) -> list[frozenset[str]]:
    """``findings`` (N,) as a list of frozensets of tag strings.

    Each element is either a string in the manifest's ``tags`` format (``"atelectasis|cardiomegaly"``;
    ``""`` = no finding; pieces are stripped, empty pieces ignored) or an iterable of strings (set, frozenset,
    list, tuple). ``None``/NaN and non-string tags raise ``ValueError`` naming the row; ``n`` checks the length.
    """
    if isinstance(findings, str):
        raise ValueError("findings must be a sequence with one finding set per row, not a single string.")
    vals = list(findings.tolist() if hasattr(findings, "tolist") else findings)
    if n is not None and len(vals) != n:
        raise ValueError(
            f"findings must have one entry per row of the embeddings: got {len(vals)} for N = {n} rows."
        )
    out: list[frozenset[str]] = []
    for i, v in enumerate(vals):
        if isinstance(v, str):
            out.append(frozenset(t.strip() for t in v.split("|") if t.strip()))
            continue
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError(
                f"findings row {i} is {v!r}; use '' (or an empty set) for a row without findings."
            )
        if not isinstance(v, Iterable):
            raise ValueError(
                f"findings row {i} is {type(v).__name__}, not a '|'-joined string or a set of tags."
            )
        tags = list(v)
        bad = [t for t in tags if not isinstance(t, str)]
        if bad:
            raise ValueError(f"findings row {i} holds a non-string tag {bad[0]!r}; tags must be strings.")
        out.append(frozenset(t.strip() for t in tags if t.strip()))
    return out


def _distinct_sets(sets: Sequence[frozenset[str]]) -> tuple[np.ndarray, list[frozenset[str]]]:
    """(N,) int64 id of each row's set (numbered by first appearance) and the distinct sets."""
    index: dict[frozenset[str], int] = {}
    fid = np.empty(len(sets), np.int64)
    for i, s in enumerate(sets):
        fid[i] = index.setdefault(s, len(index))
    return fid, list(index)


def _multi_hot(distinct: Sequence[frozenset[str]]) -> tuple[sp.csr_matrix, np.ndarray]:
    """(S, V) float64 CSR multi-hot of the distinct sets over their sorted vocabulary, and (S,) set sizes."""
    vocab = {t: j for j, t in enumerate(sorted(set().union(*distinct)))}
    indptr = np.zeros(len(distinct) + 1, np.int64)
    cols: list[int] = []
    for s, tags in enumerate(distinct):
        cols.extend(sorted(vocab[t] for t in tags))
        indptr[s + 1] = len(cols)
    data = np.ones(len(cols), np.float64)
    B = sp.csr_matrix((data, np.asarray(cols, np.int64), indptr), shape=(len(distinct), max(1, len(vocab))))
    return B, np.diff(indptr).astype(np.float64)


def _jaccard_block(B: sp.csr_matrix, sizes: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(len(rows), len(cols)) float64 Jaccard gains between distinct sets ``rows`` and ``cols``."""
    inter = (B[rows] @ B[cols].T).toarray()
    union = sizes[rows][:, None] + sizes[cols][None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        J = inter / union
    J[union == 0] = 1.0
    return J


def _pair_gains(B: sp.csr_matrix, sizes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard gains of the pairs of distinct sets ``(a[p], b[p])`` (same shape as ``a``), each distinct pair
    computed once."""
    s = B.shape[0]
    code, inv = np.unique(a.ravel() * s + b.ravel(), return_inverse=True)
    ua, ub = code // s, code % s
    g = np.empty(code.size, np.float64)
    for p0 in range(0, code.size, _PAIR_BLOCK):
        pa, pb = ua[p0 : p0 + _PAIR_BLOCK], ub[p0 : p0 + _PAIR_BLOCK]
        inter = np.asarray(B[pa].multiply(B[pb]).sum(axis=1)).ravel()
        union = sizes[pa] + sizes[pb] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            gp = inter / union
        gp[union == 0] = 1.0
        g[p0 : p0 + _PAIR_BLOCK] = gp
    return g[inv.reshape(-1)].reshape(a.shape)


def _majority_sets(
    uid: np.ndarray, fid: np.ndarray, sizes: np.ndarray, m: int, n_sets: int
) -> tuple[np.ndarray, int]:
    """Finding-set id of each unique text: the set of most of its rows; ties → more findings, then the set
    of the text's earliest row. Returns ``(tfid (M,) int64, n_conflicts)``."""
    code, first_row, count = np.unique(uid * n_sets + fid, return_index=True, return_counts=True)
    u, f = code // n_sets, code % n_sets
    order = np.lexsort((first_row, -sizes[f], -count, u))  # per text: most rows, most findings, earliest
    u_sorted = u[order]
    first = np.ones(order.size, np.bool_)
    first[1:] = u_sorted[1:] != u_sorted[:-1]
    tfid = np.empty(m, np.int64)
    tfid[u_sorted[first]] = f[order][first]
    n_conflicts = int(np.sum(np.bincount(u, minlength=m) > 1))
    return tfid, n_conflicts


def _ideal_and_mean(
    B: sp.csr_matrix,
    sizes: np.ndarray,
    qset: np.ndarray,
    gset: np.ndarray,
    kk: int,
    block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the ideal gain sequence (Q, kk) (the gallery's gains sorted decreasingly, first kk) and the
    mean gain over the gallery (Q,). Computed once per distinct query set from the gallery's set histogram."""
    cnt_all = np.bincount(gset, minlength=B.shape[0])
    cols = np.flatnonzero(cnt_all)
    cnt = cnt_all[cols].astype(np.int64)
    g_size = int(gset.size)
    uq, inv = np.unique(qset, return_inverse=True)
    ideal_u = np.empty((uq.size, kk), np.float64)
    mean_u = np.empty(uq.size, np.float64)
    pos = np.arange(1, kk + 1)
    for b0 in range(0, uq.size, block):
        rows = uq[b0 : b0 + block]
        J = _jaccard_block(B, sizes, rows, cols)
        mean_u[b0 : b0 + rows.size] = (J @ cnt) / g_size
        order = np.argsort(-J, axis=1, kind="stable")
        cum = np.cumsum(cnt[order], axis=1)
        for r in range(rows.size):
            ideal_u[b0 + r] = J[r, order[r, np.searchsorted(cum[r], pos, side="left")]]
    return ideal_u[inv.reshape(-1)], mean_u[inv.reshape(-1)]


def _discounts(kk: int) -> np.ndarray:
    """(kk,) float64 ``1 / log2(r + 1)`` for r = 1 .. kk."""
    return 1.0 / np.log2(np.arange(2, kk + 2, dtype=np.float64))


# ----------------------------------------------------------------------------------------------------------
# numba: the gain sequence of the top kk from a top-L buffer
# ----------------------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _buffer_gains(tv, ti, gb, Xq, Xg, kk, tau, seq, fallback):  # pragma: no cover - compiled
    """Gains in rank order of each query's top kk, from its float32 top-L buffer (descending).

    ``tv`` / ``ti`` (Q, L) float32 scores / int64 gallery indices, ``gb`` (Q, L) float64 gains of the buffered
    items; ``Xq`` (Q, D), ``Xg`` (G, D) float32; outputs ``seq`` (Q, kk) float64 and ``fallback`` (Q,) bool.
    No near-tie (float32 gaps > 2 tau) among the first kk + 1 entries → the float32 order is exact. Otherwise
    the buffer is re-scored in float64 and sorted (score descending, lower gain first among exact ties); exact
    when the kk-th exact score exceeds every unbuffered item (<= smallest buffered float32 + tau), else the
    query is flagged for a full float64 scoring."""
    nq, nl = tv.shape
    g_size = Xg.shape[0]
    for q in prange(nq):
        m = min(kk + 1, nl)
        tie = False
        for j in range(m - 1):
            if np.float64(tv[q, j]) - np.float64(tv[q, j + 1]) <= 2.0 * tau:
                tie = True
                break
        if not tie:
            for j in range(kk):
                seq[q, j] = gb[q, j]
            continue
        s64 = np.empty(nl, np.float64)
        g = np.empty(nl, np.float64)
        for j in range(nl):
            s64[j] = _dot64(Xq, q, Xg, ti[q, j])
            g[j] = gb[q, j]
        for a in range(1, nl):  # insertion sort: score descending, lower gain first among exact ties
            sv = s64[a]
            gv = g[a]
            p = a
            while p > 0 and (s64[p - 1] < sv or (s64[p - 1] == sv and g[p - 1] > gv)):
                s64[p] = s64[p - 1]
                g[p] = g[p - 1]
                p -= 1
            s64[p] = sv
            g[p] = gv
        if nl < g_size and not (s64[kk - 1] > np.float64(tv[q, nl - 1]) + tau):
            fallback[q] = True
            continue
        for j in range(kk):
            seq[q, j] = g[j]


@njit(cache=True)
def _scores64(Xq, q, Xg):  # pragma: no cover - compiled
    """(G,) float64 fixed-order dot products of query row ``Xq[q]`` with every gallery row."""
    out = np.empty(Xg.shape[0], np.float64)
    for g in range(Xg.shape[0]):
        out[g] = _dot64(Xq, q, Xg, g)
    return out


# ----------------------------------------------------------------------------------------------------------
# result containers
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FindingDirection:
    """Per-query finding metrics of one direction. Q = N (i2t) or M unique texts (t2i).

    - ``ndcg`` / ``fp`` / ``ideal_dcg`` (Q, len(ks)) float64 — nDCG@K, FP@K and IDCG@K (columns follow ``ks``);
    - ``weights`` (Q,) rows per query; ``row_query`` (N,) the query of each manifest row;
    - ``gallery_size`` G; ``n_fallback`` queries scored fully in float64; ``n_zero_ideal`` queries with
      IDCG = 0 (no gallery item shares a finding; nDCG set to 0).
    """

    direction: str
    ndcg: np.ndarray
    fp: np.ndarray
    ideal_dcg: np.ndarray
    weights: np.ndarray
    row_query: np.ndarray
    gallery_size: int
    n_fallback: int = 0
    n_zero_ideal: int = 0


@dataclass(frozen=True)
class FindingMetrics:
    """Everything :func:`per_query_finding_metrics` computed; :meth:`row_values` feeds the bootstrap and
    :func:`~cxrlib.metrics.paired_difference`, :meth:`summary` gives the flat dict.

    ``uid`` (N,) unique-text id of each row; ``text_sets`` (M,) the finding set of each unique text (majority
    of its rows); ``n_finding_sets`` the number of distinct finding sets among the rows."""

    ks: tuple[int, ...]
    uid: np.ndarray
    n_unique_texts: int
    i2t: FindingDirection
    t2i: FindingDirection
    text_sets: tuple[frozenset[str], ...]
    n_text_finding_conflicts: int
    n_finding_sets: int
    tau: float

    @property
    def n_queries(self) -> int:
        """N, the number of manifest rows."""
        return int(self.uid.shape[0])

    def row_values(self) -> dict[str, np.ndarray]:
        """Per-row (N,) float64 values of every key (each metric is the mean over rows of its array)."""
        out: dict[str, np.ndarray] = {}
        for d in (self.i2t, self.t2i):
            for j, k in enumerate(self.ks):
                out[f"{d.direction}_nDCG@{k}_findings"] = d.ndcg[d.row_query, j]
                out[f"{d.direction}_FP@{k}_findings"] = d.fp[d.row_query, j]
        return out

    @staticmethod
    def median_keys(keys: Iterable[str]) -> tuple[str, ...]:
        """No finding metric is a median (kept for symmetry with :class:`PerQueryMetrics`)."""
        return ()

    def summary(self) -> dict[str, float]:
        """Point estimates plus ``n_queries``, ``n_unique_texts``, ``n_finding_sets``,
        ``n_text_finding_conflicts``."""
        out: dict[str, float] = {k: float(np.mean(v)) for k, v in self.row_values().items()}
        out["n_queries"] = self.n_queries
        out["n_unique_texts"] = self.n_unique_texts
        out["n_finding_sets"] = self.n_finding_sets
        out["n_text_finding_conflicts"] = self.n_text_finding_conflicts
        return out


# ----------------------------------------------------------------------------------------------------------
# the computation
# ----------------------------------------------------------------------------------------------------------
def _prepare(text_emb: object, findings: Sequence[object]) -> dict:
    """Shared set-up of the metrics and the chance levels: unique texts, finding-set ids, majority sets."""
    txt = checked_embeddings(text_emb, "text")
    sets = as_finding_sets(findings, txt.shape[0])
    uid, first = unique_rows(txt)
    m = first.size
    fid, distinct = _distinct_sets(sets)
    B, sizes = _multi_hot(distinct)
    tfid, conflicts = _majority_sets(uid, fid, sizes, m, len(distinct))
    return {
        "txt": txt,
        "uid": uid,
        "first": first,
        "m": m,
        "fid": fid,
        "distinct": distinct,
        "B": B,
        "sizes": sizes,
        "tfid": tfid,
        "conflicts": conflicts,
    }


def _direction(
    name: str,
    tv: np.ndarray,
    ti: np.ndarray,
    Xq: np.ndarray,
    Xg: np.ndarray,
    qset: np.ndarray,
    gset: np.ndarray,
    B: sp.csr_matrix,
    sizes: np.ndarray,
    ks: tuple[int, ...],
    tau: float,
    weights: np.ndarray,
    row_query: np.ndarray,
) -> FindingDirection:
    """nDCG@K / FP@K of Q queries (sets ``qset``) against G gallery items (sets ``gset``) from top-L buffers."""
    g_size = Xg.shape[0]
    kk = min(max(ks), g_size)
    kpos = np.array([min(k, g_size) for k in ks], np.int64)
    gb = _pair_gains(B, sizes, np.repeat(qset[:, None], ti.shape[1], axis=1), gset[ti])
    seq = np.zeros((Xq.shape[0], kk), np.float64)
    fallback = np.zeros(Xq.shape[0], np.bool_)
    _buffer_gains(tv, ti, gb, Xq, Xg, kk, tau, seq, fallback)
    qs = np.flatnonzero(fallback)
    for q in qs:  # massive near-ties: the whole gallery in float64 (rare)
        s = _scores64(Xq, int(q), Xg)
        g = _pair_gains(B, sizes, np.full(g_size, qset[q]), gset)
        seq[q] = g[np.lexsort((g, -s))[:kk]]
    disc = _discounts(kk)
    ideal, _mean = _ideal_and_mean(B, sizes, qset, gset, kk)
    dcg = np.cumsum(seq * disc, axis=1)[:, kpos - 1]
    idcg = np.cumsum(ideal * disc, axis=1)[:, kpos - 1]
    zero = idcg <= 0.0
    ndcg = np.where(zero, 0.0, dcg / np.where(zero, 1.0, idcg))
    fp = np.cumsum(seq, axis=1)[:, kpos - 1] / kpos
    return FindingDirection(
        direction=name,
        ndcg=ndcg,
        fp=fp,
        ideal_dcg=idcg,
        weights=weights,
        row_query=row_query,
        gallery_size=g_size,
        n_fallback=int(qs.size),
        n_zero_ideal=int(zero[:, -1].sum()),
    )


def per_query_finding_metrics(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    findings: Sequence[object],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    progress: bool = False,
) -> FindingMetrics:
    """Per-query nDCG@K and FP@K of both directions with Jaccard finding gains (semantics: module docstring).

    Args:
        image_emb: (N, D) L2-normalised image embeddings; row i pairs with ``text_emb`` row i.
        text_emb: (N, D) L2-normalised report embeddings (identical reports → identical rows).
        findings: (N,) finding set of each row: ``|``-joined tag strings (the manifest's ``tags``) or sets.
        ks: cut-offs K (positive integers).
        chunk_size: image rows scored per chunk; ``None`` → about 256 MB of float32 scores.
        progress: tqdm bar over chunks.

    Returns:
        :class:`FindingMetrics`. Memory O(chunk × M + (N + M)·(D + K)).
    """
    img, txt, ks_t = checked_pair(image_emb, text_emb, ks, chunk_size)
    n, d = img.shape
    prep = _prepare(txt, findings)
    uid, m, fid, tfid = prep["uid"], prep["m"], prep["fid"], prep["tfid"]
    U = np.ascontiguousarray(prep["txt"][prep["first"]])
    tau = float32_dot_error_bound(d, float(row_norms(img).max()), float(row_norms(U).max()))
    b_row, _ = thresholds(img, U, uid, m)
    kmax = max(ks_t)
    lr, lc = min(kmax + _TOPK_MARGIN, m), min(kmax + _TOPK_MARGIN, n)
    chunk = (
        max(1, min(n, _MAX_CHUNK_ROWS, _CHUNK_BYTES // (4 * m))) if chunk_size is None else min(chunk_size, n)
    )

    img_t, Ut = torch.from_numpy(img), torch.from_numpy(U).T
    row_tv = np.empty((n, lr), np.float32)
    row_ti = np.empty((n, lr), np.int64)
    col_v = torch.empty((0, m), dtype=torch.float32)
    col_i = torch.empty((0, m), dtype=torch.int64)
    S_t = torch.empty((chunk, m), dtype=torch.float32)
    with (
        _fp32_matmul(),
        numba_threads(kernel_threads()),
        tqdm(total=math.ceil(n / chunk), desc="finding metrics", unit="chunk", disable=not progress) as bar,
    ):
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            S = S_t[: r1 - r0]
            torch.matmul(img_t[r0:r1], Ut, out=S)
            err = np.abs(S.numpy()[np.arange(r1 - r0), uid[r0:r1]].astype(np.float64) - b_row[r0:r1]).max()
            if not err <= tau:
                raise RuntimeError(
                    f"float32 matmul error {err:.3g} exceeds the bound {tau:.3g}: the matmul backend is not "
                    "computing in full float32; reset it to full precision."
                )
            v, i = torch.topk(S, lr, dim=1)
            row_tv[r0:r1], row_ti[r0:r1] = v.numpy(), i.numpy()
            v, i = torch.topk(S, min(lc, r1 - r0), dim=0)
            cv, ci = torch.cat([col_v, v]), torch.cat([col_i, i + r0])
            if cv.shape[0] > lc:
                cv, sel = torch.topk(cv, lc, dim=0)
                ci = torch.gather(ci, 0, sel)
            col_v, col_i = cv, ci
            bar.update(1)
    col_tv = np.ascontiguousarray(col_v.numpy().T)
    col_ti = np.ascontiguousarray(col_i.numpy().T)
    del S_t

    common = {"B": prep["B"], "sizes": prep["sizes"], "ks": ks_t, "tau": tau}
    i2t = _direction(
        "i2t", row_tv, row_ti, img, U, fid, tfid,
        weights=np.ones(n, np.int64), row_query=np.arange(n, dtype=np.int64), **common,
    )  # fmt: skip
    t2i = _direction(
        "t2i", col_tv, col_ti, U, img, tfid, fid,
        weights=np.bincount(uid, minlength=m).astype(np.int64), row_query=uid, **common,
    )  # fmt: skip
    distinct = prep["distinct"]
    return FindingMetrics(
        ks=ks_t,
        uid=uid,
        n_unique_texts=m,
        i2t=i2t,
        t2i=t2i,
        text_sets=tuple(distinct[f] for f in tfid),
        n_text_finding_conflicts=prep["conflicts"],
        n_finding_sets=len(distinct),
        tau=tau,
    )


def finding_metrics(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    findings: Sequence[object],
    ks: Sequence[int] = (1, 5, 10),
    patient_ids: np.ndarray | Sequence[object] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """The flat dict of finding metrics (``{i2t,t2i}_nDCG@K_findings``, ``{i2t,t2i}_FP@K_findings`` and the
    bookkeeping keys), with patient-bootstrap ``{key}_lo`` / ``{key}_hi`` (95 %) when ``n_boot > 0``.

    Arguments as :func:`per_query_finding_metrics`, plus ``patient_ids`` (N,) (required with ``n_boot > 0``:
    patients are resampled, see :mod:`cxrlib.metrics.bootstrap`), ``n_boot`` and the bootstrap ``seed``.
    """
    check_bootstrap_args(n_boot, patient_ids, int(to_numpy(image_emb).shape[0]))
    fm = per_query_finding_metrics(
        image_emb, text_emb, findings, ks=ks, chunk_size=chunk_size, progress=progress
    )
    point = fm.summary()
    if n_boot == 0:
        return point
    ci = bootstrap_ci(fm.row_values(), patient_ids, n_boot=n_boot, seed=seed)
    out: dict[str, float] = {}
    for k, v in point.items():
        out[k] = v
        if f"{k}_lo" in ci:
            out[f"{k}_lo"], out[f"{k}_hi"] = ci[f"{k}_lo"], ci[f"{k}_hi"]
    return out


def finding_chance_levels(
    text_emb: np.ndarray | torch.Tensor, findings: Sequence[object], ks: Sequence[int]
) -> dict[str, float]:
    """Exact expected nDCG@K and FP@K under a uniformly random ordering of the gallery (module docstring).

    Per query, with :math:`\\bar g_q` the mean gain over the gallery (M unique texts for i2t, N images for
    t2i): ``FP@K = ḡ_q`` and ``nDCG@K = ḡ_q · Σ_{r<=K'} 1/log2(r+1) / IDCG@K`` (0 when IDCG = 0); averaged over
    the N rows as the metrics are. ``text_emb`` (N, D) only decides which reports are one gallery item.
    """
    ks_t = normalise_ks(ks)
    prep = _prepare(text_emb, findings)
    uid, fid, tfid = prep["uid"], prep["fid"], prep["tfid"]
    n = uid.size
    out: dict[str, float] = {}
    for name, qset, gset, row_query in (
        ("i2t", fid, tfid, np.arange(n)),
        ("t2i", tfid, fid, uid),
    ):
        g_size = gset.size
        kk = min(max(ks_t), g_size)
        ideal, mean = _ideal_and_mean(prep["B"], prep["sizes"], qset, gset, kk)
        disc = _discounts(kk)
        cum_ideal = np.cumsum(ideal * disc, axis=1)
        cum_disc = np.cumsum(disc)
        for k in ks_t:
            kp = min(k, g_size)
            idcg = cum_ideal[:, kp - 1]
            nd = np.where(idcg > 0, mean * cum_disc[kp - 1] / np.where(idcg > 0, idcg, 1.0), 0.0)
            out[f"{name}_nDCG@{k}_findings"] = float(np.mean(nd[row_query]))
            out[f"{name}_FP@{k}_findings"] = float(np.mean(mean[row_query]))
    return out
