r"""Before/after maps split by modality, with the cluster numbers on the figure, and a slide-ready summary.

A single joint map (images and reports in one fit, :func:`~cxrlib.viz.projections.joint_projection`) mixes
two questions: *do normal and abnormal studies separate?* and *do images and reports meet?* The grid here
answers them apart, from the **same** fit: for each space one row of three panels — images only, reports only,
both — each titled with the score that judges it, computed in the full-dimensional space (never on the 2-D
coordinates, which t-SNE/UMAP distort):

- images panel: ``silhouette_image`` and ``knn_acc_image``;
- reports panel: ``silhouette_text`` and ``knn_acc_text``;
- joint panel: ``silhouette_joint`` and ``modality_gap``.

The scores are those of :func:`cxrlib.metrics.cluster_scores` (the notebook passes them in; this module does
not compute numbers, so a caption can never disagree with the table). :func:`plot_slide_summary` puts the
before and after joint maps beside a bar chart of a few chosen numbers on one 16:9 figure with large type, for
a talk or a lecture slide.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cxrlib.viz._common import LABEL_COLORS, MODALITY_MARKERS, finish, labels_and_colors

__all__ = ["MAP_COLUMNS", "map_panel_titles", "plot_map_grid", "plot_slide_summary", "slide_numbers"]

#: Column of the grid -> (modalities drawn, the two scores shown in its title).
MAP_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, str]]] = {
    "images": (("image",), ("silhouette_image", "knn_acc_image")),
    "reports": (("report",), ("silhouette_text", "knn_acc_text")),
    "images + reports": (("image", "report"), ("silhouette_joint", "modality_gap")),
}

_SHORT = {
    "silhouette_image": "silhouette",
    "silhouette_text": "silhouette",
    "silhouette_joint": "silhouette",
    "knn_acc_image": "k-NN acc.",
    "knn_acc_text": "k-NN acc.",
    "modality_gap": "modality gap",
}


def map_panel_titles(scores: Mapping[str, float]) -> dict[str, str]:
    """Panel title per grid column, with the column's two scores (3 decimals) from ``scores``.

    ``scores`` is one space's :func:`~cxrlib.metrics.cluster_scores` dict; a missing key raises ``KeyError``
    naming it (the figure must not show a number the table does not have).
    """
    out = {}
    for col, (_, keys) in MAP_COLUMNS.items():
        missing = [k for k in keys if k not in scores]
        if missing:
            raise KeyError(f"scores lack {missing}: pass the dict returned by cxrlib.metrics.cluster_scores")
        out[col] = f"{col}\n" + ", ".join(f"{_SHORT[k]} {float(scores[k]):.3f}" for k in keys)
    return out


def _check_xy(xy: np.ndarray, n: int, what: str) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    if xy.shape != (n, 2):
        raise ValueError(f"{what}: coordinates must have shape ({n}, 2) to match labels; got {xy.shape}.")
    if not np.isfinite(xy).all():
        raise ValueError(f"{what}: coordinates contain NaN or inf.")
    return xy


def _limits(*xys: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Common (x, y) limits of several (n, 2) arrays with a 4 % margin: every panel of a row shows one frame."""
    allxy = np.vstack(xys)
    lo, hi = allxy.min(axis=0), allxy.max(axis=0)
    pad = 0.04 * np.maximum(hi - lo, 1e-9)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _scatter(
    ax, xy_by_mod: Mapping[str, np.ndarray], lab: np.ndarray, colors, size: float, alpha: float, limits
):
    order = np.random.default_rng(0).permutation(lab.shape[0])  # neither class always painted on top
    for mod in ("image", "report"):  # reports over images
        if mod in xy_by_mod:
            xy = xy_by_mod[mod]
            ax.scatter(
                xy[order, 0],
                xy[order, 1],
                c=list(colors[lab[order]]),
                marker=MODALITY_MARKERS[mod],
                s=size,
                alpha=alpha,
                linewidths=0,
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    # the panel is filled (aspect "auto"): a t-SNE map's axes carry no scale, and an elongated layout kept at
    # equal aspect would shrink to a thin strip; the three panels of a row share their limits all the same
    ax.set_aspect("auto")


def _legend_handles(lab: np.ndarray, label_names: Sequence[str], colors, modalities: Sequence[str]):
    counts = np.bincount(lab, minlength=len(label_names))
    handles = [
        Line2D([], [], ls="none", marker="s", ms=9, color=colors[j], label=f"{name} (n={int(counts[j])})")
        for j, name in enumerate(label_names)
        if counts[j] > 0
    ]
    return handles + [
        Line2D([], [], ls="none", marker=MODALITY_MARKERS[m], ms=9, color="0.35", label=m) for m in modalities
    ]


def plot_map_grid(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray, Mapping[str, float]]],
    labels: np.ndarray | Sequence[int],
    out_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    label_names: Sequence[str] = ("normal", "abnormal"),
    point_size: float = 9.0,
    alpha: float = 0.6,
    panel_size: float = 3.6,
    dpi: int = 150,
    close: bool = False,
) -> Figure:
    """One row per space, three columns (images | reports | images + reports) of ONE joint 2-D fit.

    The three panels of a row share their frame (same limits), so a point sits at the same place in each.
    Panels are filled (no equal aspect): 2-D map coordinates carry no scale.

    Args:
        rows: ``(row title, image_2d (n, 2), text_2d (n, 2), scores)`` per space, e.g. ``("before: demo",
            *joint_projection(...), cluster_scores(...))``; row ``i`` of both coordinate arrays is pair ``i``.
        labels: (n,) integer labels shared by all rows (0 = normal, 1 = abnormal).
        out_path, dpi, close: see :func:`cxrlib.viz.plot_projection_panels`.
        title: figure title; label_names: one legend name per label value.
        point_size, alpha, panel_size: marker area (pt²), opacity, panel side in inches.

    Each panel title carries the two scores of its column (:data:`MAP_COLUMNS`), taken from ``scores``.
    """
    if len(rows) == 0:
        raise ValueError("rows is empty; pass at least one (title, image_2d, text_2d, scores) tuple.")
    lab, colors = labels_and_colors(labels, label_names)
    n = lab.shape[0]
    ncol = len(MAP_COLUMNS)
    fig, axes = plt.subplots(
        len(rows), ncol, figsize=(panel_size * ncol + 0.8, panel_size * len(rows) + 0.9), squeeze=False
    )
    for r, (rtitle, img2, txt2, scores) in enumerate(rows):
        xy = {
            "image": _check_xy(img2, n, f"row {rtitle!r} images"),
            "report": _check_xy(txt2, n, f"row {rtitle!r} reports"),
        }
        titles = map_panel_titles(scores)
        limits = _limits(xy["image"], xy["report"])
        for c, (col, (mods, _)) in enumerate(MAP_COLUMNS.items()):
            ax = axes[r, c]
            _scatter(ax, {m: xy[m] for m in mods}, lab, colors, point_size, alpha, limits)
            ax.set_title(titles[col], fontsize=10)
        axes[r, 0].set_ylabel(rtitle, fontsize=11)
    fig.legend(
        handles=_legend_handles(lab, label_names, colors, ("image", "report")),
        loc="lower center",
        ncol=len(label_names) + 2,
        frameon=False,
        fontsize=10,
    )
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return finish(fig, out_path, dpi, close)


def plot_slide_summary(
    before: tuple[str, np.ndarray, np.ndarray],
    after: tuple[str, np.ndarray, np.ndarray],
    labels: np.ndarray | Sequence[int],
    numbers: Mapping[str, tuple[float, float]],
    out_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    label_names: Sequence[str] = ("normal", "abnormal"),
    dpi: int = 150,
    close: bool = False,
) -> Figure:
    """A 16:9 slide: the joint map before and after, and the chosen numbers before vs after as bars.

    Args:
        before, after: ``(panel title, image_2d (n, 2), text_2d (n, 2))`` of the two spaces (same rows).
        labels: (n,) integer labels.
        numbers: metric name -> ``(before value, after value)``, drawn in the given order; the values are
            written on the bars (3 decimals). Pass only numbers computed elsewhere (tables, metrics JSON).
        out_path, title, label_names, dpi, close: as in :func:`plot_map_grid`.

    Type is large on purpose (titles 16 pt, labels 13 pt): the figure is meant to be projected.
    """
    if not numbers:
        raise ValueError("numbers is empty; pass metric -> (before, after), e.g. from the comparison table.")
    lab, colors = labels_and_colors(labels, label_names)
    n = lab.shape[0]
    fig = plt.figure(figsize=(13.33, 7.5))
    grid = fig.add_gridspec(1, 3, width_ratios=(1, 1, 1.15), wspace=0.08)
    for c, (ptitle, img2, txt2) in enumerate((before, after)):
        ax = fig.add_subplot(grid[0, c])
        xy = {
            "image": _check_xy(img2, n, f"{ptitle!r} images"),
            "report": _check_xy(txt2, n, f"{ptitle!r} reports"),
        }
        _scatter(ax, xy, lab, colors, 12.0, 0.6, _limits(xy["image"], xy["report"]))
        ax.set_title(ptitle, fontsize=16)
    ax = fig.add_subplot(grid[0, 2])
    names = list(numbers)
    vals = np.array([[float(numbers[k][0]), float(numbers[k][1])] for k in names])
    if not np.isfinite(vals).all():
        raise ValueError(f"numbers must be finite; got {dict(zip(names, vals.tolist(), strict=True))}")
    y = np.arange(len(names))[::-1]
    h = 0.38
    for j, (tag, col) in enumerate((("before", "0.6"), ("after", LABEL_COLORS[2]))):
        bars = ax.barh(y + (h / 2 if j == 0 else -h / 2), vals[:, j], height=h, color=col, label=tag)
        for b, v in zip(bars, vals[:, j], strict=True):
            ax.text(b.get_width(), b.get_y() + h / 2, f" {v:.3f}", va="center", fontsize=12)
    ax.set_yticks(y, names, fontsize=13)
    ax.tick_params(axis="x", labelsize=12)
    ax.set_xlim(0, max(1.0, float(vals.max()) * 1.25))
    ax.yaxis.tick_right()
    ax.legend(fontsize=13, loc="lower right", frameon=False)
    ax.spines[["top", "left"]].set_visible(False)
    ax.set_title("before vs after", fontsize=16)
    fig.legend(
        handles=_legend_handles(lab, label_names, colors, ("image", "report")),
        loc="lower center",
        ncol=len(label_names) + 2,
        frameon=False,
        fontsize=13,
        bbox_to_anchor=(0.36, 0.0),
    )
    if title:
        fig.suptitle(title, fontsize=18)
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.1, top=0.86)
    return finish(fig, out_path, dpi, close)


def slide_numbers(
    before: Mapping[str, float], after: Mapping[str, float], k: int
) -> dict[str, tuple[float, float]]:
    """The retrieval numbers of a before/after slide: ``{"i2t mAP@K label": (before, after), ...}``.

    ``before``/``after`` are :func:`cxrlib.metrics.retrieval_metrics` dicts computed with cut-off ``k``; the
    rows are label mAP@K and R@K in both directions (what :func:`plot_slide_summary` shows beside the maps).
    """
    out = {
        f"{d} mAP@{k} label": (float(before[f"{d}_mAP@{k}_label"]), float(after[f"{d}_mAP@{k}_label"]))
        for d in ("i2t", "t2i")
    }
    out |= {f"{d} R@{k}": (float(before[f"{d}_R@{k}"]), float(after[f"{d}_R@{k}"])) for d in ("i2t", "t2i")}
    return out
