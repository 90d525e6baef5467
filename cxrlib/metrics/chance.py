"""Chance levels: what a uniformly random ranking scores under the counting rules of the metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cxrlib.metrics._inputs import checked_embeddings, label_codes, normalise_ks
from cxrlib.metrics.groups import majority_labels, unique_rows

__all__ = ["chance_levels"]


def chance_levels(
    text_emb: np.ndarray | torch.Tensor, labels: np.ndarray | Sequence[int], ks: Sequence[int]
) -> dict[str, float]:
    """Expected value of ``R@K`` and ``P@K_label`` under a uniformly random ranking, same counting rules.

    The gallery structure decides chance, so it is computed from the data rather than guessed: with ``M``
    unique texts and ``N`` images, image→text ``R@K = K / M``; text→image, a row whose text is shared by ``m``
    images is a hit when any of them is in the top K: ``1 - C(N - m, K) / C(N, K)``, averaged over rows.
    ``P@K_label`` at chance is the share of the gallery with the query's label (unique texts for i2t, images for
    t2i; a text's label is its rows' majority as in :func:`retrieval_metrics`), averaged over queries.

    Args:
        text_emb: (N, D) L2-normalised report embeddings (identical reports → identical rows).
        labels: (N,) integer labels.
        ks: cut-offs.

    Returns:
        ``{i2t_R@K, t2i_R@K, i2t_P@K_label, t2i_P@K_label}`` for every K, as floats.
    """
    X = checked_embeddings(text_emb, "text")
    n = X.shape[0]
    values, codes = label_codes(labels, n)
    n_lab = values.size
    uid, _first = unique_rows(X)
    m_rows = np.bincount(uid)  # images sharing each unique text
    n_uni = m_rows.size
    text_lab, _ = majority_labels(uid, codes, n_uni, n_lab)
    out: dict[str, float] = {}
    for k in normalise_ks(ks):
        kk_t, kk_i = min(k, n_uni), min(k, n)
        out[f"i2t_R@{k}"] = kk_t / n_uni
        m = m_rows[uid].astype(np.float64)
        # P(no relevant image in the top K) = prod_{j<K} (N - m - j) / (N - j)
        j = np.arange(kk_i, dtype=np.float64)
        miss = np.prod(np.clip((n - m[:, None] - j) / (n - j), 0.0, None), axis=1)
        out[f"t2i_R@{k}"] = float(np.mean(1.0 - miss))
        share_t = np.bincount(text_lab, minlength=n_lab) / n_uni
        share_i = np.bincount(codes, minlength=n_lab) / n
        out[f"i2t_P@{k}_label"] = float(np.mean(share_t[codes]))
        out[f"t2i_P@{k}_label"] = float(np.mean(share_i[text_lab[uid]]))
    return out
