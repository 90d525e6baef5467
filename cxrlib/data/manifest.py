"""The manifest: one row per image–report pair, the single interface between data and everything else.

Every loader (phantom, IU X-ray, MIMIC-CXR-JPG, generic CSV) returns a DataFrame in this schema, and
notebooks 02–04 only ever read manifests. Columns (all required):

==============  =====  =====================================================================================
column          type   meaning
==============  =====  =====================================================================================
image_id        str    unique per row (one image file)
study_id        str    the radiology study (one report); several images may share it
patient_id      str    the patient; the unit of splitting
image_path      str    where the original image is, relative to the repo root when inside it (see paths)
view            str    ``PA``, ``AP``, ``FRONTAL`` (frontal, projection unknown), ``LATERAL``, ``LL`` or ``UNKNOWN``
findings        str    the FINDINGS section, cleaned (``""`` when the report has none)
impression      str    the IMPRESSION section, cleaned (``""`` when absent)
text            str    what the text encoder sees: :func:`cxrlib.data.reports.select_text` of the two for
                       ``data.text_source`` (default: :func:`~cxrlib.data.reports.compose_text`, both)
label           int    0 = normal, 1 = abnormal (each loader documents its rule in data/README.md)
tags            str    finding tags joined by ``|`` in sorted order (``""`` when none)
split           str    ``train``, ``val``, ``test``, ``pretrain`` (phantom only: reserved for the demo
                       backbone, disjoint from the others) or ``""`` (not assigned yet)
source          str    ``phantom``, ``iu_xray``, ``mimic_cxr`` or ``csv``
==============  =====  =====================================================================================

Extra columns are allowed and kept (the phantom adds ``finding_<name>`` multi-hot columns, severities and
its report-noise flag; MIMIC-CXR keeps its CheXpert values).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "SPLITS",
    "VIEWS",
    "FRONTAL_VIEWS",
    "LABEL_NAMES",
    "ManifestError",
    "Accounting",
    "empty_manifest",
    "validate_manifest",
    "save_manifest",
    "load_manifest",
    "manifest_hash",
    "patient_split",
    "join_tags",
]

COLUMNS: dict[str, type] = {
    "image_id": str,
    "study_id": str,
    "patient_id": str,
    "image_path": str,
    "view": str,
    "findings": str,
    "impression": str,
    "text": str,
    "label": int,
    "tags": str,
    "split": str,
    "source": str,
}
SPLITS: tuple[str, ...] = ("train", "val", "test", "pretrain", "")
VIEWS: tuple[str, ...] = ("PA", "AP", "FRONTAL", "LATERAL", "LL", "UNKNOWN")
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "FRONTAL")
LABEL_NAMES: dict[int, str] = {0: "normal", 1: "abnormal"}


class ManifestError(ValueError):
    """A manifest breaks the schema; the message names the column and the offending rows."""


@dataclass
class Accounting:
    """What a loader did with its input: rows in, rows kept, rows dropped by reason (nothing silent).

    ``examples`` keeps up to ``max_examples`` identifiers per reason so a user can look at them. ``noted``
    counts kept rows that a rule changed (e.g. a blank patient id replaced), by reason; they are part of
    ``rows_kept``, not dropped.
    """

    source: str
    rows_in: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5
    noted: Counter = field(default_factory=Counter)

    def drop(self, reason: str, ident: object = None, n: int = 1) -> None:
        """Count ``n`` rows dropped for ``reason`` (``ident`` names one of them, e.g. a file or row)."""
        self.dropped[reason] += n
        if ident is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < self.max_examples:
                ex.append(str(ident))

    def note(self, reason: str, ident: object = None, n: int = 1) -> None:
        """Count ``n`` kept rows that were changed for ``reason`` (``ident`` names one of them)."""
        self.noted[reason] += n
        if ident is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < self.max_examples:
                ex.append(str(ident))

    @property
    def rows_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def check(self) -> None:
        """Raise if kept + dropped does not add up to the rows read (a silent loss)."""
        if self.rows_kept + self.rows_dropped != self.rows_in:
            raise AssertionError(
                f"{self.source}: {self.rows_in} rows in, but {self.rows_kept} kept + "
                f"{self.rows_dropped} dropped = {self.rows_kept + self.rows_dropped}"
            )

    def merge(self, other: Accounting) -> Accounting:
        out = Accounting(self.source, self.rows_in + other.rows_in, self.rows_kept + other.rows_kept)
        out.dropped = self.dropped + other.dropped
        out.noted = self.noted + other.noted
        for src in (self.examples, other.examples):
            for k, v in src.items():
                out.examples.setdefault(k, []).extend(v)
        return out

    def to_frame(self) -> pd.DataFrame:
        """A table: one row for input, one per drop reason, one for kept rows, then one per noted reason."""
        rows = [{"step": "rows read", "rows": self.rows_in, "examples": ""}]
        for reason, n in sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(
                {
                    "step": f"dropped: {reason}",
                    "rows": -int(n),
                    "examples": ", ".join(self.examples.get(reason, [])),
                }
            )
        rows.append({"step": "rows kept", "rows": self.rows_kept, "examples": ""})
        for reason, n in sorted(self.noted.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(
                {
                    "step": f"kept, of which: {reason}",
                    "rows": int(n),
                    "examples": ", ".join(self.examples.get(reason, [])),
                }
            )
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.rows_in} in, {self.rows_kept} kept"]
        parts += [f"{n} dropped ({r})" for r, n in sorted(self.dropped.items())]
        parts += [f"{n} kept with {r}" for r, n in sorted(self.noted.items())]
        return ", ".join(parts)


def empty_manifest() -> pd.DataFrame:
    """A zero-row manifest with the schema's columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if t is int else "object") for c, t in COLUMNS.items()})


def _rows(mask: np.ndarray | pd.Series, df: pd.DataFrame, limit: int = 5) -> str:
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(
        f"row {i} (image_id={df['image_id'].iloc[i]!r})" if "image_id" in df.columns else f"row {i}"
        for i in idx[:limit]
    )
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return shown + more


def validate_manifest(df: pd.DataFrame, require_split: bool = False) -> pd.DataFrame:
    """Check ``df`` against the schema and return it with canonical dtypes.

    Raises :class:`ManifestError` naming the column and the first offending rows when: a column is
    missing; a string column holds a non-string or missing value; ``label`` is not 0/1; ``image_id`` is
    duplicated; ``view`` or ``split`` has an unknown value; ``text`` is empty; a study maps to several
    patients; or (``require_split=True``) a row has no split or a patient sits in two splits.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"manifest is missing column(s) {missing}; required columns are {list(COLUMNS)} "
            "(see cxrlib/data/manifest.py)"
        )
    out = df.copy()
    for col, typ in COLUMNS.items():
        if typ is str:
            bad = out[col].map(lambda v: not isinstance(v, str))
            if bad.any():
                raise ManifestError(
                    f"column {col!r} must hold strings (use '' for empty); bad value at {_rows(bad, out)}"
                )
            out[col] = out[col].astype(object)
    lab = pd.to_numeric(out["label"], errors="coerce")
    bad = ~lab.isin([0, 1])
    if bad.any():
        raise ManifestError(
            f"column 'label' must be 0 (normal) or 1 (abnormal); bad value at {_rows(bad, out)}"
        )
    out["label"] = lab.astype("int64")
    dup = out["image_id"].duplicated(keep=False)
    if dup.any():
        raise ManifestError(f"column 'image_id' must be unique; duplicated at {_rows(dup, out)}")
    bad = ~out["view"].isin(VIEWS)
    if bad.any():
        raise ManifestError(f"column 'view' must be one of {list(VIEWS)}; bad value at {_rows(bad, out)}")
    bad = ~out["split"].isin(SPLITS)
    if bad.any():
        raise ManifestError(f"column 'split' must be one of {list(SPLITS)}; bad value at {_rows(bad, out)}")
    bad = out["text"].str.strip() == ""
    if bad.any():
        raise ManifestError(
            f"column 'text' is empty at {_rows(bad, out)}; loaders must skip (and count) reports with "
            "neither findings nor impression"
        )
    n_pat = out.groupby("study_id")["patient_id"].nunique()
    if (n_pat > 1).any():
        studies = list(n_pat[n_pat > 1].index[:5])
        raise ManifestError(f"study_id maps to several patient_ids: {studies}")
    if require_split:
        bad = out["split"] == ""
        if bad.any():
            raise ManifestError(f"column 'split' is unassigned at {_rows(bad, out)}; run patient_split first")
        n_split = out.groupby("patient_id")["split"].nunique()
        if (n_split > 1).any():
            pats = list(n_split[n_split > 1].index[:5])
            raise ManifestError(f"patients in more than one split (a leak between splits): {pats}")
    return out


def save_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write ``df`` as Parquet (atomically, under a per-process temporary name: a crash never
    leaves half a file, and two writers never share a temporary file)."""
    from cxrlib.cache import atomic_path

    path = Path(path)
    df = validate_manifest(df)
    with atomic_path(path) as tmp:
        df.reset_index(drop=True).to_parquet(tmp, index=False)
    return path


def load_manifest(path: str | Path, require_split: bool = False) -> pd.DataFrame:
    """Read a manifest written by :func:`save_manifest` and validate it.

    A file that is not readable Parquet (truncated, damaged) raises :class:`ManifestError` naming it and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no manifest at {path}. Run notebooks/01_data_preparation.ipynb first "
            "(or `python -m cxrlib.reproduce --profile <profile> --only 01`)."
        )
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ManifestError(
            f"the manifest {path} cannot be read as Parquet ({type(exc).__name__}: {str(exc)[:200]}); it is "
            "truncated or damaged. Rerun notebooks/01_data_preparation.ipynb to write it again."
        ) from exc
    return validate_manifest(df, require_split=require_split)


def manifest_hash(df: pd.DataFrame, columns: Sequence[str] = ("image_id", "text", "label", "split")) -> str:
    """A short content hash of the columns that embeddings and results depend on (row order included)."""
    h = hashlib.sha256()
    for col in columns:
        h.update(col.encode())
        h.update(pd.util.hash_pandas_object(df[col].astype(str), index=False).values.tobytes())
    return h.hexdigest()[:16]


def join_tags(tags: Iterable[str]) -> str:
    """Canonical ``tags`` value: unique, stripped, lower-case, sorted, joined by ``|``."""
    return "|".join(sorted({t.strip().lower() for t in tags if t and t.strip()}))


_OFFICIAL_SPLIT_NAMES = {
    "train": "train",
    "validate": "val",
    "validation": "val",
    "val": "val",
    "test": "test",
}


def patient_split(
    df: pd.DataFrame,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    honour_existing: bool = True,
) -> pd.DataFrame:
    """Assign ``split`` (train/val/test) by patient, stratified by label. Returns a new DataFrame.

    - No patient ever lands in two splits: all rows of a patient go together.
    - Stratification: a patient is "abnormal" if any of their rows is; within each stratum patients are
      shuffled with ``seed`` and dealt to the splits so that each split gets ``ratios`` of the stratum's
      *rows* (patients have different numbers of images).
    - ``honour_existing=True`` keeps rows that already have a split (an official split, e.g. MIMIC-CXR's;
      ``validate`` is read as ``val``) and rows reserved as ``pretrain``; only unassigned (``""``) rows are
      dealt. A patient who is partly assigned keeps their existing split for all rows.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(
            f"ratios must be three non-negative numbers (train, val, test) summing to 1, got {ratios}"
        )
    out = df.copy()
    out["split"] = out["split"].map(lambda s: _OFFICIAL_SPLIT_NAMES.get(s, s))
    if not honour_existing:
        out.loc[out["split"] != "pretrain", "split"] = ""
    # a patient with some rows assigned takes that split for all rows
    assigned = out[out["split"] != ""].groupby("patient_id")["split"].agg(lambda s: s.mode().iloc[0])
    todo = out["split"] == ""
    carry = todo & out["patient_id"].isin(assigned.index)
    out.loc[carry, "split"] = out.loc[carry, "patient_id"].map(assigned)
    todo = out["split"] == ""
    if not todo.any():
        return out
    per_patient = out[todo].groupby("patient_id").agg(n=("label", "size"), abnormal=("label", "max"))
    rng = np.random.default_rng(seed)
    names = np.array(["train", "val", "test"])
    targets = np.cumsum(np.asarray(ratios, dtype=float))
    mapping: dict[str, str] = {}
    for stratum in (0, 1):
        pats = per_patient[per_patient["abnormal"] == stratum]
        if pats.empty:
            continue
        order = np.sort(pats.index.to_numpy().astype(str))
        order = order[rng.permutation(len(order))]
        counts = pats.loc[order, "n"].to_numpy()
        # deal by the midpoint of each patient's share of the stratum's rows
        mid = (np.cumsum(counts) - counts / 2.0) / counts.sum()
        which = np.searchsorted(targets, mid, side="right").clip(0, 2)
        mapping.update(dict(zip(order, names[which], strict=True)))
    out.loc[todo, "split"] = out.loc[todo, "patient_id"].map(mapping)
    return out
