"""The paired patient-bootstrap test of a difference between two spaces, on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.metrics import bootstrap_ci, paired_difference


def _patients(n: int) -> np.ndarray:
    return np.repeat(np.arange(n // 2), 2)


def test_identical_spaces_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    a = {"i2t_R@1": rng.integers(0, 2, 200).astype(float)}
    d = paired_difference(a, a, _patients(200), n_boot=200)["i2t_R@1"]
    assert d["diff"] == d["lo"] == d["hi"] == 0.0 and d["p_not_better"] == 1.0


def test_a_gain_hidden_by_overlapping_cis_is_found_by_the_paired_test():
    """b = a with 8 % of the misses turned into hits: the two separate CIs overlap, yet every replicate's
    difference is >= 0 and the paired CI lies above 0."""
    rng = np.random.default_rng(1)
    n = 400
    a = rng.integers(0, 2, n).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[::12]] = 1.0
    pid = _patients(n)
    ci_a = bootstrap_ci({"m": a}, pid, n_boot=300, seed=0)
    ci_b = bootstrap_ci({"m": b}, pid, n_boot=300, seed=0)
    assert ci_b["m_lo"] < ci_a["m_hi"]  # the separate CIs overlap
    d = paired_difference({"m": a}, {"m": b}, pid, n_boot=300, seed=0)["m"]
    assert d["diff"] == pytest.approx(b.mean() - a.mean())
    assert 0 < d["lo"] <= d["diff"] <= d["hi"] and d["p_not_better"] == 0.0


def test_sign_and_ranks_improving_downwards():
    rng = np.random.default_rng(2)
    n = 300
    ranks_a = rng.integers(1, 50, n).astype(float)
    ranks_b = np.maximum(ranks_a - 5, 1)  # b ranks every query higher (better)
    pid = _patients(n)
    d = paired_difference(
        {"t2i_median_rank": ranks_a, "t2i_R@5": (ranks_a <= 5) * 1.0},
        {"t2i_median_rank": ranks_b, "t2i_R@5": (ranks_b <= 5) * 1.0},
        pid,
        n_boot=300,
        median_keys=["t2i_median_rank"],
    )
    med = d["t2i_median_rank"]
    assert med["a"] == np.median(ranks_a) and med["b"] == np.median(ranks_b)
    assert med["hi"] < 0 and med["p_not_better"] == 0.0  # lower rank = better
    assert d["t2i_R@5"]["lo"] > 0
    worse = paired_difference({"m": (ranks_b <= 5) * 1.0}, {"m": (ranks_a <= 5) * 1.0}, pid, n_boot=300)["m"]
    assert worse["hi"] < 0 and worse["p_not_better"] == 1.0


def test_the_two_spaces_must_be_scored_on_the_same_queries():
    with pytest.raises(ValueError, match="same queries"):
        paired_difference({"m": np.zeros(4)}, {"m": np.zeros(6)}, _patients(4), n_boot=10)
    with pytest.raises(KeyError, match="missing"):
        paired_difference({"m": np.zeros(4)}, {"x": np.zeros(4)}, _patients(4), n_boot=10, keys=["m"])
