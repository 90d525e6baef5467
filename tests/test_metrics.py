"""Tests of the retrieval metrics of cxrlib.metrics against the brute-force reference of
cxrlib.metrics.reference (written the obvious way), scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from cxrlib.metrics import (
    bootstrap_ci,
    bootstrap_replicates,
    chance_levels,
    metrics_table,
    per_query_metrics,
    retrieval_metrics,
)
from cxrlib.metrics.reference import reference_metrics


def assert_same(got: dict, ref: dict) -> None:
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_pairs(rng, n, d, n_unique=None, signal=0.0):
    """Texts (with n_unique distinct ones when given) and images = noisy copies of their text."""
    if n_unique is None:
        txt = unit(rng.standard_normal((n, d)))
    else:
        base = unit(rng.standard_normal((n_unique, d)))
        txt = base[rng.integers(0, n_unique, n)]
    img = unit(signal * txt + rng.standard_normal((n, d)) / math.sqrt(d))
    return img, txt


# ------------------------------------------------------------------------------------------------------
# agreement with the reference
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "n", "d", "n_unique", "chunk"),
    [(0, 37, 8, None, 3), (1, 61, 16, 20, 5), (2, 45, 7, 9, None), (3, 23, 33, None, 1), (4, 50, 12, 4, 7)],
)
def test_random_inputs_match_reference(seed, n, d, n_unique, chunk):
    rng = np.random.default_rng(seed)
    img, txt = random_pairs(rng, n, d, n_unique, signal=1.0)
    labels = rng.integers(0, 2, n)
    ks = (1, 2, 5, 10)
    got = retrieval_metrics(img, txt, labels=labels, ks=ks, chunk_size=chunk)
    assert_same(got, reference_metrics(img, txt, labels, ks))


def test_exact_ties_duplicated_rows_match_reference():
    rng = np.random.default_rng(5)
    img, txt = random_pairs(rng, 40, 10, signal=0.5)
    img[7] = img[3]  # duplicated images with different reports: tie in t2i
    img[20:24] = img[2]
    txt[11] = txt[12]  # duplicated reports of different studies
    txt[30:35] = txt[0]
    img[31] = txt[0]  # an image identical to a text: score exactly 1 (max)
    labels = rng.integers(0, 3, 40)  # three classes
    got = retrieval_metrics(img, txt, labels=labels, ks=(1, 3, 8), chunk_size=3)
    assert_same(got, reference_metrics(img, txt, labels, (1, 3, 8)))
    assert got["n_unique_texts"] == 40 - 1 - 5


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_integer_valued_embeddings_with_exact_score_ties(seed):
    # entries ±1/4 in D = 16: norm exactly 1, scores are multiples of 1/8 → very many exact ties
    rng = np.random.default_rng(seed)
    n, d = 48, 16
    img = (rng.choice([-1.0, 1.0], size=(n, d)) / 4).astype(np.float32)
    txt = (rng.choice([-1.0, 1.0], size=(n, d)) / 4).astype(np.float32)
    img[:, 4:] = txt[:, 4:]  # some agreement so ranks vary
    txt[rng.integers(0, n, 10)] = txt[0]
    labels = rng.integers(0, 2, n)
    got = retrieval_metrics(img, txt, labels=labels, ks=(1, 4, 16), chunk_size=5)
    assert_same(got, reference_metrics(img, txt, labels, (1, 4, 16)))


def test_sparse_half_valued_embeddings_with_zeros():
    # 4 non-zeros of ±1/2 in D = 9 (norm exactly 1), including -0.0 entries that must equal +0.0
    rng = np.random.default_rng(9)
    n, d = 30, 9

    def sparse(k):
        x = np.zeros((k, d), np.float32)
        for r in range(k):
            x[r, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
        return x

    img, txt = sparse(n), sparse(n)
    txt[5] = txt[6]
    txt[5][txt[5] == 0] = -0.0
    labels = rng.integers(0, 2, n)
    got = retrieval_metrics(img, txt, labels=labels, ks=(1, 3, 5), chunk_size=4)
    assert_same(got, reference_metrics(img, txt, labels, (1, 3, 5)))
    assert got["n_unique_texts"] == len({tuple(r) for r in txt.tolist()})


def test_degenerate_all_identical_embeddings():
    rng = np.random.default_rng(10)
    n, d = 25, 6
    v = unit(rng.standard_normal((1, d)))
    img = np.repeat(v, n, axis=0)
    txt = unit(rng.standard_normal((n, d)))
    txt[:5] = txt[5]
    labels = rng.integers(0, 2, n)
    ks = (1, 5, 30)
    got = retrieval_metrics(img, txt, labels=labels, ks=ks, chunk_size=4)
    assert_same(got, reference_metrics(img, txt, labels, ks))
    # every image ties for every text: the rank of text u is 1 + #irrelevant images
    w = np.bincount(np.unique(txt, axis=0, return_inverse=True)[1].ravel())
    assert got["t2i_mean_rank"] == pytest.approx(np.mean(np.repeat(n - w + 1, w)))
    # with a top-K buffer smaller than the all-tied gallery, the full float64 fallback decides the top K
    pq = per_query_metrics(img, txt, labels=labels, ks=(1, 3), chunk_size=4)
    assert pq.t2i.n_fallback > 0
    assert_same(pq.summary(), reference_metrics(img, txt, labels, (1, 3)))
    # both sides identical → a single gallery item, everything ranks first
    both = retrieval_metrics(img, img, labels=labels, ks=ks)
    assert_same(both, reference_metrics(img, img, labels, ks))
    assert both["i2t_R@1"] == both["t2i_R@1"] == 1.0 and both["n_unique_texts"] == 1


def test_several_images_per_study_and_k_larger_than_gallery():
    rng = np.random.default_rng(11)
    studies = unit(rng.standard_normal((9, 8)))
    per_study = rng.integers(1, 4, 9)
    txt = np.repeat(studies, per_study, axis=0)
    img = unit(txt + 0.6 * rng.standard_normal(txt.shape))
    labels = np.repeat(rng.integers(0, 2, 9), per_study)
    ks = (1, 3, 12, 100)  # 12 > M = 9 unique texts; 100 > N
    got = retrieval_metrics(img, txt, labels=labels, ks=ks, chunk_size=2)
    assert_same(got, reference_metrics(img, txt, labels, ks))
    assert got["i2t_R@12"] == 1.0 and got["t2i_R@100"] == 1.0
    assert got["n_unique_texts"] == 9 and got["n_text_label_conflicts"] == 0


def test_wide_gallery_with_full_tiles_matches_reference():
    # galleries wide enough that each thread's column block holds several full scan tiles
    rng = np.random.default_rng(25)
    n = 230
    img, txt = random_pairs(rng, n, 8, signal=1.0)
    txt[100:130] = txt[3]  # a frequent "normal" report
    img[140] = img[141]
    labels = rng.integers(0, 2, n)
    ks = (1, 5, 10, 20)
    got = retrieval_metrics(img, txt, labels=labels, ks=ks, chunk_size=64)
    assert_same(got, reference_metrics(img, txt, labels, ks))


def test_near_ties_below_float32_resolution_follow_float64():
    # texts/images that differ from another one by one float32 ulp in one coordinate: their float32 scores
    # (mat-mul rounding) cannot be trusted to order them, the float64 scores can
    rng = np.random.default_rng(26)
    n, d = 60, 16
    img, txt = random_pairs(rng, n, d, signal=3.0)
    for a, b in ((1, 2), (5, 6), (9, 10), (20, 21)):
        txt[b] = txt[a]
        col = rng.integers(0, d)
        txt[b, col] = np.nextafter(
            txt[a, col], np.float32(np.inf) if rng.random() < 0.5 else np.float32(-np.inf)
        )
        img[b] = img[a]
        img[b, col] = np.nextafter(img[a, col], np.float32(np.inf))
    labels = rng.integers(0, 2, n)
    ks = (1, 2, 5)
    got = retrieval_metrics(img, txt, labels=labels, ks=ks, chunk_size=7)
    assert_same(got, reference_metrics(img, txt, labels, ks))
    assert got["n_unique_texts"] == n


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(27)
    img, txt = random_pairs(rng, 300, 16, n_unique=120, signal=1.0)
    labels = rng.integers(0, 3, 300)
    ref = retrieval_metrics(img, txt, labels=labels, ks=(1, 5, 10))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert retrieval_metrics(img, txt, labels=labels, ks=(1, 5, 10)) == ref
    finally:
        numba.set_num_threads(before)


def test_label_conflicts_majority_and_tie_to_larger_label():
    rng = np.random.default_rng(12)
    img, txt = random_pairs(rng, 12, 5, signal=1.0)
    txt[1:3] = txt[0]  # rows 0, 1, 2 share a text: labels 0, 1, 1 → majority 1
    txt[4] = txt[3]  # rows 3, 4: labels 0, 2 → tie → 2
    labels = np.array([0, 1, 1, 0, 2, 0, 1, 0, 1, 2, 0, 1])
    pq = per_query_metrics(img, txt, labels=labels, ks=(1, 3))
    assert pq.n_text_label_conflicts == 2
    assert pq.text_labels[pq.uid[0]] == 1 and pq.text_labels[pq.uid[3]] == 2
    got = retrieval_metrics(img, txt, labels=labels, ks=(1, 3))
    assert_same(got, reference_metrics(img, txt, labels, (1, 3)))


# ------------------------------------------------------------------------------------------------------
# hand-computed cases
# ------------------------------------------------------------------------------------------------------
def test_hand_computed_three_by_three():
    c, s = np.cos(0.3), np.sin(0.3)
    txt = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    img = np.array([[c, s, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    # scores: image 0 → (c, s, 0): its text 0 is first → rank 1; image 1 → (0, 1, 0) → rank 1;
    # image 2 → (1, 0, 0): text 2 scores 0, tied with text 1 (0) and below text 0 (1) → pessimistic rank 3.
    labels = np.array([0, 1, 1])
    got = retrieval_metrics(img, txt, labels=labels, ks=(1, 2))
    assert got["i2t_R@1"] == pytest.approx(2 / 3)
    assert got["i2t_mean_rank"] == pytest.approx(5 / 3)
    assert got["i2t_median_rank"] == 1.0
    assert got["i2t_MRR"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    # t2i: text 0 column (c, 0, 1): best relevant c < 1 → rank 2; text 1 column (s, 1, 0) → 1;
    # text 2 column (0, 0, 0): all tie → rank 3.
    assert got["t2i_mean_rank"] == pytest.approx(2.0)
    assert got["t2i_median_rank"] == 2.0
    # labels: i2t image 2 (label 1) ranks texts (1.0 t0 lab0, 0 t1 lab1, 0 t2 lab1): top-2 = [irr, rel]
    #   P@1 = 0, P@2 = 1/2, AP@2 = (1/min(2, R=2)) * (1/2) = 1/4.
    # image 0 (label 0): texts (c t0 lab0, s t1 lab1, 0 t2 lab1) → P@1 = 1, AP@2 = 1/min(2,1) * 1 = 1.
    # image 1 (label 1): (0 t0, 1 t1 rel, 0 t2 rel) → top-2 = [t1 rel, t0 irr (tie with t2, irrelevant first)]
    #   P@1 = 1, P@2 = 1/2, AP@2 = (1/2) * 1 = 1/2.
    assert got["i2t_P@1_label"] == pytest.approx(2 / 3)
    assert got["i2t_P@2_label"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2) / 3)
    assert got["i2t_mAP@2_label"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert_same(got, reference_metrics(img, txt, labels, (1, 2)))


def test_perfect_retrieval():
    rng = np.random.default_rng(13)
    x = unit(rng.standard_normal((30, 16)))
    got = retrieval_metrics(x, x, labels=rng.integers(0, 2, 30), ks=(1, 5))
    for d in ("i2t", "t2i"):
        assert got[f"{d}_R@1"] == 1.0 and got[f"{d}_MRR"] == 1.0
        assert got[f"{d}_mean_rank"] == 1.0 and got[f"{d}_median_rank"] == 1.0
        assert got[f"{d}_P@1_label"] == 1.0


def test_label_metrics_at_chance_on_random_data():
    rng = np.random.default_rng(14)
    n, p1 = 1500, 0.3
    img, txt = random_pairs(rng, n, 32, signal=0.0)
    labels = (rng.random(n) < p1).astype(int)
    pq = per_query_metrics(img, txt, labels=labels, ks=(10, 50))
    prev1 = labels.mean()
    for d, qlab in ((pq.i2t, labels), (pq.t2i, pq.text_labels)):
        p50 = d.precision[:, 1]
        assert p50[qlab == 1].mean() == pytest.approx(prev1, abs=0.03)
        assert p50[qlab == 0].mean() == pytest.approx(1 - prev1, abs=0.03)
    got = pq.summary()
    assert got["i2t_P@50_label"] == pytest.approx(prev1**2 + (1 - prev1) ** 2, abs=0.03)
    assert got["i2t_R@10"] == pytest.approx(10 / n, abs=0.01)


# ------------------------------------------------------------------------------------------------------
# second reference: scikit-learn (no ties, no duplicate texts: the definitions coincide)
# ------------------------------------------------------------------------------------------------------
def test_agrees_with_sklearn():
    rng = np.random.default_rng(15)
    n = 80
    img, txt = random_pairs(rng, n, 24, signal=1.0)
    labels = rng.integers(0, 2, n)
    ks = (1, 5, n)
    pq = per_query_metrics(img, txt, labels=labels, ks=ks, chunk_size=9)
    got = pq.summary()
    S = img.astype(np.float64) @ txt.astype(np.float64).T
    for k in (1, 5):
        assert got[f"i2t_R@{k}"] == pytest.approx(
            top_k_accuracy_score(np.arange(n), S, k=k, labels=np.arange(n))
        )
        assert got[f"t2i_R@{k}"] == pytest.approx(
            top_k_accuracy_score(np.arange(n), S.T, k=k, labels=np.arange(n))
        )
    # AP over the whole gallery (K = G) is sklearn's average precision
    ap_i2t = [average_precision_score(labels == labels[i], S[i]) for i in range(n)]
    ap_t2i = [average_precision_score(labels == labels[u], S[:, u]) for u in range(n)]
    np.testing.assert_allclose(pq.i2t.average_precision[:, 2], ap_i2t, rtol=1e-12)
    np.testing.assert_allclose(pq.t2i.average_precision[:, 2], ap_t2i, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------
# API details
# ------------------------------------------------------------------------------------------------------
def test_per_query_arrays_and_torch_inputs():
    rng = np.random.default_rng(16)
    img, txt = random_pairs(rng, 40, 8, n_unique=15, signal=1.0)
    labels = rng.integers(0, 2, 40)
    pq = per_query_metrics(img, txt, labels=labels, ks=(5, 1))
    m = pq.n_unique_texts
    assert pq.ks == (1, 5)
    assert pq.i2t.ranks.shape == (40,) and pq.t2i.ranks.shape == (m,)
    assert pq.t2i.weights.sum() == 40 and (pq.i2t.weights == 1).all()
    assert pq.i2t.precision.shape == (40, 2) and pq.t2i.average_precision.shape == (m, 2)
    assert pq.i2t.ranks.min() >= 1 and pq.i2t.ranks.max() <= m and pq.t2i.ranks.max() <= 40
    same_text = (txt[:, None, :] == txt[None, :, :]).all(axis=2)
    assert np.array_equal(pq.uid[:, None] == pq.uid[None, :], same_text)
    first = np.unique(pq.uid, return_index=True)[1]
    assert np.array_equal(pq.uid[first], np.arange(m)) and np.all(np.diff(first) > 0)  # first-appearance ids
    # torch (float16 / float32) inputs give the same numbers as numpy
    got_np = retrieval_metrics(img, txt, labels=labels)
    got_t = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), labels=torch.from_numpy(labels))
    assert got_np == got_t


def test_reduced_precision_matmul_setting_is_overridden_and_restored():
    rng = np.random.default_rng(17)
    img, txt = random_pairs(rng, 64, 256, signal=1.0)
    ref = retrieval_metrics(img, txt)
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # may mean bf16 matmuls on CPUs with AMX
    try:
        assert retrieval_metrics(img, txt) == ref
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(prev)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(18)
    img, txt = random_pairs(rng, 101, 16, n_unique=60, signal=1.5)
    labels = rng.integers(0, 2, 101)
    ref = retrieval_metrics(img, txt, labels=labels, chunk_size=None)
    for chunk in (1, 3, 64, 500):
        assert retrieval_metrics(img, txt, labels=labels, chunk_size=chunk) == ref


# ------------------------------------------------------------------------------------------------------
# bootstrap
# ------------------------------------------------------------------------------------------------------
def _patient_data(rng, n_patients, rows_per_patient=3, d=16):
    n = n_patients * rows_per_patient
    img, txt = random_pairs(rng, n, d, signal=1.2)
    pids = np.repeat([f"p{j}" for j in range(n_patients)], rows_per_patient)
    return img, txt, rng.integers(0, 2, n), pids


def test_bootstrap_ci_contains_point_and_covers_every_metric():
    rng = np.random.default_rng(19)
    img, txt, labels, pids = _patient_data(rng, 60)
    got = retrieval_metrics(img, txt, labels=labels, ks=(1, 5), patient_ids=pids, n_boot=300, seed=1)
    metric_keys = [k for k in got if not k.startswith("n_") and not k.endswith(("_lo", "_hi"))]
    assert len(metric_keys) == 2 * (2 + 3) + 2 * 2 * 2
    assert not any(f"{k}_lo" in got for k in ("n_queries", "n_unique_texts", "n_text_label_conflicts"))
    for k in metric_keys:
        assert got[f"{k}_lo"] <= got[k] <= got[f"{k}_hi"], k
    assert got["i2t_MRR_lo"] < got["i2t_MRR_hi"]


def test_bootstrap_ci_shrinks_with_more_patients():
    # the same metric distribution (one evaluation), bootstrapped over the first 40 vs all 600 patients
    rng = np.random.default_rng(24)
    img, txt, labels, pids = _patient_data(rng, 600, rows_per_patient=2)
    pq = per_query_metrics(img, txt, labels=labels, ks=(5,))
    vals = pq.row_values()
    few = {k: v[:80] for k, v in vals.items()}
    ci_few = bootstrap_ci(few, pids[:80], n_boot=400, seed=0, median_keys=pq.median_keys(vals))
    ci_all = bootstrap_ci(vals, pids, n_boot=400, seed=0, median_keys=pq.median_keys(vals))
    for k in ("i2t_MRR", "t2i_R@5", "i2t_mAP@5_label", "t2i_mean_rank"):
        w_few = ci_few[f"{k}_hi"] - ci_few[f"{k}_lo"]
        w_all = ci_all[f"{k}_hi"] - ci_all[f"{k}_lo"]
        assert 0 < w_all < 0.5 * w_few, k  # ~ sqrt(40 / 600) = 0.26 expected


def test_bootstrap_is_reproducible_with_seed():
    rng = np.random.default_rng(20)
    img, txt, labels, pids = _patient_data(rng, 40)
    a = retrieval_metrics(img, txt, labels=labels, patient_ids=pids, n_boot=50, seed=3)
    b = retrieval_metrics(img, txt, labels=labels, patient_ids=pids, n_boot=50, seed=3)
    c = retrieval_metrics(img, txt, labels=labels, patient_ids=pids, n_boot=50, seed=4)
    assert a == b and a != c


def test_bootstrap_resamples_patients_not_rows():
    # two patients with 10 rows each: one retrieves perfectly, the other never. Resampling PATIENTS can only
    # give R@1 in {0, 1/2, 1}; resampling rows would give values like 0.45.
    rng = np.random.default_rng(21)
    n = 20
    txt = unit(rng.standard_normal((n, 64)))
    img = txt.copy()
    img[10:] = unit(-txt[10:] + 0.01 * rng.standard_normal((10, 64)))  # opposite direction: last place
    pids = np.array(["good"] * 10 + ["bad"] * 10)
    pq = per_query_metrics(img, txt, ks=(1,))
    reps = bootstrap_replicates(pq.row_values(), pids, n_boot=200, seed=0)
    assert set(np.unique(reps["i2t_R@1"])) <= {0.0, 0.5, 1.0}
    assert len(np.unique(reps["i2t_R@1"])) == 3
    row_reps = bootstrap_replicates(pq.row_values(), np.arange(n), n_boot=200, seed=0)
    assert len(np.unique(row_reps["i2t_R@1"])) > 3


def test_bootstrap_replicates_match_explicit_resampling():
    rng = np.random.default_rng(22)
    n = 60
    vals = {"a": rng.integers(1, 30, n).astype(float), "med": rng.integers(1, 30, n).astype(float)}
    clusters = rng.integers(0, 17, n)  # unequal cluster sizes
    reps = bootstrap_replicates(vals, clusters, n_boot=25, seed=7, median_keys=("med",))
    # explicit: the same draws (one batch: rng.integers(0, P, (B, P))), rows of drawn clusters concatenated
    ids = np.unique(clusters)
    draws = np.random.default_rng(7).integers(0, len(ids), size=(25, len(ids)))
    for b in range(25):
        rows = np.concatenate([np.flatnonzero(clusters == ids[c]) for c in draws[b]])
        assert reps["a"][b] == pytest.approx(vals["a"][rows].mean())
        assert reps["med"][b] == np.median(vals["med"][rows])
    ci = bootstrap_ci(vals, clusters, n_boot=25, seed=7, median_keys=("med",))
    assert ci["a_lo"] == pytest.approx(np.percentile(reps["a"], 2.5))
    assert ci["med_hi"] == pytest.approx(np.percentile(reps["med"], 97.5))


# ------------------------------------------------------------------------------------------------------
# input errors
# ------------------------------------------------------------------------------------------------------
def test_input_errors_are_clear():
    rng = np.random.default_rng(23)
    img, txt = random_pairs(rng, 10, 4)
    with pytest.raises(ValueError, match="same shape"):
        retrieval_metrics(img, txt[:9])
    with pytest.raises(ValueError, match="N = 0"):
        retrieval_metrics(img[:0], txt[:0])
    bad = img.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"image_emb has NaN/inf.*row 3"):
        retrieval_metrics(bad, txt)
    bad = txt.copy()
    bad[6, 0] = np.inf
    with pytest.raises(ValueError, match=r"text_emb has NaN/inf.*row 6"):
        retrieval_metrics(img, bad)
    with pytest.raises(ValueError, match=r"text_emb is not L2-normalised.*row 2"):
        retrieval_metrics(img, txt * np.array([[1.0]] * 2 + [[3.0]] * 8, np.float32))
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        retrieval_metrics(img, txt, labels=np.zeros(9, int))
    with pytest.raises(ValueError, match="labels must be integers"):
        retrieval_metrics(img, txt, labels=np.full(10, 0.5))
    with pytest.raises(ValueError, match=r"patient_ids must have shape \(10,\)"):
        retrieval_metrics(img, txt, patient_ids=np.arange(11), n_boot=10)
    with pytest.raises(ValueError, match="needs patient_ids"):
        retrieval_metrics(img, txt, n_boot=10)
    with pytest.raises(ValueError, match="ks must be"):
        retrieval_metrics(img, txt, ks=(0, 5))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(img[0], txt[0])


# ---------------------------------------------------------------------------------------------------------
# metrics_table and chance_levels
# ---------------------------------------------------------------------------------------------------------
def test_chance_levels_unique_texts_exact():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.array([0] * 20 + [1] * 30)
    c = chance_levels(x, labels, ks=(1, 5))
    assert c["i2t_R@1"] == pytest.approx(1 / 50) and c["t2i_R@5"] == pytest.approx(5 / 50)
    # share of the query's label among the gallery, averaged over queries: (20*0.4 + 30*0.6) / 50
    assert c["i2t_P@5_label"] == pytest.approx((20 * 0.4 + 30 * 0.6) / 50)


def test_chance_levels_match_random_rankings():
    """Shared texts: the formula agrees with retrieval_metrics on random image embeddings (Monte Carlo)."""
    rng = np.random.default_rng(1)
    n, d = 200, 32
    labels = rng.integers(0, 2, n)
    text_id = np.where(labels == 0, rng.integers(0, 4, n), rng.integers(4, 300, n))
    bank = rng.normal(size=(300, d))
    text = (bank / np.linalg.norm(bank, axis=1, keepdims=True))[text_id].astype(np.float32)
    runs = []
    for _ in range(120):
        img = rng.normal(size=(n, d))
        runs.append(
            retrieval_metrics(
                (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32), text, labels, ks=(10,)
            )
        )
    c = chance_levels(text, labels, ks=(10,))
    for key in ("i2t_R@10", "t2i_R@10", "i2t_P@10_label", "t2i_P@10_label"):
        v = np.array([r[key] for r in runs])
        assert abs(v.mean() - c[key]) < 4 * v.std() / np.sqrt(len(v)) + 1e-3, key
    # shared texts make text->image chance much higher than K / N
    assert c["t2i_R@10"] > 2 * 10 / n


def test_metrics_table_formats_cis_and_names_missing_keys():
    res = {"a": {"i2t_R@1": 0.12345, "i2t_R@1_lo": 0.1, "i2t_R@1_hi": 0.15}, "b": {"i2t_R@1": 0.5}}
    numbers, text = metrics_table(res, ["i2t_R@1"])
    assert numbers.loc["a", "i2t_R@1"] == 0.123 and numbers.loc["a", "i2t_R@1_hi"] == 0.15
    assert text.loc["a", "i2t_R@1"] == "0.123 [0.100, 0.150]" and text.loc["b", "i2t_R@1"] == "0.500"
    with pytest.raises(KeyError, match="'a'.*t2i_R@1"):
        metrics_table(res, ["i2t_R@1", "t2i_R@1"])
