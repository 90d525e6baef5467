"""Solutions of notebook 01's exercises (data preparation), through the library; SYNTHETIC phantom data.

Run: ``python -m solutions.ex01_data`` (small lab in a temp folder) or ``... --run scratch/me`` (full size).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from solutions._lab import Lab, Range, expect, main

__all__ = ["EXERCISES", "exercise_1", "exercise_2", "exercise_3", "exercise_4", "split_summary"]


def split_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows, patients and % abnormal per split (train/val/test), as notebook 01 prints them."""
    part = manifest[manifest["split"].isin(["train", "val", "test"])]
    g = part.groupby("split")
    out = pd.DataFrame(
        {"rows": g.size(), "patients": g["patient_id"].nunique(), "% abnormal": 100 * g["label"].mean()}
    )
    return out.reindex(["train", "val", "test"])


def exercise_1(lab: Lab) -> dict[str, float]:
    """Split ratios 0.8/0.1/0.1: patient counts per split and the abnormal fraction (stratified split)."""
    from cxrlib.data.manifest import patient_split

    # what `--only 01 --param data.split_ratios=[0.8,0.1,0.1]` does: the same corpus, dealt again
    fresh = lab.manifest.assign(split=lab.manifest["split"].where(lab.manifest["split"] == "pretrain", ""))
    seed = lab.settings.run.seed
    before = split_summary(patient_split(fresh, ratios=(0.7, 0.1, 0.2), seed=seed))
    after = split_summary(patient_split(fresh, ratios=(0.8, 0.1, 0.1), seed=seed))
    print(pd.concat({"0.7/0.1/0.2": before, "0.8/0.1/0.1": after}, axis=1).round(1).to_string())
    rows = after["rows"] / after["rows"].sum()
    spread = float(after["% abnormal"].max() - after["% abnormal"].min())
    expect(lab, "test share of rows (0.8/0.1/0.1)", rows["test"], Range((0.07, 0.13), (0.09, 0.11)), "~0.1")
    expect(
        lab,
        "test patients, 0.8/0.1/0.1 vs 0.7/0.1/0.2",
        after.loc["test", "patients"] / before.loc["test", "patients"],
        Range((0.35, 0.65), (0.42, 0.58)),
        "half the test patients",
    )
    expect(
        lab,
        "spread of % abnormal across splits (points)",
        spread,
        Range((0.0, 8.0), (0.0, 3.0)),
        "stratified by label: level across splits",
    )
    return {"test_share": float(rows["test"]), "abnormal_spread": spread}


def exercise_2(lab: Lab) -> dict[str, float]:
    """A row-level split (sklearn's train_test_split): how many patients end up in train AND test?"""
    from sklearn.model_selection import train_test_split

    rows = lab.rows()
    tr, te = train_test_split(rows, test_size=0.2, random_state=lab.settings.run.seed, stratify=rows["label"])
    both = set(tr["patient_id"]) & set(te["patient_id"])
    share = len(both) / te["patient_id"].nunique()
    rows_leaked = float(te["patient_id"].isin(both).mean())
    print(f"    {len(both)} patients in both train and test ({100 * share:.0f} % of the test patients)")
    multi = rows.groupby("patient_id").size().gt(1).mean()
    print(f"    (patients with more than one study: {100 * multi:.0f} %)")
    expect(lab, "patients in both train and test", len(both), Range((20, 200), (150, 300)), "a leak")
    expect(
        lab,
        "share of test rows whose patient is also in train",
        rows_leaked,
        Range((0.2, 0.85), (0.45, 0.8)),
        "follow-up studies of one patient split apart",
    )
    return {"patients_in_both": float(len(both)), "test_rows_leaked": rows_leaked}


def exercise_3(lab: Lab) -> dict[str, float]:
    """``aspect``: identical on square phantom images; on a portrait film, crop cuts the top and bottom."""
    from PIL import Image

    from cxrlib.data.images import load_image
    from cxrlib.paths import resolve

    size = lab.settings.data.image_size
    src = resolve(lab.manifest["image_path"].iloc[0])
    same = np.array_equal(load_image(src, size, "crop"), load_image(src, size, "pad"))
    print(f"    square phantom image: crop == pad: {same}")
    # a portrait film with the shape of a typical MIMIC-CXR-JPG (2544 wide x 3056 high); its rows carry an
    # intensity ramp (top 0, bottom 255), so the rows that survive can be read back from the pixels
    w, h = 2544, 3056
    ramp = np.repeat(np.linspace(0, 255, h)[:, None], w, axis=1).astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="ex01-3-") as folder:
        tmp = Path(folder) / "portrait.png"
        Image.fromarray(ramp, mode="L").save(tmp)
        crop, pad = load_image(tmp, 224, "crop"), load_image(tmp, 224, "pad")
    kept = (float(crop[-1].mean()) - float(crop[0].mean())) / 255.0  # share of the height still visible
    bars = float((pad.max(axis=0) == 0).mean())  # share of the padded columns that are black
    print(
        f"    portrait 2544x3056: crop keeps {100 * kept:.1f} % of the height; pad adds {100 * bars:.1f} % black"
    )
    expect(lab, "crop == pad on a square phantom image", float(same), Range((1, 1), (1, 1)), "square input")
    expect(
        lab, "share of the film's height kept by crop", kept, Range((0.80, 0.86), (0.80, 0.86)), "2544/3056"
    )
    expect(lab, "share of black columns with pad", bars, Range((0.1, 0.25), (0.1, 0.25)), "letterbox")
    return {"crop_equals_pad": float(same), "height_kept": kept, "pad_black_columns": bars}


def exercise_4(lab: Lab) -> dict[str, float]:
    """Reports with ``report_noise``: which findings they miss (always a subtle, first-severity one)."""
    from cxrlib.data.phantom.findings import SUBTLE

    m = lab.manifest
    noisy = m[m["report_noise"]]
    counts = noisy["missed_finding"].value_counts()
    print("    missed findings:", counts.to_dict())
    subtle_ok = all(
        json.loads(d)[f]["severity"] == SUBTLE[f]
        for d, f in zip(noisy["finding_detail"], noisy["missed_finding"], strict=True)
    )
    n_find = noisy[[c for c in m if c.startswith("finding_") and c != "finding_detail"]].sum(axis=1)
    normal_text = float((n_find == 1).mean())  # the only finding was missed: a normal report, label abnormal
    print(f"    every missed finding is at its subtlest severity: {subtle_ok}")
    print(
        f"    noisy rows whose only finding was missed (a normal-sounding report, label 1): {100 * normal_text:.0f} %"
    )
    expect(
        lab, "share of reports with report_noise", len(noisy) / len(m), Range((0.0, 0.05), (0.01, 0.03)), ""
    )
    expect(lab, "missed findings at their subtlest severity", float(subtle_ok), Range((1, 1), (1, 1)), "rule")
    expect(
        lab,
        "noisy rows with a normal-sounding report",
        normal_text,
        Range((0.0, 1.0), (0.2, 0.8)),
        "label noise: the report reads normal",
    )
    return {"noisy": float(len(noisy)), "subtle": float(subtle_ok), "normal_text": normal_text}


EXERCISES = {
    "exercise_1": exercise_1,
    "exercise_2": exercise_2,
    "exercise_3": exercise_3,
    "exercise_4": exercise_4,
}

if __name__ == "__main__":
    argv: Sequence[str] = sys.argv[1:]
    raise SystemExit(main(EXERCISES, argv, "notebook 01 (data preparation)"))
