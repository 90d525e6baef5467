"""A generic CSV (one row per image–report pair) → manifest, for datasets without a dedicated loader.

Every column is named explicitly by the caller (see :func:`load_csv`). Rules:

- text: either one free-text ``report_col`` — split with :func:`~cxrlib.data.reports.extract_sections`
  when it has ``FINDINGS:``/``IMPRESSION:`` headers, otherwise the whole cleaned report is the findings —
  or a pair ``(findings_col, impression_col)``; then :func:`~cxrlib.data.reports.select_text` for
  ``text_source`` (default ``"findings+impression"``: both sections; ``"impression"``/``"findings"`` fall back
  to the other section when theirs is empty, noted in the accounting; ``"longest"``). A free-text report
  without headers counts as FINDINGS, so ``"impression"`` falls back to it (noted).
- label: the label cell, stripped and lower-cased (a number such as ``0.0`` read as ``0``), is normal (0)
  when it is in ``normal_values`` and abnormal (1) when it is in ``abnormal_values``; anything else
  (blank included) is unparseable and the row is skipped.
- image: ``image_col`` holds a path, relative to ``images_root`` (default: the CSV's folder) unless
  absolute; a missing file skips the row.
- ids: ``image_id_col`` (default: the image path as written in the CSV), ``study_col`` (default: the
  image id, one study per image), ``patient_col`` (default: the study id, one patient per study). A
  repeated image id skips the later rows (the first is kept).
- blank patient ids (with a ``patient_col``): refused by default (``blank_patient="refuse"``): a
  ``ValueError`` counts and names the rows, since a blank id would make each such image its own patient and
  let two images of one person land in train and test. ``blank_patient="own_patient"`` accepts them: such a
  row takes the patient of another row of its study when one names it, else the patient
  ``"blank-patient:<study id>"`` (one patient per study); both are counted in the accounting
  (:attr:`~cxrlib.data.manifest.Accounting.noted`).
- view: ``view_col`` values ``PA``, ``AP``, ``LATERAL``, ``LL``, ``FRONTAL`` (any case; ``Frontal`` and
  ``Lateral`` too); anything else, or no ``view_col``, → ``UNKNOWN``. All views are kept.
- split: ``split_col`` values ``train``, ``val``/``validate``/``validation``, ``test``, blank; another
  value skips the row. Without ``split_col`` the split is ``""`` (use ``patient_split``).
- tags: ``tags_col`` split on ``|``, ``;`` or ``,``, then :func:`~cxrlib.data.manifest.join_tags`.
- skipped rows are counted with their row number (``data row k`` = the k-th row after the header).
- a file that is not text in ``encoding`` (default UTF-8), has a row with more fields than the header, or is
  empty raises ``ValueError`` naming the file, the line and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxrlib.data.manifest import COLUMNS, Accounting, empty_manifest, join_tags, validate_manifest
from cxrlib.data.reports import DEFAULT_TEXT_SOURCE, clean_text, extract_sections, select_text
from cxrlib.paths import relative_to_repo, resolve

__all__ = ["load_csv"]

R_NO_TEXT = "empty report text"
R_LABEL = "unparseable label"
R_MISSING = "image file missing"
R_DUP = "duplicate image id (first kept)"
R_SPLIT = "unknown split value"
R_NO_IMAGE = "empty image path"
#: Kept rows whose blank patient id was replaced (``blank_patient="own_patient"``), in Accounting.noted.
N_PATIENT_FROM_STUDY = "blank patient id: patient taken from another row of its study"
N_OWN_PATIENT = "blank patient id: own patient (one per study)"
BLANK_PATIENT_PREFIX = "blank-patient:"
BLANK_PATIENT_RULES: tuple[str, ...] = ("refuse", "own_patient")

_VIEWS = {"pa": "PA", "ap": "AP", "lateral": "LATERAL", "lat": "LATERAL", "ll": "LL", "frontal": "FRONTAL"}
_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test", "": ""}


def _norm_label(value: object) -> str:
    s = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip().lower()
    if re.fullmatch(r"[+-]?\d+\.0*", s):
        s = s.split(".")[0].lstrip("+")
    return s


def _decode_error_where(path: Path, encoding: str) -> str:
    """Line and byte of the first byte that is not ``encoding`` (pandas reports a position in its buffer)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return f"line {line}, byte {e.start} ({data[e.start : e.start + 1]!r})"
    except LookupError:
        return ""
    return ""


def _read(path: Path, encoding: str, named: list[str]) -> pd.DataFrame:
    """``pd.read_csv`` with its raw errors turned into messages that name the file and the fix."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not valid {encoding} text (first bad byte at {_decode_error_where(path, encoding)}). "
            "Re-save it as UTF-8, or pass the file's encoding to load_csv, e.g. encoding='latin-1' "
            "(common for spreadsheet exports) or encoding='cp1252'."
        ) from exc
    except LookupError as exc:
        raise ValueError(f"unknown encoding {encoding!r} for {path}: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise ValueError(
            f"{path} is empty (no header row). A CSV for load_csv starts with a header naming its columns "
            f"(here at least {named}), then one row per image–report pair."
        ) from exc
    except pd.errors.ParserError as exc:
        msg = str(exc).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        where = (
            f"line {m.group(2)} has {m.group(3)} fields but the header has {m.group(1)}"
            if m
            else "the file could not be split into fields"
        )
        raise ValueError(
            f"{path}: {where} ({msg}). A field that contains a comma (a report text, say) must be in double "
            'quotes ("Heart normal, lungs clear."), and a double quote inside it doubled (""); fix that line '
            "(or remove the stray comma) and load again."
        ) from exc


def load_csv(
    path: str | os.PathLike[str],
    image_col: str,
    report_col: str | tuple[str, str],
    label_col: str,
    patient_col: str | None = None,
    study_col: str | None = None,
    image_id_col: str | None = None,
    view_col: str | None = None,
    split_col: str | None = None,
    tags_col: str | None = None,
    normal_values: Sequence[str] = ("normal", "0", "false", "no"),
    images_root: str | os.PathLike[str] | None = None,
    abnormal_values: Sequence[str] = ("abnormal", "1", "true", "yes"),
    blank_patient: str = "refuse",
    encoding: str = "utf-8",
    text_source: str = DEFAULT_TEXT_SOURCE,
) -> tuple[pd.DataFrame, Accounting]:
    """Read a CSV of image–report pairs into a manifest (rules in the module docstring).

    ``report_col`` is one column name (a free-text report) or a ``(findings_col, impression_col)`` pair.
    A named column that the CSV lacks raises ``ValueError`` listing the CSV's actual columns.
    ``blank_patient``: ``"refuse"`` (default: blank ids in ``patient_col`` raise ``ValueError`` naming the rows)
    or ``"own_patient"`` (see the module docstring). ``encoding``: the file's text encoding. ``text_source``:
    which sections become ``text`` (one of :data:`cxrlib.data.reports.TEXT_SOURCES`).
    Returns ``(manifest, accounting)`` with ``source = "csv"``, rows in CSV order.
    """
    if blank_patient not in BLANK_PATIENT_RULES:
        raise ValueError(f"blank_patient must be one of {BLANK_PATIENT_RULES}, got {blank_patient!r}")
    select_text("", "", text_source)  # an unknown text_source fails here, before any reading
    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV {path} not found (see data/README.md, 'Generic CSV')")
    wanted = [image_col, *([report_col] if isinstance(report_col, str) else list(report_col)), label_col]
    df = _read(path, encoding, wanted)
    if isinstance(report_col, str):
        text_cols: list[str] = [report_col]
    elif isinstance(report_col, tuple | list) and len(report_col) == 2:
        text_cols = list(report_col)
    else:
        raise ValueError(
            f"report_col must be a column name or a (findings_col, impression_col) pair, got {report_col!r}"
        )
    named = {
        "image_col": image_col,
        "report_col": text_cols,
        "label_col": label_col,
        "patient_col": patient_col,
        "study_col": study_col,
        "image_id_col": image_id_col,
        "view_col": view_col,
        "split_col": split_col,
        "tags_col": tags_col,
    }
    missing = []
    for arg, cols in named.items():
        for c in cols if isinstance(cols, list) else [cols]:
            if c is not None and c not in df.columns:
                missing.append(f"{arg}={c!r}")
    if missing:
        raise ValueError(
            f"{path}: column(s) not found: {', '.join(missing)}; the CSV's columns are {list(df.columns)}"
        )
    normal = {_norm_label(v) for v in normal_values}
    abnormal = {_norm_label(v) for v in abnormal_values}
    overlap = normal & abnormal
    if overlap:
        raise ValueError(f"values {sorted(overlap)} are in both normal_values and abnormal_values")
    root = resolve(images_root) if images_root is not None else path.parent

    acc = Accounting("csv", rows_in=len(df))
    rows: list[dict] = []
    seen: set[str] = set()
    blank: list[dict] = []  # kept rows whose patient id is blank
    for k, rec in enumerate(df.to_dict("records"), start=1):
        where = f"data row {k}"
        if len(text_cols) == 1:
            report = rec[text_cols[0]]
            sec = extract_sections(report)
            if "findings" in sec or "impression" in sec:
                findings, impression = (
                    clean_text(sec.get("findings", "")),
                    clean_text(sec.get("impression", "")),
                )
            else:
                findings, impression = clean_text(report), ""
        else:
            findings, impression = clean_text(rec[text_cols[0]]), clean_text(rec[text_cols[1]])
        text, text_note = select_text(findings, impression, text_source)
        if not text:
            acc.drop(R_NO_TEXT, where)
            continue
        lab = _norm_label(rec[label_col])
        if lab in normal:
            label = 0
        elif lab in abnormal:
            label = 1
        else:
            acc.drop(R_LABEL, f"{where} ({label_col}={rec[label_col]!r})")
            continue
        split = ""
        if split_col is not None:
            raw_split = rec[split_col].strip().lower()
            if raw_split not in _SPLITS:
                acc.drop(R_SPLIT, f"{where} ({split_col}={rec[split_col]!r})")
                continue
            split = _SPLITS[raw_split]
        img = rec[image_col].strip()
        if not img:
            acc.drop(R_NO_IMAGE, where)
            continue
        image_id = rec[image_id_col].strip() if image_id_col is not None else img
        if not image_id:
            image_id = img
        if image_id in seen:
            acc.drop(R_DUP, f"{where} (image id {image_id!r})")
            continue
        seen.add(image_id)
        p = Path(img).expanduser()
        full = p if p.is_absolute() else root / p
        if not full.is_file():
            acc.drop(R_MISSING, f"{where} ({img})")
            continue
        study = (rec[study_col].strip() if study_col is not None else "") or image_id
        patient = rec[patient_col].strip() if patient_col is not None else study
        view = _VIEWS.get(rec[view_col].strip().lower(), "UNKNOWN") if view_col is not None else "UNKNOWN"
        tags = join_tags(re.split(r"[|;,]", rec[tags_col])) if tags_col is not None else ""
        rows.append(
            {
                "image_id": image_id,
                "study_id": study,
                "patient_id": patient,
                "image_path": relative_to_repo(full),
                "view": view,
                "findings": findings,
                "impression": impression,
                "text": text,
                "label": label,
                "tags": tags,
                "split": split,
                "source": "csv",
                "csv_row": k,
            }
        )
        if text_note:
            acc.note(text_note, where)
        if not patient:
            blank.append(rows[-1])
    if blank:
        _blank_patients(path, patient_col, blank, rows, blank_patient, acc)
    acc.rows_kept = len(rows)
    acc.check()
    if not rows:
        return validate_manifest(empty_manifest()), acc
    out = pd.DataFrame(rows)[[*COLUMNS, "csv_row"]]
    return validate_manifest(out), acc


def _blank_patients(
    path: Path, patient_col: str | None, blank: list[dict], rows: list[dict], rule: str, acc: Accounting
) -> None:
    """Refuse (``ValueError`` naming the rows) or fill in the blank patient ids of ``blank`` (in place)."""
    if rule == "refuse":
        shown = ", ".join(f"data row {r['csv_row']} (image id {r['image_id']!r})" for r in blank[:5])
        more = f" and {len(blank) - 5} more" if len(blank) > 5 else ""
        raise ValueError(
            f"{path}: {len(blank)} row(s) have a blank patient id in column {patient_col!r}: {shown}{more}. "
            "Each would become a patient of its own, so two images of one person could land in train and test. "
            f"Fill in {patient_col!r} for these rows, or pass blank_patient='own_patient' to load_csv to accept "
            "them (a row then takes the patient of another row of its study, else one patient per study; "
            "counted in the accounting)."
        )
    known: dict[str, str] = {}
    for r in rows:
        if r["patient_id"]:
            known.setdefault(r["study_id"], r["patient_id"])
    for r in blank:
        where = f"data row {r['csv_row']} (image id {r['image_id']!r})"
        if r["study_id"] in known:
            r["patient_id"] = known[r["study_id"]]
            acc.note(N_PATIENT_FROM_STUDY, where)
        else:
            r["patient_id"] = BLANK_PATIENT_PREFIX + r["study_id"]
            acc.note(N_OWN_PATIENT, where)
