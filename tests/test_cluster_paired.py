"""Per-row cluster scores and the paired test of clusters before vs after."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cxrlib.evaluation import paired_cluster_comparison, paired_verdict_lines
from cxrlib.metrics import cluster_row_values, cluster_scores


def _space(rng, labels, sep, d=16):
    """Paired unit embeddings whose two classes sit ``sep`` apart along one axis (0 = no structure)."""
    centre = np.zeros((len(labels), d))
    centre[:, 0] = sep * (2 * labels - 1)
    img = centre + rng.normal(size=centre.shape)
    txt = centre + rng.normal(size=centre.shape)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return SimpleNamespace(image=unit(img).astype(np.float32), text=unit(txt).astype(np.float32))


def test_row_values_average_to_cluster_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    s = _space(rng, labels, 1.0)
    rows = cluster_row_values(s.image, s.text, labels, k=5)
    ref = cluster_scores(s.image, s.text, labels, k=5, max_silhouette_points=None)
    for key, v in rows.items():
        assert v.shape == (120,)
        assert np.mean(v) == pytest.approx(ref[key], abs=1e-6), key


def test_row_values_need_two_classes():
    rng = np.random.default_rng(1)
    s = _space(rng, np.zeros(10, dtype=int), 0.0)
    with pytest.raises(ValueError, match="two label values"):
        cluster_row_values(s.image, s.text, np.zeros(10, dtype=int))


def test_paired_cluster_comparison_has_the_known_sign():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    patients = np.arange(200) // 2  # two rows per patient
    flat, separated = _space(rng, labels, 0.0), _space(rng, labels, 2.0)
    up = paired_cluster_comparison(flat, separated, labels, patients, n_boot=200, seed=0, k=5)
    assert set(up.index) == {
        "silhouette_image",
        "silhouette_text",
        "silhouette_joint",
        "knn_acc_image",
        "knn_acc_text",
    }
    assert (up["verdict"] == "better").all() and (up["change"] > 0).all()
    down = paired_cluster_comparison(
        separated, flat, labels, patients, n_boot=200, seed=0, k=5, names=("sep", "flat")
    )
    assert (down["verdict"] == "worse").all() and list(down.columns[:2]) == ["sep", "flat"]
    same = paired_cluster_comparison(flat, flat, labels, patients, n_boot=50, seed=0, k=5)
    assert (same["verdict"] == "no difference shown").all() and (same["change"] == 0).all()
    assert "better" in paired_verdict_lines(up, "after vs before")[0]
    with pytest.raises(ValueError, match="n_boot >= 1"):
        paired_cluster_comparison(flat, separated, labels, patients, n_boot=0, seed=0)
