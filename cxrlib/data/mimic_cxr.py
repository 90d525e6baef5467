"""MIMIC-CXR-JPG (PhysioNet, credentialed access) → manifest.

Expected under ``data_dir`` (default ``data/mimic_cxr/``; see data/README.md)::

    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ..., ViewPosition, ...
    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, Atelectasis, ..., No Finding, ..., Support Devices
    mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train / validate / test)
    files/p10/p10000032/s50414267/<dicom_id>.jpg

(uncompressed ``.csv`` copies are accepted too). The JPG release has no report text: the reports come from
MIMIC-CXR's ``mimic-cxr-reports.zip`` (``files/p10/p10000032/s50414267.txt``). They are looked for in
``reports_dir`` when given (a folder holding ``files/`` or the ``files/`` folder itself, or the zip file),
else in ``data_dir/files`` next to the images, ``data_dir/mimic-cxr-reports/`` and
``data_dir/mimic-cxr-reports.zip`` (read directly, no extraction needed).

Rules:

- one row per image (``dicom_id`` = ``image_id``); ``study_id``/``patient_id`` = MIMIC's ``study_id`` /
  ``subject_id`` as strings; the official split is kept (``validate`` → ``val``; an image absent from the
  split file gets ``""``); ``source`` = ``"mimic_cxr"``.
- views from ``ViewPosition``: ``PA``, ``AP``, ``LATERAL``, ``LL`` as they are, anything else (``AP AXIAL``,
  ``PA LLD``, ``SWIMMERS``, blank, …) → ``UNKNOWN``. ``frontal_only=True`` keeps ``PA`` and ``AP`` only.
- text: :func:`~cxrlib.data.reports.extract_sections` of the report, then
  :func:`~cxrlib.data.reports.select_text` of FINDINGS and IMPRESSION for ``text_source`` (default
  ``"findings+impression"``: both); a report with neither is skipped. With ``"impression"``/``"findings"`` a
  report lacking that section uses the other one, noted in the accounting (kept rows).
- CheXpert values: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank = not mentioned, read as
  0. The ``uncertain`` policy maps ``-1``: ``"negative"`` (U-zeros), ``"positive"`` (U-ones) or
  ``"exclude"`` (a study with ``-1`` in any finding used for the label is dropped, counted).
- label: **normal (0) iff "No Finding" is 1 and none of the 12 pathology findings is positive**; abnormal
  (1) iff any pathology finding is positive. ``Support Devices`` is not a pathology (CheXpert's own "No
  Finding" ignores it), so it does not make a study abnormal; it still appears in ``tags``. A study
  with neither "No Finding" = 1 nor a positive finding (e.g. all blank) has no label and is skipped.
- tags: the positive findings after the policy (``Support Devices`` included, ``No Finding`` not),
  lower-case with spaces → underscores (``pleural_effusion``).
- extra columns: ``chexpert_<finding>`` with the raw values (NaN = blank), ``view_position`` (raw).
- ``limit`` keeps the first ``limit`` studies in ``study_id`` order before any other filter.
- accounting: rows in = metadata rows (images); dropped rows by reason: beyond limit, not a frontal view,
  no CheXpert row, uncertain finding (exclude policy), no label, report file missing, no findings or
  impression, image file missing.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlib.data.manifest import COLUMNS, Accounting, empty_manifest, join_tags, validate_manifest
from cxrlib.data.reports import DEFAULT_TEXT_SOURCE, clean_text, extract_sections, select_text
from cxrlib.paths import relative_to_repo, resolve

__all__ = [
    "CHEXPERT_FINDINGS",
    "PATHOLOGIES",
    "UNCERTAIN_POLICIES",
    "LAYOUT_HELP",
    "load_mimic_cxr",
    "report_relpath",
    "image_relpath",
]

log = logging.getLogger(__name__)

#: The 14 CheXpert columns of ``mimic-cxr-2.0.0-chexpert.csv.gz``.
CHEXPERT_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
#: Findings that make a study abnormal (all but "No Finding" and "Support Devices").
PATHOLOGIES: tuple[str, ...] = tuple(
    f for f in CHEXPERT_FINDINGS if f not in ("No Finding", "Support Devices")
)
UNCERTAIN_POLICIES: tuple[str, ...] = ("negative", "positive", "exclude")

METADATA = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT = "mimic-cxr-2.0.0-split.csv"

LAYOUT_HELP = """\
Expected MIMIC-CXR-JPG 2.0.0/2.1.0 (PhysioNet, credentialed access; see data/README.md, "MIMIC-CXR-JPG"):
  <data_dir>/mimic-cxr-2.0.0-metadata.csv.gz
  <data_dir>/mimic-cxr-2.0.0-chexpert.csv.gz
  <data_dir>/mimic-cxr-2.0.0-split.csv.gz
  <data_dir>/files/p10/p10000032/s50414267/<dicom_id>.jpg
and the reports from MIMIC-CXR (mimic-cxr-reports.zip), either as the zip in <data_dir>, extracted next
to the images (<data_dir>/files/p10/p10000032/s50414267.txt), or passed as reports_dir=..."""

R_LIMIT = "beyond limit"
R_DUP = "duplicate image id (dicom_id; first kept)"
R_VIEW = "not a frontal view (frontal_only=True)"
R_NO_CHEXPERT = "no CheXpert labels for the study"
R_UNCERTAIN = "uncertain finding (uncertain='exclude')"
R_NO_LABEL = "no label (No Finding not set and no positive finding)"
R_NO_REPORT = "report file missing"
R_NO_TEXT = "no findings or impression"
R_MISSING = "image file missing"

_VIEWS = {"PA": "PA", "AP": "AP", "LATERAL": "LATERAL", "LL": "LL"}
_SPLITS = {"train": "train", "validate": "val", "validation": "val", "val": "val", "test": "test"}


def report_relpath(subject_id: str, study_id: str) -> str:
    """``files/p10/p10000032/s50414267.txt`` for subject 10000032, study 50414267."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"


def image_relpath(subject_id: str, study_id: str, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


def _csv(data_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir / (stem + '.gz')} not found.\n{LAYOUT_HELP}")


def _read(path: Path, required: tuple[str, ...], str_cols: tuple[str, ...]) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={c: str for c in str_cols})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing}; its columns are {list(df.columns)}.\n{LAYOUT_HELP}"
        )
    for c in str_cols:
        if c in df.columns:
            df[c] = df[c].fillna("").str.strip()
    return df


def _report_reader(data_dir: Path, reports_dir: Path | None) -> tuple[Callable[[str], str | None], str]:
    """A function ``relpath → report text or None``, and a description of where it reads from."""

    def from_dir(root: Path) -> Callable[[str], str | None]:
        base = root.parent if root.name == "files" else root

        def read(rel: str) -> str | None:
            p = base / rel
            try:
                return p.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                return None

        return read

    def from_zip(path: Path) -> Callable[[str], str | None]:
        zf = zipfile.ZipFile(path)
        index: dict[str, str] = {}
        for name in zf.namelist():
            if name.endswith(".txt") and "/files/" in "/" + name:
                index[name[name.index("files/") :]] = name

        def read(rel: str) -> str | None:
            name = index.get(rel)
            return None if name is None else zf.read(name).decode("utf-8", errors="replace")

        return read

    if reports_dir is not None:
        reports_dir = resolve(reports_dir)
        if reports_dir.is_file() and zipfile.is_zipfile(reports_dir):
            return from_zip(reports_dir), str(reports_dir)
        if reports_dir.is_dir():
            return from_dir(reports_dir), str(reports_dir)
        raise FileNotFoundError(
            f"reports_dir {reports_dir} is neither a folder nor a zip file.\n{LAYOUT_HELP}"
        )
    candidates: list[tuple[Callable[[str], str | None], str]] = [
        (from_dir(data_dir), str(data_dir / "files"))
    ]
    if (data_dir / "mimic-cxr-reports").is_dir():
        candidates.append((from_dir(data_dir / "mimic-cxr-reports"), str(data_dir / "mimic-cxr-reports")))
    if (data_dir / "mimic-cxr-reports.zip").is_file():
        candidates.append(
            (from_zip(data_dir / "mimic-cxr-reports.zip"), str(data_dir / "mimic-cxr-reports.zip"))
        )
    return _first_with_reports(candidates), " or ".join(c[1] for c in candidates)


def _first_with_reports(
    candidates: list[tuple[Callable[[str], str | None], str]],
) -> Callable[[str], str | None]:
    chosen: list[Callable[[str], str | None]] = []

    def read(rel: str) -> str | None:
        if chosen:
            return chosen[0](rel)
        for fn, _ in candidates:
            text = fn(rel)
            if text is not None:
                chosen.append(fn)  # the first source that has a report serves all of them
                return text
        return None

    return read


def _policy(values: pd.DataFrame, uncertain: str) -> pd.DataFrame:
    """CheXpert values (NaN/1/0/-1) → 0/1 after the uncertainty policy (NaN → 0)."""
    v = values.fillna(0.0)
    v = v.where(v != -1.0, 1.0 if uncertain == "positive" else 0.0)
    return (v == 1.0).astype(np.int8)


def load_mimic_cxr(
    data_dir: str | os.PathLike[str],
    uncertain: str = "negative",
    frontal_only: bool = True,
    reports_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    text_source: str = DEFAULT_TEXT_SOURCE,
) -> tuple[pd.DataFrame, Accounting]:
    """Read MIMIC-CXR-JPG from ``data_dir`` into a manifest (rules in the module docstring).

    Returns ``(manifest, accounting)``; the manifest is ordered by (study_id, dicom_id) and keeps the
    official split. ``text_source``: one of :data:`cxrlib.data.reports.TEXT_SOURCES`. Raises
    ``FileNotFoundError`` naming the expected layout when a file is missing.
    """
    select_text("", "", text_source)  # an unknown text_source fails here, before any reading
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    data_dir = resolve(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MIMIC-CXR-JPG folder {data_dir} does not exist.\n{LAYOUT_HELP}")
    ids = ("dicom_id", "subject_id", "study_id")
    meta = _read(_csv(data_dir, METADATA), (*ids, "ViewPosition"), (*ids, "ViewPosition"))
    chex = _read(
        _csv(data_dir, CHEXPERT), ("subject_id", "study_id", *CHEXPERT_FINDINGS), ("subject_id", "study_id")
    )
    split = _read(_csv(data_dir, SPLIT), ("dicom_id", "split"), ("dicom_id", "split"))
    read_report, where = _report_reader(data_dir, Path(reports_dir) if reports_dir is not None else None)

    acc = Accounting("mimic_cxr", rows_in=len(meta))
    df = meta.copy()
    df["_study_key"] = pd.to_numeric(df["study_id"], errors="coerce")
    df = df.sort_values(["_study_key", "study_id", "dicom_id"], kind="stable").reset_index(drop=True)

    def drop(mask: pd.Series | np.ndarray, reason: str, detail: Callable[[pd.DataFrame], pd.Series]) -> None:
        nonlocal df
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            gone = df[mask]
            for ident in detail(gone.head(acc.max_examples)):
                acc.drop(reason, ident, n=0)
            acc.dropped[reason] += int(mask.sum())
            df = df[~mask].reset_index(drop=True)

    def by_dicom(g: pd.DataFrame) -> pd.Series:
        return g["dicom_id"] + " (study " + g["study_id"] + ")"

    drop(df["dicom_id"].duplicated(keep="first").to_numpy(), R_DUP, by_dicom)  # a repeated metadata row

    if limit is not None:
        studies = df["study_id"].drop_duplicates()
        keep = set(studies.iloc[:limit])
        drop(~df["study_id"].isin(keep), R_LIMIT, by_dicom)

    df["view"] = df["ViewPosition"].str.upper().map(_VIEWS).fillna("UNKNOWN")
    if frontal_only:
        drop(
            ~df["view"].isin(("PA", "AP")),
            R_VIEW,
            lambda g: g["dicom_id"] + " (ViewPosition=" + g["ViewPosition"].replace("", "<blank>") + ")",
        )

    chex = chex.drop_duplicates(["subject_id", "study_id"])
    raw = chex.set_index(["subject_id", "study_id"])[list(CHEXPERT_FINDINGS)].apply(
        pd.to_numeric, errors="coerce"
    )
    key = pd.MultiIndex.from_arrays([df["subject_id"], df["study_id"]])
    has = key.isin(raw.index)
    drop(~has, R_NO_CHEXPERT, by_dicom)
    key = pd.MultiIndex.from_arrays([df["subject_id"], df["study_id"]])
    values = raw.reindex(key).reset_index(drop=True)

    if uncertain == "exclude":
        unc = (values[list(PATHOLOGIES)] == -1.0).any(axis=1).to_numpy()
        drop(unc, R_UNCERTAIN, by_dicom)
        values = values[~unc].reset_index(drop=True)
    pos = _policy(values, uncertain)
    any_path = pos[list(PATHOLOGIES)].any(axis=1).to_numpy()
    no_finding = pos["No Finding"].to_numpy() == 1
    unlabeled = ~any_path & ~no_finding
    drop(unlabeled, R_NO_LABEL, by_dicom)
    label = np.where(any_path, 1, 0)[~unlabeled]
    values = values[~unlabeled].reset_index(drop=True)
    pos = pos[~unlabeled].reset_index(drop=True)
    df["label"] = label.astype(np.int64)
    tag_cols = [f for f in CHEXPERT_FINDINGS if f != "No Finding"]
    tag_names = np.array([f.lower().replace(" ", "_") for f in tag_cols])
    pos_mat = pos[tag_cols].to_numpy().astype(bool)
    df["tags"] = [join_tags(tag_names[r]) for r in pos_mat]
    for f in CHEXPERT_FINDINGS:
        df["chexpert_" + f.lower().replace(" ", "_")] = values[f].to_numpy()

    # reports, read once per study
    texts: dict[str, tuple[str, str, str, str] | None] = {}  # findings, impression, text, fallback note
    for sub, stu in df[["subject_id", "study_id"]].drop_duplicates().itertuples(index=False):
        report = read_report(report_relpath(sub, stu))
        if report is None:
            texts[stu] = None
            continue
        sec = extract_sections(report)
        f, i = clean_text(sec.get("findings", "")), clean_text(sec.get("impression", ""))
        texts[stu] = (f, i, *select_text(f, i, text_source))
    if len(df) and all(v is None for v in texts.values()):
        raise FileNotFoundError(
            f"no MIMIC-CXR report found for any of the {len(texts)} studies (looked in {where}).\n{LAYOUT_HELP}"
        )
    drop(
        df["study_id"].map(lambda s: texts[s] is None).to_numpy(),
        R_NO_REPORT,
        lambda g: g.apply(lambda r: report_relpath(r["subject_id"], r["study_id"]), axis=1),
    )
    drop(df["study_id"].map(lambda s: texts[s][2] == "").to_numpy(), R_NO_TEXT, by_dicom)
    df["findings"] = df["study_id"].map(lambda s: texts[s][0])
    df["impression"] = df["study_id"].map(lambda s: texts[s][1])
    df["text"] = df["study_id"].map(lambda s: texts[s][2])

    rel = [
        image_relpath(a, b, c)
        for a, b, c in zip(df["subject_id"], df["study_id"], df["dicom_id"], strict=True)
    ]
    full = [data_dir / r for r in rel]
    exists = np.array([p.is_file() for p in full], dtype=bool)
    df["image_path"] = [relative_to_repo(p) for p in full]
    drop(~exists, R_MISSING, lambda g: g["image_path"])

    split_map = dict(zip(split["dicom_id"], split["split"].str.lower().map(_SPLITS).fillna(""), strict=True))
    df["split"] = df["dicom_id"].map(split_map).fillna("")
    df["image_id"] = df["dicom_id"]
    df["patient_id"] = df["subject_id"]
    df["source"] = "mimic_cxr"
    df["view_position"] = df["ViewPosition"]
    for dicom, stu in zip(df["dicom_id"], df["study_id"], strict=True):
        if texts[stu][3]:  # kept rows whose text fell back to the other section
            acc.note(texts[stu][3], f"{dicom} (study {stu})")
    acc.rows_kept = len(df)
    acc.check()
    if df.empty:
        return validate_manifest(empty_manifest()), acc
    extra = [c for c in df.columns if c.startswith("chexpert_")] + ["view_position"]
    return validate_manifest(df[[*COLUMNS, *extra]].reset_index(drop=True)), acc
