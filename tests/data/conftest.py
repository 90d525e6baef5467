"""Fixture builders for the real-data loaders: small datasets in the true on-disk formats, built in tmp_path.

Nothing binary is committed: PNG/JPEG files, Open-i XML reports, .tgz archives, Kaggle CSVs and a mini
MIMIC-CXR-JPG tree (gzipped CSVs, report .txt files, JPEGs) are all written at run time.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import pytest
from PIL import Image

# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish 8-bit test picture (gradient + blobs + noise), so resizing has something to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 80 + 100 * (x / max(w - 1, 1)) * (y / max(h - 1, 1))
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, max(4, min(h, w) / 3))
        base += 60 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    base += rng.normal(0, 6, size=(h, w))
    return np.clip(base, 0, 255).astype(np.uint8)


def write_image(path: Path, h: int = 40, w: int = 52, kind: str = "png8", seed: int = 0) -> Path:
    """Write a test image. ``kind``: png8, png16, rgb_png, jpeg, rgb_jpeg, empty, truncated, corrupt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = _pattern(h, w, seed)
    if kind == "png8":
        Image.fromarray(a, mode="L").save(path, format="PNG")
    elif kind == "png16":
        Image.fromarray(a.astype(np.uint16) * 200 + 1000).save(path, format="PNG")
    elif kind == "rgb_png":
        rgb = np.stack([a, np.roll(a, 3, axis=1), 255 - a], axis=2)
        Image.fromarray(rgb, mode="RGB").save(path, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(a, mode="L").save(path, format="JPEG", quality=92)
    elif kind == "rgb_jpeg":
        Image.fromarray(np.stack([a, a, a], axis=2), mode="RGB").save(path, format="JPEG", quality=92)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(_pattern(h, w, seed + 1), mode="L").save(buf, format="PNG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    else:
        raise ValueError(kind)
    return path


@pytest.fixture
def make_image() -> Callable[..., Path]:
    return write_image


# --------------------------------------------------------------------------------------------------
# IU X-ray, layout A: Open-i XML + PNG (folders and .tgz)
# --------------------------------------------------------------------------------------------------


def openi_xml(
    n: int,
    findings: str | None,
    impression: str | None,
    major: list[str],
    images: list[str],
    automatic: tuple[str, ...] = (),
    indication: str | None = "Positive TB test",
    comparison: str | None = "None.",
) -> str:
    """One report in the schema of Open-i's ``ecgen-radiology/<n>.xml`` (abridged: image features left out)."""

    def abstract(label: str, text: str | None) -> str:
        body = escape(text) if text else ""
        return (
            f'            <AbstractText Label="{label}">{body}</AbstractText>'
            if text is not None
            else (f'            <AbstractText Label="{label}"/>')
        )

    mesh = "\n".join(f"      <major>{escape(t)}</major>" for t in major)
    mesh += "".join(f"\n      <automatic>{escape(t)}</automatic>" for t in automatic)
    imgs = "\n".join(
        f"""   <parentImage id="{i}">
      <figureId>F{k + 1}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{i}.jpg</url>
         <imgType>radiology</imgType>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>"""
        for k, i in enumerate(images)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <articleURL/>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <note>The data are drawn from multiple hospital systems.</note>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Journal>
            <JournalIssue>
               <PubDate><Year>2013</Year><Month>08</Month><Day>01</Day></PubDate>
            </JournalIssue>
         </Journal>
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
{abstract("COMPARISON", comparison)}
{abstract("INDICATION", indication)}
{abstract("FINDINGS", findings)}
{abstract("IMPRESSION", impression)}
         </Abstract>
         <Affiliation>Indiana University</Affiliation>
         <Language>eng</Language>
         <PublicationTypeList><PublicationType>Radiology Report</PublicationType></PublicationTypeList>
      </Article>
      <EVersion>2013-08-01</EVersion>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{imgs}
</eCitation>
"""


#: The Open-i fixture: report number → (xml or None for a broken file, images that exist on disk).
#: Expected with frontal_only=True and no projections CSV: 11 rows in, 5 kept (see test_iu_xray.py).
OPENI_REPORTS: dict[int, dict] = {
    1: dict(
        findings="The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary "
        "edema. There are no XXXX of a pleural effusion.",
        impression="Normal chest x-XXXX.",
        major=["normal"],
        images=["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
    ),
    2: dict(
        findings="Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries.",
        impression="Borderline cardiomegaly.",
        major=["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
        automatic=("cardiomegaly",),
        images=["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"],
    ),
    3: dict(
        findings="Left basilar opacity XXXX.",
        impression=None,
        major=["Opacity/lung/base/left/mild"],
        images=["CXR3_IM-1384-1001"],  # PNG not on disk
    ),
    4: dict(findings=None, impression=None, major=["normal"], images=["CXR4_IM-2050-1001"]),
    5: dict(
        findings="Heart size normal.",
        impression="No acute disease.",
        major=["No Indexing"],
        images=["CXR5_IM-2117-1001"],
    ),
    6: dict(findings="Lungs clear.", impression="Normal.", major=["normal"], images=[]),
    8: dict(
        findings="Clear lungs.", impression="Normal chest.", major=["normal"], images=["CXR1_1_IM-0001-4001"]
    ),
    10: dict(
        findings="No focal consolidation.",
        impression="No acute findings.",
        major=["Normal"],
        images=["CXR10_IM-0038-1001"],
    ),
}
OPENI_MISSING_PNG = {"CXR3_IM-1384-1001"}
OPENI_16BIT_PNG = {"CXR2_IM-0652-2001"}


def _openi_pngs() -> list[str]:
    ids = sorted({i for r in OPENI_REPORTS.values() for i in r["images"]} - OPENI_MISSING_PNG)
    return ids


def build_openi_folders(root: Path, png_dir: str = "NLMCXR_png") -> Path:
    """``root/ecgen-radiology/*.xml`` + ``root/<png_dir>/*.png`` (8-bit, one 16-bit) + one broken XML."""
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True, exist_ok=True)
    for n, r in OPENI_REPORTS.items():
        (xml_dir / f"{n}.xml").write_text(
            openi_xml(n, r["findings"], r["impression"], r["major"], r["images"], r.get("automatic", ()))
        )
    (xml_dir / "7.xml").write_text("<eCitation><uId id='CXR7'/><MeSH><major>normal</major></MeSH")  # cut off
    for k, iid in enumerate(_openi_pngs()):
        kind = "png16" if iid in OPENI_16BIT_PNG else "png8"
        write_image(root / png_dir / f"{iid}.png", h=36 + k, w=44, kind=kind, seed=k)
    return root


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def build_openi_archives(root: Path, scratch: Path) -> Path:
    """``root/NLMCXR_reports.tgz`` (``ecgen-radiology/*.xml``) and ``root/NLMCXR_png.tgz`` (flat PNGs)."""
    build_openi_folders(scratch)
    root.mkdir(parents=True, exist_ok=True)
    _tgz(
        root / "NLMCXR_reports.tgz",
        {
            f"ecgen-radiology/{p.name}": p.read_bytes()
            for p in sorted((scratch / "ecgen-radiology").glob("*.xml"))
        },
    )
    _tgz(
        root / "NLMCXR_png.tgz",
        {p.name: p.read_bytes() for p in sorted((scratch / "NLMCXR_png").glob("*.png"))},
    )
    return root


#: A view table in the format torchxrayvision ships for Open-i (``nlmcxr_dicom_metadata.csv.gz``): one row per
#: image, keyed by ``imageid`` (the parentImage id = the PNG name without ``.png``), the DICOM header's
#: ``View Position``. Only those two columns are read; the others stand in for the rest of the header table.
#: image id → View Position (None: the image has no row; "" a blank value).
OPENI_DICOM_VIEWS: dict[str, str | None] = {
    "CXR1_1_IM-0001-3001": "PA",
    "CXR1_1_IM-0001-4001": "LL",  # lateral: dropped with frontal_only
    "CXR2_IM-0652-1001": "AP",
    "CXR2_IM-0652-2001": "",  # blank View Position: unknown, kept
    "CXR3_IM-1384-1001": "PA",  # PNG missing on disk: still "image file missing"
    "CXR10_IM-0038-1001": None,  # not in the table: unknown, kept
    "CXR9999_IM-9999-1001": "PA",  # a row for an image no report names: ignored
}


def write_dicom_metadata(path: Path, views: dict[str, str | None] = OPENI_DICOM_VIEWS) -> Path:
    """``nlmcxr_dicom_metadata.csv[.gz]`` (gzip when the name ends in .gz) for the images of ``views``."""
    rows = [
        {
            "imageid": iid,
            "Modality": "CR",
            "Body Part Examined": "CHEST",
            "View Position": view,
            "Patient Orientation": "",
        }
        for iid, view in views.items()
        if view is not None
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False, compression="gzip" if path.suffix == ".gz" else None)
    return path


@pytest.fixture
def openi_folders(tmp_path: Path) -> Path:
    return build_openi_folders(tmp_path / "iu_xray")


@pytest.fixture
def openi_archives(tmp_path: Path) -> Path:
    return build_openi_archives(tmp_path / "iu_xray", tmp_path / "scratch")


@pytest.fixture
def make_tgz() -> Callable[[Path, dict[str, bytes]], Path]:
    return _tgz


# --------------------------------------------------------------------------------------------------
# IU X-ray, layout B: the Kaggle CSVs
# --------------------------------------------------------------------------------------------------

KAGGLE_REPORTS = [
    # uid, MeSH, Problems, image, indication, comparison, findings, impression
    (
        "1",
        "normal",
        "normal",
        "Xray Chest PA and Lateral",
        "Positive TB test",
        "None.",
        "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema.",
        "Normal chest x-XXXX.",
    ),
    (
        "2",
        "Cardiomegaly/borderline;Pulmonary Artery/enlarged",
        "Cardiomegaly;Pulmonary Artery",
        "Chest, 2 views, frontal and lateral",
        "Preop bariatric surgery.",
        "None.",
        "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries.",
        "Borderline cardiomegaly. Midline sternotomy XXXX.",
    ),
    ("2", "normal", "normal", "dup", "", "", "A duplicated report row.", ""),
    ("3", "normal", "normal", "Xray Chest PA and Lateral", "rib pain", "", "", ""),
    ("4", "No Indexing", "No Indexing", "PA and lateral", "", "", "Heart size normal.", "No acute disease."),
    ("5", "normal", "normal", "PA and lateral", "", "", "Lungs clear.", "Normal chest."),
    ("6", "Opacity/lung/apex/right", "Opacity", "PA", "", "", "Right apical opacity.", ""),
]
KAGGLE_PROJECTIONS = [
    ("1", "1_IM-0001-4001.dcm.png", "Frontal"),
    ("1", "1_IM-0001-3001.dcm.png", "Lateral"),
    ("2", "2_IM-0652-1001.dcm.png", "Frontal"),
    ("2", "2_IM-0652-2001.dcm.png", "Lateral"),
    ("3", "3_IM-1384-1001.dcm.png", "Frontal"),
    ("4", "4_IM-2050-1001.dcm.png", "Frontal"),
    ("5", "5_IM-2117-1001.dcm.png", "Frontal"),  # file missing on disk
    ("99", "99_IM-9999-1001.dcm.png", "Frontal"),  # no report with uid 99
]
KAGGLE_MISSING = {"5_IM-2117-1001.dcm.png"}


def build_kaggle(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cols = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
    pd.DataFrame(KAGGLE_REPORTS, columns=cols).to_csv(root / "indiana_reports.csv", index=False)
    pd.DataFrame(KAGGLE_PROJECTIONS, columns=["uid", "filename", "projection"]).to_csv(
        root / "indiana_projections.csv", index=False
    )
    for k, (_, fname, _) in enumerate(KAGGLE_PROJECTIONS):
        if fname not in KAGGLE_MISSING:
            write_image(root / "images" / "images_normalized" / fname, h=48, w=40 + k, seed=10 + k)
    return root


@pytest.fixture
def kaggle_dir(tmp_path: Path) -> Path:
    return build_kaggle(tmp_path / "iu_kaggle")


# --------------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG
# --------------------------------------------------------------------------------------------------

CHEX = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]  # fmt: skip

REPORT_NORMAL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
REPORT_CARDIO = """                                 FINAL REPORT
 INDICATION:  ___-year-old man with dyspnea.

 FINDINGS:  The heart is mildly enlarged.  Mild interstitial edema is possible.

 IMPRESSION:  Cardiomegaly.  Possible mild edema.
"""
REPORT_NO_SECTIONS = """                                 FINAL REPORT
 INDICATION:  Line placement.

 Right IJ line ends in the low SVC.  ___ was notified.
"""

#: (subject, study, [(dicom_id, ViewPosition, image on disk?)], chexpert dict or None, report or None, split)
MIMIC_STUDIES = [
    ("10000032", "50414267", [("d01", "PA", True), ("d02", "LATERAL", True)], {"No Finding": 1.0}, REPORT_NORMAL, "train"),
    ("10000032", "53189527", [("d03", "AP", True)], {"Cardiomegaly": 1.0, "Edema": -1.0, "Lung Opacity": 0.0},
     REPORT_CARDIO, "train"),
    ("10000764", "57375967", [("d04", "PA", True)], {"Pneumonia": -1.0}, REPORT_CARDIO, "validate"),
    ("11000011", "51000001", [("d05", "PA", False), ("d06", "AP", True)], {"No Finding": 1.0, "Support Devices": 1.0},
     REPORT_NORMAL, "test"),
    ("12000012", "52000002", [("d07", "PA", True)], None, REPORT_NORMAL, "train"),
    ("12000012", "52000003", [("d08", "PA", True)], {"No Finding": 1.0}, REPORT_NO_SECTIONS, "train"),
    ("13000013", "53000004", [("d09", "PA", True)], {"Atelectasis": 1.0}, None, "train"),
    ("14000014", "54000005", [("d10", "AP AXIAL", True), ("d11", "", True)], {"No Finding": 1.0}, REPORT_NORMAL, "train"),
    ("15000015", "55000006", [("d12", "PA", True)], {}, REPORT_NORMAL, "train"),
]  # fmt: skip


def build_mimic(root: Path, reports: str = "files") -> Path:
    """A mini MIMIC-CXR-JPG tree. ``reports``: "files" (txt next to the images), "zip"
    (``root/mimic-cxr-reports.zip``), "dir" (``root/../mimic_reports/files/...``) or "none"."""
    root.mkdir(parents=True, exist_ok=True)
    meta, chex, split = [], [], []
    zbuf: dict[str, str] = {}
    for k, (sub, stu, images, labels, report, sp) in enumerate(MIMIC_STUDIES):
        for j, (dicom, view, on_disk) in enumerate(images):
            meta.append(
                {
                    "dicom_id": dicom,
                    "subject_id": int(sub),
                    "study_id": int(stu),
                    "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                    "ViewPosition": view or None,
                    "Rows": 3056,
                    "Columns": 2544,
                    "StudyDate": 21800506,
                    "StudyTime": 213014.531,
                    "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                    "ViewCodeSequence_CodeMeaning": "postero-anterior",
                    "PatientOrientationCodeSequence_CodeMeaning": "Erect",
                }
            )
            split.append({"dicom_id": dicom, "study_id": int(stu), "subject_id": int(sub), "split": sp})
            if on_disk:
                write_image(
                    root / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{stu}" / f"{dicom}.jpg",
                    h=60,
                    w=50,
                    kind="jpeg",
                    seed=100 + 10 * k + j,
                )
        if labels is not None:
            chex.append(
                {"subject_id": int(sub), "study_id": int(stu), **{c: labels.get(c, np.nan) for c in CHEX}}
            )
        if report is not None:
            rel = f"files/p{sub[:2]}/p{sub}/s{stu}.txt"
            zbuf[rel] = report
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False, compression="gzip")
    pd.DataFrame(chex, columns=["subject_id", "study_id", *CHEX]).to_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False, compression="gzip"
    )
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False, compression="gzip")
    if reports == "files":
        for rel, text in zbuf.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    elif reports == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as zf:
            for rel, text in zbuf.items():
                zf.writestr(rel, text)
    elif reports == "dir":
        for rel, text in zbuf.items():
            p = root.parent / "mimic_reports" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    return root


@pytest.fixture
def mimic_dir(tmp_path: Path) -> Path:
    return build_mimic(tmp_path / "mimic_cxr")


@pytest.fixture
def make_mimic(tmp_path: Path) -> Callable[[str], Path]:
    return lambda reports: build_mimic(tmp_path / f"mimic_{reports}", reports=reports)
