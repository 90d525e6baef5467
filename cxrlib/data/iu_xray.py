"""IU X-ray (Indiana University chest X-ray collection, distributed by NLM's Open-i) → manifest.

Two on-disk layouts are accepted under ``data_dir`` (default ``data/iu_xray/``; see data/README.md):

**Layout A — the official Open-i archives** (``NLMCXR_reports.tgz`` + ``NLMCXR_png.tgz``, fetched by
:func:`download`), either as the ``.tgz`` files themselves (extracted once, safely, into
``data_dir/extracted/``) or already extracted: an ``ecgen-radiology/`` folder of report XMLs (``1.xml`` …)
and the PNGs (``CXR1_1_IM-0001-3001.png`` …) in ``NLMCXR_png/``, ``png/``, ``images/`` or ``data_dir``
itself. Each XML holds ``<uId id="CXR1"/>``, ``<pmcId id="1"/>``, ``<AbstractText Label="FINDINGS">``
(also ``IMPRESSION``, ``INDICATION``, ``COMPARISON``), ``<MeSH><major>…</major><automatic>…</automatic>``
and one ``<parentImage id="CXR1_1_IM-0001-3001">`` per image (the file is ``<id>.png``).

**Layout B — the Kaggle copy** (``raddar/chest-xrays-indiana-university``): ``indiana_reports.csv``
(``uid, MeSH, Problems, image, indication, comparison, findings, impression``), ``indiana_projections.csv``
(``uid, filename, projection`` with ``Frontal``/``Lateral``) and the PNGs in ``images/images_normalized/``
(or ``images_normalized/``, ``images/``). When both layouts are present, layout B is used (it has views).

Rules (the same for both layouts):

- one manifest row per (report, image) pair; ``study_id`` = the report id in Open-i's form ``CXR<n>``
  (``uId``; Kaggle's ``uid`` n becomes ``CXR<n>``); ``patient_id`` = ``study_id`` (the collection has one
  study per patient and no patient identifier); ``split`` = ``""`` (IU has no official split: use
  :func:`cxrlib.data.manifest.patient_split`); ``source`` = ``"iu_xray"``.
- ``image_id``: layout A the ``parentImage`` id (``CXR1_1_IM-0001-3001``); layout B ``CXR`` + the file name
  without ``.dcm.png`` (``1_IM-0001-4001.dcm.png`` → ``CXR1_IM-0001-4001``).
- label: **normal (0) iff every MeSH major term is "normal"** (case-insensitive; ["normal"] or a repeated
  ["normal", "normal"]), else abnormal
  (1). Reports whose major list is empty or ``No Indexing`` have no usable label and are skipped (counted).
- tags: the heads (text before the first ``/``) of the major terms, lower-cased, ``normal`` left out,
  joined by :func:`~cxrlib.data.manifest.join_tags`.
- text: :func:`~cxrlib.data.reports.select_text` of the cleaned FINDINGS and IMPRESSION (``XXXX`` removed)
  for ``text_source`` (default ``"findings+impression"``: both, FINDINGS first); ``findings`` and
  ``impression`` keep both sections either way. A report with neither is skipped (counted); with
  ``"impression"``/``"findings"`` a report lacking that section uses the other one (a counted note).
- views: the Open-i XML has **no reliable per-image view** (the caption names the whole study, e.g. "Xray
  Chest PA and Lateral"), so views come from a **view table** in ``data_dir`` (:data:`VIEW_TABLES`, in this
  order of priority):

  1. ``nlmcxr_dicom_metadata.csv.gz`` (or ``.csv``): the DICOM header table that torchxrayvision ships
     for Open-i; one row per image, keyed by ``imageid`` = the ``parentImage`` id = the PNG file name
     without ``.png`` (``CXR1_1_IM-0001-3001``); its ``View Position`` ``PA``/``AP`` are kept, ``LATERAL``,
     ``LL`` and ``RL`` become ``LATERAL``, anything else (blank included) is unknown;
  2. ``indiana_projections.csv`` (Kaggle): ``Frontal`` → ``FRONTAL``, ``Lateral`` → ``LATERAL``; its file
     names (``1_IM-0001-4001.dcm.png``) are matched to Open-i ids by report number and the
     ``IM-xxxx-xxxx`` part. In layout B this file is the image list itself.

  An image takes the view of the first table that has a usable value for it. ``frontal_only=True`` drops
  ``LATERAL`` images, counted as ``lateral view (from <table>)`` (:func:`lateral_reason`). An image with no
  usable view stays ``UNKNOWN`` and is **kept** (noted with why: no table, not in the table, no usable value
  in it); with ``frontal_only=True`` a ``UserWarning`` also says how many; no image-based guess is made (a
  lateral view that slips in only adds a second image of the same report). A table without its key and
  view columns is a ``ValueError`` naming the file, its columns and the expected ones.
- ``limit`` keeps the first ``limit`` reports in numeric id order (deterministic) before any other filter;
  the rest are counted as "beyond limit".
- accounting (:class:`~cxrlib.data.manifest.Accounting`): rows in = all (report, image) pairs, a report
  without images counting as one row; each dropped row is counted with its reason: unreadable report XML,
  report without images, beyond limit, no findings or impression, no MeSH label, lateral view
  (from <table>) (``frontal_only``), image file missing, duplicate image id (the first occurrence is kept), image without
  a report (layout B projections whose ``uid`` has no report), duplicate report uid (layout A, a second XML
  with a ``uId`` already seen; layout B, a repeated row of ``indiana_reports.csv``; the first is used).
  Kept rows changed by a rule are noted (:attr:`~cxrlib.data.manifest.Accounting.noted`): unknown views
  (with the reason), views taken from a lower-priority table, text fallbacks.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import tarfile
import urllib.error
import urllib.request
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm.auto import tqdm

from cxrlib.cache import sha256_file
from cxrlib.data.manifest import COLUMNS, Accounting, empty_manifest, join_tags, validate_manifest
from cxrlib.data.reports import DEFAULT_TEXT_SOURCE, clean_text, select_text
from cxrlib.paths import relative_to_repo, resolve

__all__ = [
    "OPENI_BASE_URL",
    "OPENI_FILES",
    "LAYOUT_HELP",
    "VIEW_TABLES",
    "DICOM_METADATA_COLUMNS",
    "R_LATERAL_PREFIX",
    "lateral_reason",
    "lateral_drops",
    "parse_report_xml",
    "load_iu_xray",
    "safe_extract",
    "download",
]

log = logging.getLogger(__name__)

#: Where Open-i serves the collection (https://openi.nlm.nih.gov/faq, "collection" section).
OPENI_BASE_URL = "https://openi.nlm.nih.gov/imgs/collections/"
OPENI_FILES: tuple[str, ...] = ("NLMCXR_reports.tgz", "NLMCXR_png.tgz")

KAGGLE_REPORTS = "indiana_reports.csv"
KAGGLE_PROJECTIONS = "indiana_projections.csv"
DICOM_METADATA = "nlmcxr_dicom_metadata.csv"
#: View tables looked for in ``data_dir``, first = highest priority (see the module docstring, views).
VIEW_TABLES: tuple[str, ...] = (DICOM_METADATA + ".gz", DICOM_METADATA, KAGGLE_PROJECTIONS)
#: The columns read from ``nlmcxr_dicom_metadata.csv[.gz]`` (torchxrayvision's Open-i DICOM header table).
DICOM_METADATA_COLUMNS: tuple[str, ...] = ("imageid", "View Position")
PROJECTION_COLUMNS: tuple[str, ...] = ("uid", "filename", "projection")
_KAGGLE_IMAGE_DIRS = ("images/images_normalized", "images_normalized", "images")
_OPENI_REPORT_DIRS = ("ecgen-radiology", "extracted/ecgen-radiology", "NLMCXR_reports/ecgen-radiology")
_OPENI_PNG_DIRS = ("extracted/NLMCXR_png", "NLMCXR_png", "png", "images")

LAYOUT_HELP = """\
Expected one of two layouts (see data/README.md, section "IU X-ray"):
  A) official Open-i archives (python -c "from cxrlib.data.iu_xray import download; download(<data_dir>)"):
       <data_dir>/NLMCXR_reports.tgz and <data_dir>/NLMCXR_png.tgz
     or extracted:
       <data_dir>/ecgen-radiology/*.xml  and  <data_dir>/NLMCXR_png/*.png  (CXR1_1_IM-0001-3001.png, ...)
  B) Kaggle copy (raddar/chest-xrays-indiana-university):
       <data_dir>/indiana_reports.csv, <data_dir>/indiana_projections.csv,
       <data_dir>/images/images_normalized/*.png  (1_IM-0001-4001.dcm.png, ...)
  Views (layout A): <data_dir>/nlmcxr_dicom_metadata.csv.gz (torchxrayvision) or <data_dir>/indiana_projections.csv"""

R_XML = "report XML unreadable"
R_NO_IMAGE = "report has no image"
R_LIMIT = "beyond limit"
R_NO_TEXT = "no findings or impression"
R_NO_LABEL = "no MeSH label (empty or 'No Indexing')"
R_LATERAL_PREFIX = "lateral view (from "
R_MISSING = "image file missing"
R_DUP = "duplicate image id (first kept)"
R_ORPHAN = "image without a report"
R_DUP_REPORT = "duplicate report uid (first kept)"
#: Notes on kept rows whose view stays unknown (the table names are filled in).
N_VIEW_NO_TABLE = "view unknown: no view table in the data folder"
N_VIEW_NOT_IN = "view unknown: image not in {tables}"
N_VIEW_NO_VALUE = "view unknown: no usable view value in {tables}"
N_VIEW_LOWER = "view from {table} (image not in {tables})"


def lateral_reason(table: str) -> str:
    """The drop reason for a lateral image under ``frontal_only=True``, naming the table the view came from."""
    return f"{R_LATERAL_PREFIX}{table})"


def lateral_drops(acc: Accounting) -> dict[str, int]:
    """``{view table file name: images dropped as lateral}`` read from an accounting (empty when none)."""
    return {
        reason[len(R_LATERAL_PREFIX) : -1]: int(n)
        for reason, n in sorted(acc.dropped.items())
        if reason.startswith(R_LATERAL_PREFIX) and reason.endswith(")") and n
    }


@dataclass
class _Image:
    image_id: str
    path: Path | None  # None: not found on disk
    name: str  # file name, for messages
    view: str = "UNKNOWN"
    view_from: str = ""  # the table the view came from ("" = none)
    view_note: str = ""  # why the view is unknown, or that a lower-priority table gave it ("" = neither)


@dataclass
class _Report:
    report_id: str
    findings: str = ""
    impression: str = ""
    indication: str = ""
    comparison: str = ""
    major: list[str] = field(default_factory=list)
    automatic: list[str] = field(default_factory=list)
    images: list[_Image] = field(default_factory=list)


def _id_key(report_id: str) -> tuple[int, str]:
    m = re.search(r"\d+", report_id)
    return (int(m.group()) if m else 2**62, report_id)


# --------------------------------------------------------------------------------------------------
# layout A: Open-i XML
# --------------------------------------------------------------------------------------------------


def parse_report_xml(path: str | os.PathLike[str]) -> dict:
    """Parse one Open-i ``ecgen-radiology`` report XML.

    Returns ``{"report_id", "findings", "impression", "indication", "comparison", "major", "automatic",
    "images"}`` with raw (uncleaned) section texts, MeSH major/automatic term lists and the
    ``parentImage`` ids in document order. ``report_id`` is ``<uId id>`` (``CXR1``), else ``CXR`` +
    ``<pmcId id>``, else ``CXR`` + the file stem. Raises ``xml.etree.ElementTree.ParseError`` on bad XML.
    """
    root = ET.parse(path).getroot()
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        text = "".join(node.itertext()).strip()
        if label and text:
            sections[label] = (sections[label] + " " + text) if label in sections else text
    report_id = ""
    uid = root.find(".//uId")
    if uid is not None and (uid.get("id") or "").strip():
        report_id = uid.get("id", "").strip()
    else:
        pmc = root.find(".//pmcId")
        raw = (pmc.get("id") or "").strip() if pmc is not None else ""
        raw = raw or Path(path).stem
        report_id = raw if raw.upper().startswith("CXR") else f"CXR{raw}"
    major = [t.text.strip() for t in root.iter("major") if t.text and t.text.strip()]
    automatic = [t.text.strip() for t in root.iter("automatic") if t.text and t.text.strip()]
    images = [(p.get("id") or "").strip() for p in root.iter("parentImage")]
    return {
        "report_id": report_id,
        "findings": sections.get("FINDINGS", ""),
        "impression": sections.get("IMPRESSION", ""),
        "indication": sections.get("INDICATION", ""),
        "comparison": sections.get("COMPARISON", ""),
        "major": major,
        "automatic": automatic,
        "images": [i for i in images if i],
    }


def safe_extract(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], progress: bool = True
) -> Path:
    """Extract a ``.tgz`` into ``dest`` in one streaming pass, refusing unsafe members.

    A member with an absolute path or a ``..`` component, or a link pointing outside ``dest``, raises
    ``ValueError`` naming it; tarfile's ``"data"`` filter is applied as well. After success a marker
    ``dest/.<archive name>.done`` is written, so a half-finished extraction is redone on the next call.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / f".{archive.name}.done"
    with (
        tarfile.open(archive, "r:*") as tar,
        tqdm(desc=f"extracting {archive.name}", unit="file", disable=not progress) as bar,
    ):
        for member in tar:
            _check_member(member, archive)
            tar.extract(member, dest, filter="data")
            bar.update(1)
    marker.write_text("ok\n")
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    names = [member.name]
    if member.issym() or member.islnk():
        names.append(member.linkname)
    for name in names:
        p = PurePosixPath(name.replace("\\", "/"))
        if (
            p.is_absolute()
            or name.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:", name)
            or ".." in p.parts
        ):
            raise ValueError(
                f"unsafe member {member.name!r} in {archive} (absolute path or '..'); refusing to extract. "
                "Re-download the archive from Open-i (see data/README.md)."
            )


def _extract_if_needed(data_dir: Path, name: str, sub: str, found_elsewhere: bool) -> None:
    """Extract ``data_dir/name`` into ``data_dir/extracted[/sub]`` unless done before (marker) or the user
    already extracted it somewhere else (``found_elsewhere``, and no half-finished extraction of ours)."""
    archive = data_dir / name
    dest = data_dir / "extracted" / sub if sub else data_dir / "extracted"
    if not archive.exists() or (dest / f".{name}.done").exists():
        return
    ours = dest / (sub or "ecgen-radiology")
    if found_elsewhere and not ours.exists():
        return
    log.info("extracting %s into %s (once)", archive, dest)
    try:
        safe_extract(archive, dest, progress=True)
    except PermissionError as exc:
        raise PermissionError(
            f"cannot extract {archive} into {dest}: {exc}. Extract it yourself (see data/README.md, IU X-ray) "
            "or copy the data to a writable folder."
        ) from exc


def _png_index(data_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for sub in _OPENI_PNG_DIRS:
        d = data_dir / sub
        if d.is_dir():
            for p in sorted(d.rglob("*.png")):
                index.setdefault(p.name, p)
    for p in sorted(data_dir.glob("*.png")):
        index.setdefault(p.name, p)
    return index


_IM_RE = re.compile(r"^(?:CXR)?(\d+)(?:_\d+)?_(IM-\d+-\d+)", re.IGNORECASE)


def _im_key(name: str) -> tuple[str, str] | None:
    """(report number, ``IM-xxxx-xxxx``) of an Open-i id or a Kaggle file name; None when it has neither."""
    m = _IM_RE.match(name.strip())
    return (m.group(1), m.group(2).upper()) if m else None


#: ``View Position`` values of the DICOM headers → manifest view (anything else: unknown).
_DICOM_VIEWS = {
    "PA": "PA",
    "AP": "AP",
    "LATERAL": "LATERAL",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LAT": "LATERAL",
}


@dataclass
class _ViewTable:
    """One view table: image id → view, by the exact id first, then by (report number, ``IM-xxxx-xxxx``)."""

    name: str  # the file name, as the accounting shows it
    by_id: dict[str, str] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, image_id: str, view: str) -> None:
        self.by_id.setdefault(image_id, view)  # a repeated row: the first is used
        key = _im_key(image_id)
        if key is not None:
            self.by_key.setdefault(key, view)

    def lookup(self, image_id: str) -> str | None:
        """The image's view (``"UNKNOWN"`` when its row has no usable value), None when it has no row."""
        if image_id in self.by_id:
            return self.by_id[image_id]
        key = _im_key(image_id)
        return self.by_key.get(key) if key is not None else None


def _read_table(path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """A view/report table as strings; missing columns: a ValueError naming the file, found and expected."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise ValueError(
            f"{path} cannot be read as a CSV ({type(exc).__name__}: {exc}); expected {what} with columns "
            f"{list(required)}. Replace the file (see data/README.md, IU X-ray) or remove it."
        ) from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing}: its columns are {list(df.columns)}, expected {what} with "
            f"columns {list(required)} (see data/README.md, IU X-ray, views). Fix or remove the file."
        )
    return df


def _dicom_table(path: Path) -> _ViewTable:
    df = _read_table(path, DICOM_METADATA_COLUMNS, "torchxrayvision's Open-i DICOM metadata table")
    table = _ViewTable(path.name)
    for iid, pos in zip(df["imageid"], df["View Position"], strict=True):
        iid = iid.strip()
        for suffix in (".png", ".dcm"):
            iid = iid[: -len(suffix)] if iid.lower().endswith(suffix) else iid
        if iid:
            table.add(iid, _DICOM_VIEWS.get(pos.strip().upper(), "UNKNOWN"))
    return table


def _projection_table(path: Path, proj: pd.DataFrame | None = None) -> _ViewTable:
    """Kaggle's projections as a view table, keyed by our image id (``CXR1_IM-0001-4001``)."""
    if proj is None:
        proj = _read_table(path, PROJECTION_COLUMNS, "Kaggle's IU X-ray projections table")
    table = _ViewTable(path.name)
    for uid, fname, value in zip(proj["uid"], proj["filename"], proj["projection"], strict=True):
        table.add(_kaggle_image_id(uid.strip(), fname.strip()), _view(value))
    return table


def _view_tables(data_dir: Path, proj: pd.DataFrame | None = None) -> list[_ViewTable]:
    """The view tables found in ``data_dir``, in :data:`VIEW_TABLES` order (one DICOM table: .gz first)."""
    tables: list[_ViewTable] = []
    dicom = next((data_dir / n for n in VIEW_TABLES[:2] if (data_dir / n).is_file()), None)
    if dicom is not None:
        tables.append(_dicom_table(dicom))
    if proj is not None or (data_dir / KAGGLE_PROJECTIONS).is_file():
        tables.append(_projection_table(data_dir / KAGGLE_PROJECTIONS, proj))
    return tables


def _assign_view(img: _Image, tables: Sequence[_ViewTable]) -> None:
    """Set ``img.view``/``view_from``/``view_note`` from the first table with a usable value."""
    if not tables:
        img.view, img.view_note = "UNKNOWN", N_VIEW_NO_TABLE
        return
    missed: list[str] = []  # tables without a row for the image
    blank: list[str] = []  # tables whose row has no usable value
    for t in tables:
        v = t.lookup(img.image_id)
        if v is None:
            missed.append(t.name)
        elif v == "UNKNOWN":
            blank.append(t.name)
        else:
            img.view, img.view_from = v, t.name
            img.view_note = N_VIEW_LOWER.format(table=t.name, tables=" or ".join(missed)) if missed else ""
            return
    img.view = "UNKNOWN"
    if blank:
        img.view_note = N_VIEW_NO_VALUE.format(tables=" or ".join(blank))
    else:
        img.view_note = N_VIEW_NOT_IN.format(tables=" or ".join(missed))


def _load_layout_a(data_dir: Path, reports_dir: Path, acc: Accounting) -> list[_Report]:
    pngs = _png_index(data_dir)
    if not pngs:
        raise FileNotFoundError(
            f"found the IU X-ray reports in {reports_dir} but no PNG images under {data_dir} "
            f"(looked in {', '.join(_OPENI_PNG_DIRS)} and {data_dir} itself).\n{LAYOUT_HELP}"
        )
    reports: list[_Report] = []
    first_xml: dict[str, str] = {}
    for xml in sorted(reports_dir.glob("*.xml")):
        try:
            rec = parse_report_xml(xml)
        except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
            acc.rows_in += 1
            acc.drop(R_XML, f"{xml.name} ({type(exc).__name__}: {exc})")
            continue
        if rec["report_id"] in first_xml:  # two XMLs with one uId: never merged into one study silently
            n = max(1, len(rec["images"]))
            acc.rows_in += n
            first = first_xml[rec["report_id"]]
            acc.drop(R_DUP_REPORT, f"{xml.name} (uId {rec['report_id']}, first in {first})", n=n)
            continue
        first_xml[rec["report_id"]] = xml.name
        rep = _Report(
            report_id=rec["report_id"],
            findings=rec["findings"],
            impression=rec["impression"],
            indication=rec["indication"],
            comparison=rec["comparison"],
            major=rec["major"],
            automatic=rec["automatic"],
        )
        for iid in rec["images"]:
            name = f"{iid}.png"
            rep.images.append(_Image(iid, pngs.get(name), name))
        reports.append(rep)
    return reports


# --------------------------------------------------------------------------------------------------
# layout B: Kaggle CSVs
# --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing}; its columns are {list(df.columns)}.\n{LAYOUT_HELP}"
        )
    return df


def _view(value: str) -> str:
    v = str(value).strip().lower()
    return {"frontal": "FRONTAL", "lateral": "LATERAL", "pa": "PA", "ap": "AP"}.get(v, "UNKNOWN")


def _kaggle_image_id(uid: str, filename: str) -> str:
    stem = filename
    for suffix in (".png", ".dcm"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem if stem.upper().startswith("CXR") else f"CXR{stem}"


def _load_layout_b(data_dir: Path, acc: Accounting) -> tuple[list[_Report], pd.DataFrame]:
    rep = _read_csv(data_dir / KAGGLE_REPORTS, ("uid", "MeSH", "findings", "impression"))
    proj = _read_csv(data_dir / KAGGLE_PROJECTIONS, PROJECTION_COLUMNS)
    image_dir = next((data_dir / d for d in _KAGGLE_IMAGE_DIRS if (data_dir / d).is_dir()), None)
    if image_dir is None:
        raise FileNotFoundError(
            f"found {KAGGLE_REPORTS} and {KAGGLE_PROJECTIONS} in {data_dir} but no image folder "
            f"(looked for {', '.join(_KAGGLE_IMAGE_DIRS)}).\n{LAYOUT_HELP}"
        )
    by_uid: dict[str, _Report] = {}
    for row in rep.itertuples(index=False):
        uid = str(row.uid).strip()
        if uid in by_uid:  # a duplicated report row: the first is used, the repeat is counted
            acc.rows_in += 1
            acc.drop(R_DUP_REPORT, f"uid {uid}")
            continue
        by_uid[uid] = _Report(
            report_id=uid if uid.upper().startswith("CXR") else f"CXR{uid}",
            findings=row.findings,
            impression=row.impression,
            indication=getattr(row, "indication", ""),
            comparison=getattr(row, "comparison", ""),
            major=[t.strip() for t in str(row.MeSH).split(";") if t.strip()],
        )
    for row in proj.itertuples(index=False):
        uid, fname = str(row.uid).strip(), str(row.filename).strip()
        path = image_dir / fname
        img = _Image(_kaggle_image_id(uid, fname), path if path.is_file() else None, fname)
        if uid not in by_uid:
            acc.rows_in += 1
            acc.drop(R_ORPHAN, f"{fname} (uid {uid})")
            continue
        by_uid[uid].images.append(img)
    return list(by_uid.values()), proj


# --------------------------------------------------------------------------------------------------
# the loader
# --------------------------------------------------------------------------------------------------


def _detect_reports_dir(data_dir: Path) -> Path | None:
    for sub in _OPENI_REPORT_DIRS:
        if (data_dir / sub).is_dir():
            return data_dir / sub
    return None


def load_iu_xray(
    data_dir: str | os.PathLike[str],
    frontal_only: bool = True,
    limit: int | None = None,
    text_source: str = DEFAULT_TEXT_SOURCE,
) -> tuple[pd.DataFrame, Accounting]:
    """Read IU X-ray from ``data_dir`` (layout A or B, see the module docstring) into a manifest.

    Returns ``(manifest, accounting)``: the manifest has the columns of
    :data:`cxrlib.data.manifest.COLUMNS` plus ``indication``, ``comparison``, ``mesh`` (the raw major
    terms joined by ``"; "``) and ``view_source`` (the view table that gave ``view``, ``""`` when unknown),
    ordered by report id then image id; ``split`` is ``""``. ``text_source``: one of
    :data:`cxrlib.data.reports.TEXT_SOURCES`. A missing ``data_dir`` or one with neither layout raises
    ``FileNotFoundError`` naming both layouts; a view table without its columns raises ``ValueError``.
    """
    data_dir = resolve(data_dir)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    select_text("", "", text_source)  # an unknown text_source fails here, before any reading
    if not data_dir.is_dir():
        raise FileNotFoundError(f"IU X-ray folder {data_dir} does not exist.\n{LAYOUT_HELP}")
    acc = Accounting("iu_xray")
    if (data_dir / KAGGLE_REPORTS).exists() and (data_dir / KAGGLE_PROJECTIONS).exists():
        reports, proj = _load_layout_b(data_dir, acc)
        tables = _view_tables(data_dir, proj)
    else:
        elsewhere = any((data_dir / d).is_dir() for d in _OPENI_REPORT_DIRS if not d.startswith("extracted/"))
        _extract_if_needed(data_dir, "NLMCXR_reports.tgz", "", elsewhere)
        reports_dir = _detect_reports_dir(data_dir)
        if reports_dir is None:
            raise FileNotFoundError(f"no IU X-ray data found in {data_dir}.\n{LAYOUT_HELP}")
        _extract_if_needed(data_dir, "NLMCXR_png.tgz", "NLMCXR_png", bool(_png_index(data_dir)))
        reports = _load_layout_a(data_dir, reports_dir, acc)
        tables = _view_tables(data_dir)
    for rep in reports:
        for img in rep.images:
            _assign_view(img, tables)

    reports.sort(key=lambda r: _id_key(r.report_id))
    rows: list[dict] = []
    seen: set[str] = set()
    unknown_views = 0
    unknown_why: Counter = Counter()
    for k, rep in enumerate(reports):
        n = max(1, len(rep.images))
        acc.rows_in += n
        if limit is not None and k >= limit:
            acc.drop(R_LIMIT, rep.report_id, n=n)
            continue
        if not rep.images:
            acc.drop(R_NO_IMAGE, rep.report_id)
            continue
        findings, impression = clean_text(rep.findings), clean_text(rep.impression)
        text, text_note = select_text(findings, impression, text_source)
        if not text:
            acc.drop(R_NO_TEXT, rep.report_id, n=n)
            continue
        majors = [t.strip().lower() for t in rep.major if t.strip()]
        if not majors or majors == ["no indexing"]:
            acc.drop(R_NO_LABEL, rep.report_id, n=n)
            continue
        label = 0 if set(majors) == {"normal"} else 1  # ["normal", "normal"] (a repeated term) is normal too
        tags = join_tags(t.split("/")[0] for t in majors if t not in ("normal", "no indexing"))
        for img in sorted(rep.images, key=lambda i: i.image_id):
            if img.image_id in seen:
                acc.drop(R_DUP, f"{img.image_id} (report {rep.report_id})")
                continue
            seen.add(img.image_id)
            if frontal_only and img.view == "LATERAL":
                acc.drop(lateral_reason(img.view_from), img.name)
                continue
            if img.path is None:
                acc.drop(R_MISSING, img.name)
                continue
            if img.view == "UNKNOWN":
                unknown_views += 1
                unknown_why[img.view_note] += 1
            if img.view_note:
                acc.note(img.view_note, img.name)
            if text_note:
                acc.note(text_note, img.name)
            rows.append(
                {
                    "image_id": img.image_id,
                    "study_id": rep.report_id,
                    "patient_id": rep.report_id,
                    "image_path": relative_to_repo(img.path),
                    "view": img.view,
                    "findings": findings,
                    "impression": impression,
                    "text": text,
                    "label": label,
                    "tags": tags,
                    "split": "",
                    "source": "iu_xray",
                    "indication": clean_text(rep.indication),
                    "comparison": clean_text(rep.comparison),
                    "mesh": "; ".join(rep.major),
                    "view_source": img.view_from,
                }
            )
    acc.rows_kept = len(rows)
    acc.check()
    if frontal_only and unknown_views:
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(unknown_why.items()))
        msg = (
            f"IU X-ray: {unknown_views} of {len(rows)} images have no view information ({why}); "
            "frontal_only=True cannot drop lateral views among them, so they are kept. Put torchxrayvision's "
            f"{DICOM_METADATA}.gz or Kaggle's {KAGGLE_PROJECTIONS} in {data_dir} "
            "(see data/README.md, IU X-ray, views)."
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        log.warning(msg)
    if not rows:
        return validate_manifest(empty_manifest()), acc
    df = pd.DataFrame(rows)
    df = df[[*COLUMNS, "indication", "comparison", "mesh", "view_source"]]
    return validate_manifest(df), acc


# --------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------


def download(
    dest: str | os.PathLike[str],
    base_url: str = OPENI_BASE_URL,
    files: Sequence[str] = OPENI_FILES,
    progress: bool = True,
    expected: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the Open-i IU X-ray archives into ``dest`` (resumable); returns the final paths.

    Each file streams into ``<name>.part``; an existing ``.part`` is resumed with an HTTP ``Range``
    request (a server that ignores it and answers 200 makes the download restart from zero, cleanly).
    The size is checked against ``Content-Length``/``Content-Range``, and the sha256 against
    ``expected[name]`` when given; only then is ``.part`` renamed to ``<name>``. A file already present
    is kept (and checked against ``expected`` when given). Sizes: reports ≈ 1 MB, PNGs ≈ 1.3 GB.
    Raises ``ValueError`` on a checksum mismatch (the ``.part`` is deleted) and ``OSError`` on a short
    download (the ``.part`` is kept: call again to resume).
    """
    dest = resolve(dest)
    dest.mkdir(parents=True, exist_ok=True)
    expected = dict(expected or {})
    out: list[Path] = []
    for name in files:
        final = dest / name
        want = expected.get(name)
        if final.exists():
            if want and sha256_file(final) != want.lower():
                raise ValueError(
                    f"{final} exists but its sha256 is not {want}; delete it and call download() again"
                )
            out.append(final)
            continue
        url = base_url.rstrip("/") + "/" + name
        part = final.with_name(name + ".part")
        _fetch(url, part, progress, timeout)
        if want:
            got = sha256_file(part)
            if got != want.lower():
                part.unlink(missing_ok=True)
                raise ValueError(
                    f"checksum mismatch for {name} from {url}: sha256 {got}, expected {want}. "
                    "The partial file was deleted; call download() again."
                )
        part.replace(final)
        out.append(final)
    return out


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cxrlib-download/1", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) URL from the caller
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # the .part already holds the whole file (interrupted before the rename)
            m = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == offset:
                return
            part.unlink(missing_ok=True)
            return _fetch(url, part, progress, timeout)
        raise OSError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    with resp:
        status = resp.status
        if status == 206 and offset:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise OSError(
                    f"{url}: server answered Range {offset}- with Content-Range {m and m.group(0)!r}"
                )
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        elif status == 200:
            offset, mode = 0, "wb"  # full body: start over (also when the server ignored Range)
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        else:
            raise OSError(f"download of {url} failed: unexpected HTTP status {status}")
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=not progress,
            ) as bar,
        ):
            try:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                raise OSError(
                    f"download of {url} broke off after {f.tell()} bytes ({exc!r}); call download() again to resume"
                ) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(
            f"incomplete download of {url}: {size} of {total} bytes in {part}; call download() again to resume"
        )
