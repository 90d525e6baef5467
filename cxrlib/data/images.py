"""Image decoding and the compact on-disk image cache that notebooks 02–04 read.

Decoding (:func:`load_image`)
-----------------------------
Any file PIL can open (PNG and JPEG in practice) becomes one ``(size, size)`` ``uint8`` grayscale array:

- 8-bit modes are kept as they are: ``L`` unchanged; ``RGB``/``RGBA``/``P``/``LA``/``1`` through PIL's
  ``convert("L")`` (ITU-R 601-2 luminance, alpha ignored).
- 16-bit and 32-bit modes (``I;16``, ``I``, ``F``, …) are rescaled **linearly from the image's own minimum
  to its maximum** onto 0..255 (rounded). No windowing, no percentile clipping; a constant image becomes
  all zeros.
- Aspect rule ``"crop"`` (the default): the shorter side is resized to ``size`` with bicubic interpolation,
  then the centre ``size × size`` square is cut out. These are exactly the operations of open_clip's
  ``image_transform(size, is_train=False)`` (``Resize(size, BICUBIC)`` + ``CenterCrop(size)``), which
  CLIP and BiomedCLIP use, so for an 8-bit grayscale image the cached pixels equal the backbone's own
  preprocessing per channel (before ``ToTensor``/``Normalize``); ``tests/data/test_images.py`` checks this.
- Aspect rule ``"pad"``: the longer side is resized to ``size`` (bicubic) and the image is centred on a
  black square (open_clip's ``resize_mode="longest"``). Nothing is cut off, but the lungs get fewer pixels.
- Large JPEGs are decoded at a reduced scale first (PIL ``draft``, libjpeg's DCT scaling by 1/2, 1/4 or
  1/8) when the reduced image still has at least ``2 × size`` pixels on its shorter side; this makes
  MIMIC-CXR-JPG (≈ 3000 × 2500) several times faster to cache and changes the pixels only slightly (the
  bicubic step that follows still downsamples by ≥ 2).

The cache (:func:`build_image_cache`, :class:`ImageCache`)
--------------------------------------------------------
``<cache_dir>/images_<size>_<aspect>.npy`` holds a ``uint8`` array of shape ``(N, size, size)``, one row per
manifest row in manifest order; ``images_<size>_<aspect>.json`` beside it records the ``image_ids``, their
paths and file stamps, a per-row ``status`` (``"ok"``, ``"pending"`` or the reason the row was skipped),
``complete``, a ``content_hash`` and a ``format_version``. Rows that could not be decoded stay zero in the
array, are absent from :attr:`ImageCache.image_ids`, and are counted in the returned
:class:`~cxrlib.data.manifest.Accounting`.

Rebuilding is incremental: a row whose id, path and file stamp (size, mtime) match the previous build is
never decoded again (also a failed row: a missing file stays missing until the file changes; only a row
skipped as too large is tried again, since raising ``PIL.Image.MAX_IMAGE_PIXELS`` does not change the file); an
interrupted build (Ctrl-C, a killed kernel) resumes from its last checkpoint; a manifest with new rows
copies the decoded rows into a new array and decodes only the new ones.

Integrity (:mod:`cxrlib.cache`): the sidecar records a checksum of every decoded row (``row_sha256``: the
first 16 hex digits of the sha256 of its pixels). A rebuild checks every row it reuses and decodes a damaged
one again, with a :class:`~cxrlib.cache.CacheWarning` naming the cache file; :class:`ImageCache` checks the rows
it reads, decodes a damaged row again from its source image (warning), or raises :class:`ImageCacheError`
naming the file, the ids and the fix when the source no longer gives the recorded pixels. The array is
written under a per-process temporary name and renamed into place, the sidecar atomically, and a build holds
the lock ``images_<size>_<aspect>.npy.lock`` so that two builds of one cache wait for each other. Sidecars
from before the row checksums get them on the next build (the ``content_hash`` does not change).

Model-sized copies (:func:`resize_to_unit`, :meth:`ImageCache.resized`, :class:`ResizedImages`)
----------------------------------------------------------------------------------------------
A backbone whose input side S differs from the cache's (the demo's 64 px towers read the 224 px cache) sees
each image as :func:`resize_to_unit` makes it: ``uint8 / 255``, then torch's bicubic interpolation with
antialiasing to ``S × S``, clamped to ``[0, 1]``. :meth:`ImageCache.resized` computes that once for every row
and keeps it as float32 in ``images_<size>_<aspect>.at<S>.npy`` beside the cache (with a JSON record of the
cache's ``content_hash``, S, :data:`RESIZE_RULE`, the torch version and the array's sha256), so every later
extraction on CPU reads the resized pixels instead of resizing again. The values are the very bytes the resize
gives (the operation is per image: neither the batch it runs in nor the thread count changes a bit), so
embeddings made from them are byte-identical to embeddings made by resizing on the fly. A copy whose record
does not match (another cache content, size, rule or torch version) is rebuilt; one whose bytes do not match
its sha256 is rebuilt with a :class:`~cxrlib.cache.CacheWarning`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from PIL import Image
from tqdm.auto import tqdm

from cxrlib.cache import (
    CacheWarning,
    atomic_path,
    file_lock,
    read_stamp,
    remove_stale_temps,
    sha256_data,
    sha256_file,
    temp_path,
    write_json_atomic,
    write_stamp,
)
from cxrlib.data.manifest import Accounting
from cxrlib.paths import resolve

__all__ = [
    "ASPECTS",
    "CACHE_FORMAT_VERSION",
    "RESIZE_RULE",
    "load_image",
    "cache_paths",
    "build_image_cache",
    "resize_to_unit",
    "resized_paths",
    "ImageCache",
    "ImageCacheError",
    "ResizedImages",
]

log = logging.getLogger(__name__)

ASPECTS: tuple[str, ...] = ("crop", "pad")
CACHE_FORMAT_VERSION = 1

#: Skip reasons recorded in the sidecar and the Accounting.
REASON_MISSING = "image file missing"
REASON_EMPTY = "image file empty (0 bytes)"
REASON_TRUNCATED = "image file truncated"
REASON_CORRUPT = "image file corrupt or undecodable"
REASON_TOO_LARGE = "image too large (decompression-bomb limit)"

_OK = "ok"
_PENDING = "pending"

#: The resize from cache pixels to a model's input side (:func:`resize_to_unit`); part of every resized copy's
#: record, so changing the operation means a new name here and every copy is rebuilt.
RESIZE_RULE = "uint8/255, torch bicubic antialias, clamp to [0, 1]"
_RESIZED_FORMAT = "cxrlib-resized-images/1"

#: Progress of a running build is written to the sidecar at most this often (seconds), and always when
#: the build stops (finished, failed or interrupted). A killed process loses at most this much work.
_CHECKPOINT_SECONDS = 20.0


# --------------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------------


def _check_args(size: int, aspect: str) -> None:
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    if aspect not in ASPECTS:
        raise ValueError(
            f"aspect must be one of {ASPECTS} ('crop' = resize shorter side + centre crop), got {aspect!r}"
        )


def _to_gray8(img: Image.Image) -> Image.Image:
    """Any PIL image → mode ``L`` (see the module docstring for the rule per mode)."""
    if img.mode == "L":
        return img
    if img.mode in ("1", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La"):
        return img.convert("L")
    # 16-bit / 32-bit integer and float modes: linear min..max rescale
    a = np.asarray(img)
    if a.ndim == 3:  # multi-channel high bit depth (rare): average the channels first
        a = a.mean(axis=2)
    a = a.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if not finite.any():
        return Image.fromarray(np.zeros(a.shape, dtype=np.uint8), mode="L")
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if hi <= lo:
        out = np.zeros(a.shape, dtype=np.uint8)
    else:
        out = np.rint((np.where(finite, a, lo) - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _fit(img: Image.Image, size: int, aspect: str) -> np.ndarray:
    """Resize + centre-crop (``crop``) or resize + pad (``pad``); mirrors torchvision/open_clip exactly."""
    w, h = img.size
    if aspect == "crop":
        # torchvision.transforms.functional._compute_resized_output_size with a scalar size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BICUBIC)
        # torchvision center_crop (Python's round, as torchvision uses)
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).copy()
    # pad: open_clip ResizeKeepRatio(longest=1) + CenterCropOrPad(fill=0)
    ratio = max(h / size, w / size)
    new_h, new_w = max(1, round(h / ratio)), max(1, round(w / ratio))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    out = np.zeros((size, size), dtype=np.uint8)
    arr = np.asarray(img, dtype=np.uint8)
    # crop first if rounding made a side exceed size (cannot happen for the longer side, kept for safety)
    top_c = int(round(max(new_h - size, 0) / 2.0))
    left_c = int(round(max(new_w - size, 0) / 2.0))
    arr = arr[top_c : top_c + size, left_c : left_c + size]
    top = (size - arr.shape[0]) // 2
    left = (size - arr.shape[1]) // 2
    out[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    return out


def load_image(path: str | os.PathLike[str], size: int, aspect: str = "crop") -> np.ndarray:
    """Decode one image file into a ``(size, size)`` ``uint8`` grayscale array.

    See the module docstring for the bit-depth rule, the aspect rules (``"crop"``: shorter side to
    ``size`` + centre crop, as open_clip does; ``"pad"``: longer side to ``size`` + black padding) and the
    JPEG draft speed-up. Raises ``FileNotFoundError`` for a missing file and PIL's errors
    (``UnidentifiedImageError``, ``OSError``) for corrupt or truncated files, and
    ``PIL.Image.DecompressionBombError`` for an image above twice ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    _check_args(size, aspect)
    with Image.open(path) as img:
        if img.format == "JPEG":
            w, h = img.size
            if min(w, h) >= 4 * size:  # draft only when ≥ 2×size remains on the shorter side
                img.draft(None, (2 * size, 2 * size))
        img.load()
        gray = _to_gray8(img)
        return _fit(gray, int(size), aspect)


class ImageCacheError(RuntimeError):
    """Rows of an image cache are damaged and cannot be restored from their source images (message: file, fix)."""


def _classify_error(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return REASON_TOO_LARGE
    msg = str(exc).lower()
    if "truncated" in msg:
        return REASON_TRUNCATED
    return REASON_CORRUPT


def _error_detail(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return (
            f"{str(exc)[:120]} If the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS (now "
            f"{Image.MAX_IMAGE_PIXELS}) before building the cache; the row is tried again on the next build"
        )
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def _row_digest(img: np.ndarray) -> str:
    """The checksum recorded per cached row: first 16 hex digits of the sha256 of its pixels."""
    return sha256_data(np.ascontiguousarray(img))[:16]


def _decode_task(task: tuple[int, str, int, str]) -> tuple[int, np.ndarray | None, str, str]:
    """Worker: ``(row, path, size, aspect)`` → ``(row, array or None, status, detail)``. Never raises."""
    i, path, size, aspect = task
    try:
        if not os.path.isfile(path):
            return i, None, REASON_MISSING, ""
        if os.path.getsize(path) == 0:
            return i, None, REASON_EMPTY, ""
        return i, load_image(path, size, aspect), _OK, ""
    except Exception as exc:  # noqa: BLE001 - every decoding failure becomes a counted skip
        return i, None, _classify_error(exc), _error_detail(exc)


# --------------------------------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------------------------------


def cache_paths(
    cache_dir: str | os.PathLike[str], image_size: int, aspect: str = "crop"
) -> tuple[Path, Path]:
    """``(array .npy, sidecar .json)`` of the image cache for ``image_size`` and ``aspect``."""
    _check_args(image_size, aspect)
    stem = f"images_{int(image_size)}_{aspect}"
    cache_dir = Path(cache_dir)
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def _file_stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _read_sidecar(npy: Path, sidecar: Path, size: int, aspect: str) -> dict | None:
    """The previous build's sidecar when it matches this size/aspect/version and its array, else None."""
    if not (sidecar.exists() and npy.exists()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
        arr = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable image cache %s (%s); it will be rebuilt", sidecar, exc)
        return None
    n = len(meta.get("image_ids", []))
    ok = (
        meta.get("format_version") == CACHE_FORMAT_VERSION
        and meta.get("size") == size
        and meta.get("aspect") == aspect
        and arr.shape == (n, size, size)
        and arr.dtype == np.uint8
        and len(meta.get("status", [])) == n
        and len(meta.get("image_paths", [])) == n
        and len(meta.get("file_stamps", [])) == n
        and len(meta.get("row_sha256") or [""] * n) == n
    )
    del arr
    return meta if ok else None


def _content_hash(
    arr: np.ndarray, image_ids: Sequence[str], status: Sequence[str], size: int, aspect: str
) -> str:
    """sha256 (first 16 hex digits) over size, aspect, ids, statuses and the array bytes (chunked)."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_FORMAT_VERSION}|{size}|{aspect}|{len(image_ids)}".encode())
    for i, s in zip(image_ids, status, strict=True):
        h.update(f"{i}\0{s}\n".encode())
    step = max(1, (64 << 20) // max(1, size * size))
    for start in range(0, arr.shape[0], step):
        h.update(np.ascontiguousarray(arr[start : start + step]).tobytes())
    return h.hexdigest()[:16]


def _decode_stream(
    tasks: list[tuple[int, str, int, str]], num_workers: int
) -> Iterator[tuple[int, np.ndarray | None, str, str]]:
    if num_workers <= 0 or len(tasks) <= 1:
        for t in tasks:
            yield _decode_task(t)
        return
    chunksize = max(1, min(32, len(tasks) // (num_workers * 8)))
    with multiprocessing.get_context().Pool(num_workers) as pool:
        yield from pool.imap(_decode_task, tasks, chunksize=chunksize)


def build_image_cache(
    manifest: pd.DataFrame,
    cache_dir: str | os.PathLike[str],
    image_size: int,
    aspect: str = "crop",
    num_workers: int = 0,
    progress: bool = True,
    verify: bool = True,
) -> tuple[pd.DataFrame, Accounting]:
    """Decode every manifest image once into ``<cache_dir>/images_<size>_<aspect>.npy`` (N × S × S uint8).

    ``manifest`` needs ``image_id`` (unique; duplicates raise ``ValueError``) and ``image_path`` (resolved
    with :func:`cxrlib.paths.resolve`). Missing, empty, truncated, corrupt and too large files are skipped and
    counted (reason + id and path); the returned manifest holds only the rows that are in the cache, in
    manifest order. A repeated call decodes nothing that is already cached (see the module docstring);
    ``num_workers > 0`` decodes in a ``multiprocessing`` pool (order-preserving ``imap``). ``verify``: check
    every reused row against its recorded checksum (one read of the array) and decode damaged rows again.

    Returns ``(manifest of cached rows, Accounting)``.
    """
    _check_args(image_size, aspect)
    size = int(image_size)
    for col in ("image_id", "image_path"):
        if col not in manifest.columns:
            raise ValueError(
                f"build_image_cache needs a manifest with column {col!r}; got {list(manifest.columns)}"
            )
    ids = [str(v) for v in manifest["image_id"]]
    dup = manifest["image_id"].astype(str).duplicated(keep=False)
    if dup.any():
        raise ValueError(
            f"image_id must be unique in the manifest given to build_image_cache; duplicated: "
            f"{sorted(set(manifest.loc[dup, 'image_id'].astype(str)))[:5]} (validate_manifest catches this too)"
        )
    paths = [str(v) for v in manifest["image_path"]]
    npy, sidecar = cache_paths(cache_dir, size, aspect)
    npy.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(npy):  # a second build of the same cache waits, then finds the first one's rows
        remove_stale_temps(npy)
        # the fixed-name temporary file of versions before cxrlib.cache
        npy.with_name(npy.stem + ".building.npy").unlink(missing_ok=True)
        return _build(manifest, ids, paths, npy, sidecar, size, aspect, num_workers, progress, verify)


def _damaged_rows_warning(npy: Path, ids: Sequence[str], rows: Sequence[int]) -> None:
    shown = ", ".join(repr(ids[i]) for i in rows[:5]) + (
        f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    )
    warnings.warn(
        f"image cache {npy}: {len(rows)} row(s) do not match the checksums recorded when they were decoded "
        f"(ids {shown}); the file was damaged or modified. Decoding them again.",
        CacheWarning,
        stacklevel=4,
    )


def _build(
    manifest: pd.DataFrame,
    ids: list[str],
    paths: list[str],
    npy: Path,
    sidecar: Path,
    size: int,
    aspect: str,
    num_workers: int,
    progress: bool,
    verify: bool,
) -> tuple[pd.DataFrame, Accounting]:
    """:func:`build_image_cache` with its lock held."""
    resolved = [resolve(p) for p in paths]
    stamps = [_file_stamp(p) for p in resolved]
    n = len(ids)
    old = _read_sidecar(npy, sidecar, size, aspect)
    t0 = time.perf_counter()

    def reusable(s: str, old_stamp, new_stamp) -> bool:
        # a row skipped as too large is tried again: the limit (PIL.Image.MAX_IMAGE_PIXELS) may have been raised
        return s not in (_PENDING, REASON_TOO_LARGE) and old_stamp == new_stamp

    same_layout = old is not None and old["image_ids"] == ids and old["image_paths"] == paths
    if same_layout:
        assert old is not None
        status = [
            s if reusable(s, old["file_stamps"][i], stamps[i]) else _PENDING
            for i, s in enumerate(old["status"])
        ]
        old_digests = old.get("row_sha256")
        digests = list(old_digests) if old_digests else [""] * n
        damaged: list[int] = []
        unrecorded = False
        if verify or not old_digests:
            view = np.load(npy, mmap_mode="r")
            for i, s in enumerate(status):
                if s != _OK:
                    continue
                d = _row_digest(view[i])
                if not digests[i]:  # a sidecar from before the row checksums: record them now
                    digests[i], unrecorded = d, True
                elif verify and d != digests[i]:
                    damaged.append(i)
            del view
        if damaged:
            _damaged_rows_warning(npy, ids, damaged)
            for i in damaged:
                status[i] = _PENDING
        if old.get("complete") and _PENDING not in status:
            if unrecorded:
                old["row_sha256"] = digests
                write_json_atomic(sidecar, old)
            # nothing to decode: reuse as is (no write at all when the checksums were already recorded)
            return _result(manifest, ids, paths, status, old.get("details", {}), "image_cache")
        reused = sum(s != _PENDING for s in status)
        arr = open_memmap(npy, mode="r+")
        details: dict[str, str] = {
            k: v for k, v in old.get("details", {}).items() if status[int(k)] != _PENDING
        }
    else:
        status = [_PENDING] * n
        digests = [""] * n
        details = {}
        tmp = temp_path(npy)
        try:
            new = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size))
            reused = 0
            if old is not None:
                old_arr = np.load(npy, mmap_mode="r")
                old_digests = old.get("row_sha256") or [""] * len(old["image_ids"])
                where = {
                    (iid, p): j
                    for j, (iid, p, s) in enumerate(
                        zip(old["image_ids"], old["image_paths"], old["status"], strict=True)
                    )
                    if s != _PENDING
                }
                pairs = []
                damaged = []
                for i in range(n):
                    j = where.get((ids[i], paths[i]))
                    if j is None or not reusable(old["status"][j], old["file_stamps"][j], stamps[i]):
                        continue
                    if old["status"][j] == _OK:
                        d = _row_digest(old_arr[j]) if (verify or not old_digests[j]) else old_digests[j]
                        if old_digests[j] and d != old_digests[j]:
                            damaged.append(i)
                            continue
                        digests[i] = d
                        pairs.append((j, i))
                    status[i] = old["status"][j]
                    if str(j) in old.get("details", {}):
                        details[str(i)] = old["details"][str(j)]
                if damaged:
                    _damaged_rows_warning(npy, ids, damaged)
                pairs.sort()
                for k in range(0, len(pairs), 1024):
                    block = pairs[k : k + 1024]
                    src = np.array([p[0] for p in block])
                    dst = np.array([p[1] for p in block])
                    new[dst] = old_arr[src]
                reused = sum(s != _PENDING for s in status)
                del old_arr
            new.flush()
            del new
            # commit order: drop the old sidecar, move the array in, then write its sidecar. A crash in between
            # leaves an array without a sidecar, which the next run simply rebuilds (never a mismatched pair).
            sidecar.unlink(missing_ok=True)
            os.replace(tmp, npy)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        arr = open_memmap(npy, mode="r+")

    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "size": size,
        "aspect": aspect,
        "n_rows": n,
        "image_ids": ids,
        "image_paths": paths,
        "file_stamps": stamps,
        "status": status,
        "row_sha256": digests,
        "details": details,
        "complete": False,
        "content_hash": None,
        "last_build": {"decoded": 0, "reused": reused, "seconds": 0.0},
    }
    write_json_atomic(sidecar, meta)

    todo = [i for i, s in enumerate(status) if s == _PENDING]
    tasks = [(i, str(resolved[i]), size, aspect) for i in todo]
    decoded = 0
    last = time.monotonic()
    try:
        with tqdm(
            total=len(tasks), desc=f"caching images {size}px ({aspect})", unit="img", disable=not progress
        ) as bar:
            for i, img, st, detail in _decode_stream(tasks, num_workers):
                if img is not None:
                    arr[i] = img
                    digests[i] = _row_digest(img)
                else:
                    if same_layout:
                        arr[i] = 0  # a re-decoded row that now fails must not keep stale pixels
                    digests[i] = ""
                status[i] = st
                if detail:
                    details[str(i)] = detail
                else:
                    details.pop(str(i), None)
                decoded += 1
                bar.update(1)
                if time.monotonic() - last >= _CHECKPOINT_SECONDS:
                    arr.flush()
                    meta["last_build"] = {
                        "decoded": decoded,
                        "reused": reused,
                        "seconds": time.perf_counter() - t0,
                    }
                    write_json_atomic(sidecar, meta)
                    last = time.monotonic()
    finally:
        # checkpoint whatever was done (also on Ctrl-C): pixels first, then the flags that vouch for them
        arr.flush()
        meta["last_build"] = {"decoded": decoded, "reused": reused, "seconds": time.perf_counter() - t0}
        write_json_atomic(sidecar, meta)

    meta["content_hash"] = _content_hash(arr, ids, status, size, aspect)
    meta["complete"] = True
    meta["last_build"] = {"decoded": decoded, "reused": reused, "seconds": round(time.perf_counter() - t0, 3)}
    del arr
    write_json_atomic(sidecar, meta)
    log.info("image cache %s: %d decoded, %d reused", npy, decoded, reused)
    return _result(manifest, ids, paths, status, details, "image_cache")


def _result(
    manifest: pd.DataFrame,
    ids: list[str],
    paths: list[str],
    status: list[str],
    details: dict[str, str],
    source: str,
) -> tuple[pd.DataFrame, Accounting]:
    acc = Accounting(source, rows_in=len(ids))
    keep = np.array([s == _OK for s in status], dtype=bool)
    for i, s in enumerate(status):
        if s != _OK:
            extra = details.get(str(i), "")
            acc.drop(s, f"{ids[i]} ({paths[i]}{'; ' + extra if extra else ''})")
    acc.rows_kept = int(keep.sum())
    acc.check()
    return manifest.loc[keep].reset_index(drop=True), acc


@dataclass
class ImageCache:
    """Read access to a finished image cache (memory-mapped; nothing is loaded until :meth:`get`).

    Attributes: ``image_ids`` (the cached ids, in manifest order), ``content_hash``, ``size``, ``aspect``,
    ``path`` (the ``.npy``). ``len(cache)`` is the number of cached images.

    Every row read is checked against the checksum recorded when it was decoded (unless opened with
    ``verify=False``, or the sidecar predates the checksums): a damaged row is decoded again from its source
    image with a :class:`~cxrlib.cache.CacheWarning`; when that no longer gives the recorded pixels,
    :class:`ImageCacheError` names the file, the ids and the fix.
    """

    path: Path
    size: int
    aspect: str
    image_ids: list[str]
    content_hash: str
    _array: np.ndarray = field(repr=False)
    _row: dict[str, int] = field(repr=False)
    _digests: list[str] | None = field(default=None, repr=False)
    _all_ids: list[str] = field(default_factory=list, repr=False)
    _sources: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def open(
        cls, cache_dir: str | os.PathLike[str], image_size: int, aspect: str = "crop", verify: bool = True
    ) -> ImageCache:
        """Open ``<cache_dir>/images_<size>_<aspect>.npy``; a clear error when it is absent or unfinished.

        ``verify``: check each row read against its recorded checksum (see the class docstring).
        """
        npy, sidecar = cache_paths(cache_dir, image_size, aspect)
        if not (npy.exists() and sidecar.exists()):
            raise FileNotFoundError(
                f"no image cache at {npy} (with its sidecar {sidecar.name}). "
                "Run notebooks/01_data_preparation.ipynb first (it calls build_image_cache)."
            )
        meta = _read_sidecar(npy, sidecar, int(image_size), aspect)
        if meta is None or not meta.get("complete"):
            raise RuntimeError(
                f"the image cache at {npy} is unfinished or does not match size={image_size}, aspect={aspect!r} "
                f"(format version {CACHE_FORMAT_VERSION}); rerun notebooks/01_data_preparation.ipynb to "
                "resume or rebuild it."
            )
        rows = {
            iid: i
            for i, (iid, s) in enumerate(zip(meta["image_ids"], meta["status"], strict=True))
            if s == _OK
        }
        return cls(
            path=npy,
            size=int(meta["size"]),
            aspect=str(meta["aspect"]),
            image_ids=list(rows),
            content_hash=str(meta["content_hash"]),
            _array=np.load(npy, mmap_mode="r"),
            _row=rows,
            _digests=list(meta["row_sha256"]) if verify and meta.get("row_sha256") else None,
            _all_ids=list(meta["image_ids"]),
            _sources=list(meta["image_paths"]),
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row indices into the ``.npy`` for ``image_ids``; ``KeyError`` naming the ids that are not cached."""
        missing = [i for i in image_ids if i not in self._row]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise KeyError(
                f"{len(missing)} image id(s) not in the image cache {self.path.name}: {missing[:5]}{more} "
                "(skipped when the cache was built, or the manifest changed: rerun notebooks/01_data_preparation.ipynb)"
            )
        return np.fromiter((self._row[i] for i in image_ids), dtype=np.int64, count=len(image_ids))

    def get_rows(self, rows: np.ndarray) -> np.ndarray:
        """``(n, size, size)`` uint8 images at row indices ``rows`` (from :meth:`rows`), in that order.

        Contiguous ascending rows (the usual batch) are one slice of the memory map.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and rows[-1] - rows[0] == rows.size - 1 and np.all(np.diff(rows) == 1):
            out = np.array(self._array[rows[0] : rows[-1] + 1])
        else:
            out = np.array(self._array[rows])
        return self._verified(rows, out)

    def _verified(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out`` (the pixels read at ``rows``) after checking each row against its recorded checksum."""
        if self._digests is None:
            return out
        digests = self._digests
        bad = [k for k, r in enumerate(rows.tolist()) if digests[r] and _row_digest(out[k]) != digests[r]]
        if not bad:
            return out
        failed = []
        for k in bad:
            r = int(rows[k])
            try:
                img = load_image(resolve(self._sources[r]), self.size, self.aspect)
            except Exception:  # noqa: BLE001 - the source is gone or unreadable: reported below
                img = None
            if img is not None and _row_digest(img) == digests[r]:
                out[k] = img
            else:
                failed.append(r)
        shown = sorted({self._all_ids[int(rows[k])] for k in bad})
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        if failed:
            raise ImageCacheError(
                f"image cache {self.path}: {len(failed)} row(s) do not match the checksums recorded when they were "
                f"decoded (ids {[self._all_ids[r] for r in failed[:5]]}), and their source images no longer give "
                "those pixels. Rerun notebooks/01_data_preparation.ipynb (build_image_cache decodes damaged rows "
                "again), then the later notebooks."
            )
        warnings.warn(
            f"image cache {self.path}: {len(bad)} row(s) do not match the checksums recorded when they were "
            f"decoded (ids {shown[:5]}{more}); the file was damaged or modified. Decoded them again from their "
            "source images; rerun build_image_cache (notebooks/01_data_preparation.ipynb) to repair the file.",
            CacheWarning,
            stacklevel=3,
        )
        return out

    def resized(self, size: int, batch_size: int = 256, progress: bool = False) -> ResizedImages:
        """Every row at side ``size`` as :func:`resize_to_unit` makes it, computed once and kept on disk.

        Opens ``images_<S0>_<aspect>.at<size>.npy`` beside this cache when its record matches this cache's
        ``content_hash``, ``size``, :data:`RESIZE_RULE` and the torch version and its bytes match the recorded
        sha256; otherwise (re)builds it, ``batch_size`` rows at a time, under the lock of that file. ``size``
        must differ from the cache's own side (read the cache itself then). See the module docstring.
        """
        return _resized(self, size, batch_size, progress)

    def get(self, image_ids: Sequence[str]) -> np.ndarray:
        """``(n, size, size)`` uint8 images for ``image_ids`` (in the order given)."""
        if isinstance(image_ids, str):
            image_ids = [image_ids]
        idx = self.rows(list(image_ids))
        if idx.size == 0:
            return np.zeros((0, self.size, self.size), dtype=np.uint8)
        order = np.argsort(
            idx, kind="stable"
        )  # read the memmap in file order, then restore the request order
        out = np.empty((idx.size, self.size, self.size), dtype=np.uint8)
        out[order] = self._array[idx[order]]
        return self._verified(idx, out)


# --------------------------------------------------------------------------------------------------
# model-sized copies
# --------------------------------------------------------------------------------------------------
def resize_to_unit(images, size: int):
    """uint8 ``(B, H, W)`` torch tensor -> float32 ``(B, 1, size, size)`` in ``[0, 1]``, on the input's device.

    The pixels are divided by 255; when ``(H, W) != (size, size)`` they are resized with
    ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` and clamped to ``[0, 1]`` (bicubic
    overshoots). :meth:`cxrlib.backbones.Backbone.prepare_images` and :meth:`ImageCache.resized` both use this
    function, so their outputs are the same bytes.
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(images, torch.Tensor) or images.ndim != 3 or images.dtype != torch.uint8:
        what = (
            f"{images.dtype} {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ValueError(f"resize_to_unit needs a uint8 tensor of shape (B, H, W), got {what}")
    _check_args(size, "crop")
    x = images.float().div_(255.0).unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(int(size), int(size)), mode="bicubic", antialias=True)
        x = x.clamp_(0.0, 1.0)
    return x


def resized_paths(cache_npy: str | os.PathLike[str], size: int) -> tuple[Path, Path]:
    """``(array .npy, record .json)`` of the copy of the image cache ``cache_npy`` at side ``size``."""
    _check_args(size, "crop")
    npy = Path(cache_npy)
    stem = f"{npy.stem}.at{int(size)}"
    return npy.with_name(f"{stem}.npy"), npy.with_name(f"{stem}.json")


@dataclass
class ResizedImages:
    """Read access to an :class:`ImageCache` at another side (made by :meth:`ImageCache.resized`).

    Serves float32 ``(n, size, size)`` images in ``[0, 1]`` (the output of :func:`resize_to_unit` without its
    channel axis) under the same ids and row indices as ``source``; ``content_hash`` is the source's, since the
    copy is a function of it. ``len()``, ``in``, :meth:`rows`, :meth:`get_rows` and :meth:`get` work as on
    :class:`ImageCache`.
    """

    source: ImageCache
    size: int
    path: Path
    _array: np.ndarray = field(repr=False)

    @property
    def image_ids(self) -> list[str]:
        return self.source.image_ids

    @property
    def content_hash(self) -> str:
        return self.source.content_hash

    @property
    def aspect(self) -> str:
        return self.source.aspect

    def __len__(self) -> int:
        return len(self.source)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.source

    def rows(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row indices for ``image_ids`` (:meth:`ImageCache.rows`)."""
        return self.source.rows(image_ids)

    def get_rows(self, rows: np.ndarray) -> np.ndarray:
        """``(n, size, size)`` float32 images at row indices ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and rows[-1] - rows[0] == rows.size - 1 and np.all(np.diff(rows) == 1):
            return np.array(self._array[rows[0] : rows[-1] + 1])
        return np.array(self._array[rows])

    def get(self, image_ids: Sequence[str]) -> np.ndarray:
        """``(n, size, size)`` float32 images for ``image_ids`` (in the order given)."""
        if isinstance(image_ids, str):
            image_ids = [image_ids]
        return self.get_rows(self.rows(list(image_ids)))


def _resized_record(source: ImageCache, size: int, shape: tuple[int, ...]) -> dict:
    import torch

    return {
        "format": _RESIZED_FORMAT,
        "source": source.path.name,
        "source_content_hash": source.content_hash,
        "size": int(size),
        "rule": RESIZE_RULE,
        "torch_version": torch.__version__,
        "shape": [int(v) for v in shape],
        "dtype": "float32",
    }


#: Resized copies this process has verified: (path, size in bytes, mtime in ns, recorded sha256). A copy is
#: hashed again only when one of these changed (notebook 02 opens it once per backbone).
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _open_resized(source: ImageCache, size: int, npy: Path, record_path: Path) -> ResizedImages | None:
    """The copy on disk when its record matches and its bytes match the recorded sha256, else None."""
    rec = read_stamp(record_path)
    if rec is None or not npy.exists():
        return None
    want = _resized_record(source, size, (source._array.shape[0], size, size))
    if {k: rec.get(k) for k in want} != want:
        return None
    st = npy.stat()
    seen = (str(npy.resolve()), st.st_size, st.st_mtime_ns, str(rec.get("sha256")))
    if seen not in _VERIFIED:
        if sha256_file(npy) != rec.get("sha256"):
            warnings.warn(
                f"resized image cache {npy} does not match the sha256 recorded when it was written (damaged or "
                "modified); computing it again",
                CacheWarning,
                stacklevel=4,
            )
            return None
        _VERIFIED.add(seen)
    arr = np.load(npy, mmap_mode="r")
    if arr.shape != tuple(want["shape"]) or arr.dtype != np.float32:
        return None
    return ResizedImages(source=source, size=int(size), path=npy, _array=arr)


def _resized(source: ImageCache, size: int, batch_size: int, progress: bool) -> ResizedImages:
    """:meth:`ImageCache.resized`."""
    import torch

    _check_args(size, "crop")
    size = int(size)
    if size == source.size:
        raise ValueError(
            f"the image cache {source.path.name} already has side {size}; read it directly (ImageCache.get_rows)"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    npy, record_path = resized_paths(source.path, size)
    found = _open_resized(source, size, npy, record_path)
    if found is not None:
        return found
    with file_lock(npy):  # a concurrent build of the same copy waits here, then opens the result
        found = _open_resized(source, size, npy, record_path)
        if found is not None:
            return found
        remove_stale_temps(npy)
        n = int(source._array.shape[0])
        record = _resized_record(source, size, (n, size, size))
        with atomic_path(npy) as tmp:
            out = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, size, size))
            for lo in tqdm(range(0, n, batch_size), desc=f"images at {size} px", disable=not progress):
                rows = np.arange(lo, min(n, lo + batch_size))
                pixels = torch.from_numpy(source.get_rows(rows))
                out[lo : lo + len(rows)] = resize_to_unit(pixels, size)[:, 0].numpy()
            out.flush()
            del out
            record["sha256"] = sha256_file(tmp)
        write_stamp(record_path, record)  # after the array it vouches for
        log.info("resized image cache %s: %d rows at %d px", npy, n, size)
        return ResizedImages(source=source, size=size, path=npy, _array=np.load(npy, mmap_mode="r"))
