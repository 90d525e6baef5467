"""cxrlib.evaluation: the comparison steps of notebooks 02 and 03, on small constructed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.config import LossConfig, ProjectorConfig, TrainConfig
from cxrlib.embeddings import Embeddings
from cxrlib.evaluation import (
    ablation_configs,
    ablation_vs_backbone,
    balance_table,
    classifier_summary,
    compare_with_chance,
    embedding_sets,
    evaluate_spaces,
    paired_comparison,
    paired_verdict_lines,
    pick_threshold,
    run_loss_ablation,
    summarize_ablation,
    table_keys,
    text_shortcuts,
    token_lengths,
    truncation_table,
    weight_sanity,
)
from cxrlib.metrics import retrieval_metrics


def _rows(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"i{k:03d}" for k in range(n)],
            "patient_id": [f"p{k // 2:03d}" for k in range(n)],
            "label": rng.integers(0, 2, n),
            "split": np.array(["train", "val", "test", "test"])[np.arange(n) % 4],
        }
    )


def _space(rows: pd.DataFrame, dim: int = 8, seed: int = 0) -> Embeddings:
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(len(rows), dim)).astype(np.float32)
    txt = (img + 0.5 * rng.normal(size=img.shape)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return Embeddings(img, txt, rows["image_id"].to_numpy(), {})


def test_table_keys():
    assert table_keys([1, 5]) == [
        "i2t_R@1",
        "i2t_R@5",
        "t2i_R@1",
        "t2i_R@5",
        "i2t_P@5_label",
        "t2i_P@5_label",
        "i2t_mAP@5_label",
        "t2i_mAP@5_label",
    ]


def test_embedding_sets_follow_the_manifest_rows():
    rows = _rows()
    space = _space(rows)
    train, test = embedding_sets(rows, space, ("train", "test"))
    part = rows[rows["split"] == "test"]
    assert len(test) == len(part) and np.array_equal(test.labels, part["label"].to_numpy())
    assert np.array_equal(test.image, space.select(part["image_id"]).image)
    assert len(train) == (rows["split"] == "train").sum()


def test_evaluate_spaces_equals_retrieval_metrics_on_the_rows():
    rows = _rows()
    part = rows[rows["split"] == "test"].reset_index(drop=True)
    space = _space(rows)
    got = evaluate_spaces({"a": space}, part, [1, 5], n_boot=10, seed=3)["a"]
    e = space.select(part["image_id"])
    want = retrieval_metrics(
        e.image,
        e.text,
        labels=part["label"].to_numpy(),
        ks=[1, 5],
        patient_ids=part["patient_id"].to_numpy(),
        n_boot=10,
        seed=3,
    )
    assert got == want


def test_compare_with_chance():
    res = {"x": {"i2t_R@5": 0.3, "t2i_R@5": 0.2, "i2t_P@5_label": 0.7, "t2i_P@5_label": 0.6}}
    chance = {"i2t_R@5": 0.1, "t2i_R@5": 0.1, "i2t_P@5_label": 0.5, "t2i_P@5_label": 0.5}
    assert compare_with_chance(res, chance, 5)[0].count("vs chance") == 4


def test_balance_is_the_gap_of_chance_normalised_recalls():
    res = {"m": {"i2t_R@5": 0.55, "t2i_R@5": 0.40, "i2t_R@10": 0.7, "t2i_R@10": 0.7}}
    chance = {"i2t_R@5": 0.1, "t2i_R@5": 0.25, "i2t_R@10": 0.2, "t2i_R@10": 0.4}
    t = balance_table(res, chance, [5, 10])
    assert t.loc["m", "i2t_norm@5"] == pytest.approx(0.5) and t.loc["m", "t2i_norm@5"] == pytest.approx(0.2)
    assert t.loc["m", "gap@5"] == pytest.approx(0.3) and t.loc["m", "gap@10"] == pytest.approx(0.625 - 0.5)
    assert t.loc["m", "mean |gap|"] == pytest.approx((0.3 + 0.125) / 2)
    perfect = balance_table({"p": {"i2t_R@5": 1.0, "t2i_R@5": 1.0}}, chance, [5])
    assert perfect.loc["p", "gap@5"] == 0.0


def test_paired_comparison_finds_a_real_gain_and_no_difference_against_itself():
    rows = _rows(200, seed=3)
    good = _space(rows, seed=4)
    rng = np.random.default_rng(5)
    noisy_txt = good.text + 1.5 * rng.normal(size=good.text.shape).astype(np.float32)
    noisy_txt /= np.linalg.norm(noisy_txt, axis=1, keepdims=True)
    bad = Embeddings(good.image, noisy_txt, good.image_ids, {})
    keys = ["i2t_R@5", "t2i_R@5", "i2t_median_rank"]
    table = paired_comparison({"bad": bad, "good": good}, rows, "bad", "good", [1, 5], keys, 200, 0)
    assert table.loc["i2t_R@5", "verdict"] == "better" and table.loc["i2t_median_rank", "verdict"] == "better"
    assert table.loc["i2t_R@5", "change"] > 0 > table.loc["i2t_median_rank", "change"]
    same = paired_comparison({"a": good, "b": good}, rows, "a", "b", [1, 5], keys, 50, 0)
    assert (same["verdict"] == "no difference shown").all() and (same["change"] == 0).all()
    lines = paired_verdict_lines(table, "good")
    assert lines[0].startswith("good is better") and "i2t_R@5" in lines[0]
    with pytest.raises(ValueError, match="n_boot >= 1"):
        paired_comparison({"a": good, "b": good}, rows, "a", "b", [1, 5], keys, 0, 0)


def test_pick_threshold_is_the_best_accuracy_cut():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=60)
    labels = (logits + 0.8 * rng.normal(size=60) > 0).astype(int)
    thr = pick_threshold(logits, labels)
    best = max(np.mean((logits >= c) == labels) for c in logits)
    assert np.mean((logits >= thr) == labels) == best
    s = classifier_summary(logits, labels, logits, labels)
    from sklearn.metrics import roc_auc_score

    assert s["auc"] == roc_auc_score(labels, logits) and s["accuracy"] == best


def test_ablation_runs_summary_and_comparison_with_the_backbone():
    rows = _rows(80)
    train, val, test = embedding_sets(rows, _space(rows), ("train", "val", "test"))
    keys = ["i2t_R@5", "t2i_R@5"]
    runs = run_loss_ablation(
        train,
        val,
        test,
        ProjectorConfig(in_dim=8, out_dim=8, hidden_dim=8, depth=1),
        LossConfig(),
        TrainConfig(epochs=1, batch_size=8, patience=None, eval_ks=(1, 5, 10)),
        seeds=[0, 1],
        keys=keys,
        ks=[1, 5],
        progress=False,
    )
    assert list(runs["config"].unique()) == list(ablation_configs(LossConfig()))
    assert len(runs) == 8 and set(keys) <= set(runs.columns)
    summary, table = summarize_ablation(runs, keys)
    m = runs[runs["config"] == "CLIP only"]["i2t_R@5"]
    assert summary.loc["CLIP only", ("i2t_R@5", "mean")] == m.mean()
    assert table.loc["CLIP only", "i2t_R@5"] == f"{m.mean():.3f} ± {m.std():.3f}"
    base = {"i2t_R@5": 2.0, "t2i_R@5": -1.0}  # above every mean / below every mean
    vs, lines = ablation_vs_backbone(summary, base, keys, "bb")
    assert (vs["i2t_R@5 - bb"] < 0).all() and (vs["t2i_R@5 - bb"] > 0).all()
    assert all("i2t_R@5" in line and "t2i_R@5" not in line for line in lines[:4])


def test_ablation_reuses_a_given_result_with_the_same_fingerprint_and_nothing_else(monkeypatch):
    import cxrlib.evaluation as ev
    from cxrlib.training import train_projector

    rows = _rows(80)
    train, val, test = embedding_sets(rows, _space(rows), ("train", "val", "test"))
    proj = ProjectorConfig(in_dim=8, out_dim=8, hidden_dim=8, depth=1)
    tc = TrainConfig(epochs=2, batch_size=8, patience=None, eval_ks=(1, 5, 10))
    kw = {"seeds": [0, 1], "keys": ["i2t_R@5", "t2i_R@5"], "ks": [1, 5], "progress": False}
    fresh = run_loss_ablation(train, val, test, proj, LossConfig(), tc, **kw)
    # notebook 03's main training: "all three" with seed 0; another seed's run must not stand in for seed 1
    main = train_projector(train, val, proj, LossConfig(), tc, progress=False)
    other = train_projector(train, val, proj, LossConfig(), tc.replace(seed=7), progress=False)
    calls = []

    def counted(*a, **k):
        calls.append(a[3:5])
        return train_projector(*a, **k)

    monkeypatch.setattr(ev, "train_projector", counted)
    reused = run_loss_ablation(train, val, test, proj, LossConfig(), tc, reuse=[main, other], **kw)
    pd.testing.assert_frame_equal(reused, fresh, check_exact=True)
    assert len(calls) == 7 and (LossConfig(), tc) not in calls  # 8 runs, the one given was not trained again


def test_token_lengths_count_what_the_tokenizer_would_cut():
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    texts = ["No acute cardiopulmonary abnormality.", "word " * 100, ""]
    n = token_lengths(tok, texts, probe=256, batch_size=2)
    assert n.tolist() == [len(tok.encode(t)) + 2 for t in texts]  # + start and end tokens
    assert token_lengths(tok, ["word " * 400], probe=128).tolist() == [128]


def test_truncation_table_by_label():
    lengths = {"clip": np.array([10, 80, 90, 20]), "long": np.array([10, 80, 90, 20])}
    t = truncation_table(lengths, {"clip": 77, "long": 256}, np.array([0, 1, 1, 0]))
    assert t.loc[("clip", "abnormal"), "truncated"] == 2 and t.loc[("clip", "normal"), "truncated"] == 0
    assert t.loc[("clip", "all"), "% truncated"] == 50.0 and t.loc[("long", "all"), "truncated"] == 0
    assert t.loc[("clip", "abnormal"), "max tokens"] == 90


def test_weight_sanity_flags_random_and_untrained_weights():
    chance = {"i2t_R@10": 0.03, "t2i_R@10": 0.13}
    results = {
        "good": {"i2t_R@10": 0.30, "i2t_R@10_lo": 0.26, "t2i_R@10": 0.44, "t2i_R@10_lo": 0.39},
        "random": {"i2t_R@10": 0.025, "i2t_R@10_lo": 0.01, "t2i_R@10": 0.17, "t2i_R@10_lo": 0.12},
    }
    meta = {
        "good": {"logit_scale": 14.27, "bundle": {"weights": "CLIP-loss pretraining"}},
        "random": {"logit_scale": 1 / 0.07, "bundle": {"weights": "random init"}},
    }
    table, warnings = weight_sanity(results, chance, meta, 10)
    assert (
        table.loc["good", "verdict"] == "looks trained"
        and table.loc["random", "verdict"] == "CHECK THE WEIGHTS"
    )
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: random:")
    assert (
        "random init" in warnings[0]
        and "untrained 1/0.07" in warnings[0]
        and "not above chance" in warnings[0]
    )
    # a point value at chance without CIs is flagged too
    _, w = weight_sanity({"x": {"i2t_R@10": 0.03, "t2i_R@10": 0.13}}, chance, {}, 10)
    assert w and "not above chance" in w[0]
    # a bundle that says it is near chance by design is noted in the table, not warned about
    meta["random"]["bundle"]["near_chance_by_design"] = "the chance reference"
    table, warnings = weight_sanity(results, chance, meta, 10)
    assert table.loc["random", "verdict"] == "near chance by design" and not warnings
    assert (
        "not above chance" in table.loc["random", "note"]
        and "the chance reference" in table.loc["random", "note"]
    )
    assert table.loc["good", "note"] == ""


def test_text_shortcuts_find_a_length_shortcut_and_words_that_give_the_label_away():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    texts = [("effusion seen " * (3 + 2 * int(v))) if v else "clear lungs no acute disease" for v in y]
    t = text_shortcuts(texts[:120], y[:120], texts[120:], y[120:])
    assert t.loc["bag of words", "test AUC"] == 1.0 and t.loc["report length (words)", "test AUC"] == 1.0
    same_length = ["effusion present" if v else "lungs clear" for v in y]
    t2 = text_shortcuts(same_length[:120], y[:120], same_length[120:], y[120:])
    assert t2.loc["report length (words)", "test AUC"] == 0.5 and t2.loc["bag of words", "test AUC"] == 1.0
