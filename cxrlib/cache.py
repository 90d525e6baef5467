"""One helper for every on-disk cache: atomic writes, sha256 checksums, JSON stamps and inter-process locks.

Every file cxrlib caches (embedding chunks and files, the image cache, projector checkpoints, backbone bundles,
manifests) is written through these functions, so that

- a reader never sees half a file: data go to a temporary sibling with a per-process name
  (``<name>.<pid>.<random>.tmp``, so two processes writing the same file never share one), are flushed to disk
  (``fsync``) and then renamed over the target with :func:`os.replace`, which is atomic on POSIX and Windows;
  on an error the temporary file is removed;
- damage is detectable: :func:`write_checksum` records a file's sha256 beside it (``<file>.sha256``, in the
  ``sha256sum`` format, so ``sha256sum -c`` checks it too) and :func:`verify_checksum` compares;
- two processes filling the same cache wait for each other: :func:`file_lock` holds an OS lock on
  ``<cache>.lock`` (the ``filelock`` package; released by the OS when a process dies, so it never goes stale).

API (paths may be ``str`` or :class:`os.PathLike`):

====================================  ==========================================================================
``temp_path(path)``                   a fresh per-process temporary sibling of ``path`` (nothing is created)
``atomic_path(path)``                 context manager → a temporary path to write; moved onto ``path`` on success
``atomic_write(path, mode)``          context manager → an open file (``"wb"`` or ``"w"``); same commit rule
``write_bytes_atomic(path, data)``    write bytes atomically
``write_text_atomic(path, text)``     write UTF-8 text atomically
``write_json_atomic(path, obj, …)``   ``json.dumps(obj, …)`` written atomically
``sha256_file(path)``                 hex sha256 of a file (streamed in 1 MiB blocks)
``sha256_data(*buffers)``             hex sha256 of bytes / contiguous numpy arrays, concatenated
``checksum_path(path)``               ``<path>.sha256``
``write_checksum(path, digest)``      record ``path``'s sha256 (computed unless given) in ``<path>.sha256``
``read_checksum(path)``               the recorded digest, or ``None`` when there is no (readable) record
``verify_checksum(path)``             ``True`` (matches), ``False`` (damaged/modified) or ``None`` (no record)
``write_stamp(path, data)``           a JSON stamp (dict) written atomically, indented and key-sorted
``read_stamp(path)``                  the stamp's dict, or ``None`` when absent, unreadable or not a dict
``lock_path(path)``                   ``<path>.lock``
``file_lock(path, timeout)``          context manager holding the lock of ``path`` (logs while it waits)
``remove_stale_temps(path)``          delete temporary siblings of ``path`` left by processes that died
====================================  ==========================================================================

:class:`CacheWarning` is the category of the warnings cxrlib issues when it finds a damaged cache file and
recomputes it; :class:`CacheLockTimeout` is raised when a lock is not obtained within ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CacheWarning",
    "CacheLockTimeout",
    "temp_path",
    "atomic_path",
    "atomic_write",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "sha256_file",
    "sha256_data",
    "checksum_path",
    "write_checksum",
    "read_checksum",
    "verify_checksum",
    "write_stamp",
    "read_stamp",
    "lock_path",
    "file_lock",
    "remove_stale_temps",
]

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
_TEMP_RE = re.compile(r"\.(\d+)\.[0-9a-f]{8}\.tmp$")


class CacheWarning(UserWarning):
    """A cache file was damaged or unreadable and is being recomputed (the message names the file)."""


class CacheLockTimeout(TimeoutError):
    """Another process held a cache's lock for longer than the timeout (the message names the lock file)."""


# ---------------------------------------------------------------------------------------------- atomic writes
def temp_path(path: str | os.PathLike[str]) -> Path:
    """``<dir>/<name>.<pid>.<8 random hex>.tmp``: unique per process and call; the file is not created."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally it replaces ``path`` atomically.

    For writers that take a file name (``safetensors.save_file``, ``DataFrame.to_parquet``,
    ``numpy.lib.format.open_memmap``). The parent folder is created. If the block raises, the temporary file is
    deleted and ``path`` is left as it was. ``fsync`` flushes the data to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", fsync: bool = True) -> Iterator[IO[Any]]:
    """Yield an open file (``mode`` ``"wb"`` or ``"w"``, text as UTF-8) whose content replaces ``path`` atomically
    when the block ends normally (see :func:`atomic_path`)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as fh:
            yield fh


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path, "wb", fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def write_json_atomic(
    path: str | os.PathLike[str],
    obj: Any,
    indent: int | None = None,
    sort_keys: bool = False,
    allow_nan: bool = True,
    newline: bool = False,
    fsync: bool = True,
) -> Path:
    """``json.dumps(obj, indent=…, sort_keys=…, allow_nan=…)`` (plus ``"\\n"`` when ``newline``) written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan)
    return write_text_atomic(path, text + ("\n" if newline else ""), fsync=fsync)


# ------------------------------------------------------------------------------------------------- checksums
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_data(*buffers: Any) -> str:
    """Hex sha256 of the buffers (``bytes``, ``memoryview`` or C-contiguous numpy arrays) one after another."""
    h = hashlib.sha256()
    for b in buffers:
        h.update(b)
    return h.hexdigest()


def checksum_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`write_checksum` records ``path``'s sha256: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checksum(path: str | os.PathLike[str], digest: str | None = None, fsync: bool = True) -> str:
    """Record the sha256 of ``path`` in ``<path>.sha256`` (``"<hex>  <name>\\n"``, as ``sha256sum`` writes it).

    ``digest``: the sha256 the caller already computed from the bytes it wrote (saves reading the file again).
    Write the data file first, then its checksum: a crash in between leaves a file without a record, which
    readers treat as unverified (and recompute), never as a wrong record. ``fsync=False`` for records of
    scratch files that a reader verifies and recomputes anyway. Returns the digest.
    """
    path = Path(path)
    digest = (digest or sha256_file(path)).lower()
    write_text_atomic(checksum_path(path), f"{digest}  {path.name}\n", fsync=fsync)
    return digest


def read_checksum(path: str | os.PathLike[str]) -> str | None:
    """The sha256 recorded for ``path`` by :func:`write_checksum`; ``None`` when absent or unreadable."""
    try:
        text = checksum_path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = re.match(r"^([0-9a-fA-F]{64})\b", text.strip())
    return m.group(1).lower() if m else None


def verify_checksum(path: str | os.PathLike[str]) -> bool | None:
    """``True`` when ``path`` matches its recorded sha256, ``False`` when it does not (or cannot be read),
    ``None`` when no checksum was recorded (a file from an older version, or a crash before the record)."""
    want = read_checksum(path)
    if want is None:
        return None
    try:
        return sha256_file(path) == want
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------- stamps
def write_stamp(path: str | os.PathLike[str], data: dict) -> Path:
    """Write the JSON-able dict ``data`` to ``path`` atomically (indented, keys sorted, trailing newline).

    A stamp says what a cache was made from (a key, a config, checksums of its files); a reader compares
    :func:`read_stamp` with what it expects and rebuilds on any difference.
    """
    if not isinstance(data, dict):
        raise TypeError(f"a stamp must be a dict, got {type(data).__name__}")
    return write_json_atomic(path, data, indent=2, sort_keys=True, allow_nan=False, newline=True)


def read_stamp(path: str | os.PathLike[str]) -> dict | None:
    """The dict stored at ``path`` by :func:`write_stamp`; ``None`` when absent, unreadable or not a dict."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------------------------------- locks
def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file that guards ``path``: ``<path>.lock``."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[Path]:
    """Hold the inter-process lock of the cache ``path`` (a ``filelock.FileLock`` on ``<path>.lock``).

    A second process (or thread) asking for the same lock waits until the first releases it; it logs a
    warning naming the lock file when it has to wait. Re-entrant within one thread. ``timeout``: seconds to
    wait at most (``None`` = no limit); past it :class:`CacheLockTimeout` is raised. The OS releases the lock
    of a process that dies. Yields the lock file's path.
    """
    from filelock import FileLock, Timeout

    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lp, is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another process that is writing %s (lock %s)", Path(path), lp)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout as exc:
            raise CacheLockTimeout(
                f"another process has held the lock {lp} for more than {timeout} s; wait for it to finish "
                "(or stop it), then run again"
            ) from exc
    try:
        yield lp
    finally:
        lock.release()


def remove_stale_temps(path: str | os.PathLike[str]) -> int:
    """Delete temporary siblings of ``path`` (from :func:`temp_path`) whose process is no longer running.

    A process that is killed mid-write leaves its temporary file behind (a large one for the image cache);
    files of running processes are kept. Returns how many were deleted.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    removed = 0
    for p in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        m = _TEMP_RE.search(p.name)
        if not m or p.name[: m.start()] != path.name:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
