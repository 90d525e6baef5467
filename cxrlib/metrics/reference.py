r"""A brute-force reference of :func:`~cxrlib.metrics.retrieval_metrics`, written the obvious way.

It follows the semantics of :mod:`cxrlib.metrics.retrieval` word for word, with none of the fast path's
machinery: the full score matrix in memory (N × M, every entry an exactly rounded ``math.fsum`` of float64
products of the float32 inputs, so identical true scores are identical floats), plain Python loops and sorts,
and explicit tie rules. It is O(N · M · D) in Python: use it on small inputs (N up to a few hundred) to check
the fast code, as the tests do.

Rules, restated:

- texts are de-duplicated by exact equality of their float32 rows (``-0.0 == 0.0``), in order of first
  appearance; image→text ranks against the M unique texts, text→image scores each unique text once and gives
  its rank to every row that uses it;
- rank = 1 + #{irrelevant items with score >= the best relevant score} (ties pessimistic);
- a unique text's label is the majority of its rows' labels, a tie going to the larger label;
- top-K lists are sorted by score, irrelevant before relevant among exact ties; K is clamped to the gallery
  size; ``P@K = hits / K``; ``AP@K = (1 / min(K, R)) * sum_{k <= K} P@k * rel_k`` (0 when R = 0).

:func:`reference_finding_metrics` does the same for the finding metrics of :mod:`cxrlib.metrics.findings`:
Jaccard gains (1 for two empty sets), a unique text's set = the set of most of its rows (ties: more findings,
then the earliest row's set), rankings by score with the lower gain first among exact ties,
``DCG@K = sum_{r <= K} g_r / log2(r + 1)``, IDCG from all gallery gains sorted decreasingly, nDCG = 0 when
IDCG = 0, ``FP@K = mean of the top-K gains``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["reference_metrics", "reference_finding_metrics"]


def _precision_ap(scored: list[tuple[float, bool]], k: int) -> tuple[float, float]:
    """P@K and AP@K of one query; ``scored`` = (score, relevant) for every gallery item."""
    order = sorted(scored, key=lambda t: (-t[0], t[1]))  # higher score first; irrelevant first among ties
    k = min(k, len(order))
    rel = [r for _, r in order[:k]]
    n_rel = sum(r for _, r in scored)
    p = sum(rel) / k
    if n_rel == 0:
        return p, 0.0
    ap = sum((sum(rel[: j + 1]) / (j + 1)) * rel[j] for j in range(k)) / min(k, n_rel)
    return p, ap


def reference_metrics(
    img: np.ndarray,
    txt: np.ndarray,
    labels: np.ndarray | Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """The flat dict of :func:`~cxrlib.metrics.retrieval_metrics` (no bootstrap), by brute force.

    Args:
        img: (N, D) L2-normalised image embeddings (converted to float32, then scored in float64).
        txt: (N, D) report embeddings, row i paired with image row i.
        labels: optional (N,) integer labels → the ``*_label`` keys and ``n_text_label_conflicts``.
        ks: cut-offs.

    Returns:
        ``{i2t,t2i}_R@K``, ``_mean_rank``, ``_median_rank``, ``_MRR``, with labels ``{i2t,t2i}_P@K_label`` and
        ``_mAP@K_label``, and ``n_queries``, ``n_unique_texts``.
    """
    img = np.asarray(img, np.float32).astype(np.float64)
    txt = np.asarray(txt, np.float32).astype(np.float64)
    n = img.shape[0]
    # unique texts by exact equality, in order of first appearance
    first_of: dict[tuple[float, ...], int] = {}
    uid = []
    for row in txt:
        key = tuple(float(x) for x in row)  # -0.0 == 0.0 and hash alike
        if key not in first_of:
            first_of[key] = len(first_of)
        uid.append(first_of[key])
    m = len(first_of)
    U = np.zeros((m, img.shape[1]))
    for i in range(n):
        U[uid[i]] = txt[i]
    # the full score matrix, exactly rounded dot products: identical true values give identical floats
    S = [[math.fsum(a * b for a, b in zip(img[i], U[u], strict=True)) for u in range(m)] for i in range(n)]

    out: dict[str, float] = {}
    # image -> text: the relevant item of image i is its own text uid[i]
    i2t_ranks = []
    for i in range(n):
        best = S[i][uid[i]]
        i2t_ranks.append(1 + sum(1 for u in range(m) if u != uid[i] and S[i][u] >= best))
    # text -> image: one query per unique text, relevant = every row with that text; each row gets its rank
    t2i_rank_of = {}
    for u in range(m):
        rel_rows = [i for i in range(n) if uid[i] == u]
        best = max(S[i][u] for i in rel_rows)
        t2i_rank_of[u] = 1 + sum(1 for i in range(n) if uid[i] != u and S[i][u] >= best)
    t2i_ranks = [t2i_rank_of[uid[i]] for i in range(n)]
    for name, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        for k in ks:
            out[f"{name}_R@{k}"] = sum(r <= k for r in ranks) / n
        out[f"{name}_mean_rank"] = sum(ranks) / n
        out[f"{name}_median_rank"] = float(statistics.median(ranks))
        out[f"{name}_MRR"] = sum(1.0 / r for r in ranks) / n

    if labels is not None:
        lab = [int(x) for x in labels]
        text_label = {}
        conflicts = 0
        for u in range(m):
            c = Counter(lab[i] for i in range(n) if uid[i] == u)
            if len(c) > 1:
                conflicts += 1
            top = max(c.values())
            text_label[u] = max(v for v, cnt in c.items() if cnt == top)  # tie → larger label
        for k in ks:
            ps, aps = [], []
            for i in range(n):
                p, ap = _precision_ap([(S[i][u], text_label[u] == lab[i]) for u in range(m)], k)
                ps.append(p)
                aps.append(ap)
            out[f"i2t_P@{k}_label"] = sum(ps) / n
            out[f"i2t_mAP@{k}_label"] = sum(aps) / n
            per_u = {
                u: _precision_ap([(S[i][u], lab[i] == text_label[u]) for i in range(n)], k) for u in range(m)
            }
            out[f"t2i_P@{k}_label"] = sum(per_u[uid[i]][0] for i in range(n)) / n
            out[f"t2i_mAP@{k}_label"] = sum(per_u[uid[i]][1] for i in range(n)) / n
        out["n_text_label_conflicts"] = conflicts
    out["n_queries"] = n
    out["n_unique_texts"] = m
    return out


def _tag_set(f: object) -> frozenset[str]:
    """A ``|``-joined tag string or an iterable of tags → frozenset of stripped, non-empty tags."""
    tags = f.split("|") if isinstance(f, str) else list(f)  # type: ignore[arg-type]
    return frozenset(t.strip() for t in tags if t.strip())


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|, 1.0 for two empty sets."""
    return 1.0 if not (a | b) else len(a & b) / len(a | b)


def _dcg(gains: list[float], k: int) -> float:
    """sum_{r = 1}^{k} gains[r - 1] / log2(r + 1), summed in rank order."""
    total = 0.0
    for r in range(1, k + 1):
        total += gains[r - 1] / math.log2(r + 1)
    return total


def reference_finding_metrics(
    img: np.ndarray,
    txt: np.ndarray,
    findings: Sequence[object],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """The point values of :func:`~cxrlib.metrics.findings.finding_metrics`, by brute force.

    Args:
        img: (N, D) L2-normalised image embeddings (converted to float32, scored in float64).
        txt: (N, D) report embeddings, row i paired with image row i.
        findings: (N,) finding set of each row (``|``-joined string or iterable of tags).
        ks: cut-offs.

    Returns:
        ``{i2t,t2i}_nDCG@K_findings``, ``{i2t,t2i}_FP@K_findings``, ``n_queries``, ``n_unique_texts``,
        ``n_finding_sets``, ``n_text_finding_conflicts``.
    """
    img = np.asarray(img, np.float32).astype(np.float64)
    txt = np.asarray(txt, np.float32).astype(np.float64)
    n = img.shape[0]
    sets = [_tag_set(f) for f in findings]
    first_of: dict[tuple[float, ...], int] = {}
    uid = []
    for row in txt:
        key = tuple(float(x) for x in row)
        if key not in first_of:
            first_of[key] = len(first_of)
        uid.append(first_of[key])
    m = len(first_of)
    U = np.zeros((m, img.shape[1]))
    for i in range(n):
        U[uid[i]] = txt[i]
    S = [[math.fsum(a * b for a, b in zip(img[i], U[u], strict=True)) for u in range(m)] for i in range(n)]

    # the finding set of each unique text: most rows, then more findings, then the earliest row's set
    text_set = []
    conflicts = 0
    for u in range(m):
        rows = [i for i in range(n) if uid[i] == u]
        c = Counter(sets[i] for i in rows)
        conflicts += len(c) > 1
        first_row = {s: min(i for i in rows if sets[i] == s) for s in c}
        text_set.append(min(c, key=lambda s: (-c[s], -len(s), first_row[s])))

    def query_values(scored: list[tuple[float, float]], k: int) -> tuple[float, float]:
        """(nDCG@K, FP@K) of one query; ``scored`` = (score, gain) of every gallery item."""
        k = min(k, len(scored))
        ranked = [g for _, g in sorted(scored, key=lambda t: (-t[0], t[1]))]
        ideal = sorted((g for _, g in scored), reverse=True)
        idcg = _dcg(ideal, k)
        ndcg = _dcg(ranked, k) / idcg if idcg > 0 else 0.0
        return ndcg, sum(ranked[:k]) / k

    out: dict[str, float] = {}
    for k in ks:
        i2t = [
            query_values([(S[i][u], _jaccard(sets[i], text_set[u])) for u in range(m)], k) for i in range(n)
        ]
        per_u = {
            u: query_values([(S[i][u], _jaccard(text_set[u], sets[i])) for i in range(n)], k)
            for u in range(m)
        }
        t2i = [per_u[uid[i]] for i in range(n)]
        for name, vals in (("i2t", i2t), ("t2i", t2i)):
            out[f"{name}_nDCG@{k}_findings"] = sum(v[0] for v in vals) / n
            out[f"{name}_FP@{k}_findings"] = sum(v[1] for v in vals) / n
    out["n_queries"] = n
    out["n_unique_texts"] = m
    out["n_finding_sets"] = len(set(sets))
    out["n_text_finding_conflicts"] = conflicts
    return out
