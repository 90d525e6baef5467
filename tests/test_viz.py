"""Tests of cxrlib.viz: projections, subsampling, query picking, retrieval galleries and that every plotting
function writes a real file. (The cluster scores moved to cxrlib.metrics: tests/test_metrics_clusters.py.)"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from embedding_fixtures import clusters as _clusters  # noqa: E402
from embedding_fixtures import paired as _paired  # noqa: E402
from embedding_fixtures import unit as _unit  # noqa: E402
from figure_checks import layout_problems  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cxrlib import viz  # noqa: E402
from cxrlib.metrics import metrics_table  # noqa: E402
from cxrlib.viz.galleries import _BAD, _GOOD, plot_example_grid  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png_ok(path) -> None:
    assert path.exists(), path
    assert path.stat().st_size > 5000, f"{path} is only {path.stat().st_size} bytes"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------------
# projections
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_embed_2d_shape_finite_deterministic(method):
    x, _ = _clusters(50, 12, 2.0, seed=3)
    a = viz.embed_2d(x, method=method, seed=7, perplexity=10)
    b = viz.embed_2d(x, method=method, seed=7, perplexity=10)
    assert a.shape == (50, 2)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert a.std(axis=0).min() > 0  # not collapsed


def test_embed_2d_tsne_separates():
    x, lab = _clusters(60, 12, 3.0, seed=1)
    a = viz.embed_2d(x, "tsne", seed=0, perplexity=10)
    # well-separated clusters stay separated in the map: the class centroids are far apart
    c0, c1 = a[lab == 0].mean(0), a[lab == 1].mean(0)
    spread = max(a[lab == 0].std(0).max(), a[lab == 1].std(0).max())
    assert np.linalg.norm(c0 - c1) > 2 * spread


def test_embed_2d_perplexity_clamped_with_warning():
    x, _ = _clusters(12, 8, 2.0, seed=0)
    with pytest.warns(UserWarning, match="perplexity"):
        out = viz.embed_2d(x, "tsne", perplexity=30.0)
    assert out.shape == (12, 2) and np.isfinite(out).all()


def test_embed_2d_bad_input():
    x, _ = _clusters(20, 8, 2.0, seed=0)
    with pytest.raises(ValueError, match="method"):
        viz.embed_2d(x, "mds")
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        viz.embed_2d(bad, "pca")
    with pytest.raises(ValueError, match="at least 4"):
        viz.embed_2d(x[:3], "tsne")


def test_pca_matches_sklearn_variance_order():
    x, _ = _clusters(40, 10, 4.0, seed=2)
    out = viz.embed_2d(x, "pca")
    # the first PCA axis carries at least as much variance as the second
    assert out[:, 0].var() >= out[:, 1].var()
    xc = x - x.mean(0)
    top = np.linalg.svd(xc.astype(np.float64), compute_uv=False)[0] ** 2 / (x.shape[0] - 1)
    assert out[:, 0].var(ddof=1) == pytest.approx(top, rel=1e-6)


@pytest.mark.slow
def test_embed_2d_umap_tiny():
    """UMAP once at a tiny size: ~20 s in a fresh process (numba JIT + import), then fast."""
    x, _ = _clusters(30, 8, 2.0, seed=0)
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="n_neighbors"):
        a = viz.embed_2d(x, "umap", seed=0, n_neighbors=40)
    first = time.perf_counter() - t0
    b = viz.embed_2d(x, "umap", seed=0, n_neighbors=29)
    assert a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # random_state → reproducible
    assert first < 60


def test_joint_projection_shares_one_fit():
    img, txt, _ = _paired(30, 8)
    gi, gt = viz.joint_projection(img, txt, method="pca")
    both = viz.embed_2d(np.vstack([img, txt]), "pca")
    assert gi.shape == (30, 2) and gt.shape == (30, 2)
    np.testing.assert_array_equal(gi, both[:30])
    np.testing.assert_array_equal(gt, both[30:])
    with pytest.raises(ValueError, match="width"):
        viz.joint_projection(img, txt[:, :4], method="pca")


# ----------------------------------------------------------------------------------------------------------
# subsample and query picking
# ----------------------------------------------------------------------------------------------------------
def test_subsample_stratified_sorted_deterministic():
    lab = np.array([0] * 700 + [1] * 300)
    rng = np.random.default_rng(0)
    lab = lab[rng.permutation(lab.size)]
    idx = viz.subsample(lab, 100, seed=3)
    assert idx.shape == (100,) and idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)
    assert Counter(lab[idx].tolist()) == {0: 70, 1: 30}
    np.testing.assert_array_equal(idx, viz.subsample(lab, 100, seed=3))
    assert not np.array_equal(idx, viz.subsample(lab, 100, seed=4))
    np.testing.assert_array_equal(viz.subsample(lab[:50], 100), np.arange(50))


def test_subsample_keeps_tiny_stratum_and_groups():
    lab = np.array([0] * 995 + [1] * 5)
    idx = viz.subsample(lab, 50, seed=0)
    assert idx.shape == (50,)
    assert (lab[idx] == 1).sum() >= 1
    grp = np.tile(["a", "b"], 500)
    lab2 = np.repeat([0, 1], 500)
    idx2 = viz.subsample(lab2, 40, seed=0, groups=grp)
    c = Counter(zip(lab2[idx2].tolist(), grp[idx2].tolist(), strict=True))
    assert c == {(0, "a"): 10, (0, "b"): 10, (1, "a"): 10, (1, "b"): 10}


def test_pick_queries_first_by_id_and_random():
    lab = np.array([1, 0, 1, 0, 0, 1, 0])
    ids = np.array(["s7", "s3", "s1", "s5", "s2", "s4", "s6"])
    q = viz.pick_queries(lab, ids, 2)
    # label 0 rows sorted by id: s2 (4), s3 (1), s5 (3), s6 (6); label 1: s1 (2), s4 (5), s7 (0)
    np.testing.assert_array_equal(q, [4, 1, 2, 5])
    r1 = viz.pick_queries(lab, ids, 2, rule="random", seed=5)
    np.testing.assert_array_equal(r1, viz.pick_queries(lab, ids, 2, rule="random", seed=5))
    assert Counter(lab[r1].tolist()) == {0: 2, 1: 2}
    with pytest.warns(UserWarning, match="only 3 rows"):
        q4 = viz.pick_queries(lab, ids, 4)
    assert q4.shape == (7,)
    with pytest.raises(ValueError, match="rule"):
        viz.pick_queries(lab, ids, 2, rule="best")


# ----------------------------------------------------------------------------------------------------------
# galleries
# ----------------------------------------------------------------------------------------------------------
def _aligned_toy():
    """6 rows, 4 distinct reports (rows 0/1 and 3/4 share a report, as two views of one study), images equal
    to their report embeddings: a perfectly aligned space."""
    texts = [
        "no acute disease",
        "no acute disease",
        "large left effusion",
        "cardiomegaly",
        "cardiomegaly",
        "clear",
    ]
    labels = np.array([0, 0, 1, 1, 1, 0])
    base = np.eye(8)[[0, 0, 1, 2, 2, 3]] + 0.05 * np.eye(8)[[4, 5, 6, 7, 4, 5]] * 0
    txt = _unit(base + 0.3 * np.eye(8)[[7, 7, 7, 7, 7, 7]])
    img = txt.copy()
    ids = np.array([f"img{i}" for i in range(6)])
    study = np.array(["s0", "s0", "s1", "s2", "s2", "s3"])
    return img, txt, texts, labels, ids, study


def test_i2t_gallery_dedup_and_exact():
    img, txt, texts, labels, ids, _ = _aligned_toy()
    df = viz.i2t_gallery(np.arange(6), img, txt, texts, labels, k=10, ids=ids)
    assert list(df.columns) == [
        "query_row",
        "query_id",
        "query_label",
        "rank",
        "text_row",
        "retrieved_text",
        "similarity",
        "retrieved_label",
        "same_label",
        "exact_report",
    ]
    # gallery = 4 distinct texts, so k is clamped to 4 and no text appears twice for one query
    assert len(df) == 6 * 4
    for _, g in df.groupby("query_row"):
        assert g["retrieved_text"].is_unique
        assert list(g["rank"]) == [1, 2, 3, 4]
        assert g["similarity"].is_monotonic_decreasing
    top = df[df["rank"] == 1]
    assert top["exact_report"].all()
    assert top["similarity"].eq(1.0).all()
    assert (top["retrieved_text"].to_numpy() == np.array(texts)).all()
    assert top["same_label"].all()
    assert df["exact_report"].sum() == 6  # exactly one own report per query
    assert list(top["query_id"]) == list(ids)
    assert set(df.loc[df["retrieved_text"] == "no acute disease", "text_row"]) == {0}
    assert (df["same_label"] == (df["query_label"] == df["retrieved_label"])).all()
    assert not df.isna().any().any()


def test_i2t_gallery_majority_label_and_checks():
    img, txt, texts, labels, _, _ = _aligned_toy()
    lab = labels.copy()
    lab[1] = 1  # rows 0 and 1 share a report but disagree: tie → larger label (1)
    df = viz.i2t_gallery(np.array([0]), img, txt, texts, lab, k=1)
    assert df.loc[0, "retrieved_label"] == 1 and not df.loc[0, "same_label"]
    with pytest.raises(ValueError, match="texts"):
        viz.i2t_gallery(np.array([0]), img, txt, texts[:5], labels)
    with pytest.raises(ValueError, match="query_idx"):
        viz.i2t_gallery(np.array([9]), img, txt, texts, labels)


def test_t2i_gallery_exact_pair_and_study():
    img, txt, _, labels, ids, study = _aligned_toy()
    df = viz.t2i_gallery(np.array([0, 2]), img, txt, labels, k=3, ids=ids)
    assert list(df.columns) == [
        "query_row",
        "query_id",
        "query_label",
        "rank",
        "image_row",
        "image_id",
        "similarity",
        "label",
        "same_label",
        "exact",
    ]
    q0 = df[df["query_row"] == 0]
    # rows 0 and 1 have identical images: tie broken by lower row → the pair itself ranks first
    assert list(q0["image_row"][:2]) == [0, 1]
    assert list(q0["exact"][:2]) == [True, False]
    assert q0["similarity"].iloc[0] == 1.0
    q2 = df[df["query_row"] == 2]
    assert q2["image_row"].iloc[0] == 2 and q2["exact"].iloc[0]
    dfs = viz.t2i_gallery(np.array([0]), img, txt, labels, k=3, study_ids=study)
    assert list(dfs["exact"][:2]) == [True, True]  # both views of study s0
    assert (df["same_label"] == (df["query_label"] == df["label"])).all()


# ----------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------
def test_plot_projection_panels_writes_png(tmp_path):
    img, txt, lab = _paired(40, 8)
    gi, gt = viz.joint_projection(img, txt, method="pca")
    out = tmp_path / "deep" / "folder" / "04_tsne.png"
    fig = viz.plot_projection_panels(
        [("before", gi, gt), ("after", gi * 2, None)], lab, out_path=out, title="t", dpi=80
    )
    assert isinstance(fig, Figure)
    _png_ok(out)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["normal (n=20)", "abnormal (n=20)", "image", "report"]
    assert plt.fignum_exists(fig.number)
    fig2 = viz.plot_projection_panels([("x", gi, gt)], lab, close=True)
    assert not plt.fignum_exists(fig2.number)
    with pytest.raises(ValueError, match="shape"):
        viz.plot_projection_panels([("x", gi[:10], gt)], lab)
    with pytest.raises(ValueError, match="label_names"):
        viz.plot_projection_panels([("x", gi, gt)], lab + 5)


def _thumbs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32), dtype=np.uint8)


def test_plot_i2t_gallery_writes_png(tmp_path):
    img, txt, texts, labels, ids, _ = _aligned_toy()
    long_texts = [t + " and a long tail of findings " * 8 for t in texts]
    q = viz.pick_queries(labels, ids, 1)
    df = viz.i2t_gallery(q, img, txt, long_texts, labels, k=3, ids=ids)
    out = tmp_path / "figs" / "04_i2t_gallery.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a missing glyph for ✓ ✗ ★
        fig = viz.plot_i2t_gallery(df, _thumbs(len(q)), out_path=out, wrap=50, dpi=80, close=True)
    _png_ok(out)
    texts_drawn = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("✓ ★ 1.") for t in texts_drawn)
    assert any(t.endswith("…") for t in texts_drawn)
    with pytest.raises(ValueError, match="thumbnails"):
        viz.plot_i2t_gallery(df, _thumbs(len(q) + 1))


def test_plot_t2i_gallery_writes_png(tmp_path):
    img, txt, texts, labels, ids, _ = _aligned_toy()
    q = np.array([0, 2])
    df = viz.t2i_gallery(q, img, txt, labels, k=4, ids=ids)
    thumbs = _thumbs(6, seed=1)
    calls = []

    def fn(rows):
        calls.append(rows.tolist())
        return thumbs[rows]

    out = tmp_path / "04_t2i_gallery.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = viz.plot_t2i_gallery(df, [texts[i] for i in q], fn, out_path=out, dpi=80)
    _png_ok(out)
    assert calls == [df[df.query_row == r]["image_row"].tolist() for r in q]
    framed = [ax for ax in fig.axes if ax.images]
    assert len(framed) == 8
    first = framed[0]
    assert first.get_title().startswith("★ ✓ 1.000")
    assert matplotlib.colors.to_hex(first.spines["left"].get_edgecolor()) == _GOOD.lower()
    wrong = [ax for ax, ok in zip(framed, df["same_label"], strict=True) if not ok]
    assert wrong and all(
        matplotlib.colors.to_hex(ax.spines["top"].get_edgecolor()) == _BAD.lower() for ax in wrong
    )
    with pytest.raises(ValueError, match="query_texts"):
        viz.plot_t2i_gallery(df, ["only one"], fn)


def test_gallery_tables_are_dataframes_without_nan():
    img, txt, texts, labels, ids, _ = _aligned_toy()
    for df in (
        viz.i2t_gallery(np.arange(6), img, txt, texts, labels, k=2),
        viz.t2i_gallery(np.arange(6), img, txt, labels, k=2),
    ):
        assert isinstance(df, pd.DataFrame) and len(df) == 12
        assert not df.isna().any().any()


# --------------------------------------------------------------------------------------------------
# plot_metric_bars (the bar charts of notebooks 02 and 03)
# --------------------------------------------------------------------------------------------------
def test_plot_metric_bars_draws_values_error_bars_and_chance(tmp_path) -> None:
    results = {
        "a": {
            "i2t_R@1": 0.2,
            "i2t_R@1_lo": 0.1,
            "i2t_R@1_hi": 0.3,
            "t2i_R@1": 0.4,
            "t2i_R@1_lo": 0.35,
            "t2i_R@1_hi": 0.5,
        },
        "b": {
            "i2t_R@1": 0.6,
            "i2t_R@1_lo": 0.5,
            "i2t_R@1_hi": 0.7,
            "t2i_R@1": 0.8,
            "t2i_R@1_lo": 0.7,
            "t2i_R@1_hi": 0.9,
        },
    }
    keys = ["i2t_R@1", "t2i_R@1"]
    numbers, _ = metrics_table(results, keys)
    out = tmp_path / "bars.png"
    fig = viz.plot_metric_bars(numbers, keys, out, title="t", chance={"i2t_R@1": 0.05})
    assert out.is_file() and out.stat().st_size > 1000
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.2, 0.4, 0.6, 0.8]
    assert [t.get_text() for t in ax.get_xticklabels()] == keys
    labels = ax.get_legend_handles_labels()[1]
    assert sorted(labels) == ["a", "b", "chance"]
    # the dashed chance line sits at 0.05 over the first group only
    segs = [c for c in ax.collections if c.get_linestyle() and c.get_segments()]
    ys = {round(float(s[0][1]), 6) for c in segs for s in c.get_segments() if s[0][1] == s[1][1]}
    assert 0.05 in ys
    # error bars: one vertical segment per bar, from lo to hi
    vert = sorted(
        (round(float(s[0][1]), 6), round(float(s[1][1]), 6))
        for c in ax.collections
        for s in c.get_segments()
        if s[0][0] == s[1][0]
    )
    assert vert == [(0.1, 0.3), (0.35, 0.5), (0.5, 0.7), (0.7, 0.9)]
    plt.close(fig)


def test_plot_metric_bars_names_a_missing_column() -> None:
    numbers = pd.DataFrame({"i2t_R@1": [0.1]}, index=["m"])
    with pytest.raises(KeyError, match="t2i_R@1"):
        viz.plot_metric_bars(numbers, ["i2t_R@1", "t2i_R@1"])


# --------------------------------------------------------------------------------------------------
# slide readability: no overlapping texts, no text over another panel's image, every text >= 9 pt
# --------------------------------------------------------------------------------------------------
def _history(n_epochs: int = 12) -> pd.DataFrame:
    e = np.arange(n_epochs + 1, dtype=float)
    rows = {"epoch": e}
    for t in ("bce", "supcon", "clip"):
        rows[f"train_{t}"] = np.r_[np.nan, 1.0 / (1 + e[1:])]
        rows[f"val_{t}"] = 1.1 / (1 + e)
    for k in ("i2t_R@5", "t2i_R@5", "i2t_mAP@10_label", "t2i_mAP@10_label"):
        rows[k] = 0.3 + 0.02 * np.sqrt(e)
    return pd.DataFrame(rows)


def _ablation() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    from cxrlib.evaluation import summarize_ablation

    keys = ["i2t_R@10", "t2i_R@10", "i2t_mAP@10_label", "t2i_mAP@10_label"]
    rng = np.random.default_rng(0)
    names = ["CLIP only", "CLIP + BCE", "CLIP + SupCon", "all three"]
    runs = pd.DataFrame(
        [
            {"config": n, "seed": s, **{k: float(rng.uniform(0.2, 0.9)) for k in keys}}
            for n in names
            for s in (0, 1, 2)
        ]
    )
    return runs, summarize_ablation(runs, keys)[0], keys


def _slide_figures():
    """Every figure function of the notebooks on small constructed inputs, with realistic text lengths."""
    img, txt, texts, labels, ids, _ = _aligned_toy()
    long_texts = [
        t + " The cardiomediastinal silhouette is within normal limits. No pleural effusion." * 3
        for t in texts
    ]
    q = viz.pick_queries(labels, ids, 2)
    runs, summary, keys = _ablation()
    results = {
        m: {"i2t_R@1": 0.1 * (j + 1), "t2i_R@1": 0.2 * (j + 1)}
        for j, m in enumerate(("demo-random", "demo", "demo+multitask"))
    }
    numbers, _ = metrics_table(results, ["i2t_R@1", "t2i_R@1"])
    heads = ["normal", "abnormal (cardiomegaly, pleural_effusion)", "abnormal (pneumothorax)"] * 2
    return {
        "training_curves": lambda: viz.plot_training_curves(
            _history(), 6, (1, 5, 10), "Projector training (SYNTHETIC data)"
        ),
        "ablation": lambda: viz.plot_ablation(
            runs, summary, keys, "Loss ablation: bars = mean, dots = seeds (SYNTHETIC data)"
        ),
        "bars": lambda: viz.plot_metric_bars(
            numbers, ["i2t_R@1", "t2i_R@1"], title="test split (SYNTHETIC data)"
        ),
        "i2t_gallery": lambda: viz.plot_i2t_gallery(
            viz.i2t_gallery(q, img, txt, long_texts, labels, k=5, ids=ids), _thumbs(len(q))
        ),
        "t2i_gallery": lambda: viz.plot_t2i_gallery(
            viz.t2i_gallery(q, img, txt, labels, k=5, ids=ids),
            [long_texts[i] for i in q],
            lambda r: _thumbs(len(r)),
        ),
        "example_grid": lambda: plot_example_grid(
            list(_thumbs(6)), heads, long_texts[:6], title="phantom: test examples (SYNTHETIC)", max_lines=7
        ),
    }


@pytest.mark.parametrize("name", list(_slide_figures()))
def test_figures_are_readable_at_slide_size(name: str) -> None:
    fig = _slide_figures()[name]()
    assert layout_problems(fig) == [], name
    width, height = fig.get_size_inches()
    assert width <= 14.5, f"{name} is {width:.1f} in wide: too wide for a slide at 9 pt"


def test_layout_check_catches_the_old_overlapping_titles() -> None:
    """The check can fail: titles set on a tight image grid (the old notebook-01 figure) and 7.5 pt text."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 9))
    for ax in axes.ravel():
        ax.imshow(np.zeros((8, 8)), cmap="gray")
        ax.set_axis_off()
        ax.set_title(
            "abnormal\n" + "\n".join(["No pleural effusion or pneumothorax."] * 7), fontsize=9, loc="left"
        )
    fig.suptitle("examples")
    fig.tight_layout()
    assert any("runs into an image panel" in p for p in layout_problems(fig))
    fig2, ax2 = plt.subplots()
    ax2.set_title("small", fontsize=7.5)
    assert any("7.5 pt" in p for p in layout_problems(fig2))
    fig3, ax3 = plt.subplots()
    ax3.text(0.5, 0.5, "one text here")
    ax3.text(0.52, 0.5, "another text")
    assert any("texts overlap" in p for p in layout_problems(fig3))


def test_plot_example_grid_layout_and_errors(tmp_path) -> None:
    out = tmp_path / "grid.png"
    images = [_thumbs(1)[0], None, _thumbs(1, seed=2)[0]]
    fig = plot_example_grid(images, ["a", "b", "c"], ["x " * 200, "", "short"], out, ncols=2, max_lines=3)
    _png_ok(out)
    assert len([ax for ax in fig.axes if ax.images]) == 2  # the None panel stays empty
    bodies = [
        t.get_text()
        for ax in fig.axes
        for t in ax.texts
        if "\n" in t.get_text() or t.get_text().endswith("…")
    ]
    assert bodies and bodies[0].count("\n") == 2 and bodies[0].endswith("…")  # 3 lines, cut with …
    assert layout_problems(fig) == []
    with pytest.raises(ValueError, match="one entry per panel"):
        plot_example_grid(images, ["a"], ["x"])
    with pytest.raises(ValueError, match="at least one image"):
        plot_example_grid([], [], [])
    with pytest.raises(ValueError, match="ncols"):
        plot_example_grid(images, ["a", "b", "c"], ["", "", ""], ncols=0)
