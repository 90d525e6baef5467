"""Tests of cxrlib.metrics.groups (the one implementation of each grouping rule) and of the package layout:
every public name re-exported, the shared rules used by metrics and viz alike."""

from __future__ import annotations

import numpy as np
import pytest

import cxrlib.metrics as metrics
import cxrlib.viz as viz
from cxrlib.metrics.groups import first_appearance, majority_labels, unique_rows, unique_strings


def test_first_appearance_numbers_groups_in_row_order():
    keys = np.array([7, 3, 7, 9, 3, 1])
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    uid, rows = first_appearance(inv, first)
    np.testing.assert_array_equal(uid, [0, 1, 0, 2, 1, 3])
    np.testing.assert_array_equal(rows, [0, 1, 3, 5])
    assert uid.dtype == rows.dtype == np.int64


def test_unique_strings_and_unique_rows_agree_when_strings_embed_identically():
    texts = ["b", "a", "b", "c", "a", "b"]
    emb = np.eye(4, dtype=np.float32)[[1, 0, 1, 2, 0, 1]]
    emb[4, 3] = -0.0  # -0.0 equals 0.0
    su, sf = unique_strings(texts)
    eu, ef = unique_rows(np.ascontiguousarray(emb))
    np.testing.assert_array_equal(su, [0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(su, eu)
    np.testing.assert_array_equal(sf, ef)
    # different strings with one embedding: two gallery items by string, one by embedding
    su2, _ = unique_strings(["x", "x (truncated tail)"])
    eu2, _ = unique_rows(np.ones((2, 3), np.float32))
    assert su2.tolist() == [0, 1] and eu2.tolist() == [0, 0]


def test_majority_labels_tie_goes_to_larger_label_and_counts_conflicts():
    uid = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    codes = np.array([0, 1, 1, 0, 2, 1, 2, 2])
    lab, conflicts = majority_labels(uid, codes, 4, 3)
    np.testing.assert_array_equal(lab, [1, 2, 1, 2])
    assert lab.dtype == np.int64 and conflicts == 2


def test_package_reexports_every_public_name():
    for mod in (metrics, viz):
        assert len(set(mod.__all__)) == len(mod.__all__)
        for name in mod.__all__:
            assert getattr(mod, name) is not None, name
    for sub in ("retrieval", "bootstrap", "tables", "chance", "clusters", "groups", "reference"):
        for name in getattr(metrics, sub).__all__:
            assert getattr(metrics, name) is getattr(getattr(metrics, sub), name), (sub, name)
    for sub in ("projections", "galleries", "bars"):
        for name in getattr(viz, sub).__all__:
            assert getattr(viz, name) is getattr(getattr(viz, sub), name), (sub, name)
    assert viz.subsample is metrics.subsample  # one stratified sampler for silhouettes and panels


def test_reference_metrics_hand_computed():
    # two unique texts (rows 0 and 1 share one), images equal to their text: perfect retrieval
    txt = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    ref = metrics.reference_metrics(txt, txt, labels=[0, 1, 1], ks=(1,))
    assert ref["i2t_R@1"] == ref["t2i_R@1"] == 1.0 and ref["n_unique_texts"] == 2
    assert ref["n_text_label_conflicts"] == 1  # text 0: labels 0, 1 → tie → label 1
    assert ref["i2t_P@1_label"] == pytest.approx(2 / 3)  # row 0 (label 0) retrieves text 0 (label 1)
