r"""Patient-cluster bootstrap confidence intervals of per-row metric values.

**Bootstrap CIs** (``n_boot > 0`` with ``patient_ids``): PATIENTS are resampled with replacement (all rows of a
drawn patient come along, for both directions); each metric is recomputed from the fixed per-query values,
i.e. the gallery stays fixed and only the query set is resampled — the CI covers query-sampling variability
(which patients were evaluated), not gallery variability. ``{key}_lo`` / ``{key}_hi`` are the 2.5 / 97.5
percentiles of the replicates. Resampling rows instead of patients would understate the CI when patients
contribute several correlated rows; pass ``patient_ids=np.arange(N)`` if rows really are independent.

:func:`bootstrap_replicates` draws the replicates from per-row values (``PerQueryMetrics.row_values()``:
key → (N,) float64); :func:`bootstrap_ci` turns them into percentile bounds. Both work for any per-row
statistic whose value is the mean (or, for ``median_keys``, the median) over rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cxrlib.metrics._inputs import to_numpy

__all__ = ["bootstrap_replicates", "bootstrap_ci"]


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
    cl = to_numpy(cluster_ids)
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
