"""A generic CSV (one row per image–report pair) → manifest, for datasets without a dedicated loader.

Every column is named explicitly by the caller (see :func:`load_csv`). Rules:

- text: either one free-text ``report_col`` — split with :func:`~cxrlib.data.reports.extract_sections`
  when it has ``FINDINGS:``/``IMPRESSION:`` headers, otherwise the whole cleaned report is the findings —
  or a pair ``(findings_col, impression_col)``; then :func:`~cxrlib.data.reports.compose_text`.
- label: the label cell, stripped and lower-cased (a number such as ``0.0`` read as ``0``), is normal (0)
  when it is in ``normal_values`` and abnormal (1) when it is in ``abnormal_values``; anything else
  (blank included) is unparseable and the row is skipped.
- image: ``image_col`` holds a path, relative to ``images_root`` (default: the CSV's folder) unless
  absolute; a missing file skips the row.
- ids: ``image_id_col`` (default: the image path as written in the CSV), ``study_col`` (default: the
  image id, one study per image), ``patient_col`` (default: the study id, one patient per study). A
  repeated image id skips the later rows (the first is kept).
- view: ``view_col`` values ``PA``, ``AP``, ``LATERAL``, ``LL``, ``FRONTAL`` (any case; ``Frontal`` and
  ``Lateral`` too); anything else, or no ``view_col``, → ``UNKNOWN``. All views are kept.
- split: ``split_col`` values ``train``, ``val``/``validate``/``validation``, ``test``, blank; another
  value skips the row. Without ``split_col`` the split is ``""`` (use ``patient_split``).
- tags: ``tags_col`` split on ``|``, ``;`` or ``,``, then :func:`~cxrlib.data.manifest.join_tags`.
- skipped rows are counted with their row number (``data row k`` = the k-th row after the header).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxrlib.data.manifest import COLUMNS, Accounting, empty_manifest, join_tags, validate_manifest
from cxrlib.data.reports import clean_text, compose_text, extract_sections
from cxrlib.paths import relative_to_repo, resolve

__all__ = ["load_csv"]

R_NO_TEXT = "empty report text"
R_LABEL = "unparseable label"
R_MISSING = "image file missing"
R_DUP = "duplicate image id (first kept)"
R_SPLIT = "unknown split value"
R_NO_IMAGE = "empty image path"

_VIEWS = {"pa": "PA", "ap": "AP", "lateral": "LATERAL", "lat": "LATERAL", "ll": "LL", "frontal": "FRONTAL"}
_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test", "": ""}


def _norm_label(value: object) -> str:
    s = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip().lower()
    if re.fullmatch(r"[+-]?\d+\.0*", s):
        s = s.split(".")[0].lstrip("+")
    return s


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
) -> tuple[pd.DataFrame, Accounting]:
    """Read a CSV of image–report pairs into a manifest (rules in the module docstring).

    ``report_col`` is one column name (a free-text report) or a ``(findings_col, impression_col)`` pair.
    A named column that the CSV lacks raises ``ValueError`` listing the CSV's actual columns.
    Returns ``(manifest, accounting)`` with ``source = "csv"``, rows in CSV order.
    """
    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV {path} not found (see data/README.md, 'Generic CSV')")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
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
        text = compose_text(findings, impression)
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
        patient = (rec[patient_col].strip() if patient_col is not None else "") or study
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
    acc.rows_kept = len(rows)
    acc.check()
    if not rows:
        return validate_manifest(empty_manifest()), acc
    out = pd.DataFrame(rows)[[*COLUMNS, "csv_row"]]
    return validate_manifest(out), acc
