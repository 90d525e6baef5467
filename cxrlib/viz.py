r"""2-D maps of embedding spaces, cluster scores and retrieval galleries (used by notebook 04).

The paper argues with t-SNE plots that the fine-tuned space separates normal from abnormal studies more
clearly than the pretrained backbone. This module makes those plots reproducible and backs them with numbers:

- :func:`embed_2d` / :func:`joint_projection` — t-SNE, UMAP or PCA to 2-D; images and reports are projected
  *together* (one fit) so that both modalities share one map.
- :func:`subsample` — a stratified, seeded subset of rows, used for every panel (the same points everywhere).
- :func:`plot_projection_panels` — panels side by side; colour = label, marker = modality.
- :func:`cluster_scores` / :func:`scores_table` — silhouette, leave-one-out k-NN accuracy and the modality gap,
  before vs after, as a table.
- :func:`pick_queries`, :func:`i2t_gallery`, :func:`t2i_gallery` and their ``plot_*`` functions — retrieval
  examples picked by a stated rule (never by hand).

Inputs are paired embeddings as everywhere in cxrlib: row ``i`` of ``image_emb`` (N, D) and row ``i`` of
``text_emb`` (N, D) are one image and the report of its study; ``labels`` (N,) holds 0 = normal, 1 = abnormal
(any small non-negative integers work). Embeddings are expected L2-normalised; every function here that
needs cosine geometry normalises its input again (idempotent), so un-normalised input cannot silently change a
number. Zero rows, NaN or inf raise ``ValueError`` naming the row.

Every plotting function returns the :class:`matplotlib.figure.Figure`; with ``out_path`` it also saves it there
(parent folders are created) at ``dpi``, and with ``close=True`` it closes the figure afterwards (keep the
default ``False`` in notebooks so the figure is displayed). Everything is deterministic for fixed seeds.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "LABEL_COLORS",
    "MODALITY_MARKERS",
    "embed_2d",
    "joint_projection",
    "subsample",
    "plot_projection_panels",
    "knn_loo_predict",
    "cluster_scores",
    "scores_table",
    "pick_queries",
    "i2t_gallery",
    "plot_i2t_gallery",
    "t2i_gallery",
    "plot_t2i_gallery",
    "plot_metric_bars",
]

LABEL_COLORS: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
"""Okabe–Ito colour-blind-safe palette; label ``j`` gets ``LABEL_COLORS[j]`` (blue normal, vermillion abnormal)."""

MODALITY_MARKERS: dict[str, str] = {"image": "o", "report": "^"}
"""Marker of each modality in the projection panels."""

_GOOD = "#1B7837"  # green: retrieved item has the query's label
_BAD = "#B2182B"  # red: it has not
_CHUNK_ELEMS = 2**22  # float64 similarity entries per chunk in the k-NN search (32 MB)
_METHODS = ("tsne", "umap", "pca")


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------
def _matrix(x: np.ndarray, name: str) -> np.ndarray:
    """(n, D) finite float64 copy of ``x``; errors name the first bad row."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, D); got shape {a.shape}.")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows).")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name} row {int(np.flatnonzero(bad)[0])} contains NaN or inf ({int(bad.sum())} bad rows); "
            "recompute the embeddings of those rows or drop them (with the same rows of the other arrays)."
        )
    return a


def _normalized(x: np.ndarray, name: str) -> np.ndarray:
    """Row-wise L2-normalised float64 copy of ``x`` (n, D); a zero row is an error."""
    a = _matrix(x, name)
    norms = np.linalg.norm(a, axis=1)
    if (norms == 0).any():
        raise ValueError(
            f"{name} row {int(np.flatnonzero(norms == 0)[0])} is all zeros and has no direction; "
            "cosine similarity is undefined for it. Recompute or drop that row."
        )
    return a / norms[:, None]


def _labels(labels: np.ndarray | Sequence[int], n: int, name: str = "labels") -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one per embedding row); got {lab.shape}.")
    return lab


def _int_labels(labels: np.ndarray | Sequence[int], n: int, n_names: int) -> np.ndarray:
    lab = _labels(labels, n)
    if lab.dtype == np.bool_:
        lab = lab.astype(np.int64)
    if lab.size and (
        not np.issubdtype(lab.dtype, np.integer) or int(lab.min()) < 0 or int(lab.max()) >= n_names
    ):
        raise ValueError(
            f"labels must be integers in [0, {n_names}) to match label_names; got values "
            f"{np.unique(lab)[:10].tolist()}. Pass label_names with one name per label value."
        )
    return lab.astype(np.int64)


def _finish(fig: Figure, out_path: str | os.PathLike[str] | None, dpi: int, close: bool) -> Figure:
    if out_path is not None:
        p = Path(out_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return fig


# ----------------------------------------------------------------------------------------------------------
# 2-D projections
# ----------------------------------------------------------------------------------------------------------
def embed_2d(
    x: np.ndarray,
    method: str = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    n_threads: int | None = 1,
) -> np.ndarray:
    """Project ``x`` (n, D) to 2-D; returns (n, 2) float64, deterministic for a fixed ``seed``.

    Methods:

    - ``"tsne"`` — :class:`sklearn.manifold.TSNE` with ``init="pca"``, ``learning_rate="auto"`` and
      ``metric="cosine"``: affinities use the cosine distance ``1 - cos``, which on L2-normalised rows equals
      half the squared Euclidean distance, so it is the same map as t-SNE on the normalised vectors (the
      factor 2 is absorbed by the per-point bandwidth search). The perplexity must be well below n: when
      ``perplexity > (n - 1) / 3`` it is clamped to ``(n - 1) / 3`` with a warning. Needs n >= 4. With the
      PCA initialisation the Barnes–Hut optimisation uses no randomness, so in practice the map does not
      depend on ``seed`` (it is still passed on).
    - ``"umap"`` — :class:`umap.UMAP` with ``metric="cosine"``, ``random_state=seed`` and ``n_jobs=1``.
      Setting ``random_state`` disables UMAP's parallel optimisation, which is what we want: the map is then
      reproducible bit for bit. ``n_neighbors`` is clamped to ``n - 1`` with a warning. Note: the first UMAP
      fit in a Python process pays ~15–20 s of numba JIT compilation (plus ~5 s to import umap); later fits
      are fast. Needs n >= 4.
    - ``"pca"`` — :class:`sklearn.decomposition.PCA` with the exact (full) SVD, sign-fixed by sklearn.

    Args:
        x: (n, D) embeddings (any scale for PCA; direction only for t-SNE / UMAP, which use cosine).
        method: ``"tsne"``, ``"umap"`` or ``"pca"``.
        seed: random state of the method.
        perplexity: t-SNE perplexity (effective number of neighbours).
        n_neighbors: UMAP neighbourhood size.
        n_threads: OpenMP threads of t-SNE's Barnes–Hut gradient; the map is bit-identical for any value.
            Default 1: each of t-SNE's 1000 iterations ends in a thread barrier, and on a machine whose cores
            are busy (other processes, torch's own thread pool) a parallel gradient can wait a scheduler
            time-slice per iteration — measured on a shared 2-core machine: 300 points 1.9 s with 1 thread vs
            34 s with 2, 3000 points 14 s vs 44 s. ``None`` = all cores (for a dedicated multi-core server).
    """
    a = _matrix(x, "x")
    n, d = a.shape
    m = method.lower()
    if m not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
    if d < 2:
        raise ValueError(f"x must have at least 2 columns to be projected to 2-D; got D = {d}.")
    if m == "pca":
        if n < 2:
            raise ValueError(f"PCA needs at least 2 rows; got {n}.")
        from sklearn.decomposition import PCA

        out = PCA(n_components=2, svd_solver="full", random_state=seed).fit_transform(a)
    else:
        if n < 4:
            raise ValueError(f"{m} needs at least 4 rows; got {n}. Use method='pca' for tiny sets.")
        if m == "tsne":
            from sklearn.manifold import TSNE

            if perplexity <= 0:
                raise ValueError(f"perplexity must be positive; got {perplexity!r}.")
            max_perp = (n - 1) / 3.0
            if perplexity > max_perp:
                warnings.warn(
                    f"t-SNE perplexity {perplexity:g} is too large for n = {n} points; using {max_perp:.3g} "
                    "= (n - 1) / 3.",
                    UserWarning,
                    stacklevel=2,
                )
                perplexity = max_perp
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=n_threads, user_api="openmp"):
                out = TSNE(
                    n_components=2,
                    perplexity=float(perplexity),
                    init="pca",
                    learning_rate="auto",
                    metric="cosine",
                    random_state=seed,
                ).fit_transform(a)
        else:
            import umap

            if n_neighbors < 2:
                raise ValueError(f"n_neighbors must be >= 2; got {n_neighbors!r}.")
            if n_neighbors > n - 1:
                warnings.warn(
                    f"UMAP n_neighbors {n_neighbors} is too large for n = {n} points; using {n - 1}.",
                    UserWarning,
                    stacklevel=2,
                )
                n_neighbors = n - 1
            out = umap.UMAP(
                n_components=2,
                n_neighbors=int(n_neighbors),
                metric="cosine",
                random_state=seed,
                n_jobs=1,
            ).fit_transform(a)
    out = np.asarray(out, dtype=np.float64)
    if not np.isfinite(out).all():
        raise RuntimeError(
            f"{m} produced non-finite coordinates; check the input for duplicate/degenerate rows."
        )
    return out


def joint_projection(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    method: str = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    n_threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Project images and reports TOGETHER: one :func:`embed_2d` fit on ``vstack([image_emb, text_emb])``.

    Both modalities then live in one 2-D map, so the distance between an image and a report point means
    something (two separate fits would not be comparable). With a modality gap the two clouds appear apart.

    Args:
        image_emb: (N, D) image embeddings.
        text_emb: (M, D) report embeddings (usually M = N, paired by row).
        method, seed, perplexity, n_neighbors, n_threads: see :func:`embed_2d` (perplexity applies to the
            N + M points).

    Returns:
        ``(image_2d (N, 2), text_2d (M, 2))``.
    """
    img = _matrix(image_emb, "image_emb")
    txt = _matrix(text_emb, "text_emb")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"image_emb and text_emb must have the same width D; got {img.shape[1]} and {txt.shape[1]}."
        )
    both = embed_2d(
        np.vstack([img, txt]),
        method=method,
        seed=seed,
        perplexity=perplexity,
        n_neighbors=n_neighbors,
        n_threads=n_threads,
    )
    return both[: img.shape[0]], both[img.shape[0] :]


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
        grp = _labels(np.asarray(groups), n, "groups")
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


def plot_projection_panels(
    panels: Sequence[tuple[str, np.ndarray | None, np.ndarray | None]],
    labels: np.ndarray | Sequence[int],
    out_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    label_names: Sequence[str] = ("normal", "abnormal"),
    point_size: float = 10.0,
    alpha: float = 0.6,
    panel_size: float = 4.0,
    dpi: int = 200,
    close: bool = False,
) -> Figure:
    """Side-by-side 2-D maps: colour = label (Okabe–Ito), marker = modality (● image, ▲ report).

    Args:
        panels: ``(panel title, image_2d (n, 2) or None, text_2d (n, 2) or None)`` per panel, e.g. from
            :func:`joint_projection` on the same :func:`subsample` rows; put a score in the title if wanted
            (``f"after (projector)\\nsilhouette {s:.2f}"``).
        labels: (n,) integer labels, ``labels[i]`` naming ``label_names[labels[i]]``; shared by all panels.
        out_path: save the figure there (PNG/PDF/SVG by suffix) at ``dpi``; folders are created.
        title: figure title.
        label_names: one legend name per label value.
        point_size, alpha: scatter marker area (pt²) and opacity (small + translucent: overlap stays visible).
        panel_size: width and height of one panel in inches.
        dpi: resolution of the saved file.
        close: close the figure after saving (batch use); keep False in notebooks.

    Points are drawn in one fixed random order (seed 0) so neither class is systematically painted on top;
    reports are drawn over images. Axes have no ticks (map coordinates carry no meaning) and equal aspect.
    One shared legend (labels with their counts, then the modalities) sits under the panels.
    """
    if len(panels) == 0:
        raise ValueError("panels is empty; pass at least one (title, image_2d, text_2d) tuple.")
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must be 1-D (n,); got shape {np.shape(labels)}.")
    lab = _int_labels(labels, len(labels), len(label_names))
    n = lab.shape[0]
    order = np.random.default_rng(0).permutation(n)
    colors = np.array([LABEL_COLORS[j % len(LABEL_COLORS)] for j in range(len(label_names))], dtype=object)
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_size * len(panels), panel_size), squeeze=False)
    for ax, (ptitle, img2, txt2) in zip(axes[0], panels, strict=True):
        if img2 is None and txt2 is None:
            raise ValueError(f"panel {ptitle!r} has neither image nor report coordinates.")
        for mod, xy in (("image", img2), ("report", txt2)):
            if xy is None:
                continue
            xy = np.asarray(xy, dtype=np.float64)
            if xy.shape != (n, 2):
                raise ValueError(
                    f"panel {ptitle!r}: {mod} coordinates must have shape ({n}, 2) to match labels; "
                    f"got {xy.shape}. Use the same subsample indices for labels and every panel."
                )
            if not np.isfinite(xy).all():
                raise ValueError(f"panel {ptitle!r}: {mod} coordinates contain NaN or inf.")
            ax.scatter(
                xy[order, 0],
                xy[order, 1],
                c=list(colors[lab[order]]),
                marker=MODALITY_MARKERS[mod],
                s=point_size,
                alpha=alpha,
                linewidths=0,
            )
        ax.set_title(ptitle, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    counts = np.bincount(lab, minlength=len(label_names))
    handles = [
        Line2D([], [], ls="none", marker="s", color=colors[j], label=f"{name} (n={int(counts[j])})")
        for j, name in enumerate(label_names)
        if counts[j] > 0
    ]
    present = {
        "image": any(p[1] is not None for p in panels),
        "report": any(p[2] is not None for p in panels),
    }
    handles += [
        Line2D([], [], ls="none", marker=MODALITY_MARKERS[m], color="0.35", label=m)
        for m in ("image", "report")
        if present[m]
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02)
    )
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _finish(fig, out_path, dpi, close)


# ----------------------------------------------------------------------------------------------------------
# cluster scores
# ----------------------------------------------------------------------------------------------------------
def _topk_sorted(S: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of each row of S (m, n), ordered by (score desc, index asc).

    Ties are exact: when the k-th value is tied beyond position k, the lower indices win."""
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    sv = np.take_along_axis(S, part, axis=1)
    order = np.lexsort((part, -sv), axis=-1)
    nb = np.take_along_axis(part, order, axis=1)
    kth = sv.min(axis=1)
    tied = np.flatnonzero((S >= kth[:, None]).sum(axis=1) > k)
    for r in tied:  # rare: exact ties at the k-th place
        cand = np.flatnonzero(S[r] >= kth[r])
        nb[r] = cand[np.lexsort((cand, -S[r, cand]))[:k]]
    return nb


def knn_loo_predict(x: np.ndarray, labels: np.ndarray | Sequence[int], k: int = 10) -> np.ndarray:
    """Leave-one-out k-NN label prediction with cosine similarity.

    Each row's neighbours are the k other rows with the highest cosine similarity (ties: lower row index
    first; the row itself is excluded, identical rows elsewhere are not). The prediction is the majority label
    of the k neighbours; a tie between labels goes to the tied label whose first neighbour is nearest (for two
    labels: the label of the nearest neighbour). ``k`` is clamped to ``n - 1`` with a warning.

    Computed exactly in float64 by a chunked ``X @ X.T`` (about 32 MB of scores at a time, never n × n).

    Args:
        x: (n, D) embeddings (normalised here).
        labels: (n,) labels (any sortable values).
        k: number of neighbours.

    Returns:
        (n,) predicted labels, same dtype as ``labels``.
    """
    X = _normalized(x, "x")
    n = X.shape[0]
    lab = _labels(labels, n)
    if n < 2:
        raise ValueError("k-NN leave-one-out needs at least 2 rows.")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    k = int(k)
    if k > n - 1:
        warnings.warn(f"k = {k} >= n = {n}; using k = {n - 1}.", UserWarning, stacklevel=2)
        k = n - 1
    values, codes = np.unique(lab, return_inverse=True)
    codes = codes.reshape(-1)
    n_cls = values.shape[0]
    chunk = max(1, min(n, _CHUNK_ELEMS // n))
    pred = np.empty(n, np.int64)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        S = X[r0:r1] @ X.T
        S[np.arange(r1 - r0), np.arange(r0, r1)] = -np.inf
        nl = codes[_topk_sorted(S, k)]  # (m, k) neighbour labels, nearest first
        hit = nl[:, :, None] == np.arange(n_cls)[None, None, :]  # (m, k, C)
        votes = hit.sum(axis=1)
        first = np.where(hit.any(axis=1), hit.argmax(axis=1), k)
        first = np.where(votes == votes.max(axis=1, keepdims=True), first, k + 1)
        pred[r0:r1] = first.argmin(axis=1)
    return values[pred]


def _silhouette(x: np.ndarray, lab: np.ndarray, what: str) -> float:
    from sklearn.metrics import silhouette_score

    n_lab = np.unique(lab).shape[0]
    if not 2 <= n_lab <= x.shape[0] - 1:
        warnings.warn(
            f"silhouette_{what} is undefined with {n_lab} label value(s) among {x.shape[0]} points "
            "(needs at least two classes); returning NaN.",
            UserWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(silhouette_score(x, lab, metric="cosine"))


def cluster_scores(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: np.ndarray | Sequence[int],
    k: int = 10,
    seed: int = 0,
    max_silhouette_points: int | None = 5000,
) -> dict[str, float]:
    """How well an embedding space separates the labels, and how far apart its two modalities sit.

    Keys (flat):

    - ``silhouette_image``, ``silhouette_text`` — :func:`sklearn.metrics.silhouette_score` with the cosine
      distance and the labels (normal vs abnormal) as clusters: for each point ``(b - a) / max(a, b)`` with
      ``a`` its mean distance to its own class and ``b`` to the other class, averaged. Range [-1, 1];
      HIGHER = better separated (0: classes overlap, < 0: points sit closer to the other class).
    - ``silhouette_joint`` — the same on images and reports stacked (2N points, each with its row's label):
      do the two modalities of one class form one cluster? A large modality gap pulls it down.
    - ``knn_acc_image``, ``knn_acc_text`` — leave-one-out k-NN label accuracy (:func:`knn_loo_predict`:
      cosine, majority of k, ties to the nearest neighbour's label). Range [0, 1]; HIGHER = better; compare
      with the majority-class rate. Rows with an identical report count as neighbours of each other (only
      the row itself is left out), which favours the text side when many reports are duplicates.
    - ``modality_gap`` — ``||mean(img) - mean(txt)||``, the Euclidean distance between the centroids of the
      L2-normalised image and text embeddings (Liang et al. 2022, "Mind the Gap"). Range [0, 2]; 0 = the two
      clouds share a centre. LOWER = modalities better mixed (CLIP-style training leaves a gap; it is a
      description, not a quality score by itself).
    - ``modality_gap_cosine`` — ``1 - cos(mean(img), mean(txt))``: the angle between the centroids regardless
      of their lengths. Range [0, 2]; LOWER = closer.
    - ``n_points`` — N; ``n_silhouette_points`` — rows used for the silhouettes.

    Silhouettes cost O(n²): above ``max_silhouette_points`` rows they are computed on a :func:`subsample`
    (stratified by label, ``seed``); the same rows serve all three. ``None`` = always all rows. k-NN and gap
    use all rows. A single-class label set gives NaN silhouettes with a warning (k-NN is then trivially 1).

    Args:
        image_emb: (N, D) image embeddings, row i paired with ``text_emb`` row i.
        text_emb: (N, D) report embeddings.
        labels: (N,) labels.
        k: neighbours of the k-NN accuracy.
        seed: seed of the silhouette subsample.
        max_silhouette_points: cap on the silhouette rows.
    """
    img = _normalized(image_emb, "image_emb")
    txt = _normalized(text_emb, "text_emb")
    if img.shape != txt.shape:
        raise ValueError(
            f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape (paired rows)."
        )
    n = img.shape[0]
    lab = _labels(labels, n)
    sil = np.arange(n) if max_silhouette_points is None else subsample(lab, max_silhouette_points, seed=seed)
    ls = lab[sil]
    out: dict[str, float] = {
        "silhouette_image": _silhouette(img[sil], ls, "image"),
        "silhouette_text": _silhouette(txt[sil], ls, "text"),
        "silhouette_joint": _silhouette(np.vstack([img[sil], txt[sil]]), np.concatenate([ls, ls]), "joint"),
    }
    if n >= 2:
        out["knn_acc_image"] = float(np.mean(knn_loo_predict(img, lab, k) == lab))
        out["knn_acc_text"] = float(np.mean(knn_loo_predict(txt, lab, k) == lab))
    else:
        out["knn_acc_image"] = out["knn_acc_text"] = float("nan")
    ci, ct = img.mean(axis=0), txt.mean(axis=0)
    out["modality_gap"] = float(np.linalg.norm(ci - ct))
    denom = float(np.linalg.norm(ci) * np.linalg.norm(ct))
    if denom == 0.0:
        warnings.warn("a modality centroid is zero; modality_gap_cosine is NaN.", UserWarning, stacklevel=2)
        out["modality_gap_cosine"] = float("nan")
    else:
        out["modality_gap_cosine"] = float(1.0 - np.clip(ci @ ct / denom, -1.0, 1.0))
    out["n_points"] = float(n)
    out["n_silhouette_points"] = float(sil.shape[0])
    return out


def scores_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Scores of several spaces as a table: one row per space, one column per metric.

    ``{"before (BiomedCLIP)": s0, "after (projector)": s1}`` → rows in the given order; with exactly two
    rows a third row ``"change"`` = second − first is added (for the gap, a negative change = smaller gap).
    Columns are the union of the keys in order of first appearance; a missing key is NaN.
    """
    if not rows:
        raise ValueError("rows is empty; pass {space name: cluster_scores(...)}.")
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols]
    df = pd.DataFrame([{c: r.get(c, np.nan) for c in cols} for r in rows.values()], index=list(rows))
    df = df.astype(float)
    if len(df) == 2:
        df.loc["change"] = df.iloc[1] - df.iloc[0]
    df.index.name = "space"
    return df


# ----------------------------------------------------------------------------------------------------------
# retrieval galleries
# ----------------------------------------------------------------------------------------------------------
def pick_queries(
    labels: np.ndarray | Sequence[int],
    ids: np.ndarray | Sequence[object],
    n_per_label: int,
    rule: str = "first_by_id",
    seed: int = 0,
) -> np.ndarray:
    """Row indices of gallery queries chosen by a stated rule, never by hand.

    Rules:

    - ``"first_by_id"`` — for each label value (ascending), the first ``n_per_label`` rows in ascending ``ids``
      order (ties between equal ids: lower row first). Reproducible and independent of any model.
    - ``"random"`` — for each label value, ``n_per_label`` rows drawn without replacement by
      ``numpy.random.default_rng(seed)`` (label values visited in ascending order).

    Returns:
        int64 row indices grouped by label (ascending), sorted by id inside a label. A label with fewer than
        ``n_per_label`` rows contributes all its rows (with a warning).
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {lab.shape}.")
    idv = _labels(np.asarray(ids), lab.shape[0], "ids")
    if int(n_per_label) != n_per_label or n_per_label < 1:
        raise ValueError(f"n_per_label must be a positive integer; got {n_per_label!r}.")
    if rule not in ("first_by_id", "random"):
        raise ValueError(f"rule must be 'first_by_id' or 'random'; got {rule!r}.")
    by_id = np.argsort(idv, kind="stable")
    rank_of = np.empty_like(by_id)
    rank_of[by_id] = np.arange(by_id.shape[0])
    rng = np.random.default_rng(seed)
    out = []
    for v in np.unique(lab):
        rows = np.flatnonzero(lab == v)
        if rows.shape[0] < n_per_label:
            warnings.warn(
                f"label {v!r} has only {rows.shape[0]} rows (< n_per_label = {n_per_label}); using all.",
                UserWarning,
                stacklevel=2,
            )
        m = min(int(n_per_label), rows.shape[0])
        if rule == "random":
            rows = rng.choice(rows, size=m, replace=False)
        rows = rows[np.argsort(rank_of[rows], kind="stable")]
        out.append(rows[:m])
    return np.concatenate(out).astype(np.int64)


def _query_rows(query_idx: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    q = np.asarray(query_idx)
    if q.ndim != 1 or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"query_idx must be a 1-D integer array of row indices; got {q.dtype} {q.shape}.")
    if q.size and (q.min() < 0 or q.max() >= n):
        raise ValueError(f"query_idx must lie in [0, {n}); got values in [{q.min()}, {q.max()}].")
    return q.astype(np.int64)


def _ranked(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-k of a 1-D score vector: score descending, ties by lower index."""
    return _topk_sorted(sims[None, :], k)[0]


def i2t_gallery(
    query_idx: np.ndarray | Sequence[int],
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    texts: Sequence[str],
    labels: np.ndarray | Sequence[int],
    k: int = 5,
    ids: np.ndarray | Sequence[object] | None = None,
) -> pd.DataFrame:
    """Image → report retrieval examples as a long table (one row per query × rank).

    The gallery is the set of DISTINCT report strings (identical reports are one item, as in
    :mod:`cxrlib.metrics`, which collapses identical text embeddings; identical strings embed identically).
    Each distinct text uses the embedding of its first row; its label is the majority label of its rows
    (a tie goes to the larger label value, as in cxrlib.metrics). Scores are cosine similarities (float64);
    the top k are ordered by similarity, ties by first appearance of the text.

    Args:
        query_idx: (Q,) query rows (e.g. from :func:`pick_queries`).
        image_emb, text_emb: (N, D) paired embeddings.
        texts: (N,) the report text of each row.
        labels: (N,) labels.
        k: results per query (clamped to the number of distinct texts).
        ids: (N,) optional row ids (e.g. the manifest's image id) for the ``query_id`` column; default = row.

    Returns:
        DataFrame with columns ``query_row``, ``query_id``, ``query_label``, ``rank`` (1..k), ``text_row``
        (first row that has the retrieved text), ``retrieved_text``, ``similarity`` (rounded to 3 decimals),
        ``retrieved_label``, ``same_label`` (bool), ``exact_report`` (bool: the retrieved text is the query's
        own report).
    """
    img = _normalized(image_emb, "image_emb")
    txt = _normalized(text_emb, "text_emb")
    n = img.shape[0]
    if txt.shape != img.shape:
        raise ValueError(f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape.")
    if len(texts) != n:
        raise ValueError(f"texts must have one entry per row ({n}); got {len(texts)}.")
    lab = _labels(labels, n)
    idv = np.arange(n) if ids is None else _labels(np.asarray(ids), n, "ids")
    q = _query_rows(query_idx, n)
    uid_of: dict[str, int] = {}  # distinct text -> its id (order of first appearance)
    first: list[int] = []  # first row of each distinct text
    uid = np.empty(n, np.int64)
    for i, t in enumerate(texts):
        u = uid_of.setdefault(str(t), len(uid_of))
        if u == len(first):
            first.append(i)
        uid[i] = u
    rep = np.asarray(first, dtype=np.int64)
    m = rep.shape[0]
    lv, lc = np.unique(lab, return_inverse=True)
    counts = np.zeros((m, lv.shape[0]), np.int64)
    np.add.at(counts, (uid, lc.reshape(-1)), 1)
    tlab = lv[counts.shape[1] - 1 - np.argmax(counts[:, ::-1], axis=1)]  # majority; tie → larger value
    U = txt[rep]
    kk = min(int(k), m)
    if kk < 1:
        raise ValueError(f"k must be >= 1; got {k!r}.")
    recs = []
    for r in q:
        s = U @ img[r]
        for rank, u in enumerate(_ranked(s, kk), start=1):
            recs.append(
                {
                    "query_row": int(r),
                    "query_id": idv[r],
                    "query_label": lab[r],
                    "rank": rank,
                    "text_row": int(rep[u]),
                    "retrieved_text": str(texts[rep[u]]),
                    "similarity": round(float(s[u]), 3),
                    "retrieved_label": tlab[u],
                    "same_label": bool(tlab[u] == lab[r]),
                    "exact_report": bool(u == uid[r]),
                }
            )
    return pd.DataFrame.from_records(recs, columns=_I2T_COLUMNS)


_I2T_COLUMNS = [
    "query_row",
    "query_id",
    "query_label",
    "rank",
    "text_row",
    "retrieved_text",
    "similarity",
    "retrieved_label",
    "same_label",
    "exact_report",
]
_T2I_COLUMNS = [
    "query_row",
    "query_id",
    "query_label",
    "rank",
    "image_row",
    "image_id",
    "similarity",
    "label",
    "same_label",
    "exact",
]


def t2i_gallery(
    query_idx: np.ndarray | Sequence[int],
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: np.ndarray | Sequence[int],
    k: int = 5,
    ids: np.ndarray | Sequence[object] | None = None,
    study_ids: np.ndarray | Sequence[object] | None = None,
) -> pd.DataFrame:
    """Report → image retrieval examples as a long table (one row per query × rank).

    The query is the report of row ``r`` (``text_emb[r]``); the gallery is all N images; cosine similarity,
    ties by lower row index.

    Args:
        query_idx: (Q,) query rows.
        image_emb, text_emb: (N, D) paired embeddings.
        labels: (N,) labels.
        k: results per query (clamped to N).
        ids: (N,) optional image ids for ``query_id`` / ``image_id``; default = row.
        study_ids: (N,) optional study of each row: then every image of the query's study counts as
            ``exact`` (several views share one report); without it only the paired row is exact.

    Returns:
        DataFrame with columns ``query_row``, ``query_id``, ``query_label``, ``rank``, ``image_row``,
        ``image_id``, ``similarity`` (3 decimals), ``label``, ``same_label`` (bool), ``exact`` (bool).
    """
    img = _normalized(image_emb, "image_emb")
    txt = _normalized(text_emb, "text_emb")
    n = img.shape[0]
    if txt.shape != img.shape:
        raise ValueError(f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape.")
    lab = _labels(labels, n)
    idv = np.arange(n) if ids is None else _labels(np.asarray(ids), n, "ids")
    sid = None if study_ids is None else _labels(np.asarray(study_ids), n, "study_ids")
    q = _query_rows(query_idx, n)
    kk = min(int(k), n)
    if kk < 1:
        raise ValueError(f"k must be >= 1; got {k!r}.")
    recs = []
    for r in q:
        s = img @ txt[r]
        for rank, j in enumerate(_ranked(s, kk), start=1):
            recs.append(
                {
                    "query_row": int(r),
                    "query_id": idv[r],
                    "query_label": lab[r],
                    "rank": rank,
                    "image_row": int(j),
                    "image_id": idv[j],
                    "similarity": round(float(s[j]), 3),
                    "label": lab[j],
                    "same_label": bool(lab[j] == lab[r]),
                    "exact": bool(j == r or (sid is not None and sid[j] == sid[r])),
                }
            )
    return pd.DataFrame.from_records(recs, columns=_T2I_COLUMNS)


def _queries_of(df: pd.DataFrame, needed: Sequence[str]) -> list[pd.DataFrame]:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"gallery table lacks columns {missing}; pass the output of i2t_gallery/t2i_gallery."
        )
    if len(df) == 0:
        raise ValueError("gallery table is empty.")
    qrows = pd.unique(df["query_row"])
    return [df[df["query_row"] == r].sort_values("rank") for r in qrows]


def _name(label_names: Sequence[str], v: object) -> str:
    try:
        return str(label_names[int(v)])  # type: ignore[call-overload]
    except (IndexError, TypeError, ValueError):
        return str(v)


def _wrap(text: str, width: int, max_lines: int, indent: str = "") -> list[str]:
    """Whitespace-normalised ``text`` wrapped to ``width`` characters, at most ``max_lines`` lines (then …)."""
    lines = textwrap.wrap(
        " ".join(str(text).split()), width=width, subsequent_indent=indent, break_on_hyphens=False
    ) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - 1)].rstrip() + "…"
    return lines


def _show_image(ax: Axes, im: np.ndarray) -> None:
    a = np.asarray(im)
    if a.ndim == 2:
        ax.imshow(a, cmap="gray", vmin=0, vmax=255 if a.dtype == np.uint8 else None)
    else:
        ax.imshow(a)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_i2t_gallery(
    df: pd.DataFrame,
    images: np.ndarray,
    out_path: str | os.PathLike[str] | None = None,
    wrap: int = 60,
    max_lines: int = 3,
    label_names: Sequence[str] = ("normal", "abnormal"),
    dpi: int = 150,
    close: bool = False,
) -> Figure:
    """Image → report gallery figure: one row per query, the X-ray on the left, its top-k reports on the right.

    Each report line starts with ✓ (same label as the query) or ✗ (other label), ★ when it is the query's own
    report, then rank, similarity and label; it is coloured green (✓) or red (✗) — the marks keep it readable
    without colour.

    Args:
        df: the output of :func:`i2t_gallery`.
        images: (Q, H, W) uint8 (or (Q, H, W, 3)) thumbnails, one per query in the order the queries first
            appear in ``df``.
        out_path: save the figure there at ``dpi``; folders are created.
        wrap: characters of report text per line (the first line also holds the marks, rank, similarity and
            label, so it carries less report text).
        max_lines: lines kept per report (longer reports end with …).
        label_names: name of each label value.
        dpi: resolution of the saved file.
        close: close the figure after saving.
    """
    groups = _queries_of(df, _I2T_COLUMNS)
    ims = np.asarray(images)
    if ims.ndim not in (3, 4) or ims.shape[0] != len(groups):
        raise ValueError(
            f"images must be (Q, H, W) thumbnails with Q = {len(groups)} (one per query in df order); "
            f"got shape {ims.shape}."
        )
    blocks: list[list[tuple[str, str, bool]]] = []  # (text, colour, bold)
    for g in groups:
        first = g.iloc[0]
        lines = [(f"Query {first['query_id']} · {_name(label_names, first['query_label'])}", "black", True)]
        for _, row in g.iterrows():
            mark = "✓" if row["same_label"] else "✗"
            star = " ★" if row["exact_report"] else ""
            col = _GOOD if row["same_label"] else _BAD
            head = f"{mark}{star} {int(row['rank'])}. [{row['similarity']:.3f} · {_name(label_names, row['retrieved_label'])}] "
            lines += [
                (t, col, False) for t in _wrap(head + row["retrieved_text"], wrap + 6, max_lines, " " * 6)
            ]
        blocks.append(lines)
    line_h = 0.17
    heights = [max(2.0, line_h * (len(b) + 1)) for b in blocks]
    text_w = 0.075 * (wrap + 8)
    fig = plt.figure(figsize=(2.4 + text_w, sum(heights)))
    gs = fig.add_gridspec(len(groups), 2, width_ratios=[2.2, text_w], height_ratios=heights)
    for i, (lines, h) in enumerate(zip(blocks, heights, strict=True)):
        ax_im = fig.add_subplot(gs[i, 0])
        _show_image(ax_im, ims[i])
        ax_t = fig.add_subplot(gs[i, 1])
        ax_t.axis("off")
        step = line_h / h
        for j, (t, col, bold) in enumerate(lines):
            ax_t.text(
                0.0,
                1.0 - (j + 0.5) * step,
                t,
                color=col,
                fontsize=8,
                fontweight="bold" if bold else "normal",
                va="center",
                ha="left",
                transform=ax_t.transAxes,
            )
    fig.subplots_adjust(wspace=0.05, hspace=0.15)
    return _finish(fig, out_path, dpi, close)


def plot_t2i_gallery(
    df: pd.DataFrame,
    query_texts: Sequence[str],
    thumbnails_fn: Callable[[np.ndarray], np.ndarray],
    out_path: str | os.PathLike[str] | None = None,
    wrap: int = 40,
    max_lines: int = 12,
    label_names: Sequence[str] = ("normal", "abnormal"),
    dpi: int = 150,
    close: bool = False,
) -> Figure:
    """Report → image gallery figure: one row per query, the wrapped report then its top-k images.

    Each image is titled with its similarity and label (★ = an image of the query's own study) and framed
    green when it has the query's label, red otherwise (the title's ✓/✗ repeats that without colour).

    Args:
        df: the output of :func:`t2i_gallery`.
        query_texts: (Q,) the report text of each query, in the order the queries first appear in ``df``.
        thumbnails_fn: called once per query with the (k,) int64 ``image_row`` values of its results;
            returns (k, H, W) uint8 thumbnails (or (k, H, W, 3)) in that order — e.g. a lookup into the image
            cache of notebook 01.
        out_path: save the figure there at ``dpi``; folders are created.
        wrap: characters per line of the query text; ``max_lines`` lines at most (then …).
        label_names: name of each label value.
        dpi: resolution of the saved file.
        close: close the figure after saving.
    """
    groups = _queries_of(df, _T2I_COLUMNS)
    if len(query_texts) != len(groups):
        raise ValueError(
            f"query_texts must have one text per query in df ({len(groups)}); got {len(query_texts)}."
        )
    k = max(len(g) for g in groups)
    text_w = 0.075 * wrap + 0.3
    thumb = 1.7
    fig = plt.figure(figsize=(text_w + thumb * k, (thumb + 0.45) * len(groups)))
    gs = fig.add_gridspec(len(groups), k + 1, width_ratios=[text_w] + [thumb] * k)
    for i, (g, qt) in enumerate(zip(groups, query_texts, strict=True)):
        rows = g["image_row"].to_numpy(np.int64)
        thumbs = np.asarray(thumbnails_fn(rows))
        if thumbs.ndim not in (3, 4) or thumbs.shape[0] != rows.shape[0]:
            raise ValueError(
                f"thumbnails_fn must return ({rows.shape[0]}, H, W) thumbnails for rows {rows.tolist()}; "
                f"got shape {thumbs.shape}."
            )
        first = g.iloc[0]
        ax_t = fig.add_subplot(gs[i, 0])
        ax_t.axis("off")
        header = f"Query {first['query_id']} · {_name(label_names, first['query_label'])}"
        body = "\n".join(_wrap(qt, wrap, max_lines))
        ax_t.text(0.0, 1.0, header, fontsize=8, fontweight="bold", va="top", transform=ax_t.transAxes)
        ax_t.text(0.0, 0.88, body, fontsize=7.5, va="top", ha="left", transform=ax_t.transAxes)
        for j, (_, row) in enumerate(g.iterrows()):
            ax = fig.add_subplot(gs[i, j + 1])
            _show_image(ax, thumbs[j])
            ok = bool(row["same_label"])
            col = _GOOD if ok else _BAD
            star = "★ " if row["exact"] else ""
            ax.set_title(
                f"{star}{'✓' if ok else '✗'} {row['similarity']:.3f} · {_name(label_names, row['label'])}",
                fontsize=8,
                color=col,
            )
            for sp in ax.spines.values():
                sp.set_visible(True)
                sp.set_edgecolor(col)
                sp.set_linewidth(3)
    fig.subplots_adjust(wspace=0.08, hspace=0.35)
    return _finish(fig, out_path, dpi, close)


# ----------------------------------------------------------------------------------------------------------
# comparison bar chart (notebooks 02 and 03)
# ----------------------------------------------------------------------------------------------------------
def plot_metric_bars(
    numbers: pd.DataFrame,
    keys: Sequence[str],
    out_path: str | os.PathLike[str] | None = None,
    title: str = "",
    chance: Mapping[str, float] | None = None,
    dpi: int = 120,
    close: bool = False,
) -> Figure:
    """Grouped bars: one group per metric in ``keys``, one bar per model (row of ``numbers``).

    ``numbers`` is the first table of :func:`cxrlib.metrics.metrics_table`; where it has ``<key>_lo`` /
    ``<key>_hi`` columns the bars get 95 % CI error bars. ``chance`` draws a dashed reference per metric
    (e.g. the label precision a random ranking would get). Metrics are fractions, so the y axis is [0, 1].
    """
    missing = [k for k in keys if k not in numbers.columns]
    if missing:
        raise KeyError(f"numbers has no column(s) {missing}; columns are {list(numbers.columns)}")
    models = list(numbers.index)
    n_m, n_k = len(models), len(keys)
    width = 0.8 / max(1, n_m)
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.55 * n_k * max(1, n_m) ** 0.5 + 2)), 4.0))
    x = np.arange(n_k)
    for j, m in enumerate(models):
        vals = numbers.loc[m, list(keys)].to_numpy(float)
        err = None
        if all(f"{k}_lo" in numbers.columns for k in keys):
            lo = numbers.loc[m, [f"{k}_lo" for k in keys]].to_numpy(float)
            hi = numbers.loc[m, [f"{k}_hi" for k in keys]].to_numpy(float)
            err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        colour = LABEL_COLORS[(j + 2) % len(LABEL_COLORS)] if n_m > 2 else ("#999999", "#0072B2")[j]
        ax.bar(x + (j - (n_m - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=str(m), color=colour)
    if chance:
        for i, k in enumerate(keys):
            if k in chance:
                ax.hlines(chance[k], i - 0.45, i + 0.45, colors="k", linestyles="dashed", linewidth=1)
        ax.plot([], [], "k--", linewidth=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("value (95 % CI)")
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, out_path, dpi, close)
