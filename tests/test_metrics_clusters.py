"""Tests of cxrlib.metrics.clusters: k-NN against a brute-force loop, silhouettes against scikit-learn, the
modality gap, the single-class guard, subsampled silhouettes and the before/after table."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from embedding_fixtures import paired as _paired
from embedding_fixtures import unit as _unit

from cxrlib.metrics import cluster_scores, clusters, knn_loo_predict, scores_table


# ----------------------------------------------------------------------------------------------------------
# k-NN against a brute-force loop
# ----------------------------------------------------------------------------------------------------------
def _knn_brute(x, lab, k):
    x = x.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = x.shape[0]
    pred = []
    for i in range(n):
        sims = [(float(np.dot(x[i], x[j])), j) for j in range(n) if j != i]
        sims.sort(key=lambda t: (-t[0], t[1]))
        nb = [lab[j] for _, j in sims[:k]]
        votes = Counter(nb)
        best = max(votes.values())
        tied = {v for v, c in votes.items() if c == best}
        pred.append(next(v for v in nb if v in tied))  # nearest neighbour among the tied labels
    return np.array(pred)


@pytest.mark.parametrize(("k", "n_cls"), [(1, 2), (4, 2), (5, 3), (10, 2)])
def test_knn_matches_brute_force(k, n_cls):
    rng = np.random.default_rng(k * 10 + n_cls)
    x = rng.normal(size=(70, 6))
    lab = rng.integers(0, n_cls, size=70)
    np.testing.assert_array_equal(knn_loo_predict(x, lab, k), _knn_brute(x, lab, k))


def test_knn_chunked_matches_brute_force(monkeypatch):
    monkeypatch.setattr(clusters, "_CHUNK_ELEMS", 50 * 7)  # 7 rows per chunk
    rng = np.random.default_rng(11)
    x = rng.normal(size=(50, 5))
    lab = rng.integers(0, 2, size=50)
    np.testing.assert_array_equal(knn_loo_predict(x, lab, 6), _knn_brute(x, lab, 6))


def test_knn_exact_ties_lower_index_wins():
    # rows 1..4 are identical: row 0's neighbours all tie; k = 2 must take rows 1 and 2 (labels 1, 1)
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    lab = np.array([0, 1, 1, 0, 0, 0])
    assert knn_loo_predict(x, lab, 2)[0] == 1
    np.testing.assert_array_equal(knn_loo_predict(x, lab, 2), _knn_brute(x, lab, 2))


# ----------------------------------------------------------------------------------------------------------
# cluster scores
# ----------------------------------------------------------------------------------------------------------
def test_cluster_scores_separable_beats_mixed():
    img_s, txt_s, lab = _paired(80, 16, sep=4.0, seed=0)
    rng = np.random.default_rng(9)
    img_m, txt_m = img_s[rng.permutation(80)], txt_s[rng.permutation(80)]  # labels no longer match
    s = cluster_scores(img_s, txt_s, lab, k=5)
    m = cluster_scores(img_m, txt_m, lab, k=5)
    for key in ("silhouette_image", "silhouette_text", "silhouette_joint", "knn_acc_image", "knn_acc_text"):
        assert s[key] > m[key] + 0.2, key
    assert s["knn_acc_image"] > 0.95
    assert all(np.isfinite(v) for v in s.values())
    assert -1 <= m["silhouette_image"] <= 1 and 0 <= m["knn_acc_image"] <= 1


def test_cluster_scores_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score

    img, txt, lab = _paired(40, 8)
    s = cluster_scores(img, txt, lab)
    assert s["silhouette_image"] == pytest.approx(silhouette_score(img, lab, metric="cosine"), abs=1e-6)
    joint = np.vstack([img, txt])
    assert s["silhouette_joint"] == pytest.approx(
        silhouette_score(joint, np.concatenate([lab, lab]), metric="cosine"), abs=1e-6
    )


def test_modality_gap_zero_and_positive():
    img, _, lab = _paired(40, 8)
    same = cluster_scores(img, img.copy(), lab)
    assert same["modality_gap"] == pytest.approx(0.0, abs=1e-12)
    assert same["modality_gap_cosine"] == pytest.approx(0.0, abs=1e-12)
    shift = np.zeros(8)
    shift[3] = 2.0
    shifted = _unit(img + shift)
    g = cluster_scores(img, shifted, lab)
    assert g["modality_gap"] > 0.3
    assert g["modality_gap_cosine"] > 0.05
    ci, ct = img.astype(np.float64).mean(0), shifted.astype(np.float64).mean(0)
    assert g["modality_gap"] == pytest.approx(np.linalg.norm(ci - ct), rel=1e-5)
    # normalisation happens inside: scaling the inputs changes nothing
    g2 = cluster_scores(3 * img, 0.5 * shifted, lab)
    assert g2["modality_gap"] == pytest.approx(g["modality_gap"], rel=1e-9)


def test_cluster_scores_single_class_guard():
    img, txt, _ = _paired(30, 8)
    with pytest.warns(UserWarning, match="undefined"):
        s = cluster_scores(img, txt, np.zeros(30, np.int64))
    assert np.isnan(s["silhouette_image"]) and np.isnan(s["silhouette_joint"])
    assert s["knn_acc_image"] == 1.0
    assert np.isfinite(s["modality_gap"])


def test_cluster_scores_subsamples_silhouette():
    img, txt, lab = _paired(60, 8)
    s = cluster_scores(img, txt, lab, max_silhouette_points=20, seed=1)
    assert s["n_silhouette_points"] == 20 and s["n_points"] == 60
    assert s == cluster_scores(img, txt, lab, max_silhouette_points=20, seed=1)


def test_scores_table_change_row():
    a = {"silhouette_image": 0.1, "knn_acc_image": 0.6}
    b = {"silhouette_image": 0.4, "knn_acc_image": 0.9}
    t = scores_table({"before": a, "after": b})
    assert list(t.index) == ["before", "after", "change"]
    assert t.index.name == "space"
    assert t.loc["change", "silhouette_image"] == pytest.approx(0.3)
    assert t.loc["change", "knn_acc_image"] == pytest.approx(0.3)
    t3 = scores_table({"x": a, "y": b, "z": {"silhouette_image": 0.0}})
    assert "change" not in t3.index and np.isnan(t3.loc["z", "knn_acc_image"])


def test_cluster_scores_are_not_in_viz_any_more():
    from cxrlib import viz

    for name in ("cluster_scores", "scores_table", "knn_loo_predict"):
        assert not hasattr(viz, name), name
