"""One entry point for notebook 01: dataset name -> manifest + accounting, then split and image cache.

``prepare_dataset`` runs the whole data step: load (or generate) the dataset, assign patient-level splits,
decode the images once into the cache, save the manifest. Every row that does not make it is counted with its
reason in the returned :class:`~cxrlib.data.manifest.Accounting`.

``data.text_source`` (which report sections become ``text``, :data:`cxrlib.data.reports.TEXT_SOURCES`) is passed
to every loader; the phantom's ``text`` is re-chosen from its ``findings``/``impression`` columns the same way
(the default, ``"findings+impression"``, reproduces the generator's ``text`` exactly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrlib.cache import atomic_path, file_lock, read_stamp, write_json_atomic, write_stamp
from cxrlib.config import DATASETS, DataConfig, PhantomConfig
from cxrlib.data.manifest import Accounting, patient_split, save_manifest, validate_manifest
from cxrlib.data.reports import DEFAULT_TEXT_SOURCE, select_text
from cxrlib.paths import data_dir as default_data_dir

__all__ = ["DATASETS", "PreparedData", "load_dataset", "prepare_dataset", "manifest_path", "open_prepared"]


@dataclass
class PreparedData:
    manifest: pd.DataFrame  # rows in the image cache, with splits
    accounting: Accounting  # loader + image cache, rows in/kept/dropped by reason
    manifest_path: Path
    image_cache_dir: Path

    @property
    def lateral_dropped(self) -> dict[str, int]:
        """``{view table file name: images dropped as lateral}`` (IU X-ray with ``frontal_only``; else ``{}``).

        E.g. ``{"nlmcxr_dicom_metadata.csv.gz": 3689}``: the accounting's ``lateral view (from <table>)`` rows.
        """
        from cxrlib.data.iu_xray import lateral_drops

        return lateral_drops(self.accounting)

    @property
    def views_unknown(self) -> dict[str, int]:
        """Kept images whose view is unknown, by reason (``{"view unknown: image not in <table>": n, ...}``)."""
        return {r: int(n) for r, n in sorted(self.accounting.noted.items()) if r.startswith("view unknown")}


def manifest_path(work_dir: str | Path) -> Path:
    return Path(work_dir) / "manifest.parquet"


def _apply_text_source(df: pd.DataFrame, source: str, acc: Accounting) -> pd.DataFrame:
    """Re-choose ``text`` from a manifest's ``findings``/``impression`` (the phantom); fallbacks are noted.

    The default source gives back the frame unchanged (its ``text`` is ``compose_text`` already). A row left
    without text (both sections empty) is dropped, counted.
    """
    if source == DEFAULT_TEXT_SOURCE:
        return df
    chosen = [select_text(f, i, source) for f, i in zip(df["findings"], df["impression"], strict=True)]
    out = df.copy()
    out["text"] = [t for t, _ in chosen]
    for iid, (_, note) in zip(out["image_id"], chosen, strict=True):
        if note:
            acc.note(note, iid)
    empty = out["text"] == ""
    if empty.any():
        for iid in out.loc[empty, "image_id"]:
            acc.drop("no findings or impression", iid)
        acc.rows_kept -= int(empty.sum())
        out = out[~empty].reset_index(drop=True)
    return out


def _phantom(work_dir: Path, cfg: PhantomConfig, seed: int, image_size: int, progress: bool) -> pd.DataFrame:
    """Generate the phantom corpus, or reuse it when the same settings made it before.

    The stamp is the whole :class:`~cxrlib.config.PhantomConfig` (plus seed and image size), so a new
    generator setting joins it by itself.
    """
    from cxrlib.data.phantom import generate_corpus
    from cxrlib.paths import resolve

    out = work_dir / "phantom"
    stamp = out / "corpus.json"
    # "generator": bumped whenever the phantom's rendering or report grammar changes (3: longer normal phrasings)
    key = {"phantom": cfg.to_dict(), "seed": int(seed), "image_size": int(image_size), "generator": 3}
    cached = out / "manifest.parquet"
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(stamp):  # two runs of one profile: the second waits, then reuses the first's corpus
        if read_stamp(stamp) == key and cached.is_file():
            df = pd.read_parquet(cached)
            if all(resolve(p).is_file() for p in df["image_path"]):
                return df
        # drop the old stamp first: an interrupted run must not leave an old stamp + manifest vouching for
        # images that the new run has already partly overwritten (same file names, other pixels)
        stamp.unlink(missing_ok=True)
        df = generate_corpus(out, cfg, seed=seed, image_size=image_size, progress=progress)
        with atomic_path(cached) as tmp:
            df.to_parquet(tmp, index=False)
        write_stamp(stamp, key)
    return df


def load_dataset(
    data: DataConfig,
    work_dir: str | Path,
    phantom: PhantomConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, Accounting]:
    """Load one dataset as a manifest (splits not yet assigned, except official ones) with its accounting.

    ``data.data_dir`` "" means ``data/<dataset>`` (or ``$CXR_DATA_DIR/<dataset>``). ``data.row_limit`` > 0 keeps
    the first N reports/studies (deterministic, counted as dropped "beyond limit"). ``data.csv_options`` are the
    keyword arguments of :func:`cxrlib.data.csv_manifest.load_csv` (``path``, ``image_col``, ...; its
    ``text_source`` is ``data.text_source``). ``phantom`` (dataset ``phantom`` only) are the generator's settings.
    """
    if not isinstance(data, DataConfig):
        raise TypeError(
            f"load_dataset needs a cxrlib.config.DataConfig, got {type(data).__name__}: "
            "e.g. load_dataset(DataConfig(dataset='iu_xray'), work_dir)"
        )
    dataset = data.dataset
    work_dir = Path(work_dir)
    limit = int(data.row_limit) if data.row_limit else None
    src = Path(data.data_dir) if data.data_dir else default_data_dir(dataset)
    if dataset == "phantom":
        df = _phantom(work_dir, phantom or PhantomConfig(), seed, data.image_size, progress)
        acc = Accounting("phantom (synthetic)", rows_in=len(df), rows_kept=len(df))
        if limit is not None and len(df) > limit:
            acc.drop("beyond row_limit", n=len(df) - limit)
            acc.rows_kept = limit
            df = df.iloc[:limit]
        df = _apply_text_source(df, data.text_source, acc)
        acc.check()
        return df, acc
    if dataset == "iu_xray":
        from cxrlib.data.iu_xray import load_iu_xray

        return load_iu_xray(src, frontal_only=data.frontal_only, limit=limit, text_source=data.text_source)
    if dataset == "mimic_cxr":
        from cxrlib.data.mimic_cxr import load_mimic_cxr

        return load_mimic_cxr(
            src,
            uncertain=data.mimic_uncertain,
            frontal_only=data.frontal_only,
            limit=limit,
            text_source=data.text_source,
        )
    from cxrlib.data.csv_manifest import load_csv

    opts = dict(data.csv_options or {})
    if "path" not in opts:
        raise ValueError(
            "dataset='csv' needs data.csv_options with at least path, image_col, report_col and label_col "
            "(see cxrlib.data.csv_manifest.load_csv and data/README.md)"
        )
    if opts.get("text_source", data.text_source) != data.text_source:
        raise ValueError(
            f"data.csv_options.text_source={opts['text_source']!r} differs from data.text_source="
            f"{data.text_source!r}: set it once, as data.text_source (it applies to every dataset)"
        )
    opts["text_source"] = data.text_source
    df, acc = load_csv(**opts)
    if limit is not None and len(df) > limit:
        acc.drop("beyond row_limit", n=len(df) - limit)
        acc.rows_kept -= len(df) - limit
        df = df.iloc[:limit]
    return df, acc


def prepare_dataset(
    data: DataConfig,
    work_dir: str | Path,
    phantom: PhantomConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> PreparedData:
    """Load -> patient-level split -> image cache -> save manifest (see the module docstring)."""
    from cxrlib.data.images import build_image_cache

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    df, acc = load_dataset(data, work_dir, phantom=phantom, seed=seed, progress=progress)
    df = patient_split(validate_manifest(df), ratios=tuple(data.split_ratios), seed=seed)
    # re-validate: canonical dtypes (patient_split's map gives `split` pandas' string dtype, unlike a manifest
    # read back from disk) and a check that every row has a split and no patient sits in two
    df = validate_manifest(df, require_split=True)
    cache_dir = work_dir / "images"
    kept, img_acc = build_image_cache(
        df, cache_dir, data.image_size, aspect=data.aspect, num_workers=data.num_workers, progress=progress
    )
    total = Accounting(acc.source, rows_in=acc.rows_in, rows_kept=len(kept))
    total.dropped = acc.dropped + img_acc.dropped
    total.noted = acc.noted + img_acc.noted
    for src in (acc.examples, img_acc.examples):
        for k, v in src.items():
            total.examples.setdefault(k, []).extend(v)
    total.check()
    path = save_manifest(kept.reset_index(drop=True), manifest_path(work_dir))
    record = {
        "dataset": data.dataset,
        "image_size": int(data.image_size),
        "aspect": data.aspect,
        "seed": int(seed),
        "split_ratios": [float(r) for r in data.split_ratios],
        "text_source": data.text_source,
        "rows": len(kept),
    }
    write_json_atomic(work_dir / PREPARED_FILE, record, indent=2)
    return PreparedData(kept.reset_index(drop=True), total, path, cache_dir)


#: Written by :func:`prepare_dataset` beside the manifest: how the image cache was made.
PREPARED_FILE = "prepared.json"


def open_prepared(work_dir: str | Path):
    """What notebook 01 wrote to ``work_dir``: ``(manifest, image_cache, record)``.

    Notebooks 02-04 start here. A clear error names the notebook to run when anything is missing.
    """
    from cxrlib.data.images import ImageCache
    from cxrlib.data.manifest import load_manifest

    work_dir = Path(work_dir)
    rec_path = work_dir / PREPARED_FILE
    if not rec_path.is_file():
        raise FileNotFoundError(
            f"nothing prepared in {work_dir} (no {PREPARED_FILE}). Run notebooks/01_data_preparation.ipynb first "
            "(or `python -m cxrlib.reproduce --profile <profile> --only 01`)."
        )
    record = json.loads(rec_path.read_text())
    manifest = load_manifest(manifest_path(work_dir), require_split=True)
    cache = ImageCache.open(work_dir / "images", record["image_size"], record["aspect"])
    return manifest, cache, record
