"""The data step of notebook 01 (cxrlib.data.datasets): load / generate → patient split → image cache → manifest.

Real-format fixtures come from the builders in tests/data/conftest.py (loaded by file path: that conftest
only serves tests/data/ as a pytest plugin).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.config import DataConfig, PhantomConfig
from cxrlib.data import phantom as phantom_mod
from cxrlib.data.datasets import DATASETS, PreparedData, load_dataset, manifest_path, prepare_dataset
from cxrlib.data.images import ImageCache, cache_paths
from cxrlib.data.manifest import load_manifest

_spec = importlib.util.spec_from_file_location(
    "_data_fixtures", Path(__file__).parent / "data" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

N_PATIENTS = 30
SIZE = 32


def _prepare(work: Path, seed: int = 0, **phantom) -> PreparedData:
    return prepare_dataset(
        DataConfig(image_size=SIZE),
        work,
        PhantomConfig(n_patients=N_PATIENTS, **phantom),
        seed=seed,
        progress=False,
    )


@pytest.fixture
def count_generations(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record every call of generate_corpus (datasets imports it from cxrlib.data.phantom at call time)."""
    calls: list[dict] = []
    real = phantom_mod.generate_corpus

    def counting(out_dir, cfg, **kw):
        calls.append({**cfg.to_dict(), **kw})
        return real(out_dir, cfg, **kw)

    monkeypatch.setattr(phantom_mod, "generate_corpus", counting)
    return calls


def _stamps(paths: list[Path]) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in paths}


# --------------------------------------------------------------------------------------------------
# phantom, end to end
# --------------------------------------------------------------------------------------------------
def test_phantom_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    prep = _prepare(work)
    assert isinstance(prep, PreparedData)
    df = prep.manifest

    # manifest saved, with splits, and identical to what was returned
    assert prep.manifest_path == manifest_path(work) == work / "manifest.parquet"
    saved = load_manifest(prep.manifest_path, require_split=True)
    pd.testing.assert_frame_equal(saved, df)

    # splits by patient: every patient in one split; the pretraining pool kept apart
    assert set(df["split"]) == {"train", "val", "test", "pretrain"}
    assert df.groupby("patient_id")["split"].nunique().eq(1).all()
    assert df.loc[df["split"] == "pretrain", "patient_id"].nunique() == round(0.3 * N_PATIENTS)
    n_studies = df.groupby("patient_id").size()
    assert (n_studies > 1).any() and len(df) > N_PATIENTS

    # accounting: every generated row is accounted for (nothing dropped here)
    acc = prep.accounting
    acc.check()
    assert acc.rows_in == acc.rows_kept == len(df) and acc.rows_dropped == 0
    assert "phantom" in acc.source
    table = acc.to_frame()
    assert table.iloc[0]["rows"] == table.iloc[-1]["rows"] == len(df)

    # image cache: one row per manifest row, pixels equal to the generated PNGs (same size: no resampling)
    assert prep.image_cache_dir == work / "images"
    npy, sidecar = cache_paths(prep.image_cache_dir, SIZE)
    assert npy.is_file() and sidecar.is_file()
    cache = ImageCache.open(prep.image_cache_dir, SIZE)
    assert cache.image_ids == list(df["image_id"])
    imgs = cache.get(list(df["image_id"].iloc[:5]))
    for img, path in zip(imgs, df["image_path"].iloc[:5], strict=True):
        np.testing.assert_array_equal(img, np.asarray(Image.open(path)))

    # the corpus itself lives under work/phantom, with its parameter stamp; nothing is written elsewhere
    assert json.loads((work / "phantom" / "corpus.json").read_text())["phantom"]["n_patients"] == N_PATIENTS
    assert all(Path(p).is_relative_to(work / "phantom" / "images") for p in df["image_path"])


def test_phantom_row_limit_is_counted(tmp_path: Path) -> None:
    df, acc = load_dataset(
        DataConfig(image_size=SIZE, row_limit=10),
        tmp_path / "work",
        PhantomConfig(n_patients=N_PATIENTS),
        progress=False,
    )
    assert len(df) == 10 == acc.rows_kept
    assert acc.dropped["beyond row_limit"] == acc.rows_in - 10 > 0
    acc.check()


def test_phantom_corpus_and_image_cache_are_reused(tmp_path: Path, count_generations: list[dict]) -> None:
    work = tmp_path / "work"
    first = _prepare(work)
    assert len(count_generations) == 1
    pngs = sorted((work / "phantom" / "images").glob("*.png"))
    assert len(pngs) == len(first.manifest)
    before = _stamps([*pngs, work / "phantom" / "corpus.json", *cache_paths(work / "images", SIZE)])

    second = _prepare(work)
    assert len(count_generations) == 1, "the corpus was generated again although nothing changed"
    assert _stamps([Path(p) for p in before]) == before, "files were rewritten on a cache hit"
    pd.testing.assert_frame_equal(first.manifest, second.manifest)

    # another seed is another corpus: generated anew, stamp updated, manifest different
    third = _prepare(work, seed=1)
    assert len(count_generations) == 2 and count_generations[-1]["seed"] == 1
    assert json.loads((work / "phantom" / "corpus.json").read_text())["seed"] == 1
    assert third.manifest["text"].tolist() != first.manifest["text"].tolist()


def test_phantom_regenerates_when_an_image_is_missing(tmp_path: Path, count_generations: list[dict]) -> None:
    work = tmp_path / "work"
    first = _prepare(work)
    victim = Path(first.manifest["image_path"].iloc[3])
    victim.unlink()
    again = _prepare(work)
    assert len(count_generations) == 2
    assert victim.is_file() and len(again.accounting.dropped) == 0
    pd.testing.assert_frame_equal(first.manifest, again.manifest)


def test_interrupted_generation_never_leaves_a_stale_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_generations: list[dict]
) -> None:
    """A run for new parameters that dies half-way has overwritten some images: the old stamp must not
    vouch for them afterwards (the next run for the old parameters regenerates)."""
    work = tmp_path / "work"
    first = _prepare(work, seed=0)
    victim = Path(first.manifest["image_path"].iloc[0])
    original = victim.read_bytes()

    def dies_half_way(out_dir, cfg, **kw):
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8), mode="L").save(victim)  # a new image, same name
        raise KeyboardInterrupt

    counting = phantom_mod.generate_corpus
    monkeypatch.setattr(phantom_mod, "generate_corpus", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _prepare(work, seed=1)
    assert not (work / "phantom" / "corpus.json").exists()
    monkeypatch.setattr(phantom_mod, "generate_corpus", counting)

    again = _prepare(work, seed=0)
    assert len(count_generations) == 2, "the old corpus was reused although its images were overwritten"
    assert victim.read_bytes() == original
    pd.testing.assert_frame_equal(first.manifest, again.manifest)


# --------------------------------------------------------------------------------------------------
# real formats (fixtures from tests/data/conftest.py)
# --------------------------------------------------------------------------------------------------
def test_iu_xray_openi_end_to_end(tmp_path: Path) -> None:
    root = fixtures.build_openi_folders(tmp_path / "iu_xray")
    with pytest.warns(UserWarning, match="no view information"):
        prep = prepare_dataset(
            DataConfig("iu_xray", str(root), image_size=SIZE), tmp_path / "work", progress=False
        )
    df = prep.manifest
    acc = prep.accounting
    acc.check()
    assert acc.rows_in == 11 and acc.rows_kept == len(df) == 5  # see OPENI_REPORTS in tests/data/conftest.py
    assert acc.rows_dropped == 6 and "image file missing" in acc.dropped
    assert set(df["source"]) == {"iu_xray"}
    assert set(df["split"]) <= {"train", "val", "test"} and (df["split"] != "").all()
    assert df.groupby("patient_id")["split"].nunique().eq(1).all()
    assert len(ImageCache.open(prep.image_cache_dir, SIZE)) == 5
    pd.testing.assert_frame_equal(load_manifest(prep.manifest_path, require_split=True), df)


def test_iu_xray_lateral_drops_reach_the_prepare_result(tmp_path: Path) -> None:
    """What notebook 01 prints: ``prep.lateral_dropped`` (table → images dropped as lateral) and
    ``prep.views_unknown`` (kept images without a view, by reason); both also rows of the accounting table."""
    root = fixtures.build_openi_folders(tmp_path / "iu_xray")
    fixtures.write_dicom_metadata(root / "nlmcxr_dicom_metadata.csv.gz")
    with pytest.warns(UserWarning, match="2 of 4 images"):
        prep = prepare_dataset(
            DataConfig("iu_xray", str(root), image_size=SIZE), tmp_path / "work", progress=False
        )
    prep.accounting.check()
    assert len(prep.manifest) == 4
    assert prep.lateral_dropped == {"nlmcxr_dicom_metadata.csv.gz": 1}
    assert prep.views_unknown == {
        "view unknown: image not in nlmcxr_dicom_metadata.csv.gz": 1,
        "view unknown: no usable view value in nlmcxr_dicom_metadata.csv.gz": 1,
    }
    table = prep.accounting.to_frame().set_index("step")["rows"]
    assert table["dropped: lateral view (from nlmcxr_dicom_metadata.csv.gz)"] == -1
    assert table["kept, of which: view unknown: image not in nlmcxr_dicom_metadata.csv.gz"] == 1
    assert set(prep.manifest["view"]) == {"PA", "AP", "UNKNOWN"}


def test_prepare_without_view_tables_reports_no_lateral_drops(tmp_path: Path) -> None:
    prep = _prepare(tmp_path / "work")
    assert prep.lateral_dropped == {} and prep.views_unknown == {}


@pytest.mark.parametrize("source", ["findings+impression", "impression", "findings", "longest"])
def test_phantom_text_source(tmp_path: Path, source: str) -> None:
    """The phantom (synthetic) takes data.text_source too; the default leaves the generated text as it is."""
    from cxrlib.data.phantom import generate_corpus
    from cxrlib.data.reports import compose_text, fallback_note

    df, acc = load_dataset(
        DataConfig(image_size=SIZE, text_source=source),
        tmp_path / "work",
        PhantomConfig(n_patients=N_PATIENTS),
        progress=False,
    )
    acc.check()
    f, i = df["findings"], df["impression"]
    want = {
        "findings+impression": [compose_text(a, b) for a, b in zip(f, i, strict=True)],
        "impression": i.where(i != "", f).tolist(),
        "findings": f.where(f != "", i).tolist(),
        "longest": [b if len(b) > len(a) else a for a, b in zip(f, i, strict=True)],
    }[source]
    assert df["text"].tolist() == want
    if source in ("impression", "findings"):
        assert acc.noted.get(fallback_note(source), 0) == int((df[source] == "").sum())
    if source == "findings+impression":
        generated = generate_corpus(tmp_path / "again", PhantomConfig(n_patients=N_PATIENTS), image_size=SIZE)
        assert df["text"].tolist() == generated["text"].tolist()
    else:  # the option changes what is embedded
        assert (df["text"] != [compose_text(a, b) for a, b in zip(f, i, strict=True)]).any()


def test_csv_text_source_is_set_once(tmp_path: Path) -> None:
    opts = {"path": str(tmp_path / "x.csv"), "image_col": "p", "report_col": "r", "label_col": "l"}
    with pytest.raises(ValueError, match="set it once, as data.text_source"):
        load_dataset(DataConfig("csv", csv_options={**opts, "text_source": "impression"}), tmp_path / "work")


def test_mimic_keeps_the_official_split(tmp_path: Path) -> None:
    root = fixtures.build_mimic(tmp_path / "mimic_cxr")
    prep = prepare_dataset(
        DataConfig("mimic_cxr", str(root), image_size=SIZE), tmp_path / "work", progress=False
    )
    prep.accounting.check()
    official = {
        dicom: {"validate": "val"}.get(split, split)
        for _, _, images, _, _, split in fixtures.MIMIC_STUDIES
        for dicom, _, _ in images
    }
    assert len(prep.manifest) > 0
    for iid, split in zip(prep.manifest["image_id"], prep.manifest["split"], strict=True):
        assert split == official[iid], iid


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def test_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not accepted") as err:
        DataConfig.from_dict({"dataset": "chexpert"})
    assert all(name in str(err.value) for name in DATASETS) and "chexpert" in str(err.value)
    with pytest.raises(ValueError, match="did you mean 'iu_xray'"):
        DataConfig.from_dict({"dataset": "IU_XRAY"})
    with pytest.raises(TypeError, match="DataConfig"):
        load_dataset("iu_xray", tmp_path / "work")


def _assert_names_layout(message: str) -> None:
    for part in (
        "ecgen-radiology",
        "NLMCXR_png",
        "NLMCXR_reports.tgz",
        "indiana_reports.csv",
        "data/README.md",
    ):
        assert part in message, part


def test_iu_xray_missing_data_dir_names_the_layout(tmp_path: Path) -> None:
    absent = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(DataConfig("iu_xray", str(absent)), tmp_path / "work")
    assert str(absent) in str(err.value)
    _assert_names_layout(str(err.value))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no IU X-ray data found") as err:
        prepare_dataset(DataConfig("iu_xray", str(empty)), tmp_path / "work", progress=False)
    _assert_names_layout(str(err.value))
    assert not manifest_path(tmp_path / "work").exists()


def test_iu_xray_default_data_dir_follows_cxr_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "datasets"))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(DataConfig("iu_xray"), tmp_path / "work")
    assert str(tmp_path / "datasets" / "iu_xray") in str(err.value)
    _assert_names_layout(str(err.value))


def test_csv_without_options_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv_options"):
        load_dataset(DataConfig("csv"), tmp_path / "work")


# --------------------------------------------------------------------------------------------------
# open_prepared: how notebooks 02-04 reopen what notebook 01 wrote
# --------------------------------------------------------------------------------------------------
def test_open_prepared_returns_what_prepare_wrote(tmp_path: Path) -> None:
    from cxrlib.data.datasets import PREPARED_FILE, open_prepared

    work = tmp_path / "work"
    prep = _prepare(work, seed=3)
    manifest, cache, record = open_prepared(work)
    pd.testing.assert_frame_equal(manifest, prep.manifest)
    assert cache.image_ids == list(prep.manifest["image_id"])
    ids = list(manifest["image_id"].iloc[[0, -1]])
    np.testing.assert_array_equal(cache.get(ids), ImageCache.open(work / "images", SIZE).get(ids))
    assert record == json.loads((work / PREPARED_FILE).read_text())
    assert record["dataset"] == "phantom" and record["image_size"] == SIZE and record["seed"] == 3
    assert record["rows"] == len(manifest)


def test_open_prepared_without_notebook_01_names_it(tmp_path: Path) -> None:
    from cxrlib.data.datasets import open_prepared

    with pytest.raises(FileNotFoundError, match=r"01_data_preparation\.ipynb"):
        open_prepared(tmp_path / "nothing-here")


def test_phantom_knobs_reach_the_generator_and_the_stamp(
    tmp_path: Path, count_generations: list[dict]
) -> None:
    """phantom.normal_rate / phantom.report_noise (settings) are passed to generate_corpus and are
    part of the cache stamp: changing one regenerates the corpus, and the data follow the new value."""
    work = tmp_path / "work"
    base = _prepare(work)
    assert count_generations[-1]["normal_rate"] == 0.40 and count_generations[-1]["report_noise"] == 0.05
    noisy = _prepare(work, report_noise=1.0)
    assert len(count_generations) == 2 and count_generations[-1]["report_noise"] == 1.0
    assert json.loads((work / "phantom" / "corpus.json").read_text())["phantom"]["report_noise"] == 1.0
    assert noisy.manifest["report_noise"].sum() > base.manifest["report_noise"].sum()
    normal = _prepare(work, normal_rate=1.0, report_noise=0.05)
    assert len(count_generations) == 3 and count_generations[-1]["normal_rate"] == 1.0
    assert normal.manifest["label"].eq(0).all()
    _prepare(work, normal_rate=1.0, report_noise=0.05)  # same knobs: reused
    assert len(count_generations) == 3
