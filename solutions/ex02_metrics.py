"""Solutions of notebook 02's exercises (baselines and metrics), through the library; SYNTHETIC phantom data.

Run: ``python -m solutions.ex02_metrics`` (small lab in a temp folder) or ``... --run scratch/me`` (full size).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

from solutions._lab import Lab, Range, embed_baselines, expect, full_only, isolated, main

__all__ = [
    "EXERCISES",
    "exercise_1",
    "exercise_2",
    "exercise_3",
    "exercise_4",
    "i2t_recall_at_1_by_hand",
]


def i2t_recall_at_1_by_hand(image: np.ndarray, text: np.ndarray, merge_duplicates: bool) -> float:
    """Image->text R@1 of paired unit vectors ``image``/``text`` (N, D), ties counted pessimistically.

    ``merge_duplicates=False``: the gallery is all N report rows, so an identical copy of the own report
    ties with it and is ranked first. ``True``: identical rows are one gallery item (the library's rule).
    """
    img = image.astype(np.float64)
    txt = text.astype(np.float64)
    if merge_duplicates:
        gallery, own = np.unique(txt, axis=0, return_inverse=True)
        own = own.reshape(-1)
    else:
        gallery, own = txt, np.arange(txt.shape[0])
    scores = img @ gallery.T  # (N, G)
    best = scores[np.arange(len(own)), own]
    # rank = 1 + number of OTHER gallery items scoring >= the own one (pessimistic ties)
    rank = 1 + (scores >= best[:, None]).sum(axis=1) - 1
    return float(np.mean(rank == 1))


def _test_space(lab: Lab, name: str | None = None):
    rows = lab.rows("test")
    return rows, lab.space(name).select(rows["image_id"])


def exercise_1(lab: Lab) -> dict[str, float]:
    """R@1 with plain numpy, without merging identical reports: lower than the table's i2t R@1."""
    from cxrlib.metrics import retrieval_metrics

    rows, e = _test_space(lab)
    naive = i2t_recall_at_1_by_hand(e.image, e.text, merge_duplicates=False)
    merged = i2t_recall_at_1_by_hand(e.image, e.text, merge_duplicates=True)
    lib = retrieval_metrics(e.image, e.text, ks=(1,))["i2t_R@1"]
    shared = float(rows["text"].duplicated(keep=False).mean())
    print(f"    by hand, duplicates kept: {naive:.3f} | merged: {merged:.3f} | library: {lib:.3f}")
    print(f"    test rows whose report text occurs more than once: {100 * shared:.0f} %")
    expect(lab, "by hand (merged) - library", abs(merged - lib), Range((0, 1e-9), (0, 1e-9)), "same rule")
    expect(lab, "library - by hand (duplicates kept)", lib - naive, Range((0.0, 0.2), (0.005, 0.1)), ">= 0")
    expect(lab, "share of rows with a shared text", shared, Range((0.2, 0.8), (0.3, 0.6)), "normal reports")
    return {"naive": naive, "merged": merged, "library": lib, "shared": shared}


def _widths(m: dict[str, float], keys: list[str]) -> np.ndarray:
    return np.array([m[f"{k}_hi"] - m[f"{k}_lo"] for k in keys])


def exercise_2(lab: Lab) -> dict[str, float]:
    """n_boot 200 vs 1000: the CIs barely move; resampling rows instead of patients narrows them (wrongly)."""
    from cxrlib.evaluation import table_keys
    from cxrlib.metrics import retrieval_metrics

    rows, e = _test_space(lab)
    keys = table_keys(lab.settings.eval.ks)
    pid = rows["patient_id"].to_numpy()
    lab_ = rows["label"].to_numpy()
    seed = lab.settings.run.seed
    w200 = _widths(retrieval_metrics(e.image, e.text, lab_, patient_ids=pid, n_boot=200, seed=seed), keys)
    w1000 = _widths(retrieval_metrics(e.image, e.text, lab_, patient_ids=pid, n_boot=1000, seed=seed), keys)
    rows_only = np.arange(len(rows))
    wrow = _widths(
        retrieval_metrics(e.image, e.text, lab_, patient_ids=rows_only, n_boot=1000, seed=seed), keys
    )
    change = float(np.median(np.abs(w1000 / w200 - 1)))
    is_label = np.array([k.endswith("_label") for k in keys])
    ratio = float(np.median((wrow / w1000)[is_label]))
    ratio_r = float(np.median((wrow / w1000)[~is_label]))
    for k, a, b, c in zip(keys, w200, w1000, wrow, strict=True):
        print(f"    {k:>17}: CI width {a:.3f} (200) -> {b:.3f} (1000); rows resampled: {c:.3f}")
    expect(lab, "median |relative change| of CI width, 200 -> 1000", change, Range((0, 0.3), (0, 0.12)), "MC")
    print(f"    CI width, rows / patients resampled: label metrics {ratio:.2f}, recall {ratio_r:.2f}")
    expect(
        lab,
        "label metrics: CI width ratio, rows / patients resampled",
        ratio,
        Range((0.5, 1.1), (0.7, 0.95)),
        "a patient's studies share a label: resampling rows understates the spread",
    )
    return {"width_change": change, "row_vs_patient_label": ratio, "row_vs_patient_recall": ratio_r}


@full_only("it pretrains a demo backbone (minutes of CPU); run it with --run on an isolated demo run")
def exercise_3(lab: Lab) -> dict[str, float]:
    """A demo backbone pretrained for 3 epochs: how much of its advantage over demo-random survives?"""
    from cxrlib.embeddings import load_registered
    from cxrlib.metrics import retrieval_metrics

    rows, full = _test_space(lab)
    _, rand = _test_space(lab, lab.chance)
    epochs = 3
    s = dataclasses.replace(
        lab.settings,
        demo_backbone=lab.settings.demo_backbone.replace(epochs=epochs),
        eval=lab.settings.eval.replace(backbones=("demo",), also_finetune=()),
    )
    # a folder of its own for the new bundle and its embeddings: the run's `demo` bundle stays as it is
    with tempfile.TemporaryDirectory(prefix="ex02-3-") as tmp, isolated(tmp):
        emb_dir = Path(tmp) / "embeddings"
        embed_baselines(s, lab.manifest, lab.image_cache, emb_dir)
        three = load_registered(emb_dir, "demo").select(rows["image_id"])
    # the comparison means something only when the run's backbone came from the same demo-backbone code
    fields = ("image_size", "context_length", "embed_dim")
    ran, now = full.meta.get("backbone") or {}, three.meta.get("backbone") or {}
    differ = [f"{f} {ran.get(f)} vs {now.get(f)}" for f in fields if ran.get(f) != now.get(f)]
    if differ:
        raise AssertionError(
            f"the run in {lab.root} was made by another version of the demo backbone ({', '.join(differ)}): "
            f"rebuild it (python -m cxrlib.reproduce --profile demo --out {lab.root}) and run this again"
        )
    out = {}
    for key in ("i2t_R@10", "t2i_R@10"):
        v = {
            n: retrieval_metrics(x.image, x.text, ks=(10,))[key]
            for n, x in (("random", rand), ("short", three), ("full", full))
        }
        kept = (v["short"] - v["random"]) / (v["full"] - v["random"])
        print(
            f"    {key}: demo-random {v['random']:.3f} | {epochs} epochs {v['short']:.3f} | "
            f"{lab.settings.demo_backbone.epochs} epochs {v['full']:.3f}  -> {100 * kept:.0f} % of the gain kept"
        )
        out[key] = kept
    why = "a short pretraining keeps part of the image->text gain and little of the text->image gain"
    expect(lab, "share of the i2t R@10 gain kept", out["i2t_R@10"], Range((-0.5, 1.5), (0.3, 0.9)), why)
    expect(lab, "share of the t2i R@10 gain kept", out["t2i_R@10"], Range((-0.5, 1.5), (-0.05, 0.4)), why)
    return out


def exercise_4(lab: Lab) -> dict[str, float]:
    """K up to 50: label precision P@K falls slowly with K (label neighbourhoods are wide)."""
    from cxrlib.metrics import chance_levels, retrieval_metrics

    rows, e = _test_space(lab)
    ks = (1, 5, 10, 50)
    m = retrieval_metrics(e.image, e.text, rows["label"].to_numpy(), ks=ks)
    ch = chance_levels(e.text, rows["label"].to_numpy(), ks)
    for d in ("i2t", "t2i"):
        print(
            f"    {d} P@K_label: "
            + ", ".join(f"K={k} {m[f'{d}_P@{k}_label']:.3f}" for k in ks)
            + f"  (chance {ch[f'{d}_P@10_label']:.3f})"
        )
    drop = {d: m[f"{d}_P@10_label"] - m[f"{d}_P@50_label"] for d in ("i2t", "t2i")}
    expect(lab, "i2t P@10 - P@50 (label)", drop["i2t"], Range((-0.1, 0.2), (-0.02, 0.15)), "slow decline")
    expect(lab, "t2i P@10 - P@50 (label)", drop["t2i"], Range((-0.1, 0.2), (-0.02, 0.15)), "slow decline")
    expect(
        lab,
        "t2i P@50 above chance",
        m["t2i_P@50_label"] - ch["t2i_P@50_label"],
        Range((0.0, 0.5), (0.2, 0.45)),
        "still label-organised at K=50",
    )
    return {f"{d}_P10_minus_P50": v for d, v in drop.items()}


EXERCISES = {
    "exercise_1": exercise_1,
    "exercise_2": exercise_2,
    "exercise_3": exercise_3,
    "exercise_4": exercise_4,
}

if __name__ == "__main__":
    raise SystemExit(main(EXERCISES, sys.argv[1:], "notebook 02 (baselines and metrics)"))
