"""Geometry diagnostics against brute-force formulas, and on constructed collapsed vs spread spaces."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cxrlib.metrics import alignment, effective_rank, geometry_scores, label_cosines, uniformity


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_against_brute_force_on_small_inputs():
    rng = np.random.default_rng(0)
    u, v = _unit(rng.normal(size=(7, 5))), _unit(rng.normal(size=(7, 5)))
    y = np.array([0, 1, 0, 1, 1, 0, 0])
    pairs = [(i, j) for i, j in itertools.product(range(7), repeat=2) if i != j]
    want_u = math.log(sum(math.exp(-2 * float(np.sum((u[i] - u[j]) ** 2))) for i, j in pairs) / len(pairs))
    assert uniformity(u) == pytest.approx(want_u, rel=1e-10)
    assert alignment(u, v) == pytest.approx(np.mean([np.sum((u[i] - v[i]) ** 2) for i in range(7)]))
    z, yy = np.concatenate([u, v]), np.concatenate([y, y])
    same = [z[i] @ z[j] for i in range(14) for j in range(14) if i != j and yy[i] == yy[j]]
    diff = [z[i] @ z[j] for i in range(14) for j in range(14) if yy[i] != yy[j]]
    assert label_cosines(u, v, y) == pytest.approx((np.mean(same), np.mean(diff)))
    s = np.linalg.svd(u - u.mean(0), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(u) == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))


def test_collapsed_two_class_space_versus_a_spread_one():
    rng = np.random.default_rng(1)
    n, d = 400, 64
    y = rng.integers(0, 2, n)
    spread_img, spread_txt = _unit(rng.normal(size=(n, d))), _unit(rng.normal(size=(n, d)))
    poles = _unit(rng.normal(size=(2, d)))
    coll_img = _unit(poles[y] + 0.01 * rng.normal(size=(n, d)))
    coll_txt = _unit(poles[y] + 0.01 * rng.normal(size=(n, d)))
    spread = geometry_scores(spread_img, spread_txt, y)
    coll = geometry_scores(coll_img, coll_txt, y)
    assert spread["erank_image"] > 40 and coll["erank_image"] < spread["erank_image"] / 2
    assert spread["uniformity_image"] < -3.5 < coll["uniformity_image"]
    assert abs(spread["cos_same_label"] - spread["cos_diff_label"]) < 0.05
    assert coll["cos_same_label"] > 0.99 and coll["alignment"] < 0.05 < 1.5 < spread["alignment"]
    # all points identical: uniformity 0, effective rank 0 (no direction used)
    same = np.repeat(poles[:1], 10, axis=0)
    assert uniformity(same) == pytest.approx(0.0) and effective_rank(same) == 0.0


def test_subsample_is_seeded_and_bounded():
    rng = np.random.default_rng(2)
    x = _unit(rng.normal(size=(300, 8)))
    y = rng.integers(0, 2, 300)
    a = geometry_scores(x, x, y, max_points=100, seed=3)
    assert a == geometry_scores(x, x, y, max_points=100, seed=3) and a["n_points"] == 100
