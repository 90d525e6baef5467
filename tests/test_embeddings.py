"""Embedding extraction: shapes and normalisation, texts once, the cache key, resume, NaN errors, file round trips.

A tiny open_clip model (32 px ViT, 1-layer text transformer) is written as a ``local-dir:`` bundle and loaded
with ``load_backbone``; the data are ~20 phantom studies at 32 px in a real image cache, with the manifest rows
shuffled against the cache's row order. Model calls are counted (or made to fail) by wrapping
``model.encode_image`` / ``model.encode_text`` with monkeypatch.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from cxrlib.backbones import load_backbone, save_bundle
from cxrlib.cache import CacheWarning
from cxrlib.config import PhantomConfig
from cxrlib.data.images import ImageCache, build_image_cache
from cxrlib.data.manifest import manifest_hash
from cxrlib.data.phantom import generate_corpus
from cxrlib.embeddings import (
    EmbeddingError,
    Embeddings,
    embedding_key,
    embeddings_path,
    extract_embeddings,
    load_embeddings,
    load_registered,
    register_embeddings,
    save_embeddings,
)

SIZE = 32
D = 16
TINY_CFG = {
    "embed_dim": D,
    "vision_cfg": {"image_size": SIZE, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
#: small batches and chunks, so that ~20 rows make several chunks of each kind
KW = {"batch_size": 4, "text_batch_size": 4, "chunk_batches": 2, "progress": False}


def _bundle(folder: Path, seed: int) -> Path:
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return save_bundle(CLIP(**json.loads(json.dumps(TINY_CFG))), TINY_CFG, PREPROCESS, folder)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cxr_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Manifest (shuffled, with repeated report texts), its image cache, and two tiny backbones (seeds 0, 1)."""
    tmp = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse one above
        mp.setenv("CXR_CACHE_DIR", str(tmp / "cxr_cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        corpus = generate_corpus(
            tmp / "corpus", PhantomConfig(n_patients=12), seed=5, image_size=SIZE, progress=False
        )
        build_image_cache(corpus, tmp / "images", SIZE, progress=False)
        cache = ImageCache.open(tmp / "images", SIZE)
        manifest = corpus.sample(frac=1.0, random_state=0).reset_index(drop=True)  # not the cache's row order
        manifest.loc[3, "text"] = manifest.loc[0, "text"]  # make sure at least one text repeats
        assert 18 <= len(manifest) <= 26 and manifest["text"].nunique() < len(manifest)
        return {
            "manifest": manifest,
            "cache": cache,
            "bb": load_backbone(f"local-dir:{_bundle(tmp / 'tiny0', 0)}"),
            "bb_other": load_backbone(f"local-dir:{_bundle(tmp / 'tiny1', 1)}"),
        }


class Counted:
    """Wraps ``encode_image``/``encode_text``: counts calls and rows; optional failure on the k-th call."""

    def __init__(self, fn, interrupt_on: int | None = None, nan_on: int | None = None):
        self.fn, self.interrupt_on, self.nan_on = fn, interrupt_on, nan_on
        self.calls = 0
        self.rows = 0

    def __call__(self, x, normalize: bool = False):
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt("simulated interruption")
        self.rows += len(x)
        out = self.fn(x, normalize=normalize)
        if self.calls == self.nan_on:
            out = out.clone()
            out[0] = float("nan")
        return out


def count(monkeypatch, model, what: str, **kw) -> Counted:
    c = Counted(getattr(model, what), **kw)
    monkeypatch.setattr(model, what, c)
    return c


def count_texts(monkeypatch, model, **kw) -> Counted:
    """Count the text batches extraction encodes: through ``encode_text_trimmed`` for a model whose batches are
    cut to their longest text (the tiny CLIP here), through ``model.encode_text`` otherwise."""
    from cxrlib.backbones import encode_text_trimmed, trims_text_padding

    if not trims_text_padding(model):
        return count(monkeypatch, model, "encode_text", **kw)
    c = Counted(lambda tok, normalize=False: encode_text_trimmed(model, tok), **kw)
    monkeypatch.setattr("cxrlib.embeddings.encode_text_trimmed", lambda m, tok: c(tok))
    return c


def n_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


# --------------------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------------------
def test_extraction_shapes_normalisation_order_and_texts_once(world, tmp_path, monkeypatch):
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    n, n_unique = len(manifest), manifest["text"].nunique()
    texts = count_texts(monkeypatch, bb.model)
    images = count(monkeypatch, bb.model, "encode_image")
    emb = extract_embeddings(bb, manifest, cache, tmp_path / "emb", **KW)

    for arr in (emb.image, emb.text):
        assert arr.shape == (n, D) and arr.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert list(emb.image_ids) == manifest["image_id"].tolist()
    assert texts.rows == n_unique == emb.meta["n_unique_texts"]  # each distinct text embedded once
    assert images.rows == n and images.calls == n_batches(n, KW["batch_size"])
    for _, group in manifest.groupby("text").groups.items():
        for i in group[1:]:
            assert emb.text[i].tobytes() == emb.text[group[0]].tobytes()
    assert emb.text[0].tobytes() == emb.text[3].tobytes()

    # each row holds its own image's and text's embedding (the manifest order differs from the cache's)
    with torch.no_grad():
        x = bb.prepare_images(torch.from_numpy(cache.get(manifest["image_id"].tolist())))
        ref_img = torch.nn.functional.normalize(images.fn(x), dim=-1).numpy()
        ref_txt = torch.nn.functional.normalize(
            texts.fn(bb.tokenizer(manifest["text"].tolist())), dim=-1
        ).numpy()
    np.testing.assert_allclose(emb.image, ref_img, atol=1e-5)
    np.testing.assert_allclose(emb.text, ref_txt, atol=1e-5)

    meta = emb.meta
    assert meta["cache_hit"] is False
    assert meta["backbone"]["weights_id"] == bb.weights_id
    assert meta["manifest_hash"] == manifest_hash(manifest, ("image_id", "text"))
    assert meta["image_cache_hash"] == cache.content_hash and meta["n"] == n
    assert meta["images_per_second"] > 0
    path = embeddings_path(tmp_path / "emb", bb.name, meta["key"])
    assert path.is_file()
    # .parts removed; the (empty) lock file stays: deleting a lock file while others may open it would race
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [path.name, path.name + ".lock"]


def test_cache_hit_and_what_changes_the_key(world, tmp_path, monkeypatch):
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    out = tmp_path / "emb"
    first = extract_embeddings(bb, manifest, cache, out, **KW)
    path = embeddings_path(out, bb.name, first.meta["key"])
    mtime = path.stat().st_mtime_ns

    images = count(monkeypatch, bb.model, "encode_image")
    texts = count_texts(monkeypatch, bb.model)
    again = extract_embeddings(bb, manifest, cache, out, **KW)
    assert again.meta["cache_hit"] is True and again.meta["key"] == first.meta["key"]
    assert images.calls == 0 and texts.calls == 0
    assert path.stat().st_mtime_ns == mtime
    assert again.image.tobytes() == first.image.tobytes() and again.text.tobytes() == first.text.tobytes()

    # the same weights loaded again (a new Backbone object) hit the same file
    reloaded = load_backbone(bb.name)
    assert extract_embeddings(reloaded, manifest, cache, out, **KW).meta["cache_hit"] is True

    keys = {first.meta["key"]}
    fewer = manifest.iloc[:-1]
    edited = manifest.copy()
    edited.loc[5, "text"] = edited.loc[5, "text"] + " Addendum."
    for label, (b, m) in {
        "manifest lost a row": (bb, fewer),
        "a report text changed": (bb, edited),
        "other weights": (world["bb_other"], manifest),
    }.items():
        e = extract_embeddings(b, m, cache, out, **KW)
        assert e.meta["cache_hit"] is False, label
        assert e.meta["key"] not in keys, label
        keys.add(e.meta["key"])
    assert world["bb_other"].weights_id != bb.weights_id
    assert len(list(out.glob("*.safetensors"))) == 4


def test_embedding_key_fields():
    rec = {
        "weights_id": "x@sha256:1",
        "image_size": 32,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "context_length": 8,
    }
    key = embedding_key(rec, "m", "i")
    assert len(key) == 16 and key == embedding_key(dict(rec), "m", "i")
    assert embedding_key({**rec, "name": "renamed", "bundle": {"note": 1}}, "m", "i") == key  # not hashed
    for changed in (
        {"weights_id": "x@sha256:2"},
        {"image_size": 64},
        {"mean": [0.4] * 3},
        {"context_length": 9},
    ):
        assert embedding_key({**rec, **changed}, "m", "i") != key, changed
    assert embedding_key(rec, "m2", "i") != key
    assert embedding_key(rec, "m", "i2") != key
    assert embedding_key(rec, "m", "i", amp=True) != key  # fp16-autocast embeddings never stand in for fp32
    assert embedding_key(rec, "m", "i", amp=False) == key


# --------------------------------------------------------------------------------------------------------
# a cache at another side than the tower's: the resized copy
# --------------------------------------------------------------------------------------------------------
def test_prepare_images_from_the_resized_copy_is_byte_identical(world, tmp_path):
    bb, manifest = world["bb"], world["manifest"]
    build_image_cache(manifest, tmp_path / "img48", 48, progress=False)
    big = ImageCache.open(tmp_path / "img48", 48)
    ids = manifest["image_id"].tolist()
    on_the_fly = bb.prepare_images(torch.from_numpy(big.get(ids)))
    resized = big.resized(SIZE)
    from_copy = bb.prepare_images(torch.from_numpy(resized.get(ids)))
    assert on_the_fly.shape == (len(ids), 3, SIZE, SIZE)
    assert from_copy.numpy().tobytes() == on_the_fly.numpy().tobytes()
    with pytest.raises(ValueError, match="must already be 32 x 32"):
        bb.prepare_images(torch.zeros(2, 48, 48))
    with pytest.raises(ValueError, match="dtype torch.float64"):
        bb.prepare_images(torch.zeros(2, SIZE, SIZE, dtype=torch.float64))


def test_extraction_reads_the_resized_copy_and_gives_the_same_embeddings(world, tmp_path, monkeypatch):
    import cxrlib.data.images as im
    import cxrlib.embeddings as E

    bb, manifest = world["bb"], world["manifest"]
    build_image_cache(manifest, tmp_path / "img48", 48, progress=False)
    big = ImageCache.open(tmp_path / "img48", 48)
    assert (
        E.model_input_images(bb, world["cache"]) is world["cache"]
    )  # the tower's own side: the cache itself
    source = E.model_input_images(bb, big)
    assert isinstance(source, im.ResizedImages) and source.size == SIZE

    emb = extract_embeddings(bb, manifest, big, tmp_path / "emb", **KW)
    with monkeypatch.context() as mp:  # today's path: every batch resized in prepare_images
        mp.setattr(E, "model_input_images", lambda backbone, cache: cache)
        ref = extract_embeddings(bb, manifest, big, tmp_path / "emb_ref", **KW)
    assert emb.meta["key"] == ref.meta["key"]
    assert emb.image.tobytes() == ref.image.tobytes() and emb.text.tobytes() == ref.text.tobytes()

    # a second extraction (other weights) reads the copy: nothing is resized again
    def boom(*a, **k):
        raise AssertionError("resized again")

    monkeypatch.setattr(im, "resize_to_unit", boom)
    other = extract_embeddings(world["bb_other"], manifest, big, tmp_path / "emb", **KW)
    assert other.meta["cache_hit"] is False and np.isfinite(other.image).all()


# --------------------------------------------------------------------------------------------------------
# resume, NaN
# --------------------------------------------------------------------------------------------------------
def _parts(out: Path) -> Path:
    (parts,) = out.glob("*.parts")
    return parts


def test_resume_after_interruption(world, tmp_path, monkeypatch):
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    n = len(manifest)
    ref = extract_embeddings(bb, manifest, cache, tmp_path / "ref", **KW)

    out = tmp_path / "emb"
    broken = count(monkeypatch, bb.model, "encode_image", interrupt_on=3)  # batches 0, 1 (= chunk 0) finish
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(bb, manifest, cache, out, **KW)
    monkeypatch.setattr(bb.model, "encode_image", broken.fn)
    parts = _parts(out)
    names = sorted(p.name for p in parts.iterdir())
    n_text_chunks = math.ceil(manifest["text"].nunique() / (KW["text_batch_size"] * KW["chunk_batches"]))
    chunks = ["image_00000.npy"] + [f"text_{c:05d}.npy" for c in range(n_text_chunks)]
    # each chunk with its checksum record
    assert names == sorted(["layout.json", *chunks, *(c + ".sha256" for c in chunks)])
    assert not list(out.glob("*.safetensors"))

    images = count(monkeypatch, bb.model, "encode_image")
    texts = count_texts(monkeypatch, bb.model)
    emb = extract_embeddings(bb, manifest, cache, out, **KW)
    assert texts.calls == 0  # every text chunk was finished
    assert images.calls == n_batches(n, KW["batch_size"]) - KW["chunk_batches"]
    assert emb.image.tobytes() == ref.image.tobytes() and emb.text.tobytes() == ref.text.tobytes()
    assert not parts.exists()


def test_resume_with_other_chunking_or_damaged_part_recomputes(world, tmp_path, monkeypatch):
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    n = len(manifest)
    ref = extract_embeddings(bb, manifest, cache, tmp_path / "ref", **KW)

    def interrupted(out: Path) -> Path:
        c = count(monkeypatch, bb.model, "encode_image", interrupt_on=4)
        with pytest.raises(KeyboardInterrupt):
            extract_embeddings(bb, manifest, cache, out, **KW)
        monkeypatch.setattr(bb.model, "encode_image", c.fn)
        return _parts(out)

    # another batch size: the old chunks would land on the wrong rows, so everything is recomputed
    interrupted(tmp_path / "a")
    images = count(monkeypatch, bb.model, "encode_image")
    emb = extract_embeddings(bb, manifest, cache, tmp_path / "a", **{**KW, "batch_size": 3})
    assert images.calls == n_batches(n, 3)
    np.testing.assert_allclose(emb.image, ref.image, atol=1e-6)
    monkeypatch.setattr(bb.model, "encode_image", images.fn)

    # a damaged chunk file (wrong shape) is recomputed, not copied in
    parts = interrupted(tmp_path / "b")
    np.save(parts / "image_00000.npy", np.zeros((3, D), np.float32))
    images = count(monkeypatch, bb.model, "encode_image")
    with pytest.warns(CacheWarning, match="image_00000.npy"):
        emb = extract_embeddings(bb, manifest, cache, tmp_path / "b", **KW)
    assert images.calls == n_batches(n, KW["batch_size"])
    assert emb.image.tobytes() == ref.image.tobytes()


def test_resume_recomputes_a_damaged_part_of_the_right_shape_with_a_warning(world, tmp_path, monkeypatch):
    """Fault 1: a chunk of the right shape and dtype but wrong values must not reach the final cache."""
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    n = len(manifest)
    ref = extract_embeddings(bb, manifest, cache, tmp_path / "ref", **KW)
    out = tmp_path / "emb"
    broken = count(monkeypatch, bb.model, "encode_image", interrupt_on=3)  # chunk 0 and all texts finish
    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(bb, manifest, cache, out, **KW)
    monkeypatch.setattr(bb.model, "encode_image", broken.fn)
    parts = _parts(out)
    for name in ("image_00000.npy", "text_00000.npy"):  # well-formed .npy files, same shape and dtype
        good = np.load(parts / name)
        np.save(parts / name, np.roll(good, 1, axis=0))

    images = count(monkeypatch, bb.model, "encode_image")
    texts = count_texts(monkeypatch, bb.model)
    with pytest.warns(CacheWarning) as caught:
        emb = extract_embeddings(bb, manifest, cache, out, **KW)
    msgs = [str(w.message) for w in caught]
    for name in ("image_00000.npy", "text_00000.npy"):
        assert any(str(parts / name) in m and "checksum" in m for m in msgs), (name, msgs)
    assert images.calls == n_batches(n, KW["batch_size"])  # chunk 0 recomputed too
    assert texts.rows == min(manifest["text"].nunique(), KW["text_batch_size"] * KW["chunk_batches"])
    assert emb.image.tobytes() == ref.image.tobytes() and emb.text.tobytes() == ref.text.tobytes()
    assert (
        load_embeddings(embeddings_path(out, bb.name, emb.meta["key"])).image.tobytes() == ref.image.tobytes()
    )


def test_truncated_or_damaged_final_file_is_recomputed_with_a_warning(world, tmp_path, monkeypatch):
    """Fault 2: a truncated (or silently altered) final file is named and recomputed, not a raw error forever."""
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    out = tmp_path / "emb"
    first = extract_embeddings(bb, manifest, cache, out, **KW)
    path = embeddings_path(out, bb.name, first.meta["key"])
    raw = path.read_bytes()

    path.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(EmbeddingError, match="02_baseline_evaluation") as err:
        load_embeddings(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    with pytest.warns(CacheWarning, match="truncated") as caught:
        again = extract_embeddings(bb, manifest, cache, out, **KW)
    assert str(path) in str(caught[0].message)
    assert again.meta["cache_hit"] is False and again.meta["key"] == first.meta["key"]
    assert again.image.tobytes() == first.image.tobytes() and again.text.tobytes() == first.text.tobytes()
    back = load_embeddings(path)  # rewritten: readable, verified, the same arrays (only the timings differ)
    assert back.image.tobytes() == first.image.tobytes() and back.text.tobytes() == first.text.tobytes()
    raw = path.read_bytes()

    flipped = bytearray(raw)
    flipped[-3] ^= 0x01  # the last text value changes; the file still parses
    path.write_bytes(bytes(flipped))
    with pytest.raises(EmbeddingError, match="checksum"):
        load_embeddings(path)
    with pytest.warns(CacheWarning, match="checksum"):
        assert extract_embeddings(bb, manifest, cache, out, **KW).meta["cache_hit"] is False
    assert load_embeddings(path).text.tobytes() == first.text.tobytes()
    images = count(monkeypatch, bb.model, "encode_image")
    assert extract_embeddings(bb, manifest, cache, out, **KW).meta["cache_hit"] is True
    assert images.calls == 0


def _extract_in_child(world, out: Path, barrier, results) -> None:
    """One of two forked processes extracting into ``out`` at the same moment (see the test below)."""
    import logging
    import time

    torch.set_num_threads(1)  # as DataLoader workers do after a fork
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logging.getLogger("cxrlib.cache").addHandler(Keep())
    bb, real = world["bb"], world["bb"].model.encode_image

    def slow(x, normalize=False):
        time.sleep(0.1)  # a long critical section, so that the other process arrives while this one runs
        return real(x, normalize=normalize)

    bb.model.encode_image = slow
    barrier.wait(timeout=60)
    emb = extract_embeddings(bb, world["manifest"], world["cache"], out, **KW)
    digest = hashlib.sha256(emb.image.tobytes() + emb.text.tobytes()).hexdigest()
    results.put({"hit": emb.meta["cache_hit"], "key": emb.meta["key"], "sha": digest, "log": seen})


def test_two_concurrent_extractions_into_one_cache_wait_and_agree(world, tmp_path):
    """Fault 3: two processes extracting the same key into one folder: one computes, the other waits and reuses."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the children inherit the loaded backbone (no re-import)
    out = tmp_path / "shared"
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_extract_in_child, args=(world, out, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(g["hit"] for g in got) == [False, True]  # computed once, reused once
    assert got[0]["key"] == got[1]["key"] and got[0]["sha"] == got[1]["sha"]
    assert any("waiting for another process" in m for g in got for m in g["log"])
    path = embeddings_path(out, world["bb"].name, got[0]["key"])
    assert sorted(p.name for p in out.iterdir()) == [
        path.name,
        path.name + ".lock",
    ]  # no temp files, no .parts
    ref = extract_embeddings(world["bb"], world["manifest"], world["cache"], tmp_path / "ref", **KW)
    mine = load_embeddings(path)
    np.testing.assert_allclose(mine.image, ref.image, atol=1e-6)
    np.testing.assert_allclose(mine.text, ref.text, atol=1e-6)
    assert list(mine.image_ids) == list(ref.image_ids)


def test_nan_image_embeddings_name_the_ids_and_are_not_cached(world, tmp_path, monkeypatch):
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    out = tmp_path / "emb"
    bad_row = KW["batch_size"]  # the first row of the second batch
    bad_id = manifest["image_id"].iloc[bad_row]
    nan = count(monkeypatch, bb.model, "encode_image", nan_on=2)
    with pytest.raises(EmbeddingError) as err:
        extract_embeddings(bb, manifest, cache, out, **KW)
    msg = str(err.value)
    assert "image" in msg and bad_id in msg and f"rows [{bad_row}]" in msg and "1 embedding(s)" in msg
    assert not list(out.glob("*.safetensors"))
    assert not (_parts(out) / "image_00000.npy").exists()  # the chunk with the NaN was not kept

    # after the cause is fixed, a rerun recomputes that chunk instead of failing again
    monkeypatch.setattr(bb.model, "encode_image", nan.fn)
    emb = extract_embeddings(bb, manifest, cache, out, **KW)
    assert np.isfinite(emb.image).all()
    assert (
        emb.image.tobytes() == extract_embeddings(bb, manifest, cache, tmp_path / "ref", **KW).image.tobytes()
    )


def test_nan_text_embeddings_name_the_image_ids(world, tmp_path, monkeypatch):
    bb, manifest, cache = world["bb"], world["manifest"], world["cache"]
    # texts in manifest order, each batch whole (no cut: trimmed batches go shortest text first)
    monkeypatch.setattr("cxrlib.embeddings.trims_text_padding", lambda model: False)
    count(monkeypatch, bb.model, "encode_text", nan_on=1)  # first distinct text = the text of row 0
    rows = np.flatnonzero(manifest["text"].to_numpy() == manifest["text"].iloc[0])
    assert len(rows) >= 2
    with pytest.raises(EmbeddingError) as err:
        extract_embeddings(bb, manifest, cache, tmp_path / "emb", **KW)
    msg = str(err.value)
    assert "text" in msg and f"{len(rows)} embedding(s)" in msg
    for r in rows[:5]:
        assert manifest["image_id"].iloc[r] in msg


# --------------------------------------------------------------------------------------------------------
# files and the registry
# --------------------------------------------------------------------------------------------------------
def test_save_load_roundtrip_is_bit_identical(world, tmp_path):
    emb = extract_embeddings(world["bb"], world["manifest"], world["cache"], tmp_path / "emb", **KW)
    path = save_embeddings(emb, tmp_path / "copy" / "x.safetensors")
    back = load_embeddings(path)
    assert back.image.dtype == np.float32 and back.text.dtype == np.float32
    assert back.image.tobytes() == emb.image.tobytes() and back.text.tobytes() == emb.text.tobytes()
    assert list(back.image_ids) == list(emb.image_ids)
    assert back.meta == json.loads(json.dumps(emb.meta))
    assert not list((tmp_path / "copy").glob("*.tmp"))

    with pytest.raises(FileNotFoundError, match="02_baseline_evaluation"):
        load_embeddings(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"image": emb.image}, str(other), metadata={"format": "something-else"})
    with pytest.raises(EmbeddingError, match="not a cxrlib-embeddings/1 file"):
        load_embeddings(other)


def test_register_and_load_registered(world, tmp_path):
    bb, manifest = world["bb"], world["manifest"]
    out = tmp_path / "emb"
    emb = extract_embeddings(bb, manifest, world["cache"], out, **KW)
    m_hash = emb.meta["manifest_hash"]

    path = register_embeddings(out, bb.name, emb)
    assert path == embeddings_path(out, bb.name, emb.meta["key"])  # the extraction file, not a copy
    index = json.loads((out / "index.json").read_text())
    assert index[bb.name] == {
        "file": path.name,
        "manifest_hash": m_hash,
        "n": len(emb),
        "backbone": bb.weights_id,
    }
    back = load_registered(out, bb.name, manifest_hash=m_hash)
    assert back.image.tobytes() == emb.image.tobytes() and list(back.image_ids) == list(emb.image_ids)

    with pytest.raises(FileNotFoundError) as err:
        load_registered(out, "demo")
    assert (
        "'demo'" in str(err.value)
        and bb.name in str(err.value)
        and "02_baseline_evaluation" in str(err.value)
    )
    with pytest.raises(EmbeddingError, match="another manifest"):
        load_registered(out, bb.name, manifest_hash="0" * 16)

    # embeddings made elsewhere (a projector's output) are saved under their name
    proj = Embeddings(emb.image[:, ::-1].copy(), emb.text, emb.image_ids, {"manifest_hash": m_hash})
    p2 = register_embeddings(out, "demo+projector", proj)
    assert p2 == out / "demo_projector.safetensors" and p2.is_file()
    assert load_registered(out, "demo+projector").image.tobytes() == proj.image.tobytes()
    assert set(json.loads((out / "index.json").read_text())) == {bb.name, "demo+projector"}

    # a subset keeps its parent's key but must not be registered as the parent's whole file
    sub = emb.select(emb.image_ids[:5])
    register_embeddings(out, bb.name, sub)
    assert len(load_registered(out, bb.name)) == 5
    assert len(load_embeddings(path)) == len(emb)  # the extraction file is untouched
    with pytest.raises(KeyError, match="not in these embeddings"):
        emb.select(["no-such-id"])


# --------------------------------------------------------------------------------------------------------
# file names: the project's one slug rule (cxrlib.backbones.slug)
# --------------------------------------------------------------------------------------------------------
def test_cache_file_names_use_the_slug_and_keep_bundles_apart(tmp_path):
    from cxrlib.backbones import slug

    key = "0123456789abcdef"
    assert embeddings_path(tmp_path, "demo", key) == tmp_path / f"demo-{key}.safetensors"
    assert embeddings_path(tmp_path, "demo-random", key).name == f"demo-random-{key}.safetensors"
    a, b = "local-dir:/exports/clip/y", "local-dir:/exports/biomedclip/y"  # two bundle folders named y
    pa, pb = embeddings_path(tmp_path, a, key), embeddings_path(tmp_path, b, key)
    assert pa != pb and pa.parent == pb.parent == tmp_path  # no folders made out of the name's '/'
    h = hashlib.sha256(a.encode()).hexdigest()[:8]
    assert pa.name == f"y-{h}-{key}.safetensors" == f"{slug(a)}-{key}.safetensors"
    assert ":" not in pa.name and " " not in embeddings_path(tmp_path, "local-dir:/a b/c", key).name


def test_registered_projections_are_saved_under_the_slug(tmp_path):
    rng = np.random.default_rng(0)
    emb = Embeddings(
        rng.normal(size=(3, 4)).astype(np.float32),
        rng.normal(size=(3, 4)).astype(np.float32),
        np.array(["a", "b", "c"], dtype=object),
        {"manifest_hash": "m"},
    )
    tuned = "local-dir:/exports/biomedclip/y+multitask"
    p1 = register_embeddings(tmp_path, tuned, emb)
    p2 = register_embeddings(tmp_path, "local-dir:/exports/clip/y+multitask", emb)
    assert p1 != p2 and p1.parent == p2.parent == tmp_path and ":" not in p1.name
    assert p1.name.startswith("y_multitask-") and p1.suffix == ".safetensors"
    assert register_embeddings(tmp_path, "demo+multitask", emb).name == "demo_multitask.safetensors"
    index = json.loads((tmp_path / "index.json").read_text())
    assert index[tuned]["file"] == p1.name  # the full name is the registry key
    assert load_registered(tmp_path, tuned).image.tobytes() == emb.image.tobytes()
