"""data.text_source in every loader: which report sections become ``text`` (findings/impression kept as they are).

Fixtures in the real formats (tests/data/conftest.py); each expected text is written out from the fixture's
sections, and every fallback (the chosen section empty, the other used) must show up in the accounting.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data import iu_xray as iu
from cxrlib.data import mimic_cxr as mc
from cxrlib.data.csv_manifest import load_csv
from cxrlib.data.iu_xray import load_iu_xray
from cxrlib.data.mimic_cxr import load_mimic_cxr
from cxrlib.data.reports import TEXT_SOURCES, fallback_note

# the Open-i fixture's CXR1 and CXR10 sections, cleaned (XXXX removed)
CXR1_F = (
    "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. "
    "There are no of a pleural effusion."
)
CXR1_I = "Normal chest x-."
# three extra reports: impression only, findings only, a short findings with a longer impression
EXTRA = {
    11: (None, "No acute cardiopulmonary abnormality.", ["normal"]),
    12: ("Small right pleural effusion.", None, ["Pleural Effusion/right/small"]),
    13: ("Clear lungs.", "No acute cardiopulmonary disease identified on this examination.", ["normal"]),
}
#: study → text for each source (first image of each kept study)
IU_WANT = {
    "findings+impression": {
        "CXR1": f"{CXR1_F} {CXR1_I}",
        "CXR11": EXTRA[11][1],
        "CXR12": EXTRA[12][0],
        "CXR13": f"{EXTRA[13][0]} {EXTRA[13][1]}",
    },
    "impression": {"CXR1": CXR1_I, "CXR11": EXTRA[11][1], "CXR12": EXTRA[12][0], "CXR13": EXTRA[13][1]},
    "findings": {"CXR1": CXR1_F, "CXR11": EXTRA[11][1], "CXR12": EXTRA[12][0], "CXR13": EXTRA[13][0]},
    "longest": {"CXR1": CXR1_F, "CXR11": EXTRA[11][1], "CXR12": EXTRA[12][0], "CXR13": EXTRA[13][1]},
}
IU_NOTES = {
    "findings+impression": {},
    "impression": {fallback_note("impression"): 1},  # CXR12
    "findings": {fallback_note("findings"): 1},  # CXR11
    "longest": {},
}


@pytest.fixture
def openi_more(openi_folders: Path) -> Path:
    from conftest import openi_xml, write_image

    for n, (f, i, major) in EXTRA.items():
        iid = f"CXR{n}_IM-0{n}00-1001"
        (openi_folders / "ecgen-radiology" / f"{n}.xml").write_text(openi_xml(n, f, i, major, [iid]))
        write_image(openi_folders / "NLMCXR_png" / f"{iid}.png", seed=n)
    return openi_folders


def _text_notes(acc) -> dict[str, int]:
    return {r: n for r, n in acc.noted.items() if r.startswith("text_source=")}


@pytest.mark.parametrize("source", TEXT_SOURCES)
def test_iu_openi_text_source(openi_more, source):
    with pytest.warns(UserWarning, match="no view information"):
        df, acc = load_iu_xray(openi_more, text_source=source)
    acc.check()
    assert (
        acc.rows_kept == 8 and acc.dropped[iu.R_NO_TEXT] == 1
    )  # CXR4 has neither section, whatever the source
    first = df.drop_duplicates("study_id").set_index("study_id")
    assert {s: first.at[s, "text"] for s in IU_WANT[source]} == IU_WANT[source]
    assert _text_notes(acc) == IU_NOTES[source]
    # the sections themselves never change
    assert first.at["CXR1", "findings"] == CXR1_F and first.at["CXR1", "impression"] == CXR1_I
    assert first.at["CXR11", "findings"] == "" and first.at["CXR12", "impression"] == ""


def test_iu_default_text_is_unchanged(openi_more):
    with pytest.warns(UserWarning):
        default, _ = load_iu_xray(openi_more)
    with pytest.warns(UserWarning):
        explicit, _ = load_iu_xray(openi_more, text_source="findings+impression")
    pd.testing.assert_frame_equal(default, explicit)
    assert (
        default["text"]
        == [
            " ".join(p for p in fi if p)
            for fi in zip(default["findings"], default["impression"], strict=True)
        ]
    ).all()


def test_iu_kaggle_text_source(kaggle_dir):
    df, acc = load_iu_xray(kaggle_dir, text_source="impression")
    r = df.set_index("image_id")
    assert r.at["CXR1_IM-0001-4001", "text"] == "Normal chest x-."
    assert r.at["CXR2_IM-0652-1001", "text"] == "Borderline cardiomegaly. Midline sternotomy."
    assert _text_notes(acc) == {}


def test_unknown_text_source_fails_before_reading(tmp_path):
    for call in (
        lambda: load_iu_xray(tmp_path / "absent", text_source="summary"),
        lambda: load_mimic_cxr(tmp_path / "absent", text_source="summary"),
        lambda: load_csv(tmp_path / "absent.csv", "p", "r", "l", text_source="summary"),
    ):
        with pytest.raises(ValueError, match="text_source must be one of"):
            call()


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR
# --------------------------------------------------------------------------------------------------
MIMIC_F = "There is no focal consolidation, pleural effusion or pneumothorax. The cardiomediastinal silhouette is normal."
MIMIC_I = "No acute cardiopulmonary process."


@pytest.mark.parametrize(
    ("source", "d01", "d03", "notes"),
    [
        ("findings+impression", f"{MIMIC_F} {MIMIC_I}", "Cardiomegaly.", {}),
        ("impression", MIMIC_I, "Cardiomegaly.", {}),
        ("findings", MIMIC_F, "Cardiomegaly.", {fallback_note("findings"): 1}),
        ("longest", MIMIC_F, "Cardiomegaly.", {}),
    ],
)
def test_mimic_text_source(mimic_dir, source, d01, d03, notes):
    # study 53189527 (image d03) gets a report with an IMPRESSION only
    (mimic_dir / mc.report_relpath("10000032", "53189527")).write_text(
        "                                 FINAL REPORT\n INDICATION:  Dyspnea.\n\n IMPRESSION:  Cardiomegaly.\n"
    )
    df, acc = load_mimic_cxr(mimic_dir, text_source=source)
    acc.check()
    r = df.set_index("image_id")
    assert r.at["d01", "text"] == d01 and r.at["d06", "text"] == d01 and r.at["d03", "text"] == d03
    assert r.at["d01", "findings"] == MIMIC_F and r.at["d03", "findings"] == ""
    assert _text_notes(acc) == notes
    if notes:
        assert acc.examples[fallback_note("findings")] == ["d03 (study 53189527)"]
    assert acc.dropped[mc.R_NO_TEXT] == 1  # the report without sections, under every source


# --------------------------------------------------------------------------------------------------
# generic CSV
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def sections_csv(tmp_path, make_image) -> Path:
    rows = [
        (
            "a.png",
            "Heart normal. Lungs clear.",
            "Normal chest.",
            "FINDINGS: Heart normal.\nIMPRESSION: Normal.",
            "0",
        ),
        (
            "b.png",
            "",
            "Small effusion.",
            "Small effusion.",
            "1",
        ),  # impression only; free text without headers
        ("c.png", "Mild cardiomegaly.", "", "IMPRESSION: Mild cardiomegaly.", "1"),  # findings only
        ("d.png", "", "", "", "0"),  # nothing: skipped
    ]
    for name, *_ in rows:
        make_image(tmp_path / name)
    pd.DataFrame(rows, columns=["path", "findings", "impression", "report", "lab"]).to_csv(
        tmp_path / "pairs.csv", index=False
    )
    return tmp_path / "pairs.csv"


@pytest.mark.parametrize(
    ("source", "texts", "notes"),
    [
        ("findings+impression", ["Heart normal. Lungs clear. Normal chest.", "Small effusion.", "Mild cardiomegaly."], {}),
        ("impression", ["Normal chest.", "Small effusion.", "Mild cardiomegaly."], {fallback_note("impression"): 1}),
        ("findings", ["Heart normal. Lungs clear.", "Small effusion.", "Mild cardiomegaly."], {fallback_note("findings"): 1}),
        ("longest", ["Heart normal. Lungs clear.", "Small effusion.", "Mild cardiomegaly."], {}),
    ],
)  # fmt: skip
def test_csv_section_columns_text_source(sections_csv, source, texts, notes):
    df, acc = load_csv(sections_csv, "path", ("findings", "impression"), "lab", text_source=source)
    acc.check()
    assert list(df["text"]) == texts and acc.dropped == {"empty report text": 1}
    assert _text_notes(acc) == notes


def test_csv_free_text_report_text_source(sections_csv):
    """A free-text report is split at its headers; one without headers counts as FINDINGS."""
    df, acc = load_csv(sections_csv, "path", "report", "lab", text_source="impression")
    assert list(df["text"]) == ["Normal.", "Small effusion.", "Mild cardiomegaly."]
    assert _text_notes(acc) == {fallback_note("impression"): 1}  # b.png: no headers → findings only
    assert acc.examples[fallback_note("impression")] == ["data row 2"]
