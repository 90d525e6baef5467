"""One entry point for notebook 01: dataset name -> manifest + accounting, then split and image cache.

``prepare_dataset`` runs the whole data step: load (or generate) the dataset, assign patient-level splits,
decode the images once into the cache, save the manifest. Every row that does not make it is counted with its
reason in the returned :class:`~cxrlib.data.manifest.Accounting`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxrlib.config import PhantomConfig
from cxrlib.data.manifest import Accounting, patient_split, save_manifest, validate_manifest
from cxrlib.paths import data_dir as default_data_dir

__all__ = ["DATASETS", "PreparedData", "load_dataset", "prepare_dataset", "manifest_path", "open_prepared"]

DATASETS: tuple[str, ...] = ("phantom", "iu_xray", "mimic_cxr", "csv")


@dataclass
class PreparedData:
    manifest: pd.DataFrame  # rows in the image cache, with splits
    accounting: Accounting  # loader + image cache, rows in/kept/dropped by reason
    manifest_path: Path
    image_cache_dir: Path


def manifest_path(work_dir: str | Path) -> Path:
    return Path(work_dir) / "manifest.parquet"


def _phantom(
    work_dir: Path,
    n_patients: int,
    seed: int,
    image_size: int,
    progress: bool,
    normal_rate: float,
    report_noise: float,
) -> pd.DataFrame:
    """Generate the phantom corpus, or reuse it when the same parameters made it before."""
    from cxrlib.data.phantom import generate_corpus
    from cxrlib.paths import resolve

    out = work_dir / "phantom"
    stamp = out / "corpus.json"
    cfg = {
        "n_patients": n_patients,
        "seed": seed,
        "image_size": image_size,
        "normal_rate": float(normal_rate),
        "report_noise": float(report_noise),
        "generator": 1,
    }
    cached = out / "manifest.parquet"
    if stamp.is_file() and cached.is_file() and json.loads(stamp.read_text()) == cfg:
        df = pd.read_parquet(cached)
        if all(resolve(p).is_file() for p in df["image_path"]):
            return df
    # drop the old stamp first: an interrupted run must not leave an old stamp + manifest vouching for
    # images that the new run has already partly overwritten (same file names, other pixels)
    stamp.unlink(missing_ok=True)
    df = generate_corpus(
        out,
        n_patients=n_patients,
        seed=seed,
        image_size=image_size,
        normal_rate=normal_rate,
        report_noise=report_noise,
        progress=progress,
    )
    df.to_parquet(cached, index=False)
    stamp.write_text(json.dumps(cfg))
    return df


def load_dataset(
    dataset: str,
    work_dir: str | Path,
    data_dir: str | Path | None = None,
    n_patients: int = 1600,
    seed: int = 0,
    image_size: int = 224,
    row_limit: int = 0,
    frontal_only: bool = True,
    mimic_uncertain: str = "negative",
    csv_options: dict | None = None,
    progress: bool = True,
    phantom_normal_rate: float = PhantomConfig.normal_rate,
    phantom_report_noise: float = PhantomConfig.report_noise,
) -> tuple[pd.DataFrame, Accounting]:
    """Load one dataset as a manifest (splits not yet assigned, except official ones) with its accounting.

    ``data_dir`` defaults to ``data/<dataset>`` (or ``$CXR_DATA_DIR/<dataset>``). ``row_limit`` > 0 keeps the
    first N reports/studies (deterministic, counted as dropped "beyond limit" by the real-data loaders).
    ``csv_options`` are the keyword arguments of :func:`cxrlib.data.csv_manifest.load_csv` (``path``,
    ``image_col``, ``report_col``, ``label_col``, ...). ``phantom_normal_rate`` / ``phantom_report_noise`` are
    :func:`cxrlib.data.phantom.generate_corpus`'s ``normal_rate`` / ``report_noise`` (phantom only).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    work_dir = Path(work_dir)
    limit = int(row_limit) if row_limit else None
    src = Path(data_dir) if data_dir else default_data_dir(dataset)
    if dataset == "phantom":
        df = _phantom(
            work_dir, n_patients, seed, image_size, progress, phantom_normal_rate, phantom_report_noise
        )
        acc = Accounting("phantom (synthetic)", rows_in=len(df), rows_kept=len(df))
        if limit is not None and len(df) > limit:
            acc.drop("beyond row_limit", n=len(df) - limit)
            acc.rows_kept = limit
            df = df.iloc[:limit]
        return df, acc
    if dataset == "iu_xray":
        from cxrlib.data.iu_xray import load_iu_xray

        return load_iu_xray(src, frontal_only=frontal_only, limit=limit)
    if dataset == "mimic_cxr":
        from cxrlib.data.mimic_cxr import load_mimic_cxr

        return load_mimic_cxr(src, uncertain=mimic_uncertain, frontal_only=frontal_only, limit=limit)
    from cxrlib.data.csv_manifest import load_csv

    opts = dict(csv_options or {})
    if "path" not in opts:
        raise ValueError(
            "dataset='csv' needs csv_options with at least path, image_col, report_col and label_col "
            "(see cxrlib.data.csv_manifest.load_csv and data/README.md)"
        )
    df, acc = load_csv(**opts)
    if limit is not None and len(df) > limit:
        acc.drop("beyond row_limit", n=len(df) - limit)
        acc.rows_kept -= len(df) - limit
        df = df.iloc[:limit]
    return df, acc


def prepare_dataset(
    dataset: str,
    work_dir: str | Path,
    data_dir: str | Path | None = None,
    n_patients: int = 1600,
    seed: int = 0,
    image_size: int = 224,
    aspect: str = "crop",
    split_ratios: Sequence[float] = (0.7, 0.1, 0.2),
    row_limit: int = 0,
    frontal_only: bool = True,
    mimic_uncertain: str = "negative",
    csv_options: dict | None = None,
    num_workers: int = 0,
    progress: bool = True,
    phantom_normal_rate: float = PhantomConfig.normal_rate,
    phantom_report_noise: float = PhantomConfig.report_noise,
) -> PreparedData:
    """Load -> patient-level split -> image cache -> save manifest (see the module docstring)."""
    from cxrlib.data.images import build_image_cache

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    df, acc = load_dataset(
        dataset,
        work_dir,
        data_dir=data_dir,
        n_patients=n_patients,
        seed=seed,
        image_size=image_size,
        row_limit=row_limit,
        frontal_only=frontal_only,
        mimic_uncertain=mimic_uncertain,
        csv_options=csv_options,
        progress=progress,
        phantom_normal_rate=phantom_normal_rate,
        phantom_report_noise=phantom_report_noise,
    )
    df = patient_split(validate_manifest(df), ratios=tuple(split_ratios), seed=seed)
    # re-validate: canonical dtypes (patient_split's map gives `split` pandas' string dtype, unlike a manifest
    # read back from disk) and a check that every row has a split and no patient sits in two
    df = validate_manifest(df, require_split=True)
    cache_dir = work_dir / "images"
    kept, img_acc = build_image_cache(
        df, cache_dir, image_size, aspect=aspect, num_workers=num_workers, progress=progress
    )
    total = Accounting(acc.source, rows_in=acc.rows_in, rows_kept=len(kept))
    total.dropped = acc.dropped + img_acc.dropped
    for src in (acc.examples, img_acc.examples):
        for k, v in src.items():
            total.examples.setdefault(k, []).extend(v)
    total.check()
    path = save_manifest(kept.reset_index(drop=True), manifest_path(work_dir))
    record = {
        "dataset": dataset,
        "image_size": int(image_size),
        "aspect": aspect,
        "seed": int(seed),
        "split_ratios": [float(r) for r in split_ratios],
        "rows": len(kept),
    }
    (work_dir / PREPARED_FILE).write_text(json.dumps(record, indent=2))
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
