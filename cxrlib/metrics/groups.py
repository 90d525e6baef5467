"""How rows are grouped: identical reports, the label of a group of rows, stratified subsets.

One implementation of each rule, shared by the retrieval metrics, the chance levels, the cluster scores and
the :mod:`cxrlib.viz` galleries and panels:

- :func:`first_appearance` — group ids numbered in order of first appearance (row 0's group is 0, the next
  new group 1, ...), with the first row of each group. Used by both groupings below.
- :func:`unique_rows` — identical report EMBEDDINGS are one item (the retrieval metrics; exact equality of
  the float32 rows).
- :func:`unique_strings` — identical report STRINGS are one item (the i2t gallery, which shows texts).
  Identical strings embed identically, so both groupings agree on real data; they differ only when two
  different strings embed to the same vector (e.g. equal up to the text encoder's context length).
- :func:`majority_labels` — the label of a group whose rows disagree: the majority, a tie going to the
  larger label value.
- :func:`subsample` — a stratified, seeded subset of rows (silhouettes and the projection panels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrlib.metrics._inputs import per_row
from cxrlib.metrics.kernels import row_hashes, rows_equal_rep

__all__ = ["first_appearance", "unique_rows", "unique_strings", "majority_labels", "subsample"]


def first_appearance(inverse: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the groups of ``np.unique(keys, return_index=True, return_inverse=True)`` by first appearance.

    Args:
        inverse: (N,) group of each row in ``np.unique``'s (sorted) order.
        first: (M,) first row of each group in that order.

    Returns:
        ``(uid (N,) int64, first_rows (M,) int64)``: ``uid[i]`` is the group of row ``i``, numbered in order
        of first appearance; ``first_rows[u]`` is the first row of group ``u`` (ascending).
    """
    order = np.argsort(first, kind="stable")
    relabel = np.empty_like(order)
    relabel[order] = np.arange(order.size)
    return relabel[inverse].astype(np.int64), first[order].astype(np.int64)


def unique_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the rows of ``X`` (N, D) float32 (C-contiguous) by exact value equality (``-0.0 == 0.0``).

    This is how the retrieval metrics de-duplicate report embeddings. Returns ``(uid (N,) int64,
    first_rows (M,) int64)`` as :func:`first_appearance` does."""
    h = row_hashes(X.view(np.uint32))
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    if not rows_equal_rep(X, first[inv]).all():  # a hash collision: fall back to an exact row sort
        canon = np.ascontiguousarray(X + np.float32(0.0))  # -0.0 → 0.0
        v = canon.view(np.dtype((np.void, canon.shape[1] * canon.itemsize))).ravel()
        _, first, inv = np.unique(v, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
    return first_appearance(inv, first)


def unique_strings(texts: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Group ``texts`` (N,) by exact equality of ``str(text)``; returns ``(uid (N,) int64, first_rows (M,)
    int64)`` as :func:`first_appearance` does."""
    keys = np.empty(len(texts), dtype=object)
    keys[:] = [str(t) for t in texts]
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    return first_appearance(inv.reshape(-1), first)


def majority_labels(
    uid: np.ndarray, codes: np.ndarray, n_groups: int, n_codes: int
) -> tuple[np.ndarray, int]:
    """The label of each group of rows: the majority of its rows' labels, a tie going to the larger label.

    Args:
        uid: (N,) int group of each row, in ``[0, n_groups)``.
        codes: (N,) int label code of each row, in ``[0, n_codes)`` (codes ordered like the label values,
            e.g. the inverse of ``np.unique``, so "larger code" means "larger label").
        n_groups: M, the number of groups.
        n_codes: the number of label values.

    Returns:
        ``(group_codes (M,) int64, n_conflicts)``: the label code of each group and the number of groups whose
        rows do not all share one label.
    """
    counts = np.bincount(uid * n_codes + codes, minlength=n_groups * n_codes).reshape(n_groups, n_codes)
    group_codes = (n_codes - 1 - np.argmax(counts[:, ::-1], axis=1)).astype(np.int64)  # tie → larger label
    n_conflicts = int(((counts > 0).sum(axis=1) > 1).sum())
    return group_codes, n_conflicts


def subsample(
    labels: np.ndarray | Sequence[int],
    max_points: int,
    seed: int = 0,
    groups: np.ndarray | Sequence[object] | None = None,
) -> np.ndarray:
    """Stratified, seeded subset of row indices; use the SAME indices for every panel.

    Strata are the label values, or the ``(label, group)`` pairs when ``groups`` (N,) is given (e.g. the
    dataset split, view or source, to keep its proportions too). With ``N <= max_points`` all rows are
    returned. Otherwise each stratum gets a share proportional to its size (largest-remainder rounding, ties
    to the earlier stratum in sorted order); when ``max_points`` is at least the number of strata, every
    stratum keeps at least one row (taken from the largest share). Rows inside a stratum are drawn without
    replacement by ``numpy.random.default_rng(seed)``, strata visited in sorted order.

    Args:
        labels: (N,) labels (any sortable values).
        max_points: size of the subset.
        seed: seed of the draw.
        groups: optional (N,) second stratification key.

    Returns:
        (n_sel,) int64 row indices, sorted ascending, ``n_sel = min(N, max_points)``.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {lab.shape}.")
    n = lab.shape[0]
    if int(max_points) != max_points or max_points < 1:
        raise ValueError(f"max_points must be a positive integer; got {max_points!r}.")
    max_points = int(max_points)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    if groups is None:
        _, strata = np.unique(lab, return_inverse=True)
    else:
        grp = per_row(np.asarray(groups), n, "groups")
        _, lc = np.unique(lab, return_inverse=True)
        _, gc = np.unique(grp, return_inverse=True)
        _, strata = np.unique(lc.reshape(-1) * (int(gc.max()) + 1) + gc.reshape(-1), return_inverse=True)
    strata = strata.reshape(-1)
    sizes = np.bincount(strata)
    exact = sizes * (max_points / n)
    quota = np.floor(exact).astype(np.int64)
    rest = max_points - int(quota.sum())
    if rest > 0:
        order = np.lexsort((np.arange(sizes.size), -(exact - quota)))
        quota[order[:rest]] += 1
    if max_points >= sizes.size:
        for s in np.flatnonzero(quota == 0):
            donor = int(np.argmax(quota))
            quota[donor] -= 1
            quota[s] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(strata == s), size=int(q), replace=False) for s, q in enumerate(quota) if q
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
