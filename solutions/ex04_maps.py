"""Solutions of notebook 04's exercises (maps, cluster scores, galleries), through the library; SYNTHETIC data.

The "after" space is the head trained as in notebook 03 (memoised in the lab); maps use the same
stratified subsample rule as notebook 04 (``viz.max_points`` per modality).

Run: ``python -m solutions.ex04_maps`` (small lab in a temp folder) or ``... --run scratch/me`` (full size).
"""

from __future__ import annotations

import sys

import numpy as np

from solutions._lab import Lab, Range, expect, main

__all__ = [
    "EXERCISES",
    "exercise_1",
    "exercise_2",
    "exercise_3",
    "exercise_4",
    "exercise_5",
    "map_silhouette",
]


def _projected(lab: Lab, loss: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test image and report embeddings after a head trained with ``loss`` changes, and the labels."""
    test = lab.sets()[2]
    r = lab.train(loss=loss)
    return r.model.project_array(test.image, "image"), r.model.project_array(test.text, "text"), test.labels


def map_silhouette(img2d: np.ndarray, txt2d: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of the label in a 2-D map (Euclidean, images and reports together): how separated the
    classes LOOK, as opposed to the silhouette in the original space."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(np.vstack([img2d, txt2d]), np.concatenate([labels, labels])))


def exercise_1(lab: Lab) -> dict[str, float]:
    """Heads without SupCon and without BCE: which cluster score moves most?"""
    from cxrlib.metrics import cluster_scores

    k, seed = lab.settings.viz.knn_k, lab.settings.run.seed
    test = lab.sets()[2]
    rows = {"backbone": cluster_scores(test.image, test.text, test.labels, k=k, seed=seed)}
    for name, loss in (
        ("all three", None),
        ("w_supcon = 0", {"w_supcon": 0.0}),
        ("w_bce = 0", {"w_bce": 0.0}),
    ):
        img, txt, lab_ = _projected(lab, loss)
        rows[name] = cluster_scores(img, txt, lab_, k=k, seed=seed)
    cols = (
        "silhouette_image",
        "silhouette_text",
        "silhouette_joint",
        "knn_acc_image",
        "knn_acc_text",
        "modality_gap",
    )
    for name, c in rows.items():
        print(f"    {name:>13}: " + " | ".join(f"{col} {c[col]:.3f}" for col in cols))
    d_sup = rows["all three"]["silhouette_joint"] - rows["w_supcon = 0"]["silhouette_joint"]
    d_bce = rows["all three"]["silhouette_joint"] - rows["w_bce = 0"]["silhouette_joint"]
    expect(lab, "silhouette_joint lost without SupCon", d_sup, Range((-0.05, 0.8), (0.15, 0.6)), "SupCon")
    expect(lab, "silhouette_joint lost without BCE", d_bce, Range((-0.2, 0.3), (-0.1, 0.1)), "little")
    return {"d_sil_supcon": d_sup, "d_sil_bce": d_bce}


def exercise_2(lab: Lab) -> dict[str, float]:
    """t-SNE perplexity 5 / 30 / 100: the map changes, the silhouette in the original space does not."""
    from cxrlib.metrics import cluster_scores, subsample
    from cxrlib.viz import joint_projection

    img, txt, labels = _projected(lab)
    sel = subsample(labels, lab.settings.viz.max_points, seed=lab.settings.run.seed)
    orig = cluster_scores(img[sel], txt[sel], labels[sel], seed=lab.settings.run.seed)["silhouette_joint"]
    look = {}
    for perp in (5.0, 30.0, 100.0):
        i2, t2 = joint_projection(
            img[sel], txt[sel], method="tsne", seed=lab.settings.run.seed, perplexity=perp
        )
        look[perp] = map_silhouette(i2, t2, labels[sel])
    print(f"    silhouette in the original space: {orig:.3f} (independent of the perplexity)")
    print(
        "    silhouette of the t-SNE map: " + ", ".join(f"perplexity {p:g}: {v:.3f}" for p, v in look.items())
    )
    spread = max(look.values()) - min(look.values())
    expect(lab, "spread of the map silhouette over perplexities", spread, Range((0.0, 1.0), (0.02, 0.6)), "")
    return {"original": orig, "spread": spread, **{f"map_{p:g}": v for p, v in look.items()}}


def exercise_3(lab: Lab) -> dict[str, float]:
    """PCA vs t-SNE of the backbone space: how much each map shows, next to the original-space scores."""
    from sklearn.decomposition import PCA

    from cxrlib.metrics import cluster_scores, subsample
    from cxrlib.viz import joint_projection

    test = lab.sets()[2]
    seed = lab.settings.run.seed
    sel = subsample(test.labels, lab.settings.viz.max_points, seed=seed)
    img, txt, labels = test.image[sel], test.text[sel], test.labels[sel]
    c = cluster_scores(img, txt, labels, k=lab.settings.viz.knn_k, seed=seed)
    sil = {}
    for method in ("pca", "tsne"):
        i2, t2 = joint_projection(img, txt, method=method, seed=seed)
        sil[method] = map_silhouette(i2, t2, labels)
    pca = PCA(n_components=2).fit(np.vstack([img, txt]))
    var2 = float(pca.explained_variance_ratio_.sum())
    print(
        f"    backbone space: k-NN accuracy images {c['knn_acc_image']:.3f}, reports {c['knn_acc_text']:.3f}; "
        f"silhouette_joint (original space) {c['silhouette_joint']:.3f}"
    )
    print(
        f"    map silhouette: PCA {sil['pca']:.3f}, t-SNE {sil['tsne']:.3f}; PCA's 2 axes keep {100 * var2:.0f} % "
        "of the variance"
    )
    expect(lab, "variance kept by 2 PCA axes", var2, Range((0.0, 0.9), (0.4, 0.7)), "the rest is hidden")
    expect(lab, "PCA map silhouette", sil["pca"], Range((-0.2, 0.9), (0.2, 0.5)), "")
    expect(lab, "t-SNE map silhouette", sil["tsne"], Range((-0.2, 0.9), (0.15, 0.45)), "")
    return {"var2": var2, "original": c["silhouette_joint"], **{f"map_{k}": v for k, v in sil.items()}}


def exercise_4(lab: Lab) -> dict[str, float]:
    """The modality gap: moving all reports by one vector leaves every image->report ranking unchanged."""
    from cxrlib.metrics import chance_levels, cluster_scores, retrieval_metrics

    test = lab.sets()[2]
    img = test.image.astype(np.float64)
    txt = test.text.astype(np.float64)
    shift = img.mean(axis=0) - txt.mean(axis=0)  # closes the gap between the centroids
    s_before, s_after = img @ txt.T, img @ (txt + shift).T
    top_before = np.argsort(-s_before, axis=1, kind="stable")[:, :10]
    top_after = np.argsort(-s_after, axis=1, kind="stable")[:, :10]
    # the shift adds img_q . shift, one constant per query, so each ranking is unchanged up to exact ties (identical
    # reports, whose order float rounding may swap): the after-top-10 holds reports with the same before-scores
    kept = np.sort(np.take_along_axis(s_before, top_after, 1), 1)
    same = float(
        np.mean(np.all(np.abs(kept - np.sort(np.take_along_axis(s_before, top_before, 1), 1)) < 1e-9, 1))
    )
    gap = cluster_scores(test.image, test.text, test.labels)["modality_gap"]
    m = retrieval_metrics(test.image, test.text, ks=(10,))
    ch = chance_levels(test.text, test.labels, (10,))
    print(f"    modality gap {gap:.3f}; i2t R@10 {m['i2t_R@10']:.3f} vs chance {ch['i2t_R@10']:.3f}")
    print(
        f"    image queries whose top-10 is unchanged (up to exact ties) after shifting every report by one vector: "
        f"{100 * same:.0f} %"
    )
    expect(
        lab, "share of unchanged top-10 lists", same, Range((0.99, 1.0), (0.99, 1.0)), "a constant per query"
    )
    expect(
        lab, "i2t R@10 / chance", m["i2t_R@10"] / ch["i2t_R@10"], Range((1.0, 50), (4, 15)), "despite the gap"
    )
    return {"unchanged": same, "gap": gap}


def exercise_5(lab: Lab) -> dict[str, float]:
    """pick_queries(rule='random'): the gallery's own-report hits change from draw to draw."""
    from cxrlib.viz import i2t_gallery, pick_queries

    rows = lab.rows("test")
    e = lab.space().select(rows["image_id"])
    labels, ids, texts = rows["label"].to_numpy(), rows["image_id"].to_numpy(), rows["text"].tolist()
    n, k = lab.settings.viz.n_gallery_per_label, lab.settings.viz.gallery_k

    def hits(q: np.ndarray) -> float:
        g = i2t_gallery(q, e.image, e.text, texts, labels, k=k, ids=ids)
        return float(g.groupby("query_row")["exact_report"].any().mean())

    fixed = hits(pick_queries(labels, ids, n_per_label=n))
    drawn = [hits(pick_queries(labels, ids, n_per_label=n, rule="random", seed=s)) for s in range(20)]
    everyone = hits(np.arange(len(rows)))
    print(
        f"    own report in the top {k}: first_by_id {fixed:.2f}; 20 random draws {min(drawn):.2f}..{max(drawn):.2f}; "
        f"all {len(rows)} test queries {everyone:.3f}"
    )
    expect(lab, "max - min over 20 random draws", max(drawn) - min(drawn), Range((0.0, 1.0), (0.25, 1.0)), "")
    return {"first_by_id": fixed, "min": min(drawn), "max": max(drawn), "all": everyone}


def exercise_6(lab: Lab) -> dict[str, float]:
    """Finding-level positives (loss.supcon_positives = 'findings'): different-label pairs less alike (less class
    collapse), at the cost of the binary clusters."""
    from cxrlib.metrics import cluster_scores, geometry_scores

    k, seed = lab.settings.viz.knn_k, lab.settings.run.seed
    out = {}
    for pos in ("label", "findings"):
        img, txt, labels = _projected(lab, {"supcon_positives": pos})
        g, c = geometry_scores(img, txt, labels), cluster_scores(img, txt, labels, k=k, seed=seed)
        m = lab.test_metrics(lab.train(loss={"supcon_positives": pos}))
        out[pos] = {**g, **c, **m}
        print(
            f"    positives = {pos:>8}: effective rank (images) {g['erank_image']:.1f}, cos diff-label "
            f"{g['cos_diff_label']:.3f}, silhouette_joint {c['silhouette_joint']:.3f}, i2t R@10 {m['i2t_R@10']:.3f}, "
            f"t2i R@10 {m['t2i_R@10']:.3f}, i2t mAP@10 label {m['i2t_mAP@10_label']:.3f}"
        )
    d_rank = out["findings"]["erank_image"] - out["label"]["erank_image"]
    d_cos = out["findings"]["cos_diff_label"] - out["label"]["cos_diff_label"]
    d_sil = out["findings"]["silhouette_joint"] - out["label"]["silhouette_joint"]
    d_r10 = out["findings"]["i2t_R@10"] - out["label"]["i2t_R@10"]
    expect(
        lab,
        "different-label cosine, findings - label",
        d_cos,
        Range((-0.6, 0.2), (-0.4, -0.05)),
        "less collapse",
    )
    expect(
        lab, "silhouette_joint, findings - label", d_sil, Range((-0.6, 0.1), (-0.4, -0.05)), "binary clusters"
    )
    expect(
        lab, "effective rank (images), findings - label", d_rank, Range((-20, 40), (-15, 25)), "either way"
    )
    expect(lab, "i2t R@10, findings - label", d_r10, Range((-0.2, 0.3), (-0.1, 0.2)), "about the same")
    return {
        "d_cos_diff_label": d_cos,
        "d_erank_image": d_rank,
        "d_silhouette_joint": d_sil,
        "d_i2t_R@10": d_r10,
    }


EXERCISES = {
    "exercise_1": exercise_1,
    "exercise_2": exercise_2,
    "exercise_3": exercise_3,
    "exercise_4": exercise_4,
    "exercise_5": exercise_5,
    "exercise_6": exercise_6,
}

if __name__ == "__main__":
    raise SystemExit(main(EXERCISES, sys.argv[1:], "notebook 04 (embedding visualisation)"))
