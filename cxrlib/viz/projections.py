r"""2-D maps of embedding spaces (t-SNE, UMAP, PCA) and their figure (notebook 04).

- :func:`embed_2d` / :func:`joint_projection` — t-SNE, UMAP or PCA to 2-D; images and reports are projected
  *together* (one fit) so that both modalities share one map.
- :func:`subsample` — a stratified, seeded subset of rows, used for every panel (the same points everywhere);
  defined in :mod:`cxrlib.metrics.groups` (the silhouettes use the same rows) and re-exported here.
- :func:`plot_projection_panels` — panels side by side; colour = label, marker = modality.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cxrlib.metrics.groups import subsample
from cxrlib.viz._common import MODALITY_MARKERS, finish, finite_matrix, labels_and_colors

__all__ = [
    "METHOD_NAMES",
    "embed_2d",
    "joint_projection",
    "projection_maps",
    "subsample",
    "plot_projection_panels",
]

#: How figure titles spell each 2-D method of :func:`embed_2d`.
METHOD_NAMES: dict[str, str] = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}

_METHODS = ("tsne", "umap", "pca")


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
    a = finite_matrix(x, "x")
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
    img = finite_matrix(image_emb, "image_emb")
    txt = finite_matrix(text_emb, "text_emb")
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


def _projection_job(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    method: str,
    seed: int,
    perplexity: float,
    n_neighbors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One :func:`joint_projection` at one thread of every pool (BLAS, OpenMP): the same bits in any process."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return joint_projection(image_emb, text_emb, method, seed, perplexity, n_neighbors, n_threads=1)


def projection_maps(
    spaces: dict[str, tuple[np.ndarray, np.ndarray]],
    methods: Sequence[str],
    seed: int = 0,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    workers: int = 1,
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """:func:`joint_projection` of every space with every method, fitted side by side.

    Each fit is a :func:`cxrlib.parallel.run_jobs` job at one thread (``workers`` processes, ``run.workers``),
    so the maps are the same bits for any ``workers``; on 2 cores the two t-SNE fits of notebook 04 take the
    time of one.

    Args:
        spaces: panel title -> ``(image_emb (n, D), text_emb (n, D))``, e.g. before and after the projector.
        methods: names for :func:`embed_2d` (``"tsne"``, ``"pca"``, ``"umap"``).
        seed, perplexity, n_neighbors: see :func:`embed_2d`.
        workers: processes in all (this one included).

    Returns:
        method -> ``[(title, image_2d, text_2d), ...]`` in the order of ``spaces``, ready for
        :func:`plot_projection_panels`.
    """
    from cxrlib.parallel import run_jobs

    # every method's fits at both ends of the list (this process takes from the front, a worker from the back):
    # the two slow t-SNE fits run side by side, the fast ones fill in
    front = [(m, t) for m in methods for t in list(spaces)[0::2]]
    back = [(m, t) for m in methods for t in list(spaces)[1::2]]
    keys = front + back[::-1]
    jobs = [(*spaces[t], m, seed, perplexity, n_neighbors) for m, t in keys]
    names = [f"{METHOD_NAMES.get(m, m)} of {t!r}" for m, t in keys]
    done = run_jobs(_projection_job, jobs, workers=workers, names=names, desc="2-D maps")
    fitted = dict(zip(keys, done, strict=True))
    return {m: [(t, *fitted[(m, t)]) for t in spaces] for m in methods}


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
    lab, colors = labels_and_colors(labels, label_names)
    n = lab.shape[0]
    order = np.random.default_rng(0).permutation(n)
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
    return finish(fig, out_path, dpi, close)
