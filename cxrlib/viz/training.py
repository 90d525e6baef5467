"""Figures of notebook 03: the projector's training curves and the loss ablation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["plot_training_curves", "plot_ablation"]


def plot_training_curves(history: pd.DataFrame, best_epoch: int, ks: Sequence[int], title: str) -> Figure:
    """One panel per active loss term (train and val per epoch) and one of the validation metrics.

    ``history`` is :attr:`cxrlib.training.TrainResult.history` (epoch 0 = the untrained head); a term that is
    switched off (all NaN) gets no panel. The best epoch is marked on the metrics panel. Panels sit two per
    row (a 2 x 2 grid for the three terms), sized for a slide: every label and legend is at least 9 pt and the
    metrics legend sits below its panel instead of squeezing it.
    """
    terms = [t for t in ("bce", "supcon", "clip") if history[f"train_{t}"].notna().any()]
    n = len(terms) + 1
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(5.0 * ncols, 3.1 * nrows + 0.9), squeeze=False, layout="constrained"
    )
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, t in zip(axes, terms, strict=False):
        ax.plot(history["epoch"], history[f"train_{t}"], label="train")
        ax.plot(history["epoch"], history[f"val_{t}"], label="val")
        ax.set_title(f"{t} loss", fontsize=11)
        ax.set_xlabel("epoch", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=9, loc="upper right", frameon=False)
    ax = axes[n - 1]
    k = max(ks)
    for key in ("i2t_R@5", "t2i_R@5", f"i2t_mAP@{k}_label", f"t2i_mAP@{k}_label"):
        if key in history:
            ax.plot(history["epoch"], history[key], label=key)
    ax.axvline(best_epoch, color="k", linestyle=":", label="best epoch")
    ax.set_title("validation metrics", fontsize=11)
    ax.set_xlabel("epoch", fontsize=10)
    ax.tick_params(labelsize=9)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def plot_ablation(runs: pd.DataFrame, summary: pd.DataFrame, keys: Sequence[str], title: str) -> Figure:
    """One panel per metric: a bar per loss configuration (seed mean), one dot per seed.

    ``runs`` and ``summary`` are what :func:`cxrlib.evaluation.run_loss_ablation` and
    :func:`cxrlib.evaluation.summarize_ablation` return. Sized for a slide (labels at least 9 pt).
    """
    names = list(summary.index)
    fig, axes = plt.subplots(
        1, len(keys), figsize=(3.3 * len(keys), 3.9), sharey=False, squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys, strict=True):
        means = [summary.loc[n, (key, "mean")] for n in names]
        ax.bar(range(len(names)), means, color="#BBBBBB")
        for i, n in enumerate(names):
            v = runs.loc[runs["config"] == n, key]
            ax.plot([i] * len(v), v, "o", color="#0072B2", markersize=4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
        ax.set_title(key, fontsize=10)
    fig.suptitle(title, fontsize=12)
    return fig
