"""Tests of the finding-level metrics of cxrlib.metrics.findings (nDCG@K, FP@K with Jaccard gains) against
the brute-force reference of cxrlib.metrics.reference, hand-computed cases, the label metrics and an exact
enumeration of random orderings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cxrlib.metrics import (
    as_finding_sets,
    finding_chance_levels,
    finding_metrics,
    jaccard_gain,
    paired_difference,
    per_query_finding_metrics,
    retrieval_metrics,
)
from cxrlib.metrics.reference import reference_finding_metrics

TAGS = ("atelectasis", "cardiomegaly", "edema", "nodule")


def assert_same(got: dict, ref: dict) -> None:
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def unit(x):
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_case(rng, n, d, n_unique=None, signal=1.0, p_tag=0.3):
    """Paired embeddings (texts duplicated when n_unique is given) and random finding strings (many empty)."""
    if n_unique is None:
        txt = unit(rng.standard_normal((n, d)))
    else:
        txt = unit(rng.standard_normal((n_unique, d)))[rng.integers(0, n_unique, n)]
    img = unit(signal * txt + rng.standard_normal((n, d)) / math.sqrt(d))
    findings = ["|".join(t for t in TAGS if rng.random() < p_tag) for _ in range(n)]
    return img, txt, findings


# ------------------------------------------------------------------------------------------------------
# agreement with the brute-force reference
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "n", "d", "n_unique", "chunk", "ks"),
    [
        (0, 37, 8, None, 3, (1, 2, 5, 10)),
        (1, 61, 16, 20, 5, (1, 5, 10)),
        (2, 45, 7, 9, None, (1, 3, 12)),  # K > M = 9 unique texts: clamped in i2t
        (3, 23, 33, None, 1, (1, 30)),  # K > N: clamped in both directions
        (4, 50, 12, 4, 7, (2, 4, 6)),
    ],
)
def test_random_inputs_match_reference(seed, n, d, n_unique, chunk, ks):
    rng = np.random.default_rng(seed)
    img, txt, findings = random_case(rng, n, d, n_unique)
    got = finding_metrics(img, txt, findings, ks=ks, chunk_size=chunk)
    assert_same(got, reference_finding_metrics(img, txt, findings, ks))


def test_exact_ties_duplicates_and_empty_sets_match_reference():
    rng = np.random.default_rng(5)
    img, txt, findings = random_case(rng, 40, 10, signal=0.5)
    img[7] = img[3]  # duplicated images with different reports: exact ties in t2i
    img[20:24] = img[2]
    txt[11] = txt[12]  # duplicated reports of different studies (different finding sets → a conflict)
    txt[30:35] = txt[0]
    img[31] = txt[0]  # an image identical to a text: score exactly 1
    findings[30:33] = ["", "", "nodule"]
    got = finding_metrics(img, txt, findings, ks=(1, 3, 8), chunk_size=3)
    ref = reference_finding_metrics(img, txt, findings, (1, 3, 8))
    assert_same(got, ref)
    assert got["n_text_finding_conflicts"] >= 1


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_integer_valued_embeddings_with_massive_exact_ties(seed):
    # entries ±1/4 in D = 16: norm exactly 1, scores are multiples of 1/8 → very many exact ties, so the
    # pessimistic order (lower gain first) and the full float64 fallback decide most top-K lists
    rng = np.random.default_rng(seed)
    n = 48
    img = (rng.choice([-1, 1], size=(n, 16)) * 0.25).astype(np.float32)
    txt = (rng.choice([-1, 1], size=(n, 16)) * 0.25).astype(np.float32)
    txt[rng.integers(0, n, 10)] = txt[0]
    _, _, findings = random_case(rng, n, 4, p_tag=0.4)
    pq = per_query_finding_metrics(img, txt, findings, ks=(1, 4, 9), chunk_size=5)
    assert_same(pq.summary(), reference_finding_metrics(img, txt, findings, (1, 4, 9)))
    assert pq.i2t.n_fallback + pq.t2i.n_fallback > 0  # the fallback path is exercised


def test_all_identical_embeddings_everything_tied():
    rng = np.random.default_rng(9)
    x = unit(rng.standard_normal((1, 8)))
    img = np.repeat(x, 12, axis=0)
    txt = np.repeat(unit(rng.standard_normal((1, 8))), 12, axis=0)
    findings = ["", "nodule", "edema|nodule", "", "cardiomegaly", "", "", "nodule", "", "edema", "", "nodule"]
    got = finding_metrics(img, txt, findings, ks=(1, 3, 12))
    assert_same(got, reference_finding_metrics(img, txt, findings, (1, 3, 12)))
    assert got["n_unique_texts"] == 1


def test_chunking_and_thread_free_results_are_bit_identical():
    rng = np.random.default_rng(10)
    img, txt, findings = random_case(rng, 300, 24, n_unique=120)
    whole = per_query_finding_metrics(img, txt, findings, ks=(1, 5, 10))
    for chunk in (1, 7, 64, 299):
        part = per_query_finding_metrics(img, txt, findings, ks=(1, 5, 10), chunk_size=chunk)
        for d in ("i2t", "t2i"):
            a, b = getattr(whole, d), getattr(part, d)
            np.testing.assert_array_equal(a.ndcg, b.ndcg)
            np.testing.assert_array_equal(a.fp, b.fp)


def test_torch_inputs_and_tag_iterables_give_the_same_result():
    rng = np.random.default_rng(11)
    img, txt, findings = random_case(rng, 30, 8)
    a = finding_metrics(img, txt, findings, ks=(1, 5))
    as_sets = [set(f.split("|")) - {""} for f in findings]
    b = finding_metrics(torch.from_numpy(img), torch.from_numpy(txt), as_sets, ks=(1, 5))
    assert a == b


# ------------------------------------------------------------------------------------------------------
# constructed cases with known answers
# ------------------------------------------------------------------------------------------------------
def _angles(phi):
    return np.stack([np.cos(phi), np.sin(phi)], axis=1).astype(np.float32)


def test_perfect_ranking_gives_ndcg_one():
    # image 0 at angle 0, the texts at increasing angles: the scores of query 0 fall with the row index, and
    # so do the gains of its finding set {a, b}: 1, 1, 1/2, 0
    txt = _angles(np.array([0.0, 0.3, 0.6, 0.9]))
    img = _angles(np.array([0.0, 0.31, 0.62, 0.93]))
    findings = ["a|b", "a|b", "a", ""]
    pq = per_query_finding_metrics(img, txt, findings, ks=(1, 2, 3, 4))
    np.testing.assert_allclose(pq.i2t.ndcg[0], 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pq.i2t.fp[0], [1.0, 1.0, 2.5 / 3, 2.5 / 4], rtol=1e-15)


def test_reversed_ranking_has_the_hand_computed_value():
    # image 0 sits past the last text: its ranking is 3, 2, 1, 0 with gains 0, 0, 1, 1 (the ideal is 1, 1, 0, 0)
    txt = _angles(np.array([0.0, 0.3, 0.6, 0.9]))
    img = _angles(np.array([1.3, 0.3, 0.6, 0.9]))
    findings = ["a", "a", "b", "c"]
    pq = per_query_finding_metrics(img, txt, findings, ks=(1, 2, 4))
    ideal4 = 1 + 1 / math.log2(3)
    expected = [0.0, 0.0, (1 / math.log2(4) + 1 / math.log2(5)) / ideal4]
    np.testing.assert_allclose(pq.i2t.ndcg[0], expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(pq.i2t.fp[0], [0.0, 0.0, 0.5], atol=1e-15)


def test_all_gains_equal_gives_one_whatever_the_ranking():
    rng = np.random.default_rng(12)
    img, txt, _ = random_case(rng, 40, 8, signal=0.0)
    for same in ("", "edema|nodule"):
        got = finding_metrics(img, txt, [same] * 40, ks=(1, 5, 40))
        for k, v in got.items():
            if k.endswith("_findings"):
                assert v == pytest.approx(1.0, abs=1e-15), (same, k)


def test_exact_tie_is_ordered_pessimistically():
    # images 1 and 2 are the same vector: for text query 0 they tie exactly (above image 0); the gain-0 image
    # must be ranked first
    txt = _angles(np.array([0.0, 1.2, 1.5]))
    img = _angles(np.array([0.7, 0.4, 0.4]))
    findings = ["a", "b", "a"]  # for text 0: image 1 gain 0, image 2 gain 1 (both tied above image 0)
    pq = per_query_finding_metrics(img, txt, findings, ks=(1, 2))
    assert pq.t2i.fp[0, 0] == 0.0
    assert pq.t2i.fp[0, 1] == 0.5
    ideal2 = 1 + 1 / math.log2(3)
    assert pq.t2i.ndcg[0, 1] == pytest.approx((1 / math.log2(3)) / ideal2, rel=1e-14)


def test_two_empty_sets_have_gain_one_and_jaccard_is_exact():
    assert jaccard_gain([], []) == 1.0
    assert jaccard_gain(["a"], []) == 0.0
    assert jaccard_gain(["a", "b"], ["b", "c"]) == 1 / 3
    assert as_finding_sets(["a|b", "", " a | ", ("c",)]) == [
        frozenset({"a", "b"}),
        frozenset(),
        frozenset({"a"}),
        frozenset({"c"}),
    ]


def test_binary_finding_sets_reduce_fp_to_label_precision():
    # finding sets {} (normal) / {"abnormal"}: the gain is the label relevance, the majority rules agree
    # (ties → the larger label / the larger set), so FP@K equals the label P@K of retrieval_metrics exactly
    rng = np.random.default_rng(13)
    img, txt, _ = random_case(rng, 80, 12, n_unique=30)
    labels = rng.integers(0, 2, 80)
    findings = ["abnormal" if y else "" for y in labels]
    lab = retrieval_metrics(img, txt, labels=labels, ks=(1, 5, 10))
    fnd = finding_metrics(img, txt, findings, ks=(1, 5, 10))
    for d in ("i2t", "t2i"):
        for k in (1, 5, 10):
            assert fnd[f"{d}_FP@{k}_findings"] == pytest.approx(lab[f"{d}_P@{k}_label"], abs=1e-12)


def test_text_finding_set_is_the_majority_of_its_rows():
    rng = np.random.default_rng(14)
    txt = np.repeat(unit(rng.standard_normal((2, 6))), [5, 2], axis=0)
    img = unit(rng.standard_normal((7, 6)))
    findings = ["nodule", "", "nodule", "edema", "", "", "edema|nodule"]  # text 0: nodule 2, "" 2, edema 1
    pq = per_query_finding_metrics(img, txt, findings, ks=(1,))
    # tie 2 : 2 between {nodule} and {} → more findings wins; text 1: 1 : 1 → {edema, nodule} (more findings)
    assert pq.text_sets == (frozenset({"nodule"}), frozenset({"edema", "nodule"}))
    assert pq.n_text_finding_conflicts == 2


# ------------------------------------------------------------------------------------------------------
# chance levels, per-query values, bootstrap
# ------------------------------------------------------------------------------------------------------
def _enumerated_chance(txt, findings, k):
    """Expected nDCG@K / FP@K over ALL orderings of the gallery, both directions, by enumeration."""
    n = len(findings)
    keys: dict[tuple[float, ...], int] = {}
    uid = [keys.setdefault(tuple(float(v) for v in row), len(keys)) for row in np.asarray(txt)]
    sets = as_finding_sets(findings)
    pq = per_query_finding_metrics(txt, txt, findings, ks=(1,))  # only for the text sets (majority rule)
    text_sets = pq.text_sets

    def expected(q_set, gallery):
        kk = min(k, len(gallery))
        ideal = sorted((jaccard_gain(q_set, g) for g in gallery), reverse=True)
        idcg = sum(ideal[r] / math.log2(r + 2) for r in range(kk))
        nd, fp, cnt = 0.0, 0.0, 0
        for perm in itertools.permutations(gallery):
            gains = [jaccard_gain(q_set, g) for g in perm[:kk]]
            dcg = sum(gains[r] / math.log2(r + 2) for r in range(kk))
            nd += dcg / idcg if idcg > 0 else 0.0
            fp += sum(gains) / kk
            cnt += 1
        return nd / cnt, fp / cnt

    i2t = [expected(sets[i], list(text_sets)) for i in range(n)]
    t2i = [expected(text_sets[uid[i]], sets) for i in range(n)]
    return {
        f"i2t_nDCG@{k}_findings": np.mean([v[0] for v in i2t]),
        f"i2t_FP@{k}_findings": np.mean([v[1] for v in i2t]),
        f"t2i_nDCG@{k}_findings": np.mean([v[0] for v in t2i]),
        f"t2i_FP@{k}_findings": np.mean([v[1] for v in t2i]),
    }


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_chance_levels_equal_the_enumeration_of_all_orderings(k):
    rng = np.random.default_rng(15)
    txt = unit(rng.standard_normal((5, 4)))[[0, 1, 2, 3, 4, 1]]  # 6 rows, 5 unique texts
    findings = ["nodule", "edema", "", "edema|nodule", "", "edema"]
    got = finding_chance_levels(txt, findings, ks=(k,))
    want = _enumerated_chance(txt, findings, k)
    assert set(got) == set(want)
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-12, abs=1e-12), key


def test_random_embeddings_score_near_chance():
    rng = np.random.default_rng(16)
    n = 1500
    img, txt, findings = random_case(rng, n, 32, signal=0.0)
    got = finding_metrics(img, txt, findings, ks=(10,))
    chance = finding_chance_levels(txt, findings, ks=(10,))
    for key, v in chance.items():
        assert got[key] == pytest.approx(v, abs=0.03), key


def test_row_values_bootstrap_and_paired_difference():
    rng = np.random.default_rng(17)
    img, txt, findings = random_case(rng, 90, 10, n_unique=40)
    patients = np.repeat(np.arange(30), 3)
    pq = per_query_finding_metrics(img, txt, findings, ks=(1, 5))
    vals = pq.row_values()
    assert all(v.shape == (90,) for v in vals.values())
    summary = pq.summary()
    for k, v in vals.items():
        assert summary[k] == pytest.approx(float(np.mean(v)), abs=0)
    res = finding_metrics(img, txt, findings, ks=(1, 5), patient_ids=patients, n_boot=200, seed=3)
    for k in vals:
        assert res[f"{k}_lo"] <= res[k] <= res[f"{k}_hi"], k
    assert res == finding_metrics(img, txt, findings, ks=(1, 5), patient_ids=patients, n_boot=200, seed=3)
    worse = per_query_finding_metrics(unit(rng.standard_normal(img.shape)), txt, findings, ks=(1, 5))
    diff = paired_difference(worse.row_values(), vals, patients, n_boot=200, seed=0)
    assert diff["i2t_nDCG@5_findings"]["diff"] == pytest.approx(
        float(np.mean(vals["i2t_nDCG@5_findings"]) - np.mean(worse.row_values()["i2t_nDCG@5_findings"]))
    )


# ------------------------------------------------------------------------------------------------------
# input errors
# ------------------------------------------------------------------------------------------------------
def test_input_errors_are_clear():
    rng = np.random.default_rng(18)
    img, txt, findings = random_case(rng, 10, 4)
    with pytest.raises(ValueError, match="one entry per row"):
        finding_metrics(img, txt, findings[:-1])
    with pytest.raises(ValueError, match="positive integers"):
        finding_metrics(img, txt, findings, ks=(0, 5))
    with pytest.raises(ValueError, match="positive integers"):
        finding_metrics(img, txt, findings, ks=())
    with pytest.raises(ValueError, match="same shape"):
        finding_metrics(img[:9], txt, findings)
    with pytest.raises(ValueError, match="row 3"):
        finding_metrics(img, txt, findings[:3] + [None] + findings[4:])
    with pytest.raises(ValueError, match="non-string tag"):
        finding_metrics(img, txt, [{"a", 1}] + findings[1:])
    with pytest.raises(ValueError, match="not a single string"):
        finding_metrics(img, txt, "a|b")
    with pytest.raises(ValueError, match="patient_ids"):
        finding_metrics(img, txt, findings, n_boot=10)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        finding_metrics(img, txt, findings, patient_ids=np.arange(9), n_boot=10)
    with pytest.raises(ValueError, match="not L2-normalised"):
        finding_metrics(img * 2, txt, findings)
    with pytest.raises(ValueError, match="chunk_size"):
        finding_metrics(img, txt, findings, chunk_size=0)
