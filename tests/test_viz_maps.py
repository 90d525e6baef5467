"""cxrlib.viz.maps: the before/after grid split by modality and the slide summary."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cxrlib.viz.maps import MAP_COLUMNS, map_panel_titles, plot_map_grid, plot_slide_summary

SCORES = {
    "silhouette_image": 0.1234,
    "silhouette_text": 0.5,
    "silhouette_joint": -0.0456,
    "knn_acc_image": 0.71,
    "knn_acc_text": 0.93,
    "modality_gap": 0.8,
}


def _xy(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2))


def test_panel_titles_carry_the_scores_of_their_column():
    titles = map_panel_titles(SCORES)
    assert list(titles) == list(MAP_COLUMNS)
    assert "silhouette 0.123" in titles["images"] and "k-NN acc. 0.710" in titles["images"]
    assert "silhouette 0.500" in titles["reports"] and "k-NN acc. 0.930" in titles["reports"]
    assert (
        "silhouette -0.046" in titles["images + reports"]
        and "modality gap 0.800" in titles["images + reports"]
    )


def test_a_missing_score_is_named():
    with pytest.raises(KeyError, match="modality_gap"):
        map_panel_titles({k: v for k, v in SCORES.items() if k != "modality_gap"})


def test_grid_has_one_row_per_space_and_panels_of_a_row_share_limits(tmp_path):
    n = 40
    lab = np.arange(n) % 2
    img, txt = _xy(n, 0), _xy(n, 1) + 5.0
    out = tmp_path / "grid.png"
    fig = plot_map_grid([("before", img, txt, SCORES), ("after", txt, img, SCORES)], lab, out, title="t")
    axes = fig.axes
    assert len(axes) == 6
    assert out.stat().st_size > 10_000
    for row in (axes[:3], axes[3:]):
        assert len({ax.get_xlim() for ax in row}) == 1 and len({ax.get_ylim() for ax in row}) == 1
    # images-only panel draws one collection (images), reports-only one, joint two
    assert [len(ax.collections) for ax in axes[:3]] == [1, 1, 2]
    assert axes[0].collections[0].get_offsets().shape == (n, 2)
    plt.close(fig)


def test_grid_rejects_coordinates_that_do_not_match_labels():
    lab = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match=r"shape \(10, 2\)"):
        plot_map_grid([("before", _xy(9, 0), _xy(10, 1), SCORES)], lab)
    bad = _xy(10, 0)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        plot_map_grid([("before", bad, _xy(10, 1), SCORES)], lab)
    with pytest.raises(ValueError, match="empty"):
        plot_map_grid([], lab)


def test_slide_summary_writes_the_given_numbers_on_the_bars(tmp_path):
    n = 30
    lab = np.arange(n) % 2
    numbers = {"i2t mAP@10 label": (0.776, 0.845), "t2i R@10": (0.437, 0.452)}
    out = tmp_path / "slide.png"
    fig = plot_slide_summary(
        ("before", _xy(n, 0), _xy(n, 1)), ("after", _xy(n, 2), _xy(n, 3)), lab, numbers, out
    )
    w, h = fig.get_size_inches()
    assert abs(w / h - 16 / 9) < 0.01
    texts = {t.get_text().strip() for t in fig.axes[2].texts}
    assert {"0.776", "0.845", "0.437", "0.452"} <= texts
    assert out.stat().st_size > 20_000
    plt.close(fig)
    with pytest.raises(ValueError, match="finite"):
        plot_slide_summary(
            ("b", _xy(n, 0), _xy(n, 1)), ("a", _xy(n, 2), _xy(n, 3)), lab, {"x": (np.nan, 1.0)}
        )
    with pytest.raises(ValueError, match="empty"):
        plot_slide_summary(("b", _xy(n, 0), _xy(n, 1)), ("a", _xy(n, 2), _xy(n, 3)), lab, {})
