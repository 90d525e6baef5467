r"""2-D maps of embedding spaces, retrieval galleries and metric bar charts (notebooks 02–04).

The paper argues with t-SNE plots that the fine-tuned space separates normal from abnormal studies more
clearly than the pretrained backbone. This package makes those plots reproducible:

- :mod:`~cxrlib.viz.projections` — :func:`embed_2d` / :func:`joint_projection` (t-SNE, UMAP or PCA; images
  and reports projected *together*), :func:`subsample` (the same stratified rows for every panel) and
  :func:`plot_projection_panels` (colour = label, marker = modality).
- :mod:`~cxrlib.viz.galleries` — :func:`pick_queries`, :func:`i2t_gallery`, :func:`t2i_gallery` and their
  ``plot_*`` functions: retrieval examples picked by a stated rule (never by hand).
- :mod:`~cxrlib.viz.maps` — :func:`plot_map_grid` (before/after rows × images | reports | both, one joint fit,
  each panel titled with its cluster scores) and :func:`plot_slide_summary` (a 16:9 before/after slide).
- :mod:`~cxrlib.viz.bars` — :func:`plot_metric_bars`, the model comparison chart with CIs and chance.

The numbers behind the plots — silhouettes, k-NN accuracy, the modality gap (``cluster_scores``,
``scores_table``, ``knn_loo_predict``) — live in :mod:`cxrlib.metrics.clusters`.

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

from cxrlib.viz._common import LABEL_COLORS, MODALITY_MARKERS
from cxrlib.viz.bars import plot_metric_bars
from cxrlib.viz.galleries import (
    i2t_gallery,
    pick_queries,
    plot_example_grid,
    plot_i2t_gallery,
    plot_t2i_gallery,
    t2i_gallery,
)
from cxrlib.viz.maps import map_panel_titles, plot_map_grid, plot_slide_summary, slide_numbers
from cxrlib.viz.projections import (
    METHOD_NAMES,
    embed_2d,
    joint_projection,
    plot_projection_panels,
    projection_maps,
    subsample,
)
from cxrlib.viz.training import plot_ablation, plot_training_curves

__all__ = [
    "LABEL_COLORS",
    "MODALITY_MARKERS",
    "METHOD_NAMES",
    # projections
    "embed_2d",
    "joint_projection",
    "projection_maps",
    "subsample",
    "plot_projection_panels",
    # maps
    "map_panel_titles",
    "plot_map_grid",
    "plot_slide_summary",
    "slide_numbers",
    # galleries
    "pick_queries",
    "i2t_gallery",
    "plot_i2t_gallery",
    "t2i_gallery",
    "plot_t2i_gallery",
    "plot_example_grid",
    # bars
    "plot_metric_bars",
    # training (notebook 03)
    "plot_training_curves",
    "plot_ablation",
]
