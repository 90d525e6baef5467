"""MIMIC-CXR-JPG loader (cxrlib.data.mimic_cxr) on a mini tree in the real layout (tests/data/conftest.py)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from cxrlib.data import mimic_cxr as mc
from cxrlib.data.manifest import patient_split, validate_manifest
from cxrlib.data.mimic_cxr import load_mimic_cxr


def _check_split(df: pd.DataFrame) -> None:
    s = patient_split(df, seed=0)
    validate_manifest(s, require_split=True)
    assert (s.groupby("patient_id")["split"].nunique() == 1).all()


# the fixture has 12 images in 9 studies; with uncertain="negative" and frontal_only=True:
NEGATIVE_DROPS = {
    mc.R_VIEW: 3,  # d02 LATERAL, d10 "AP AXIAL", d11 blank
    mc.R_NO_CHEXPERT: 1,  # d07
    mc.R_NO_LABEL: 2,  # d04 (only Pneumonia -1 → 0), d12 (all blank)
    mc.R_NO_TEXT: 1,  # d08: report without FINDINGS/IMPRESSION
    mc.R_NO_REPORT: 1,  # d09
    mc.R_MISSING: 1,  # d05
}


def test_uncertain_negative(mimic_dir):
    df, acc = load_mimic_cxr(mimic_dir)
    assert acc.rows_in == 12 and acc.rows_kept == 3
    assert dict(acc.dropped) == NEGATIVE_DROPS
    acc.check()
    validate_manifest(df)
    assert list(df["image_id"]) == ["d01", "d06", "d03"]  # ordered by study_id
    r = df.set_index("image_id")
    assert r.at["d01", "label"] == 0 and r.at["d01", "tags"] == ""
    assert r.at["d03", "label"] == 1 and r.at["d03", "tags"] == "cardiomegaly"  # Edema -1 → 0
    # Support Devices alone does not make a study abnormal, but it is a tag
    assert r.at["d06", "label"] == 0 and r.at["d06", "tags"] == "support_devices"
    assert r.at["d01", "findings"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The cardiomediastinal silhouette is normal."
    )
    assert r.at["d01", "impression"] == "No acute cardiopulmonary process."
    assert r.at["d01", "text"] == r.at["d01", "findings"] + " " + r.at["d01", "impression"]
    assert r.at["d03", "view"] == "AP" and r.at["d01", "view"] == "PA"
    assert r.at["d01", "split"] == "train" and r.at["d06", "split"] == "test"
    assert r.at["d01", "patient_id"] == "10000032" and r.at["d01", "study_id"] == "50414267"
    assert r.at["d01", "image_path"].endswith("files/p10/p10000032/s50414267/d01.jpg")
    assert r.at["d03", "chexpert_edema"] == -1.0 and np.isnan(r.at["d03", "chexpert_fracture"])
    assert set(df["source"]) == {"mimic_cxr"}
    _check_split(df)


def test_uncertain_positive(mimic_dir):
    df, acc = load_mimic_cxr(mimic_dir, uncertain="positive")
    assert acc.rows_kept == 4 and acc.dropped[mc.R_NO_LABEL] == 1
    acc.check()
    r = df.set_index("image_id")
    assert r.at["d03", "tags"] == "cardiomegaly|edema"
    assert r.at["d04", "label"] == 1 and r.at["d04", "tags"] == "pneumonia"
    assert r.at["d04", "split"] == "val"  # official "validate"
    _check_split(df)


def test_uncertain_exclude(mimic_dir):
    df, acc = load_mimic_cxr(mimic_dir, uncertain="exclude")
    assert acc.rows_kept == 2 and acc.dropped[mc.R_UNCERTAIN] == 2 and acc.dropped[mc.R_NO_LABEL] == 1
    assert sorted(acc.examples[mc.R_UNCERTAIN]) == ["d03 (study 53189527)", "d04 (study 57375967)"]
    acc.check()
    assert list(df["image_id"]) == ["d01", "d06"]


def test_all_views(mimic_dir):
    df, acc = load_mimic_cxr(mimic_dir, frontal_only=False)
    assert mc.R_VIEW not in acc.dropped and acc.rows_kept == 6
    assert df.set_index("image_id")["view"].to_dict() == {
        "d06": "AP",
        "d01": "PA",
        "d02": "LATERAL",
        "d03": "AP",
        "d10": "UNKNOWN",
        "d11": "UNKNOWN",
    }
    validate_manifest(df)


def test_limit_keeps_first_studies(mimic_dir):
    df, acc = load_mimic_cxr(mimic_dir, limit=2)
    # studies in id order: 50414267 (d01, d02), 51000001 (d05, d06) → the other 8 images are beyond the limit
    assert acc.dropped[mc.R_LIMIT] == 8 and acc.rows_kept == 2
    acc.check()
    assert set(df["study_id"]) == {"50414267", "51000001"}


@pytest.mark.parametrize("where", ["zip", "dir"])
def test_reports_from_zip_or_reports_dir(make_mimic, where):
    root = make_mimic(where)
    reports_dir = None if where == "zip" else root.parent / "mimic_reports"
    df, acc = load_mimic_cxr(root, reports_dir=reports_dir)
    assert acc.rows_kept == 3 and dict(acc.dropped) == NEGATIVE_DROPS
    if where == "dir":  # the files/ folder itself is accepted too
        df2, _ = load_mimic_cxr(root, reports_dir=reports_dir / "files")
        pd.testing.assert_frame_equal(df, df2)


def test_no_reports_anywhere_is_an_error(make_mimic):
    root = make_mimic("none")
    with pytest.raises(FileNotFoundError, match="mimic-cxr-reports.zip"):
        load_mimic_cxr(root)


def test_uncompressed_csvs_are_accepted(mimic_dir):
    for name in (mc.METADATA, mc.CHEXPERT, mc.SPLIT):
        with gzip.open(mimic_dir / f"{name}.gz", "rb") as f:
            (mimic_dir / name).write_bytes(f.read())
        (mimic_dir / f"{name}.gz").unlink()
    df, acc = load_mimic_cxr(mimic_dir)
    assert acc.rows_kept == 3


def test_missing_files_name_the_layout(tmp_path, mimic_dir):
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-metadata.csv.gz"):
        load_mimic_cxr(tmp_path / "nothing")
    (mimic_dir / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-chexpert.csv.gz"):
        load_mimic_cxr(mimic_dir)


def test_bad_columns_and_policy(mimic_dir):
    with pytest.raises(ValueError, match="uncertain"):
        load_mimic_cxr(mimic_dir, uncertain="ignore")
    pd.DataFrame({"dicom_id": ["x"], "Split": ["train"]}).to_csv(
        mimic_dir / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression="gzip"
    )
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['split'\]") as e:
        load_mimic_cxr(mimic_dir)
    assert "'Split'" in str(e.value)


def test_images_missing_only_are_counted(mimic_dir):
    shutil.rmtree(mimic_dir / "files" / "p10" / "p10000032" / "s50414267")  # d01 (and d02) images
    # the report .txt sits beside the study folder, so it survives
    df, acc = load_mimic_cxr(mimic_dir)
    assert acc.dropped[mc.R_MISSING] == 2 and acc.rows_kept == 2
    acc.check()


def test_duplicate_metadata_row_is_a_counted_skip(mimic_dir):
    """A repeated dicom_id in the metadata CSV (e.g. two concatenated exports) keeps the first row and counts the
    repeat, instead of failing later on the unique image_id check."""
    path = mimic_dir / mc.METADATA
    meta = pd.read_csv(path.with_name(path.name + ".gz") if not path.exists() else path, dtype=str)
    out = mimic_dir / f"{mc.METADATA}.gz"
    pd.concat([meta, meta[meta["dicom_id"] == "d01"]]).to_csv(out, index=False, compression="gzip")
    df, acc = load_mimic_cxr(mimic_dir)
    acc.check()
    assert acc.rows_in == len(meta) + 1
    assert acc.dropped[mc.R_DUP] == 1 and any("d01" in e for e in acc.examples[mc.R_DUP])
    assert df["image_id"].is_unique and acc.rows_kept == 3
    assert {r: acc.dropped[r] for r in NEGATIVE_DROPS} == NEGATIVE_DROPS
