"""Generic CSV loader (cxrlib.data.csv_manifest)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data import csv_manifest as cm
from cxrlib.data.csv_manifest import load_csv
from cxrlib.data.manifest import patient_split, validate_manifest


@pytest.fixture
def csv_dataset(tmp_path, make_image) -> Path:
    root = tmp_path / "mydata"
    for name in ("a.png", "b.png", "h.png", "i.png", "j.png"):
        make_image(root / "imgs" / name, kind="png8")
    outside = make_image(tmp_path / "elsewhere" / "abs.png", kind="png8")
    rows = [
        # path, report, findings, impression, lab, pid, sid, iid, view, split, tags
        ("imgs/a.png", "Heart normal. Lungs clear.", "Heart normal.", "Lungs clear.", "Normal", "P1", "S1", "A",
         "PA", "train", ""),
        ("imgs/b.png", "Cardiomegaly XXXX.", "Cardiomegaly XXXX.", "", "1.0", "P2", "S2", "B", "Lateral",
         "validate", "Cardiomegaly; Effusion"),
        ("imgs/a.png", "   ", "", "", "0", "P3", "S3", "C", "PA", "train", ""),  # empty text
        ("imgs/a.png", "Something.", "Something.", "", "maybe", "P4", "S4", "D", "PA", "train", ""),  # bad label
        ("imgs/missing.png", "Clear.", "Clear.", "", "0", "P5", "S5", "E", "AP", "test", ""),  # no file
        ("imgs/h.png", "Clear.", "Clear.", "", "0", "P6", "S6", "A", "PA", "test", ""),  # duplicate id A
        ("imgs/i.png", "Clear.", "Clear.", "", "0", "P7", "S7", "G", "PA", "holdout", ""),  # unknown split
        (str(outside), "INDICATION: cough.\nFINDINGS: Small left effusion.\nIMPRESSION: Effusion.",
         "Small left effusion.", "Effusion.", "abnormal", "P1", "S8", "H", "frontal", "", "effusion|Pleural"),
        ("imgs/j.png", "No acute disease.", "No acute disease.", "", "", "P9", "S9", "I", "", "", ""),  # blank label
    ]  # fmt: skip
    cols = ["path", "report", "findings", "impression", "lab", "pid", "sid", "iid", "view", "split", "tags"]
    pd.DataFrame(rows, columns=cols).to_csv(root / "pairs.csv", index=False)
    return root / "pairs.csv"


def _load(path, **kw):
    args = dict(
        image_col="path",
        report_col="report",
        label_col="lab",
        patient_col="pid",
        study_col="sid",
        image_id_col="iid",
        view_col="view",
        split_col="split",
        tags_col="tags",
    )
    args.update(kw)
    return load_csv(path, **args)


def test_load_csv_accounting_and_values(csv_dataset):
    df, acc = _load(csv_dataset)
    assert acc.rows_in == 9 and acc.rows_kept == 3
    assert dict(acc.dropped) == {
        cm.R_NO_TEXT: 1,
        cm.R_LABEL: 2,
        cm.R_MISSING: 1,
        cm.R_DUP: 1,
        cm.R_SPLIT: 1,
    }
    assert acc.examples[cm.R_NO_TEXT] == ["data row 3"]
    assert acc.examples[cm.R_LABEL] == ["data row 4 (lab='maybe')", "data row 9 (lab='')"]
    assert acc.examples[cm.R_MISSING] == ["data row 5 (imgs/missing.png)"]
    assert acc.examples[cm.R_DUP] == ["data row 6 (image id 'A')"]
    acc.check()
    validate_manifest(df)
    r = df.set_index("image_id")
    assert list(r.index) == ["A", "B", "H"] and list(r["csv_row"]) == [1, 2, 8]
    assert list(r["label"]) == [0, 1, 1]
    assert list(r["view"]) == ["PA", "LATERAL", "FRONTAL"]
    assert list(r["split"]) == ["train", "val", ""]
    assert r.at["B", "tags"] == "cardiomegaly|effusion" and r.at["H", "tags"] == "effusion|pleural"
    assert r.at["B", "text"] == "Cardiomegaly."
    # a report with headers is split into sections (the INDICATION is left out)
    assert r.at["H", "findings"] == "Small left effusion." and r.at["H", "impression"] == "Effusion."
    assert r.at["H", "text"] == "Small left effusion. Effusion."
    # a report without headers is all findings
    assert r.at["A", "findings"] == "Heart normal. Lungs clear." and r.at["A", "impression"] == ""
    assert Path(r.at["H", "image_path"]).is_absolute() and Path(r.at["A", "image_path"]).is_file()
    assert list(r["patient_id"]) == ["P1", "P2", "P1"]
    s = patient_split(df, seed=0)
    validate_manifest(s, require_split=True)
    assert s.groupby("patient_id")["split"].nunique().max() == 1
    assert s.set_index("image_id").at["H", "split"] == "train"  # P1 already in train: H follows


def test_findings_impression_pair_and_defaults(csv_dataset):
    df, acc = load_csv(csv_dataset, image_col="path", report_col=("findings", "impression"), label_col="lab")
    # no id columns: image id = the path as written; no split column: nothing is skipped for its split
    assert acc.rows_kept == 5 and acc.dropped[cm.R_NO_TEXT] == 1 and cm.R_SPLIT not in acc.dropped
    # row 4 repeats imgs/a.png, but its bad label is checked (and counted) first
    assert acc.dropped[cm.R_LABEL] == 2 and cm.R_DUP not in acc.dropped
    acc.check()
    r = df.set_index("image_id")
    assert r.at["imgs/a.png", "text"] == "Heart normal. Lungs clear."
    assert (df["study_id"] == df["image_id"]).all() and (df["patient_id"] == df["study_id"]).all()
    assert set(df["view"]) == {"UNKNOWN"} and set(df["split"]) == {""} and set(df["source"]) == {"csv"}


def test_custom_label_values(csv_dataset):
    df, acc = _load(csv_dataset, normal_values=("normal", "0", "maybe"))
    assert acc.dropped[cm.R_LABEL] == 1 and acc.rows_kept == 4


def test_missing_columns_are_listed(csv_dataset):
    with pytest.raises(ValueError, match="label_col='Label'") as e:
        _load(csv_dataset, label_col="Label", view_col="View")
    msg = str(e.value)
    assert "view_col='View'" in msg
    assert (
        "['path', 'report', 'findings', 'impression', 'lab', 'pid', 'sid', 'iid', 'view', 'split', 'tags']"
        in msg
    )


def test_images_root_and_bad_arguments(tmp_path, csv_dataset, make_image):
    # images_root moves the base of relative paths: nothing is found there
    df, acc = _load(csv_dataset, images_root=tmp_path / "empty")
    assert acc.rows_kept == 1 and acc.dropped[cm.R_MISSING] == 3  # only the absolute path survives
    with pytest.raises(ValueError, match="both normal_values and abnormal_values"):
        _load(csv_dataset, normal_values=("1",))
    with pytest.raises(ValueError, match="report_col"):
        _load(csv_dataset, report_col=("findings",))
    with pytest.raises(FileNotFoundError, match="data/README.md"):
        _load(tmp_path / "no.csv")


# --------------------------------------------------------------------------------------------------
# blank patient ids, unreadable files
# --------------------------------------------------------------------------------------------------


def _with_blank_patients(csv_dataset: Path) -> Path:
    df = pd.read_csv(csv_dataset, dtype=str, keep_default_na=False)
    df.loc[df["iid"] == "B", "pid"] = ""  # study S2 has no other row: its own patient
    df.loc[df["iid"] == "E", "pid"] = ""  # skipped anyway (image missing): not reported
    extra = {c: "" for c in df.columns} | {  # another image of study S1 (patient P1), patient left blank
        "path": "imgs/i.png", "report": "Clear.", "lab": "0", "sid": "S1", "iid": "K", "split": "train",
    }  # fmt: skip
    out = csv_dataset.with_name("blank_pid.csv")
    pd.concat([df, pd.DataFrame([extra])], ignore_index=True).to_csv(out, index=False)
    return out


def test_blank_patient_ids_are_refused_by_default_naming_the_rows(csv_dataset):
    """Fault 5: a blank patient id must not silently become a patient of its own."""
    path = _with_blank_patients(csv_dataset)
    with pytest.raises(ValueError) as err:
        _load(path)
    msg = str(err.value)
    assert str(path) in msg and "2 row(s) have a blank patient id in column 'pid'" in msg
    assert "data row 2 (image id 'B')" in msg and "data row 10 (image id 'K')" in msg and "'E'" not in msg
    assert "blank_patient='own_patient'" in msg and "train and test" in msg
    with pytest.raises(ValueError, match="blank_patient must be one of"):
        _load(path, blank_patient="ignore")


def test_blank_patient_ids_own_patient_option_is_counted(csv_dataset):
    df, acc = _load(_with_blank_patients(csv_dataset), blank_patient="own_patient")
    r = df.set_index("image_id")
    assert r.at["B", "patient_id"] == "blank-patient:S2"  # one patient for its study
    assert r.at["K", "patient_id"] == "P1"  # its study names the patient elsewhere
    assert dict(acc.noted) == {cm.N_OWN_PATIENT: 1, cm.N_PATIENT_FROM_STUDY: 1}
    assert acc.examples[cm.N_OWN_PATIENT] == ["data row 2 (image id 'B')"]
    assert acc.rows_in == 10 and acc.rows_kept == 4 and list(r.index) == ["A", "B", "H", "K"]
    acc.check()
    table = acc.to_frame()
    assert f"kept, of which: {cm.N_OWN_PATIENT}" in set(table["step"])
    assert "1 kept with" in str(acc)
    s = patient_split(df, seed=0)
    assert s.groupby("patient_id")["split"].nunique().max() == 1
    # without a patient column nothing is blank: one patient per study, as documented
    df2, acc2 = _load(csv_dataset, patient_col=None)
    assert not acc2.noted and (df2["patient_id"] == df2["study_id"]).all()


def test_unreadable_csv_errors_name_the_file_and_the_fix(tmp_path, make_image):
    """Fault 6: latin-1, ragged and empty files give messages with the file, the line and the fix."""
    make_image(tmp_path / "imgs" / "a.png", kind="png8")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,report,lab\nimgs/a.png,Röntgen: Herz normal.,0\n".encode("latin-1"))
    with pytest.raises(ValueError) as err:
        load_csv(latin, image_col="path", report_col="report", label_col="lab")
    msg = str(err.value)
    assert str(latin) in msg and "not valid utf-8" in msg and "line 2" in msg and "encoding='latin-1'" in msg
    df, acc = load_csv(latin, image_col="path", report_col="report", label_col="lab", encoding="latin-1")
    assert acc.rows_kept == 1 and df.at[0, "text"].startswith("Röntgen")

    ragged = tmp_path / "ragged.csv"
    ragged.write_text(
        'path,report,lab\nimgs/a.png,"Heart normal, lungs clear.",0\nimgs/a.png,Heart normal, lungs clear.,0\n'
    )
    with pytest.raises(ValueError) as err:
        load_csv(ragged, image_col="path", report_col="report", label_col="lab")
    msg = str(err.value)
    assert str(ragged) in msg and "line 3 has 4 fields but the header has 3" in msg and "double quotes" in msg

    for content in ("", "\n\n"):
        empty = tmp_path / "empty.csv"
        empty.write_text(content)
        with pytest.raises(ValueError, match="is empty") as err:
            load_csv(empty, image_col="path", report_col="report", label_col="lab")
        assert str(empty) in str(err.value) and "'path'" in str(err.value)
