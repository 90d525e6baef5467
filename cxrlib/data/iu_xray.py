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
- text: :func:`~cxrlib.data.reports.compose_text` (FINDINGS then IMPRESSION, ``XXXX`` removed); a report
  with neither is skipped (counted).
- views: layout B maps ``Frontal`` → ``FRONTAL`` and ``Lateral`` → ``LATERAL``. The Open-i XML has **no
  reliable per-image view** (the caption names the whole study, e.g. "Xray Chest PA and Lateral"), so in
  layout A ``view = "UNKNOWN"`` unless an ``indiana_projections.csv`` lies in ``data_dir`` (its rows are
  matched by report number and the ``IM-xxxx-xxxx`` part of the file name). With ``frontal_only=True``
  and unknown views **all images are kept** and a ``UserWarning`` says how many views are unknown; no
  image-based guess is made (a lateral view that slips in only adds a second image of the same report).
- ``limit`` keeps the first ``limit`` reports in numeric id order (deterministic) before any other filter;
  the rest are counted as "beyond limit".
- accounting (:class:`~cxrlib.data.manifest.Accounting`): rows in = all (report, image) pairs, a report
  without images counting as one row; each dropped row is counted with its reason: unreadable report XML,
  report without images, beyond limit, no findings or impression, no MeSH label, lateral view
  (``frontal_only``), image file missing, duplicate image id (the first occurrence is kept), image without
  a report (layout B projections whose ``uid`` has no report), duplicate report uid (layout A, a second XML
  with a ``uId`` already seen; layout B, a repeated row of ``indiana_reports.csv``; the first is used).
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm.auto import tqdm

from cxrlib.cache import sha256_file
from cxrlib.data.manifest import COLUMNS, Accounting, empty_manifest, join_tags, validate_manifest
from cxrlib.data.reports import clean_text, compose_text
from cxrlib.paths import relative_to_repo, resolve

__all__ = [
    "OPENI_BASE_URL",
    "OPENI_FILES",
    "LAYOUT_HELP",
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
       <data_dir>/images/images_normalized/*.png  (1_IM-0001-4001.dcm.png, ...)"""

R_XML = "report XML unreadable"
R_NO_IMAGE = "report has no image"
R_LIMIT = "beyond limit"
R_NO_TEXT = "no findings or impression"
R_NO_LABEL = "no MeSH label (empty or 'No Indexing')"
R_LATERAL = "lateral view (frontal_only=True)"
R_MISSING = "image file missing"
R_DUP = "duplicate image id (first kept)"
R_ORPHAN = "image without a report"
R_DUP_REPORT = "duplicate report uid (first kept)"


@dataclass
class _Image:
    image_id: str
    path: Path | None  # None: not found on disk
    view: str
    name: str  # file name, for messages


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


def _projection_views(data_dir: Path) -> dict[tuple[str, str], str]:
    """(report number, ``IM-xxxx-xxxx``) → view from an optional Kaggle projections CSV."""
    path = data_dir / KAGGLE_PROJECTIONS
    if not path.exists():
        return {}
    proj = _read_csv(path, ("uid", "filename", "projection"))
    out: dict[tuple[str, str], str] = {}
    for fname, proj_value in zip(proj["filename"], proj["projection"], strict=True):
        m = _IM_RE.match(fname)
        if m:
            out[(m.group(1), m.group(2).upper())] = _view(proj_value)
    return out


def _load_layout_a(data_dir: Path, reports_dir: Path, acc: Accounting) -> list[_Report]:
    pngs = _png_index(data_dir)
    if not pngs:
        raise FileNotFoundError(
            f"found the IU X-ray reports in {reports_dir} but no PNG images under {data_dir} "
            f"(looked in {', '.join(_OPENI_PNG_DIRS)} and {data_dir} itself).\n{LAYOUT_HELP}"
        )
    views = _projection_views(data_dir)
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
            m = _IM_RE.match(iid)
            view = views.get((m.group(1), m.group(2).upper()), "UNKNOWN") if m else "UNKNOWN"
            rep.images.append(_Image(iid, pngs.get(name), view, name))
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


def _load_layout_b(data_dir: Path, acc: Accounting) -> list[_Report]:
    rep = _read_csv(data_dir / KAGGLE_REPORTS, ("uid", "MeSH", "findings", "impression"))
    proj = _read_csv(data_dir / KAGGLE_PROJECTIONS, ("uid", "filename", "projection"))
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
        img = _Image(
            _kaggle_image_id(uid, fname), path if path.is_file() else None, _view(row.projection), fname
        )
        if uid not in by_uid:
            acc.rows_in += 1
            acc.drop(R_ORPHAN, f"{fname} (uid {uid})")
            continue
        by_uid[uid].images.append(img)
    return list(by_uid.values())


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
) -> tuple[pd.DataFrame, Accounting]:
    """Read IU X-ray from ``data_dir`` (layout A or B, see the module docstring) into a manifest.

    Returns ``(manifest, accounting)``: the manifest has the columns of
    :data:`cxrlib.data.manifest.COLUMNS` plus ``indication``, ``comparison`` and ``mesh`` (the raw major
    terms joined by ``"; "``), ordered by report id then image id; ``split`` is ``""``. A missing
    ``data_dir`` or one with neither layout raises ``FileNotFoundError`` naming both layouts.
    """
    data_dir = resolve(data_dir)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"IU X-ray folder {data_dir} does not exist.\n{LAYOUT_HELP}")
    acc = Accounting("iu_xray")
    if (data_dir / KAGGLE_REPORTS).exists() and (data_dir / KAGGLE_PROJECTIONS).exists():
        reports = _load_layout_b(data_dir, acc)
    else:
        elsewhere = any((data_dir / d).is_dir() for d in _OPENI_REPORT_DIRS if not d.startswith("extracted/"))
        _extract_if_needed(data_dir, "NLMCXR_reports.tgz", "", elsewhere)
        reports_dir = _detect_reports_dir(data_dir)
        if reports_dir is None:
            raise FileNotFoundError(f"no IU X-ray data found in {data_dir}.\n{LAYOUT_HELP}")
        _extract_if_needed(data_dir, "NLMCXR_png.tgz", "NLMCXR_png", bool(_png_index(data_dir)))
        reports = _load_layout_a(data_dir, reports_dir, acc)

    reports.sort(key=lambda r: _id_key(r.report_id))
    rows: list[dict] = []
    seen: set[str] = set()
    unknown_views = 0
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
        text = compose_text(findings, impression)
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
                acc.drop(R_LATERAL, img.name)
                continue
            if img.path is None:
                acc.drop(R_MISSING, img.name)
                continue
            unknown_views += img.view == "UNKNOWN"
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
                }
            )
    acc.rows_kept = len(rows)
    acc.check()
    if frontal_only and unknown_views:
        msg = (
            f"IU X-ray: {unknown_views} of {len(rows)} images have no view information (Open-i XML layout "
            f"without {KAGGLE_PROJECTIONS}); frontal_only=True cannot drop lateral views, so all are kept. "
            "See data/README.md (IU X-ray, views)."
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        log.warning(msg)
    if not rows:
        return validate_manifest(empty_manifest()), acc
    df = pd.DataFrame(rows)
    df = df[[*COLUMNS, "indication", "comparison", "mesh"]]
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
