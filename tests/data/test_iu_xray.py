"""IU X-ray loader (both layouts), safe extraction and the resumable downloader (cxrlib.data.iu_xray)."""

from __future__ import annotations

import hashlib
import http.server
import re
import shutil
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data import iu_xray as iu
from cxrlib.data.iu_xray import download, load_iu_xray, parse_report_xml, safe_extract
from cxrlib.data.manifest import patient_split, validate_manifest

# the Open-i fixture (tests/data/conftest.py): 9 reports, 11 (report, image) rows
OPENI_DROPS = {
    iu.R_XML: 1,  # 7.xml is cut off
    iu.R_MISSING: 1,  # CXR3's PNG is not on disk
    iu.R_NO_TEXT: 1,  # CXR4: neither FINDINGS nor IMPRESSION
    iu.R_NO_LABEL: 1,  # CXR5: "No Indexing"
    iu.R_NO_IMAGE: 1,  # CXR6: no parentImage
    iu.R_DUP: 1,  # CXR8 lists CXR1's image again
}
OPENI_KEPT = [
    "CXR1_1_IM-0001-3001",
    "CXR1_1_IM-0001-4001",
    "CXR2_IM-0652-1001",
    "CXR2_IM-0652-2001",
    "CXR10_IM-0038-1001",
]


def _check_split(df: pd.DataFrame) -> None:
    s = patient_split(df, seed=0)
    validate_manifest(s, require_split=True)
    assert (s.groupby("patient_id")["split"].nunique() == 1).all()


def test_parse_report_xml_reads_the_openi_schema(openi_folders):
    rec = parse_report_xml(openi_folders / "ecgen-radiology" / "2.xml")
    assert rec["report_id"] == "CXR2"
    assert rec["findings"].startswith("Borderline cardiomegaly. Midline sternotomy XXXX.")
    assert rec["impression"] == "Borderline cardiomegaly."
    assert rec["indication"] == "Positive TB test" and rec["comparison"] == "None."
    assert rec["major"] == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]
    assert rec["automatic"] == ["cardiomegaly"]
    assert rec["images"] == ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"]
    assert parse_report_xml(openi_folders / "ecgen-radiology" / "4.xml")["findings"] == ""


def _check_openi(df: pd.DataFrame, acc) -> None:
    assert acc.rows_in == 11 and acc.rows_kept == 5
    assert dict(acc.dropped) == OPENI_DROPS
    acc.check()
    assert list(df["image_id"]) == OPENI_KEPT
    validate_manifest(df)
    r = df.set_index("image_id")
    assert list(r["label"]) == [0, 0, 1, 1, 0]  # "Normal" (CXR10) is normal too: case-insensitive
    assert r.at["CXR2_IM-0652-1001", "tags"] == "cardiomegaly|pulmonary artery"
    assert r.at["CXR1_1_IM-0001-3001", "tags"] == ""
    assert r.at["CXR1_1_IM-0001-3001", "text"] == (
        "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. "
        "There are no of a pleural effusion. Normal chest x-."
    )
    assert "XXXX" not in "".join(df["text"])
    assert set(df["study_id"]) == {"CXR1", "CXR2", "CXR10"} and (df["patient_id"] == df["study_id"]).all()
    assert set(df["view"]) == {"UNKNOWN"} and set(df["split"]) == {""} and set(df["source"]) == {"iu_xray"}
    assert all(Path(p).is_file() for p in df["image_path"])
    _check_split(df)


def test_openi_folders(openi_folders):
    with pytest.warns(UserWarning, match="no view information"):
        df, acc = load_iu_xray(openi_folders)
    _check_openi(df, acc)


def test_openi_archives_are_extracted_once(openi_archives):
    with pytest.warns(UserWarning):
        df, acc = load_iu_xray(openi_archives)
    _check_openi(df, acc)
    extracted = openi_archives / "extracted"
    assert (extracted / "ecgen-radiology" / "1.xml").is_file()
    assert (extracted / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png").is_file()
    marker = extracted / "NLMCXR_png" / ".NLMCXR_png.tgz.done"
    stamp = marker.stat().st_mtime_ns
    with pytest.warns(UserWarning):
        df2, _ = load_iu_xray(openi_archives)
    assert marker.stat().st_mtime_ns == stamp  # not extracted again
    pd.testing.assert_frame_equal(df, df2)


def test_openi_png_folder_next_to_reports(tmp_path, openi_folders):
    """PNGs in another accepted place (``png/`` here) are found as well."""
    shutil.move(openi_folders / "NLMCXR_png", openi_folders / "png")
    with pytest.warns(UserWarning):
        df, acc = load_iu_xray(openi_folders)
    assert acc.rows_kept == 5


def test_openi_limit_keeps_first_reports_in_numeric_order(openi_folders):
    with pytest.warns(UserWarning):
        df, acc = load_iu_xray(openi_folders, limit=2)
    assert sorted(set(df["study_id"])) == ["CXR1", "CXR2"]
    assert acc.rows_in == 11 and acc.dropped[iu.R_LIMIT] == 6 and acc.dropped[iu.R_XML] == 1
    acc.check()


def test_openi_views_from_a_projections_csv(openi_folders):
    pd.DataFrame(
        [("1", "1_IM-0001-3001.dcm.png", "Frontal"), ("1", "1_IM-0001-4001.dcm.png", "Lateral")],
        columns=["uid", "filename", "projection"],
    ).to_csv(openi_folders / "indiana_projections.csv", index=False)
    with pytest.warns(UserWarning, match="3 of 4 images"):
        df, acc = load_iu_xray(openi_folders)
    assert acc.dropped[iu.lateral_reason(iu.KAGGLE_PROJECTIONS)] == 1 and acc.rows_kept == 4
    assert df.set_index("image_id").at["CXR1_1_IM-0001-3001", "view"] == "FRONTAL"


def test_kaggle_layout(kaggle_dir):
    df, acc = load_iu_xray(kaggle_dir)
    assert acc.rows_in == 10 and acc.rows_kept == 2
    assert dict(acc.dropped) == {
        iu.lateral_reason(iu.KAGGLE_PROJECTIONS): 2,
        iu.R_NO_TEXT: 1,  # uid 3
        iu.R_NO_LABEL: 1,  # uid 4 "No Indexing"
        iu.R_MISSING: 1,  # uid 5
        iu.R_NO_IMAGE: 1,  # uid 6 has no projection row
        iu.R_ORPHAN: 1,  # uid 99 has no report
        iu.R_DUP_REPORT: 1,  # uid 2 twice in indiana_reports.csv
    }
    acc.check()
    validate_manifest(df)
    assert list(df["image_id"]) == ["CXR1_IM-0001-4001", "CXR2_IM-0652-1001"]
    r = df.set_index("image_id")
    assert r.at["CXR1_IM-0001-4001", "label"] == 0 and r.at["CXR1_IM-0001-4001", "view"] == "FRONTAL"
    assert r.at["CXR2_IM-0652-1001", "label"] == 1
    assert r.at["CXR2_IM-0652-1001", "tags"] == "cardiomegaly|pulmonary artery"
    assert r.at["CXR2_IM-0652-1001", "text"] == (
        "Borderline cardiomegaly. Midline sternotomy. Enlarged pulmonary arteries. "
        "Borderline cardiomegaly. Midline sternotomy."
    )
    _check_split(df)


def test_kaggle_layout_with_laterals(kaggle_dir):
    df, acc = load_iu_xray(kaggle_dir, frontal_only=False)
    assert (
        acc.rows_in == 10
        and acc.rows_kept == 4
        and iu.lateral_reason(iu.KAGGLE_PROJECTIONS) not in acc.dropped
    )
    assert list(df["view"]) == ["LATERAL", "FRONTAL", "FRONTAL", "LATERAL"]  # sorted by image id per report
    assert df.groupby("study_id").size().to_dict() == {"CXR1": 2, "CXR2": 2}
    _check_split(df)


def test_kaggle_bad_columns_are_named(kaggle_dir):
    pd.DataFrame({"uid": ["1"], "Findings": ["x"]}).to_csv(kaggle_dir / "indiana_reports.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['MeSH', 'findings', 'impression'\]") as e:
        load_iu_xray(kaggle_dir)
    assert "Findings" in str(e.value)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_no_data_names_both_layouts(tmp_path, make):
    d = tmp_path / "iu"
    if make == "empty":
        d.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        load_iu_xray(d)
    msg = str(e.value)
    for s in ("NLMCXR_reports.tgz", "NLMCXR_png.tgz", "ecgen-radiology", "indiana_reports.csv",
              "indiana_projections.csv", "images_normalized", "data/README.md"):  # fmt: skip
        assert s in msg


def test_reports_without_pngs_is_an_error(openi_folders):
    shutil.rmtree(openi_folders / "NLMCXR_png")
    with pytest.raises(FileNotFoundError, match="no PNG images"):
        load_iu_xray(openi_folders)


# --------------------------------------------------------------------------------------------------
# safe extraction
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../evil.txt", "/evil_abs.txt", "ok/../../evil.txt"])
def test_safe_extract_rejects_escaping_members(tmp_path, make_tgz, bad):
    arc = make_tgz(tmp_path / "bad.tgz", {"ecgen-radiology/1.xml": b"<x/>", bad: b"boom"})
    dest = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="unsafe member"):
        safe_extract(arc, dest, progress=False)
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (dest / ".bad.tgz.done").exists()


def test_unsafe_archive_in_data_dir_is_refused(tmp_path, openi_folders, make_tgz):
    d = tmp_path / "iu2"
    d.mkdir()
    make_tgz(d / "NLMCXR_reports.tgz", {"../escape.xml": b"<x/>"})
    with pytest.raises(ValueError, match="unsafe member '../escape.xml'"):
        load_iu_xray(d)


# --------------------------------------------------------------------------------------------------
# download, against a local HTTP server
# --------------------------------------------------------------------------------------------------


class _Server:
    """Serves ``files`` on 127.0.0.1 with HTTP Range support (switchable), recording the requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.honour_range = True
        self.truncate_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and outer.honour_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = data[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in outer.truncate_once:  # announce the full length, send half, hang up
                    outer.truncate_once.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/imgs/collections/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(openi_archives):
    files = {n: (openi_archives / n).read_bytes() for n in iu.OPENI_FILES}
    with _Server(files) as s:
        yield s


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_then_load(tmp_path, served):
    dest = tmp_path / "dl"
    expected = {n: _sha(b) for n, b in served.files.items()}
    paths = download(dest, base_url=served.url, progress=False, expected=expected)
    assert [p.name for p in paths] == list(iu.OPENI_FILES)
    for p in paths:
        assert p.read_bytes() == served.files[p.name]
    assert not list(dest.glob("*.part"))
    with pytest.warns(UserWarning):
        df, acc = load_iu_xray(dest)
    assert acc.rows_kept == 5
    n = len(served.requests)
    download(dest, base_url=served.url, progress=False, expected=expected)  # present: nothing fetched
    assert len(served.requests) == n


def test_download_resumes_a_partial_file(tmp_path, served):
    name = "NLMCXR_png.tgz"
    data = served.files[name]
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{name}.part").write_bytes(data[:100])
    (p,) = download(dest, base_url=served.url, files=(name,), progress=False, expected={name: _sha(data)})
    assert p.read_bytes() == data
    assert served.requests == [(name, "bytes=100-")]


def test_download_restarts_when_range_is_ignored(tmp_path, served):
    name = "NLMCXR_reports.tgz"
    served.honour_range = False
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{name}.part").write_bytes(b"garbage that is not the start of the archive")
    (p,) = download(dest, base_url=served.url, files=(name,), progress=False)
    assert p.read_bytes() == served.files[name]


def test_download_complete_part_is_just_renamed(tmp_path, served):
    name = "NLMCXR_reports.tgz"
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{name}.part").write_bytes(served.files[name])
    (p,) = download(dest, base_url=served.url, files=(name,), progress=False)
    assert p.read_bytes() == served.files[name] and served.requests[-1][1] is not None


def test_download_checksum_mismatch(tmp_path, served):
    name = "NLMCXR_reports.tgz"
    dest = tmp_path / "dl"
    with pytest.raises(ValueError, match="checksum mismatch"):
        download(dest, base_url=served.url, files=(name,), progress=False, expected={name: "0" * 64})
    assert not (dest / name).exists() and not (dest / f"{name}.part").exists()


def test_download_broken_connection_then_resume(tmp_path, served):
    name = "NLMCXR_png.tgz"
    data = served.files[name]
    served.truncate_once.add(name)
    dest = tmp_path / "dl"
    with pytest.raises(OSError, match="call download\\(\\) again"):
        download(dest, base_url=served.url, files=(name,), progress=False)
    part = dest / f"{name}.part"
    assert part.exists() and 0 < part.stat().st_size < len(data) and not (dest / name).exists()
    (p,) = download(dest, base_url=served.url, files=(name,), progress=False, expected={name: _sha(data)})
    assert p.read_bytes() == data
    assert served.requests[-1] == (name, f"bytes={len(data) // 2}-")


def test_download_http_error(tmp_path, served):
    with pytest.raises(OSError, match="HTTP 404"):
        download(tmp_path / "dl", base_url=served.url, files=("nope.tgz",), progress=False)


def test_openi_label_edge_cases_and_a_repeated_uid(tmp_path, openi_folders):
    """A MeSH major list that repeats "normal" is normal; a second XML with a uId already seen is a counted
    skip (its rows are not merged into the first study); anonymisation runs leave no stray hyphen."""
    from conftest import openi_xml, write_image

    xml_dir = openi_folders / "ecgen-radiology"
    (xml_dir / "20.xml").write_text(
        openi_xml(
            20,
            "Seen on XXXX-XXXX views. Clear lungs.",
            "Normal chest.",
            ["normal", "normal"],
            ["CXR20_IM-0900-1001"],
        )
    )
    dup = openi_xml(20, "Effusion.", "Abnormal.", ["Pleural Effusion"], ["CXR20_IM-0901-1001"])
    (xml_dir / "20b.xml").write_text(dup)
    for iid in ("CXR20_IM-0900-1001", "CXR20_IM-0901-1001"):
        write_image(openi_folders / "NLMCXR_png" / f"{iid}.png")
    with pytest.warns(UserWarning, match="no view information"):
        df, acc = load_iu_xray(openi_folders)
    acc.check()
    row = df[df["study_id"] == "CXR20"]
    assert len(row) == 1 and row["label"].iloc[0] == 0 and row["image_id"].iloc[0] == "CXR20_IM-0900-1001"
    assert "XXXX" not in row["text"].iloc[0] and " - " not in row["text"].iloc[0]
    assert row["text"].iloc[0].startswith("Seen on views.")
    assert acc.dropped[iu.R_DUP_REPORT] == 1
    assert any("20b.xml" in e and "first in 20.xml" in e for e in acc.examples[iu.R_DUP_REPORT])


# --------------------------------------------------------------------------------------------------
# view tables: torchxrayvision's nlmcxr_dicom_metadata.csv[.gz] and Kaggle's indiana_projections.csv
# --------------------------------------------------------------------------------------------------

DICOM_GZ = "nlmcxr_dicom_metadata.csv.gz"


def _views(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["image_id"], df["view"], strict=True))


@pytest.mark.parametrize("name", [DICOM_GZ, "nlmcxr_dicom_metadata.csv"])
def test_openi_views_from_the_dicom_metadata_table(openi_folders, name):
    from conftest import write_dicom_metadata

    path = write_dicom_metadata(openi_folders / name)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")  # really gzip when named so
    with pytest.warns(UserWarning, match="2 of 4 images have no view information") as rec:
        df, acc = load_iu_xray(openi_folders)
    assert name in str(rec[0].message)
    acc.check()
    assert dict(acc.dropped) == {**OPENI_DROPS, iu.lateral_reason(name): 1}  # CXR1_1_IM-0001-4001 is LL
    assert acc.examples[iu.lateral_reason(name)] == ["CXR1_1_IM-0001-4001.png"]
    assert iu.lateral_drops(acc) == {name: 1}
    assert _views(df) == {
        "CXR1_1_IM-0001-3001": "PA",
        "CXR2_IM-0652-1001": "AP",
        "CXR2_IM-0652-2001": "UNKNOWN",  # blank View Position
        "CXR10_IM-0038-1001": "UNKNOWN",  # no row in the table
    }
    assert list(df["view_source"]) == [name, name, "", ""]
    assert dict(acc.noted) == {
        iu.N_VIEW_NO_VALUE.format(tables=name): 1,
        iu.N_VIEW_NOT_IN.format(tables=name): 1,
    }
    assert acc.examples[iu.N_VIEW_NOT_IN.format(tables=name)] == ["CXR10_IM-0038-1001.png"]
    validate_manifest(df)


def test_openi_without_a_view_table_keeps_and_counts_every_unknown(openi_folders):
    with pytest.warns(UserWarning, match="5 of 5 images") as rec:
        df, acc = load_iu_xray(openi_folders)
    msg = str(rec[0].message)
    assert iu.N_VIEW_NO_TABLE in msg and DICOM_GZ in msg and iu.KAGGLE_PROJECTIONS in msg
    assert dict(acc.noted) == {iu.N_VIEW_NO_TABLE: 5} and iu.lateral_drops(acc) == {}
    assert set(df["view_source"]) == {""}


def test_openi_two_view_tables_first_one_wins(openi_folders):
    """DICOM table first; the projections CSV fills in what it lacks (noted); the plain .csv beside the .gz
    is ignored (the .gz is used)."""
    from conftest import write_dicom_metadata

    write_dicom_metadata(openi_folders / DICOM_GZ)
    write_dicom_metadata(openi_folders / "nlmcxr_dicom_metadata.csv", {"CXR1_1_IM-0001-4001": "PA"})
    pd.DataFrame(
        [
            ("1", "1_IM-0001-4001.dcm.png", "Frontal"),  # the DICOM table says LL: it wins
            ("2", "2_IM-0652-2001.dcm.png", "Lateral"),  # DICOM value blank: the projection decides
            ("10", "10_IM-0038-1001.dcm.png", "Frontal"),  # not in the DICOM table
        ],
        columns=["uid", "filename", "projection"],
    ).to_csv(openi_folders / iu.KAGGLE_PROJECTIONS, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every kept image has a view: no warning
        df, acc = load_iu_xray(openi_folders)
    acc.check()
    assert iu.lateral_drops(acc) == {DICOM_GZ: 1, iu.KAGGLE_PROJECTIONS: 1}
    assert acc.examples[iu.lateral_reason(iu.KAGGLE_PROJECTIONS)] == ["CXR2_IM-0652-2001.png"]
    assert _views(df) == {
        "CXR1_1_IM-0001-3001": "PA",
        "CXR2_IM-0652-1001": "AP",
        "CXR10_IM-0038-1001": "FRONTAL",
    }
    assert list(df["view_source"]) == [DICOM_GZ, DICOM_GZ, iu.KAGGLE_PROJECTIONS]
    assert dict(acc.noted) == {iu.N_VIEW_LOWER.format(table=iu.KAGGLE_PROJECTIONS, tables=DICOM_GZ): 1}


def test_openi_dicom_views_with_laterals_kept(openi_folders):
    from conftest import write_dicom_metadata

    write_dicom_metadata(openi_folders / DICOM_GZ)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # frontal_only=False: unknown views are only noted
        df, acc = load_iu_xray(openi_folders, frontal_only=False)
    assert dict(acc.dropped) == OPENI_DROPS and acc.rows_kept == 5
    assert _views(df)["CXR1_1_IM-0001-4001"] == "LATERAL"  # LL → LATERAL
    assert sum(acc.noted.values()) == 2


def test_kaggle_layout_uses_the_dicom_table_first(kaggle_dir):
    """Layout B: PA/AP from the DICOM table (matched by report number + IM part), Frontal/Lateral otherwise."""
    from conftest import write_dicom_metadata

    write_dicom_metadata(
        kaggle_dir / DICOM_GZ, {"CXR1_1_IM-0001-4001": "PA", "CXR1_1_IM-0001-3001": "LATERAL"}
    )
    df, acc = load_iu_xray(kaggle_dir)
    acc.check()
    assert list(df["image_id"]) == ["CXR1_IM-0001-4001", "CXR2_IM-0652-1001"]
    assert list(df["view"]) == ["PA", "FRONTAL"]
    assert list(df["view_source"]) == [DICOM_GZ, iu.KAGGLE_PROJECTIONS]
    assert iu.lateral_drops(acc) == {DICOM_GZ: 1, iu.KAGGLE_PROJECTIONS: 1}
    assert dict(acc.noted) == {iu.N_VIEW_LOWER.format(table=iu.KAGGLE_PROJECTIONS, tables=DICOM_GZ): 1}


@pytest.mark.parametrize(
    ("name", "columns", "expected"),
    [
        (DICOM_GZ, ["ImageID", "ViewPosition"], "['imageid', 'View Position']"),
        ("nlmcxr_dicom_metadata.csv", ["imageid", "Modality"], "['imageid', 'View Position']"),
        (iu.KAGGLE_PROJECTIONS, ["uid", "file", "view"], "['uid', 'filename', 'projection']"),
    ],
)
def test_view_table_without_its_columns_is_a_clear_error(openi_folders, name, columns, expected):
    path = openi_folders / name
    pd.DataFrame([["CXR1_1_IM-0001-3001", "PA", "x"][: len(columns)]], columns=columns).to_csv(
        path, index=False, compression="gzip" if name.endswith(".gz") else None
    )
    with pytest.raises(ValueError) as e:
        load_iu_xray(openi_folders)
    msg = str(e.value)
    assert str(path) in msg and str(columns) in msg and expected in msg and "data/README.md" in msg


def test_damaged_gzip_view_table_is_a_clear_error(openi_folders):
    path = openi_folders / DICOM_GZ
    path.write_bytes(b"imageid,View Position\nCXR1_1_IM-0001-3001,PA\n")  # named .gz, but not gzip
    with pytest.raises(ValueError, match="cannot be read as a CSV") as e:
        load_iu_xray(openi_folders)
    assert str(path) in str(e.value)
