"""Paired comparison of two embedding spaces scored on the same queries: the patient-cluster bootstrap of
the difference.

Two models evaluated on one test split are not independent samples: every query is scored by both. Whether
their separate 95 % CIs overlap is therefore the wrong test (too conservative: two CIs can overlap while the
difference is clearly positive). The paired test resamples the *same* patients for both models in every
replicate and reads the CI of the difference ``b - a``::

    replicate r:  draw P patients with replacement (the same draw for a and b)
                  d_r = stat_b(drawn rows) - stat_a(drawn rows)
    CI            = the (2.5, 97.5) percentiles of d_1..d_B

"b better than a" means the whole CI lies above 0 (below 0 for ranks, where lower is better).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cxrlib.metrics.bootstrap import bootstrap_replicates

__all__ = ["paired_difference", "lower_is_better"]


def lower_is_better(key: str) -> bool:
    """Rank metrics (``*_mean_rank``, ``*_median_rank``) improve downwards; every other metric upwards."""
    return key.endswith("_rank")


def paired_difference(
    values_a: Mapping[str, np.ndarray],
    values_b: Mapping[str, np.ndarray],
    cluster_ids: np.ndarray | Sequence[object],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    median_keys: Iterable[str] = (),
    keys: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Paired cluster-bootstrap CI of ``stat(b) - stat(a)`` for every key.

    Args:
        values_a, values_b: key -> (N,) per-row values of the two spaces on the same N rows, in the same order
            (:meth:`cxrlib.metrics.PerQueryMetrics.row_values`); the statistic is the mean (median for
            ``median_keys``).
        cluster_ids: (N,) resampling unit of each row (patient ids).
        n_boot: replicates B (>= 1); the same resampled clusters are used for both spaces.
        seed, level: bootstrap seed and CI level.
        keys: the keys to compare (default: every key present in both).

    Returns:
        key -> ``{"a", "b", "diff", "lo", "hi", "p_not_better"}`` where ``p_not_better`` is the share of
        replicates in which b is not better than a (a one-sided bootstrap p-value).
    """
    keys = list(keys) if keys is not None else [k for k in values_a if k in values_b]
    missing = [k for k in keys if k not in values_a or k not in values_b]
    if missing:
        raise KeyError(f"paired_difference: key(s) {missing} are missing from one of the two spaces")
    a = {k: np.asarray(values_a[k], dtype=np.float64) for k in keys}
    b = {k: np.asarray(values_b[k], dtype=np.float64) for k in keys}
    for k in keys:
        if a[k].shape != b[k].shape:
            raise ValueError(
                f"paired_difference: {k!r} has {a[k].shape[0]} rows in a and {b[k].shape[0]} in b; a paired "
                "comparison needs both spaces scored on the same queries"
            )
    med = set(median_keys)
    reps_a = bootstrap_replicates(a, cluster_ids, n_boot, seed=seed, median_keys=med & set(keys))
    reps_b = bootstrap_replicates(b, cluster_ids, n_boot, seed=seed, median_keys=med & set(keys))
    q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        stat = np.median if k in med else np.mean
        point_a, point_b = float(stat(a[k])), float(stat(b[k]))
        d = reps_b[k] - reps_a[k]
        lo, hi = np.percentile(d, q)
        not_better = d >= 0 if lower_is_better(k) else d <= 0
        out[k] = {
            "a": point_a,
            "b": point_b,
            "diff": point_b - point_a,
            "lo": float(lo),
            "hi": float(hi),
            "p_not_better": float(np.mean(not_better)),
        }
    return out
