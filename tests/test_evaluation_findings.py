"""cxrlib.evaluation's finding-level glue (finding sets from the manifest, tables, paired verdicts), on small
constructed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.embeddings import Embeddings
from cxrlib.evaluation import (
    evaluate_findings,
    finding_keys,
    finding_relevance_table,
    finding_sets,
    paired_finding_comparison,
    paired_verdict_lines,
)
from cxrlib.metrics import (
    UNSPECIFIED_ABNORMALITY,
    finding_chance_levels,
    finding_metrics,
)
from cxrlib.metrics.reference import reference_finding_metrics

TAGS = np.array(["", "nodule", "edema", "cardiomegaly|edema", "atelectasis", "edema|nodule"])


def _rows(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tags = TAGS[rng.integers(0, TAGS.size, n)]
    return pd.DataFrame(
        {
            "image_id": [f"i{k:03d}" for k in range(n)],
            "patient_id": [f"p{k // 3:03d}" for k in range(n)],
            "label": (tags != "").astype(np.int64),
            "tags": tags,
        }
    )


def _space(rows: pd.DataFrame, noise: float, dim: int = 8, seed: int = 0) -> Embeddings:
    """Texts by finding set (+ a little per-row noise), images = texts + ``noise``: less noise, better."""
    rng = np.random.default_rng(seed)
    centre = {t: rng.normal(size=dim) for t in TAGS}
    txt = np.stack([centre[t] for t in rows["tags"]]) + 0.3 * rng.normal(size=(len(rows), dim))
    img = txt + noise * rng.normal(size=txt.shape)
    txt = (txt / np.linalg.norm(txt, axis=1, keepdims=True)).astype(np.float32)
    img = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)
    return Embeddings(img, txt, rows["image_id"].to_numpy(), {})


def test_finding_sets_from_tags_with_ignore():
    rows = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "label": [1, 0, 1],
            "tags": ["edema|nodule", "support_devices", "edema"],
        }
    )
    assert finding_sets(rows) == [
        frozenset({"edema", "nodule"}),
        frozenset({"support_devices"}),
        frozenset({"edema"}),
    ]
    assert finding_sets(rows, ignore=("support_devices",))[1] == frozenset()


def test_untagged_abnormal_rows_are_marked_or_refused():
    rows = pd.DataFrame({"image_id": ["a", "b", "c"], "label": [1, 0, 1], "tags": ["edema", "", ""]})
    with pytest.warns(UserWarning, match=r"1 abnormal row\(s\) have no finding tag \(e.g. \['c'\]\)"):
        sets = finding_sets(rows)
    assert sets == [frozenset({"edema"}), frozenset(), frozenset({UNSPECIFIED_ABNORMALITY})]
    with pytest.raises(ValueError, match="untagged_abnormal='mark'"):
        finding_sets(rows, untagged_abnormal="error")
    no_tags = rows.assign(tags="")
    with pytest.raises(ValueError, match="tags_col"):
        finding_sets(no_tags)
    with pytest.raises(ValueError, match="no 'tags' column"):
        finding_sets(rows.drop(columns="tags"))
    with pytest.raises(ValueError, match="'mark' or 'error'"):
        finding_sets(rows, untagged_abnormal="drop")


def test_finding_keys():
    assert finding_keys([1, 5]) == [
        "i2t_nDCG@1_findings",
        "t2i_nDCG@1_findings",
        "i2t_nDCG@5_findings",
        "t2i_nDCG@5_findings",
        "i2t_FP@5_findings",
        "t2i_FP@5_findings",
    ]


def test_evaluate_findings_selects_rows_and_matches_the_reference():
    rows = _rows()
    space = _space(rows, noise=0.5)
    shuffled = Embeddings(space.image[::-1], space.text[::-1], space.image_ids[::-1], {})  # other row order
    part = rows.iloc[5:45].reset_index(drop=True)
    res = evaluate_findings({"m": shuffled}, part, ks=(1, 5), n_boot=0, seed=0)
    e = space.select(part["image_id"])
    ref = reference_finding_metrics(e.image, e.text, part["tags"].tolist(), (1, 5))
    for k, v in ref.items():
        assert res["m"][k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_finding_relevance_table_with_cis_and_chance_row():
    rows = _rows()
    spaces = {"good": _space(rows, noise=0.2), "bad": _space(rows, noise=3.0, seed=1)}
    res = evaluate_findings(spaces, rows, ks=(1, 5), n_boot=50, seed=0)
    chance = finding_chance_levels(spaces["good"].text, finding_sets(rows), ks=(1, 5))
    numbers, text = finding_relevance_table(res, chance, ks=(1, 5))
    assert list(text.index) == ["good", "bad", "chance (random ranking)"]
    assert list(text.columns) == finding_keys((1, 5))
    assert text.loc["good", "i2t_nDCG@5_findings"].count("[") == 1  # "0.912 [0.871, 0.950]"
    assert numbers.loc["chance (random ranking)", "t2i_FP@5_findings"] == round(
        chance["t2i_FP@5_findings"], 3
    )
    assert numbers.loc["good", "i2t_nDCG@5_findings"] > numbers.loc["bad", "i2t_nDCG@5_findings"]


def test_paired_finding_comparison_verdicts():
    rows = _rows(n=120)
    spaces = {"bad": _space(rows, noise=3.0, seed=1), "good": _space(rows, noise=0.1)}
    table = paired_finding_comparison(spaces, rows, "bad", "good", ks=(1, 5), n_boot=200, seed=0)
    assert list(table.index) == finding_keys((1, 5))
    assert (table["verdict"] == "better").all()
    fs = finding_sets(rows)
    for name in ("bad", "good"):
        e = spaces[name]
        point = finding_metrics(e.image, e.text, fs, ks=(1, 5))
        assert table[name].tolist() == [round(point[k], 3) for k in table.index]
    back = paired_finding_comparison(spaces, rows, "good", "bad", ks=(1, 5), n_boot=200, seed=0)
    assert (back["verdict"] == "worse").all()
    assert "better (the paired 95 % CI" in paired_verdict_lines(table, "good vs bad")[0]
    same = paired_finding_comparison(spaces, rows, "good", "good", ks=(1,), n_boot=50, seed=0)
    assert (same["verdict"] == "no difference shown").all()
    with pytest.raises(ValueError, match="n_boot >= 1"):
        paired_finding_comparison(spaces, rows, "bad", "good", ks=(1,), n_boot=0, seed=0)
