"""Helpers shared by the :mod:`cxrlib.viz` modules: colours, input checks, saving figures (internal)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from cxrlib.metrics._inputs import finite_matrix, per_row, unit_rows

__all__ = [
    "LABEL_COLORS",
    "MODALITY_MARKERS",
    "finite_matrix",
    "unit_rows",
    "per_row",
    "int_labels",
    "labels_and_colors",
    "finish",
]

LABEL_COLORS: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
"""Okabe–Ito colour-blind-safe palette; label ``j`` gets ``LABEL_COLORS[j]`` (blue normal, vermillion abnormal)."""

MODALITY_MARKERS: dict[str, str] = {"image": "o", "report": "^"}
"""Marker of each modality in the projection panels."""


def int_labels(labels: np.ndarray | Sequence[int], n: int, n_names: int) -> np.ndarray:
    """(n,) int64 copy of ``labels``; every value must index ``label_names`` (``[0, n_names)``)."""
    lab = per_row(labels, n)
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


def labels_and_colors(
    labels: np.ndarray | Sequence[int], label_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The plots' label set-up: 1-D ``labels`` checked by :func:`int_labels`, and the (n_names,) object array
    of their :data:`LABEL_COLORS` (``colors[lab]`` colours each point)."""
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must be 1-D (n,); got shape {np.shape(labels)}.")
    lab = int_labels(labels, len(labels), len(label_names))
    colors = np.array([LABEL_COLORS[j % len(LABEL_COLORS)] for j in range(len(label_names))], dtype=object)
    return lab, colors


def finish(fig: Figure, out_path: str | os.PathLike[str] | None, dpi: int, close: bool) -> Figure:
    """Save ``fig`` to ``out_path`` (folders created) at ``dpi`` when given, close it when ``close``; return it."""
    if out_path is not None:
        p = Path(out_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return fig
