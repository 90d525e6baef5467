"""Figures of notebook 03: the projector's training curves and the loss ablation."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["plot_training_curves", "plot_ablation"]


def plot_training_curves(history: pd.DataFrame, best_epoch: int, ks: Sequence[int], title: str) -> Figure:
    """One panel per active loss term (train and val per epoch) and one of the validation metrics.

    ``history`` is :attr:`cxrlib.training.TrainResult.history` (epoch 0 = the untrained head); a term that is
    switched off (all NaN) gets no panel. The best epoch is marked on the metrics panel.
    """
    terms = [t for t in ("bce", "supcon", "clip") if history[f"train_{t}"].notna().any()]
    fig, axes = plt.subplots(1, len(terms) + 1, figsize=(4.2 * (len(terms) + 1), 3.6))
    for ax, t in zip(axes, terms, strict=False):
        ax.plot(history["epoch"], history[f"train_{t}"], label="train")
        ax.plot(history["epoch"], history[f"val_{t}"], label="val")
        ax.set_title(f"{t} loss", fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=9)
    ax = axes[-1]
    k = max(ks)
    for key in ("i2t_R@5", "t2i_R@5", f"i2t_mAP@{k}_label", f"t2i_mAP@{k}_label"):
        if key in history:
            ax.plot(history["epoch"], history[key], label=key)
    ax.axvline(best_epoch, color="k", linestyle=":", label="best epoch")
    ax.set_title("validation metrics", fontsize=10)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_ablation(runs: pd.DataFrame, summary: pd.DataFrame, keys: Sequence[str], title: str) -> Figure:
    """One panel per metric: a bar per loss configuration (seed mean), one dot per seed.

    ``runs`` and ``summary`` are what :func:`cxrlib.evaluation.run_loss_ablation` and
    :func:`cxrlib.evaluation.summarize_ablation` return.
    """
    names = list(summary.index)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), sharey=False)
    for ax, key in zip(axes, keys, strict=True):
        means = [summary.loc[n, (key, "mean")] for n in names]
        ax.bar(range(len(names)), means, color="#BBBBBB")
        for i, n in enumerate(names):
            v = runs.loc[runs["config"] == n, key]
            ax.plot([i] * len(v), v, "o", color="#0072B2", markersize=4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=9)
        ax.set_title(key, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
