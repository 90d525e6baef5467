"""The grouped bar chart comparing models' retrieval metrics (notebooks 02 and 03)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cxrlib.viz._common import LABEL_COLORS, finish

__all__ = ["plot_metric_bars"]


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

    Args:
        numbers: (models, columns) table, one row per model; must hold every key of ``keys``.
        keys: the metrics to draw, one group of bars each.
        out_path: save the figure there at ``dpi``; folders are created.
        title: axes title.
        chance: metric → chance level (e.g. :func:`cxrlib.metrics.chance_levels`), drawn dashed.
        dpi: resolution of the saved file.
        close: close the figure after saving.
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
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("value (95 % CI)", fontsize=10)
    ax.legend(fontsize=9, loc="upper left", frameon=False)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return finish(fig, out_path, dpi, close)
