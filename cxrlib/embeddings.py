"""Batched embedding extraction with an on-disk cache keyed by what the embeddings depend on.

:func:`extract_embeddings` turns a manifest + image cache into L2-normalised image and text embeddings of one
backbone:

- images stream from the uint8 image cache (:mod:`cxrlib.data.images`) through a ``DataLoader`` that yields
  whole batches (optionally in worker processes, pinned memory on CUDA), are normalised on the device
  (:meth:`cxrlib.backbones.Backbone.prepare_images`), and run under ``torch.no_grad`` with AMP on CUDA; on CPU
  a tower whose input side differs from the cache's reads the cache's resized copy instead, made once
  (:func:`model_input_images`: the same bytes, so the same embeddings);
- texts are embedded once per distinct string (normal reports repeat a lot), so identical report texts get
  byte-identical embeddings — the retrieval metrics rely on that to count identical reports as one item;
- the result is cached as ``<slug>-<key>.safetensors`` (``slug``: :func:`cxrlib.backbones.slug` of the
  backbone's name) where ``key`` hashes the backbone's weights
  checksum and preprocessing, the manifest's ids and texts, and the image cache's content hash. Any change
  to those makes a new file; an interrupted run resumes from its finished chunks (``.parts/`` folder, with a
  ``layout.json`` recording the chunking: a resume with another ``batch_size``/``chunk_batches`` starts over
  instead of placing old chunks at the wrong rows; chunks holding NaN/inf are never written, so a rerun after
  fixing the cause recomputes them);
- every file records the backbone (name, spec, weights checksum) and the manifest hash in its metadata.

Integrity (:mod:`cxrlib.cache`): every file is written atomically under a per-process temporary name. Each
chunk's sha256 is recorded beside it (``<chunk>.npy.sha256``) and checked on resume; the final file records a
sha256 of its arrays, ids and meta (header field ``content_sha256``) and is checked on every load. A damaged chunk
or final file is recomputed with a :class:`~cxrlib.cache.CacheWarning` naming it (:func:`load_embeddings` on its
own raises :class:`EmbeddingError` naming the file and the fix). Extractions into one cache file hold the lock
``<file>.lock``: a second run waits for the first and then reuses its result.

NaN or infinite embeddings raise :class:`EmbeddingError` naming the backbone, modality and rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrlib.backbones import encode_text_trimmed, slug, trims_text_padding
from cxrlib.cache import (
    CacheWarning,
    atomic_path,
    file_lock,
    read_checksum,
    read_stamp,
    remove_stale_temps,
    sha256_data,
    write_bytes_atomic,
    write_checksum,
    write_json_atomic,
    write_stamp,
)

__all__ = [
    "EmbeddingError",
    "Embeddings",
    "embedding_key",
    "embeddings_path",
    "extract_embeddings",
    "model_input_images",
    "save_embeddings",
    "load_embeddings",
    "register_embeddings",
    "load_registered",
]

FORMAT = "cxrlib-embeddings/1"

log = logging.getLogger(__name__)


class EmbeddingError(RuntimeError):
    """Embeddings are unusable (NaN/inf) or a cached file does not match what was asked for."""


@dataclass
class Embeddings:
    """Paired embeddings in manifest row order.

    Attributes:
        image: (N, D) float32, L2-normalised.
        text: (N, D) float32, L2-normalised; rows with identical report text are byte-identical.
        image_ids: (N,) the manifest's ``image_id`` for each row.
        meta: JSON-able record: backbone description, manifest hash, key, timing.
    """

    image: np.ndarray
    text: np.ndarray
    image_ids: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    def select(self, image_ids) -> Embeddings:
        """Rows for ``image_ids`` (in that order). Raises KeyError naming ids that are absent."""
        pos = pd.Index(self.image_ids)
        idx = pos.get_indexer(list(image_ids))
        if (idx < 0).any():
            missing = [i for i, j in zip(image_ids, idx, strict=True) if j < 0][:5]
            raise KeyError(
                f"{len(np.flatnonzero(idx < 0))} image ids are not in these embeddings, e.g. {missing}"
            )
        return Embeddings(self.image[idx], self.text[idx], self.image_ids[idx], dict(self.meta))


def embedding_key(backbone_record: dict, manifest_hash: str, image_hash: str, amp: bool = False) -> str:
    """16 hex characters identifying (weights, preprocessing, manifest ids/texts, image pixels, precision).

    ``amp`` (fp16 autocast on CUDA) is part of the key: fp16 and fp32 embeddings of the same backbone differ
    slightly, and a cache must never hand one out for the other.
    """
    rec = {k: backbone_record[k] for k in ("weights_id", "image_size", "mean", "std", "context_length")}
    content = {"backbone": rec, "manifest": manifest_hash, "images": image_hash, "format": FORMAT}
    if amp:  # fp32 keys stay as they were
        content["precision"] = "fp16-autocast"
    blob = json.dumps(content, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def embeddings_path(out_dir: str | Path, backbone_name: str, key: str) -> Path:
    """``<out_dir>/<slug>-<key>.safetensors``: :func:`cxrlib.backbones.slug` of the name (the project's one rule
    for names in paths: ``demo`` -> ``demo-<key>``, ``local-dir:/x/y`` -> ``y-<8 hex>-<key>``); the full name
    stays in the file's metadata."""
    return Path(out_dir) / f"{slug(backbone_name)}-{key}.safetensors"


def _content_sha256(image: np.ndarray, text: np.ndarray, ids_json: str, meta_json: str) -> str:
    """sha256 over what a file holds: dtypes, shapes and bytes of both arrays, then the ids and meta JSON."""
    head = f"{image.dtype.str}{image.shape}|{text.dtype.str}{text.shape}|".encode()
    return sha256_data(
        head,
        np.ascontiguousarray(image),
        np.ascontiguousarray(text),
        ids_json.encode(),
        b"\0",
        meta_json.encode(),
    )


def save_embeddings(emb: Embeddings, path: str | Path) -> Path:
    """Write ``emb`` as safetensors (image, text) with ids and meta in the header (no pickle).

    Written atomically (a per-process temporary file renamed into place); the header also records
    ``content_sha256`` (arrays, ids, meta) that :func:`load_embeddings` checks. The arrays are stored unchanged.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    image, text = np.ascontiguousarray(emb.image), np.ascontiguousarray(emb.text)
    meta_json = json.dumps(emb.meta, sort_keys=True)
    ids_json = json.dumps(list(map(str, emb.image_ids)))
    header = {
        "format": FORMAT,
        "meta": meta_json,
        "image_ids": ids_json,
        "content_sha256": _content_sha256(image, text, ids_json, meta_json),
    }
    with atomic_path(path) as tmp:
        save_file({"image": image, "text": text}, str(tmp), metadata=header)
    return path


def load_embeddings(path: str | Path) -> Embeddings:
    """Read a file written by :func:`save_embeddings` and check it against its recorded ``content_sha256``.

    Raises ``FileNotFoundError`` (absent) or :class:`EmbeddingError` naming the file and the fix when it is not
    an embeddings file, is truncated or unreadable, or does not match its checksum. Files written before the
    checksum existed are read without that check.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no embeddings at {path}. Run notebooks/02_baseline_evaluation.ipynb first (it extracts and caches them)."
        )
    try:
        return _read(path)
    except EmbeddingError as exc:
        raise EmbeddingError(
            f"{exc}. Delete it and rerun notebooks/02_baseline_evaluation.ipynb: extract_embeddings recomputes "
            "a damaged cache file (projected embeddings come from notebooks/03_multitask_finetuning.ipynb)."
        ) from exc


def _read(path: Path) -> Embeddings:
    """:func:`load_embeddings` without the advice: :class:`EmbeddingError` saying what is wrong with ``path``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT:
                raise EmbeddingError(f"{path} is not a {FORMAT} file (format={header.get('format')!r})")
            image, text = f.get_tensor("image"), f.get_tensor("text")
        ids_json, meta_json = header["image_ids"], header["meta"]
        ids = np.asarray(json.loads(ids_json), dtype=object)
        meta = json.loads(meta_json)
    except EmbeddingError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(
            f"the embeddings file {path} is truncated or damaged and cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    want = header.get("content_sha256")
    if want is not None and _content_sha256(image, text, ids_json, meta_json) != want:
        raise EmbeddingError(
            f"the embeddings file {path} does not match the checksum recorded when it was written (damaged or "
            "modified)"
        )
    if len(ids) != len(image) or len(ids) != len(text):
        raise EmbeddingError(
            f"the embeddings file {path} holds {len(image)} image / {len(text)} text rows but {len(ids)} ids"
        )
    return Embeddings(image, text, ids, meta)


def _check_finite(x: np.ndarray, what: str, ids: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise EmbeddingError(
            f"{what}: {len(rows)} embedding(s) contain NaN or inf, e.g. rows {rows[:5].tolist()} "
            f"(ids {[str(i) for i in ids[rows[:5]]]}). Check the inputs (a blank or corrupt image, an empty text) "
            "and the precision (try precision='fp32' / amp=False)."
        )


def model_input_images(backbone, image_cache):
    """Where extraction reads ``backbone``'s input images from: ``image_cache`` or its copy at the tower's side.

    On CPU, when the cache's side differs from ``backbone.image_size`` (the demo's 64 px towers on the 224 px
    cache), this is :meth:`cxrlib.data.images.ImageCache.resized`: resized once with the rule of
    :meth:`~cxrlib.backbones.Backbone.prepare_images` and then read from disk, the same float32 bytes a resize
    per batch gives, so the embeddings (and their cache key) do not change. Elsewhere it is ``image_cache``
    itself (uint8 ``(B, S, S)`` batches, resized on the device: cheap on a GPU, whose bicubic kernel need not
    match the CPU's to the last bit). ``benchmarks/bench_embeddings.py`` can time extraction with either.
    """
    size = int(backbone.image_size)
    if backbone.device.type != "cpu" or image_cache.size == size or not hasattr(image_cache, "resized"):
        return image_cache
    return image_cache.resized(size)


class _BatchDataset(torch.utils.data.Dataset):
    """Item k = the k-th batch of rows of the image cache, as a tensor (B, S, S): uint8 from an
    :class:`~cxrlib.data.images.ImageCache`, float32 from its resized copy (:func:`model_input_images`)."""

    def __init__(self, cache, rows: np.ndarray, batch_size: int):
        self.cache, self.rows, self.batch_size = cache, rows, batch_size

    def __len__(self) -> int:
        return (len(self.rows) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor]:
        r = self.rows[k * self.batch_size : (k + 1) * self.batch_size]
        return k, torch.from_numpy(self.cache.get_rows(r))


def _load_part(f: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A finished chunk from ``.parts/``, or None (then recomputed) when absent, without its checksum record,
    damaged (sha256 differs from the one recorded when it was written: a warning names the file) or not of the
    expected shape."""
    if not f.exists():
        return None
    want = read_checksum(f)
    if want is None:  # written by an older version, or the run stopped between the chunk and its record
        log.info("recomputing the embedding chunk %s: no checksum recorded for it", f)
        return None
    try:
        data = f.read_bytes()
        if sha256_data(data) != want:
            warnings.warn(
                f"embedding chunk {f} does not match the checksum recorded when it was written (damaged or "
                "modified); recomputing it",
                CacheWarning,
                stacklevel=3,
            )
            return None
        arr = np.load(io.BytesIO(data))
    except (OSError, ValueError) as exc:
        warnings.warn(
            f"embedding chunk {f} cannot be read ({exc}); recomputing it", CacheWarning, stacklevel=3
        )
        return None
    if arr.shape != shape or arr.dtype != np.float32:
        return None
    return arr


def _save_part(f: Path, arr: np.ndarray) -> None:
    """Write a chunk atomically, then its sha256 record; chunks with NaN/inf are not kept (the run fails later
    and a rerun recomputes them). No fsync: a chunk is scratch for resuming, and one that a crash left damaged
    fails its checksum on the next run and is recomputed (:func:`_load_part`)."""
    if not np.isfinite(arr).all():
        return
    buf = io.BytesIO()
    np.save(buf, arr)
    data = buf.getvalue()
    write_bytes_atomic(f, data, fsync=False)
    write_checksum(f, sha256_data(data), fsync=False)


def _open_parts(parts: Path, layout: dict, force: bool) -> None:
    """Create ``parts`` or keep it for a resume when its ``layout.json`` matches ``layout``; else start over.

    Called with the cache's lock held, so no other process is using ``parts``.
    """
    lay = parts / "layout.json"
    if parts.exists():
        same = read_stamp(lay) == layout
        if force or not same:
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not lay.exists():
        write_stamp(lay, layout)


def _cached(path: Path) -> tuple[Embeddings | None, str]:
    """``(embeddings, "")`` from a valid cache file, else ``(None, why)`` (``why`` empty when there is no file)."""
    if not path.exists():
        return None, ""
    try:
        return _read(path), ""
    except EmbeddingError as exc:
        return None, str(exc)


def _image_rows(cache, image_ids: list[str]) -> np.ndarray:
    try:
        return np.asarray(cache.rows(image_ids), dtype=np.int64)
    except KeyError as exc:
        raise KeyError(
            f"{exc.args[0] if exc.args else exc}. The image cache does not hold every manifest row; rerun "
            "notebooks/01_data_preparation.ipynb so the manifest and cache agree."
        ) from exc


def extract_embeddings(
    backbone,
    manifest: pd.DataFrame,
    image_cache,
    out_dir: str | Path,
    batch_size: int = 64,
    text_batch_size: int = 128,
    num_workers: int = 0,
    amp: bool | None = None,
    chunk_batches: int = 16,
    force: bool = False,
    progress: bool = True,
) -> Embeddings:
    """Embed every manifest row with ``backbone`` (cached; see the module docstring).

    Args:
        backbone: a :class:`cxrlib.backbones.Backbone`.
        manifest: rows to embed (``image_id``, ``text``); row order is kept.
        image_cache: an opened :class:`cxrlib.data.images.ImageCache` holding every ``image_id``.
        out_dir: cache folder (one file per backbone and key).
        batch_size: images per forward pass; ``text_batch_size``: texts per forward pass.
        num_workers: DataLoader worker processes reading the image cache (0 = in the main process).
        amp: mixed precision (fp16 autocast) on CUDA; ``None`` = on for CUDA, off for CPU.
        chunk_batches: batches per resumable chunk written to ``.parts/``.
        force: ignore a cached file and recompute.

    Returns:
        :class:`Embeddings` with ``meta["cache_hit"]`` telling whether it came from disk.
    """
    from cxrlib.data.manifest import manifest_hash

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = backbone.describe()
    m_hash = manifest_hash(manifest, ("image_id", "text"))
    dev = backbone.device
    use_amp = (dev.type == "cuda") if amp is None else bool(amp and dev.type == "cuda")
    key = embedding_key(record, m_hash, image_cache.content_hash, amp=use_amp)
    path = embeddings_path(out_dir, backbone.name, key)
    if not force:
        emb, _ = _cached(path)  # the common case, without taking the lock
        if emb is not None:
            emb.meta["cache_hit"] = True
            return emb
    with file_lock(path):  # a concurrent extraction of the same key waits here, then reuses the result
        if not force:
            emb, why = _cached(path)
            if emb is not None:
                emb.meta["cache_hit"] = True
                return emb
            if why:
                warnings.warn(f"{why}; recomputing it", CacheWarning, stacklevel=2)
        remove_stale_temps(path)
        emb = _extract(
            backbone,
            manifest,
            image_cache,
            path,
            record=record,
            m_hash=m_hash,
            key=key,
            use_amp=use_amp,
            batch_size=batch_size,
            text_batch_size=text_batch_size,
            num_workers=num_workers,
            chunk_batches=chunk_batches,
            force=force,
            progress=progress,
        )
    emb.meta["cache_hit"] = False
    return emb


def _extract(
    backbone,
    manifest: pd.DataFrame,
    image_cache,
    path: Path,
    *,
    record: dict,
    m_hash: str,
    key: str,
    use_amp: bool,
    batch_size: int,
    text_batch_size: int,
    num_workers: int,
    chunk_batches: int,
    force: bool,
    progress: bool,
) -> Embeddings:
    """The extraction itself (the caller holds the cache's lock); writes ``path`` and removes ``.parts/``."""
    dev = backbone.device
    ids = manifest["image_id"].astype(str).to_numpy()
    rows = _image_rows(image_cache, list(ids))
    parts = path.with_name(path.name[: -len(".safetensors")] + ".parts")
    codes, uniques = pd.factorize(manifest["text"].astype(str), sort=False)
    uniques = list(uniques)
    model = backbone.model
    trim = trims_text_padding(model)
    if trim:  # similar lengths share a batch, each batch cut to its longest text (encode_text_trimmed)
        order = np.argsort([len(u) for u in uniques], kind="stable")
        uniques = [uniques[i] for i in order]
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes = rank[codes]
    layout = {
        "n": len(ids),
        "n_unique_texts": len(uniques),
        "embed_dim": int(backbone.embed_dim),
        "batch_size": int(batch_size),
        "text_batch_size": int(text_batch_size),
        "chunk_batches": int(chunk_batches),
        "texts_by_length": bool(trim),
    }
    _open_parts(parts, layout, force)
    t0 = time.perf_counter()

    # ---- texts: each distinct string once ----------------------------------------------------------------
    t_chunk = text_batch_size * chunk_batches
    text_parts = []
    n_chunks = (len(uniques) + t_chunk - 1) // t_chunk
    bar = tqdm(total=len(uniques), desc=f"{backbone.name}: texts", unit="text", disable=not progress)
    for c in range(n_chunks):
        f = parts / f"text_{c:05d}.npy"
        lo, hi = c * t_chunk, min(len(uniques), (c + 1) * t_chunk)
        done = _load_part(f, (hi - lo, int(backbone.embed_dim)))
        if done is not None:
            text_parts.append(done)
            bar.update(hi - lo)
            continue
        outs = []
        for s in range(lo, hi, text_batch_size):
            tok = backbone.tokenizer(uniques[s : min(hi, s + text_batch_size)]).to(dev)
            with torch.no_grad(), torch.autocast(dev.type, enabled=use_amp):
                z = encode_text_trimmed(model, tok) if trim else model.encode_text(tok)
            outs.append(torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy())
            bar.update(len(tok))
        arr = np.concatenate(outs).astype(np.float32)
        _save_part(f, arr)
        text_parts.append(arr)
    bar.close()
    text_u = np.concatenate(text_parts) if text_parts else np.zeros((0, backbone.embed_dim), np.float32)
    text = text_u[codes]
    _check_finite(text, f"{backbone.name} text", ids)  # names the image ids of the rows with a bad text
    t_text = time.perf_counter() - t0

    # ---- images: batches streamed from the cache ----------------------------------------------------------
    t1 = time.perf_counter()
    ds = _BatchDataset(image_cache, rows, batch_size)
    i_chunk = chunk_batches
    n_img_chunks = (len(ds) + i_chunk - 1) // i_chunk
    image = np.zeros((len(ids), backbone.embed_dim), np.float32)
    todo: list[int] = []
    for c in range(n_img_chunks):
        f = parts / f"image_{c:05d}.npy"
        lo = c * i_chunk * batch_size
        hi = min(len(ids), (c + 1) * i_chunk * batch_size)
        arr = _load_part(f, (hi - lo, int(backbone.embed_dim)))
        if arr is not None:
            image[lo:hi] = arr
        else:
            todo.append(c)
    todo_batches = [k for c in todo for k in range(c * i_chunk, min(len(ds), (c + 1) * i_chunk))]
    n_todo = sum(len(rows[k * batch_size : (k + 1) * batch_size]) for k in todo_batches)
    bar = tqdm(total=len(ids), desc=f"{backbone.name}: images", unit="img", disable=not progress)
    bar.update(len(ids) - n_todo)
    if todo_batches:
        ds.cache = model_input_images(backbone, image_cache)  # the resized copy is opened only when needed
        if num_workers > 0 or dev.type == "cuda":  # decoding in worker processes / pinned memory for the GPU
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(ds, todo_batches),
                batch_size=None,
                num_workers=num_workers,
                pin_memory=dev.type == "cuda",
                persistent_workers=False,
            )
        else:  # the same batches read here, without the DataLoader's per-batch machinery
            loader = (ds[k] for k in todo_batches)
        pending: dict[int, np.ndarray] = {}
        for k, batch in loader:
            x = backbone.prepare_images(batch)
            with torch.no_grad(), torch.autocast(dev.type, enabled=use_amp):
                z = model.encode_image(x)
            z = torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()
            lo = int(k) * batch_size
            image[lo : lo + len(z)] = z
            pending[int(k)] = z
            bar.update(len(z))
            c = int(k) // i_chunk
            members = range(c * i_chunk, min(len(ds), (c + 1) * i_chunk))
            if all(m in pending for m in members):
                _save_part(parts / f"image_{c:05d}.npy", np.concatenate([pending.pop(m) for m in members]))
    bar.close()
    _check_finite(image, f"{backbone.name} image", ids)
    t_img = time.perf_counter() - t1

    meta = {
        "backbone": record,
        "manifest_hash": m_hash,
        "image_cache_hash": image_cache.content_hash,
        "key": key,
        "n": len(ids),
        "n_unique_texts": len(uniques),
        "seconds_text": round(t_text, 2),
        "seconds_image": round(t_img, 2),
        "images_per_second": round(n_todo / t_img, 1) if n_todo and t_img > 0 else None,
        "device": str(dev),
        "amp": use_amp,
    }
    emb = Embeddings(image, text, ids.astype(object), meta)
    save_embeddings(emb, path)
    shutil.rmtree(parts, ignore_errors=True)
    return emb


INDEX_FILE = "index.json"


def register_embeddings(
    out_dir: str | Path, name: str, emb: Embeddings, path: str | Path | None = None
) -> Path:
    """Record in ``<out_dir>/index.json`` which file holds the embeddings called ``name``.

    Later notebooks find embeddings by name (:func:`load_registered`) without loading the backbone again.
    ``path`` defaults to the cache file of ``emb`` (from its key) when that file holds exactly these rows;
    embeddings made elsewhere (the projector's output, a :meth:`Embeddings.select` subset) are saved to
    ``<out_dir>/<slug>.safetensors`` first (:func:`cxrlib.backbones.slug`: ``demo+multitask`` -> ``demo_multitask``).
    """
    out_dir = Path(out_dir)
    if path is None:
        key = emb.meta.get("key")
        whole = key is not None and emb.meta.get("n") == len(emb)  # a select() subset keeps the parent's key
        path = embeddings_path(out_dir, name, key) if whole else out_dir / f"{slug(name)}.safetensors"
        if not whole or not Path(path).exists():
            save_embeddings(emb, path)
    path = Path(path)
    index_path = out_dir / INDEX_FILE
    # read-modify-write under the lock: concurrent registrations must not lose each other's entry
    with file_lock(index_path):
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        index[name] = {
            "file": path.name,
            "manifest_hash": emb.meta.get("manifest_hash"),
            "n": len(emb),
            "backbone": emb.meta.get("backbone", {}).get("weights_id"),
        }
        write_json_atomic(index_path, index, indent=2, sort_keys=True)
    return path


def load_registered(out_dir: str | Path, name: str, manifest_hash: str | None = None) -> Embeddings:
    """The embeddings registered as ``name``; a clear error naming the notebook to run when absent or stale."""
    out_dir = Path(out_dir)
    index_path = out_dir / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    if name not in index:
        raise FileNotFoundError(
            f"no embeddings registered as {name!r} in {index_path} (known: {sorted(index)}). Run "
            "notebooks/02_baseline_evaluation.ipynb with this backbone in `backbones` first "
            "(projected embeddings come from notebooks/03_multitask_finetuning.ipynb)."
        )
    emb = load_embeddings(out_dir / index[name]["file"])
    if manifest_hash is not None and emb.meta.get("manifest_hash") not in (None, manifest_hash):
        raise EmbeddingError(
            f"the embeddings registered as {name!r} were made from another manifest "
            f"({emb.meta.get('manifest_hash')} != {manifest_hash}); rerun notebooks 02 (and 03) after notebook 01."
        )
    return emb
