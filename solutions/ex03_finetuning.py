"""Solutions of notebook 03's exercises 1-5 (the multi-task head), through the library; SYNTHETIC data.

Each trains the projector on the cached ``demo`` embeddings exactly as notebook 03 does (same configs, the
head's CLIP temperature resolved from the backbone) with one setting changed, and scores the test split
without bootstrap. Exercise 6 ("write SupCon yourself") is :mod:`solutions.ex03_supcon`.

Run: ``python -m solutions.ex03_finetuning`` (small lab in a temp folder) or ``... --run scratch/me``.
"""

from __future__ import annotations

import sys

import numpy as np

from solutions._lab import Lab, Range, expect, main

__all__ = ["EXERCISES", "exercise_1", "exercise_2", "exercise_3", "exercise_4", "exercise_5", "imbalanced"]


def _line(name: str, m: dict[str, float]) -> str:
    keys = (
        "i2t_R@10",
        "t2i_R@10",
        "i2t_P@10_label",
        "t2i_P@10_label",
        "i2t_mAP@10_label",
        "t2i_mAP@10_label",
    )
    return f"    {name:>22}: " + " | ".join(f"{k} {m[k]:.3f}" for k in keys)


def exercise_1(lab: Lab) -> dict[str, float]:
    """loss.w_clip = 0 (BCE + SupCon only): R@K falls, label precision stays high."""
    base, no_clip = lab.test_metrics(lab.train()), lab.test_metrics(lab.train(loss={"w_clip": 0.0}))
    print(_line("all three", base))
    print(_line("w_clip = 0", no_clip))
    d_r = no_clip["i2t_R@10"] - base["i2t_R@10"]
    d_r_t = no_clip["t2i_R@10"] - base["t2i_R@10"]
    d_p = no_clip["t2i_P@10_label"] - base["t2i_P@10_label"]
    expect(lab, "change of i2t R@10 without CLIP", d_r, Range((-0.4, 0.02), (-0.3, -0.01)), "falls")
    expect(lab, "change of t2i R@10 without CLIP", d_r_t, Range((-0.4, 0.02), (-0.35, -0.02)), "falls")
    expect(lab, "change of t2i P@10 label without CLIP", d_p, Range((-0.1, 0.1), (-0.05, 0.05)), "stays")
    return {"d_i2t_R@10": d_r, "d_t2i_R@10": d_r_t, "d_t2i_P@10_label": d_p}


def exercise_2(lab: Lab) -> dict[str, float]:
    """supcon_temperature 0.5 vs 0.02: which gives tighter label clusters, which hurts recall."""
    from cxrlib.metrics import cluster_scores

    test = lab.sets()[2]
    out = {}
    for tau in (0.5, 0.07, 0.02):
        r = lab.train(loss={"supcon_temperature": tau})
        m = lab.test_metrics(r)
        img, txt = r.model.project_array(test.image, "image"), r.model.project_array(test.text, "text")
        c = cluster_scores(img, txt, test.labels, k=lab.settings.viz.knn_k, seed=lab.settings.run.seed)
        print(_line(f"tau = {tau}", m) + f" | silhouette_joint {c['silhouette_joint']:.3f}")
        out[tau] = {**m, **c}
    d_sil = out[0.02]["silhouette_joint"] - out[0.5]["silhouette_joint"]
    d_rec = out[0.02]["i2t_R@10"] - out[0.5]["i2t_R@10"]
    expect(
        lab,
        "silhouette_joint, tau 0.02 - tau 0.5",
        d_sil,
        Range((-0.1, 0.6), (0.1, 0.45)),
        "a low temperature pulls each class tighter",
    )
    expect(
        lab,
        "i2t R@10, tau 0.02 - tau 0.5",
        d_rec,
        Range((-0.3, 0.1), (-0.1, 0.02)),
        "tighter classes keep less instance detail",
    )
    return {"d_silhouette_joint": d_sil, "d_i2t_R@10": d_rec}


def exercise_3(lab: Lab) -> dict[str, float]:
    """projector.residual = False: epoch 0 is a random MLP of the backbone space; where does it end?"""
    base, plain_r = lab.train(), lab.train(projector={"residual": False})
    res, plain = base.history, plain_r.history
    start = float(res["monitor"].iloc[0])  # residual epoch 0 == the backbone space
    caught = plain.index[plain["monitor"] >= start]
    epochs = float(plain.loc[caught[0], "epoch"]) if len(caught) else float("inf")
    m_res, m_plain = lab.test_metrics(base), lab.test_metrics(plain_r)
    print(
        f"    validation monitor at epoch 0: residual {start:.3f} (= the backbone), plain MLP "
        f"{plain['monitor'].iloc[0]:.3f}; the plain MLP passes the backbone's value at epoch {epochs:g}"
    )
    print(
        f"    best validation monitor: residual {res['monitor'].max():.3f} (epoch {base.best_epoch}), "
        f"plain {plain['monitor'].max():.3f} (epoch {plain_r.best_epoch})"
    )
    print(_line("residual", m_res))
    print(_line("plain MLP", m_plain))
    expect(
        lab,
        "|epoch-0 monitor, residual - plain|",
        abs(start - float(plain["monitor"].iloc[0])),
        Range((0.0, 0.3), (0.0, 0.05)),
        "a random LayerNorm MLP roughly keeps the neighbourhoods",
    )
    expect(
        lab,
        "best validation monitor, residual - plain",
        float(res["monitor"].max() - plain["monitor"].max()),
        Range((-0.1, 0.2), (-0.03, 0.08)),
        "the two heads peak within a few points of each other; starting at the identity does not decide it",
    )
    return {"epochs_to_catch_up": epochs, "best_gap": float(res["monitor"].max() - plain["monitor"].max())}


def imbalanced(lab: Lab, keep_normal: float = 0.2, seed: int = 0):
    """The train set with only ``keep_normal`` of its normal rows (seeded), and val unchanged."""
    from cxrlib.training import EmbeddingSet

    train, val, _ = lab.sets()
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(train.labels == 0)
    drop = rng.choice(normal, size=int(round((1 - keep_normal) * len(normal))), replace=False)
    keep = np.setdiff1d(np.arange(len(train)), drop)
    part = EmbeddingSet(
        train.image[keep],
        train.text[keep],
        train.labels[keep],
        train.patient_ids[keep],
        name="train (imbalanced)",
    )
    return part, val


def exercise_4(lab: Lab) -> dict[str, float]:
    """Drop 80 % of the normal training rows: pos_weight None vs 'balanced' (AUC, accuracy, mAP@10 label)."""
    from cxrlib.evaluation import classifier_summary

    train, val = imbalanced(lab)
    test = lab.sets()[2]
    print(f"    imbalanced train: {len(train)} pairs, {100 * train.labels.mean():.0f} % abnormal")
    out = {}
    for pw in (None, "balanced"):
        r = lab.train(loss={"pos_weight": pw}, sets=(train, val), tag="imbalanced")
        clf = classifier_summary(
            r.model.logits_array(val.image, "image"),
            val.labels,
            r.model.logits_array(test.image, "image"),
            test.labels,
        )
        m = lab.test_metrics(r)
        print(
            _line(f"pos_weight = {pw}", m)
            + f" | AUC {clf['auc']:.3f}, accuracy {clf['accuracy']:.3f}, best epoch {r.best_epoch}"
        )
        out[str(pw)] = {**m, **clf}
    d_auc = out["balanced"]["auc"] - out["None"]["auc"]
    d_map = out["balanced"]["i2t_mAP@10_label"] - out["None"]["i2t_mAP@10_label"]
    # Early stopping watches retrieval, not the classifier: with pos_weight None the monitor can peak after a
    # couple of epochs, before the imbalanced BCE term has taught the classifier anything (full demo: epoch 2,
    # AUC far below 0.5), while 'balanced' trains on to a good classifier. Retrieval barely moves either way.
    expect(
        lab, "AUC, balanced - None", d_auc, Range((-0.1, 0.1), (-0.03, 0.95)), "the classifier, not retrieval"
    )
    expect(lab, "i2t mAP@10 label, balanced - None", d_map, Range((-0.15, 0.15), (-0.05, 0.05)), "")
    expect(lab, "AUC with pos_weight balanced", out["balanced"]["auc"], Range((0.55, 1.0), (0.85, 1.0)), "")
    return {"d_auc": d_auc, "d_i2t_mAP@10_label": d_map}


def exercise_5(lab: Lab) -> dict[str, float]:
    """Early stopping on i2t_R@5 alone: the best epoch and the label-aware test metrics move."""
    base, only = lab.train(), lab.train(train={"monitor": ["i2t_R@5"]})
    mb, mo = lab.test_metrics(base), lab.test_metrics(only)
    print(f"    best epoch: default monitor {base.best_epoch}, i2t_R@5 only {only.best_epoch}")
    print(_line("default monitor", mb))
    print(_line("i2t_R@5 only", mo))
    d_map = mo["t2i_mAP@10_label"] - mb["t2i_mAP@10_label"]
    expect(lab, "t2i mAP@10 label, R@5 monitor - default", d_map, Range((-0.4, 0.1), (-0.2, 0.02)), "")
    return {
        "best_epoch_default": float(base.best_epoch),
        "best_epoch_r5": float(only.best_epoch),
        "d_map": d_map,
    }


EXERCISES = {
    "exercise_1": exercise_1,
    "exercise_2": exercise_2,
    "exercise_3": exercise_3,
    "exercise_4": exercise_4,
    "exercise_5": exercise_5,
}

if __name__ == "__main__":
    raise SystemExit(main(EXERCISES, sys.argv[1:], "notebook 03 (multi-task fine-tuning)"))
