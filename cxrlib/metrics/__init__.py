r"""Retrieval metrics, their confidence intervals and chance levels, and the cluster scores of a space.

Inputs everywhere are paired embeddings: row ``i`` of ``image_emb`` (N, D) and row ``i`` of ``text_emb``
(N, D) are one image and the report of its study; ``labels`` (N,) are small integers (0 = normal,
1 = abnormal); ``patient_ids`` (N,) any hashable values.

Modules (every public name is re-exported here, so ``from cxrlib.metrics import retrieval_metrics`` works):

- :mod:`~cxrlib.metrics.retrieval` — :func:`retrieval_metrics` / :func:`per_query_metrics`: exact, chunked
  image↔report R@K, ranks, MRR and label P@K / mAP@K (:class:`PerQueryMetrics`, :class:`DirectionMetrics`).
  Its docstring states the semantics (identical reports are one gallery item, pessimistic ties, AP@K).
- :mod:`~cxrlib.metrics.bootstrap` — patient-cluster bootstrap CIs (:func:`bootstrap_ci`,
  :func:`bootstrap_replicates`).
- :mod:`~cxrlib.metrics.geometry` — collapse diagnostics: :func:`effective_rank`, :func:`alignment` and
  :func:`uniformity` (Wang & Isola 2020), :func:`label_cosines`, all in :func:`geometry_scores`.
- :mod:`~cxrlib.metrics.paired` — :func:`paired_difference`: the paired patient-bootstrap CI of the
  difference between two spaces scored on the same queries (the test behind every "better" verdict).
- :mod:`~cxrlib.metrics.tables` — :func:`metrics_table` (and :data:`TABLE_KEYS`) for several models.
- :mod:`~cxrlib.metrics.chance` — :func:`chance_levels` of a random ranking under the same counting rules.
- :mod:`~cxrlib.metrics.findings` — graded, finding-level relevance: :func:`finding_metrics` /
  :func:`per_query_finding_metrics` (nDCG@K and finding precision FP@K with Jaccard gains of the rows' finding
  sets, same gallery rules, exact and chunked; :class:`FindingMetrics`) and their exact
  :func:`finding_chance_levels`.
- :mod:`~cxrlib.metrics.clusters` — :func:`cluster_scores` (silhouettes, k-NN accuracy, modality gap),
  :func:`scores_table`, :func:`knn_loo_predict`, :func:`topk_sorted`.
- :mod:`~cxrlib.metrics.groups` — the shared grouping rules: :func:`unique_rows` / :func:`unique_strings`
  (identical reports), :func:`first_appearance`, :func:`majority_labels`, :func:`subsample`.
- :mod:`~cxrlib.metrics.reference` — :func:`reference_metrics` and :func:`reference_finding_metrics`,
  brute-force references of the retrieval and finding metrics for tests on small inputs.
- :mod:`~cxrlib.metrics.kernels` — the numba kernels of the fast path (internal, not re-exported), and
  ``cxrlib.metrics._inputs`` — the input checks shared with :mod:`cxrlib.viz` (internal).
"""

from __future__ import annotations

from cxrlib.metrics.bootstrap import bootstrap_ci, bootstrap_replicates
from cxrlib.metrics.chance import chance_levels
from cxrlib.metrics.clusters import (
    cluster_row_values,
    cluster_scores,
    knn_loo_predict,
    scores_table,
    topk_sorted,
)
from cxrlib.metrics.findings import (
    UNSPECIFIED_ABNORMALITY,
    FindingDirection,
    FindingMetrics,
    as_finding_sets,
    finding_chance_levels,
    finding_metrics,
    jaccard_gain,
    per_query_finding_metrics,
)
from cxrlib.metrics.geometry import alignment, effective_rank, geometry_scores, label_cosines, uniformity
from cxrlib.metrics.groups import first_appearance, majority_labels, subsample, unique_rows, unique_strings
from cxrlib.metrics.paired import lower_is_better, paired_difference
from cxrlib.metrics.reference import reference_finding_metrics, reference_metrics
from cxrlib.metrics.retrieval import (
    NORM_TOLERANCE,
    DirectionMetrics,
    PerQueryMetrics,
    float32_dot_error_bound,
    per_query_metrics,
    retrieval_metrics,
)
from cxrlib.metrics.tables import TABLE_KEYS, metrics_table

__all__ = [
    "effective_rank",
    "alignment",
    "uniformity",
    "label_cosines",
    "geometry_scores",
    "paired_difference",
    "lower_is_better",
    # retrieval
    "NORM_TOLERANCE",
    "DirectionMetrics",
    "PerQueryMetrics",
    "retrieval_metrics",
    "per_query_metrics",
    "float32_dot_error_bound",
    # bootstrap
    "bootstrap_replicates",
    "bootstrap_ci",
    # tables
    "TABLE_KEYS",
    "metrics_table",
    # chance
    "chance_levels",
    # clusters
    "topk_sorted",
    "knn_loo_predict",
    "cluster_scores",
    "cluster_row_values",
    "scores_table",
    # groups
    "first_appearance",
    "unique_rows",
    "unique_strings",
    "majority_labels",
    "subsample",
    # findings
    "UNSPECIFIED_ABNORMALITY",
    "FindingDirection",
    "FindingMetrics",
    "as_finding_sets",
    "jaccard_gain",
    "per_query_finding_metrics",
    "finding_metrics",
    "finding_chance_levels",
    # reference
    "reference_metrics",
    "reference_finding_metrics",
]
