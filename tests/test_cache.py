"""The cache helper (cxrlib.cache): atomic writes, checksums, stamps, inter-process locks, stale temp files."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxrlib import cache
from cxrlib.cache import (
    CacheLockTimeout,
    atomic_path,
    atomic_write,
    checksum_path,
    file_lock,
    lock_path,
    read_checksum,
    read_stamp,
    remove_stale_temps,
    sha256_data,
    sha256_file,
    temp_path,
    verify_checksum,
    write_bytes_atomic,
    write_checksum,
    write_json_atomic,
    write_stamp,
    write_text_atomic,
)


def test_temp_path_is_per_process_and_per_call(tmp_path):
    target = tmp_path / "x.safetensors"
    a, b = temp_path(target), temp_path(target)
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(f"x.safetensors.{os.getpid()}.") and a.name.endswith(".tmp")
    assert not a.exists()


def test_atomic_write_replaces_on_success_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    write_bytes_atomic(target, b"old")
    assert target.read_bytes() == b"old"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "wb") as fh:
            fh.write(b"half a fi")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"  # never half a file
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]  # the temp file is gone
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:  # any writer that takes a file name
            np.save(fh, np.arange(3))
        assert not target.read_bytes().startswith(b"\x93NUMPY")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    write_text_atomic(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    write_json_atomic(tmp_path / "j.json", {"b": 1, "a": [1.5]}, indent=2, sort_keys=True, newline=True)
    assert (tmp_path / "j.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(target, "a"):
            pass


def test_sha256_file_and_data(tmp_path):
    blob = os.urandom(3 << 20) + b"tail"  # several 1 MiB blocks
    (tmp_path / "f").write_bytes(blob)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(blob).hexdigest()
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert sha256_data(b"ab", arr) == hashlib.sha256(b"ab" + arr.tobytes()).hexdigest()


def test_checksum_records_detect_damage(tmp_path):
    f = tmp_path / "part.npy"
    f.write_bytes(b"payload")
    assert verify_checksum(f) is None  # nothing recorded yet
    digest = write_checksum(f)
    assert checksum_path(f) == tmp_path / "part.npy.sha256"
    assert checksum_path(f).read_text() == f"{digest}  part.npy\n"  # the sha256sum format
    assert read_checksum(f) == digest and verify_checksum(f) is True
    f.write_bytes(b"paylaod")  # same size, other bytes
    assert verify_checksum(f) is False
    f.unlink()
    assert verify_checksum(f) is False  # recorded but gone
    # a digest the caller computed from the bytes it wrote is recorded as given (lower-cased)
    assert write_checksum(tmp_path / "other", digest="AB" * 32) == "ab" * 32
    checksum_path(f).write_text("not a digest")
    assert read_checksum(f) is None


def test_stamps_round_trip_and_unreadable_stamps_read_as_none(tmp_path):
    s = tmp_path / "stamp.json"
    assert read_stamp(s) is None
    write_stamp(s, {"key": "abc", "n": 3})
    assert read_stamp(s) == {"key": "abc", "n": 3}
    s.write_text('{"key": ')  # truncated
    assert read_stamp(s) is None
    s.write_text("[1, 2]")  # not a dict
    assert read_stamp(s) is None
    with pytest.raises(TypeError):
        write_stamp(s, [1, 2])
    with pytest.raises(ValueError):
        write_stamp(s, {"x": float("nan")})  # stamps are strict JSON


def _hold_lock(path: str, ready, release, log: str) -> None:
    with file_lock(path):
        Path(log).write_text(f"child got it at {time.monotonic()}\n")
        ready.set()
        release.wait(10)


def test_file_lock_makes_a_second_process_wait(tmp_path, caplog):
    target = tmp_path / "emb.safetensors"
    assert lock_path(target) == tmp_path / "emb.safetensors.lock"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(target), ready, release, str(tmp_path / "log")))
    child.start()
    try:
        assert ready.wait(10)
        with pytest.raises(CacheLockTimeout, match=r"emb\.safetensors\.lock"):
            with file_lock(target, timeout=0.2):
                pass
        assert "waiting for another process" in caplog.text and str(target) in caplog.text
        release.set()
        t0 = time.monotonic()
        with file_lock(target, timeout=10) as lp:  # obtained as soon as the child lets go
            assert lp == lock_path(target)
            with file_lock(target, timeout=0):  # re-entrant within one thread
                pass
        assert time.monotonic() - t0 < 10
    finally:
        release.set()
        child.join(10)
    assert child.exitcode == 0


def test_remove_stale_temps_keeps_files_of_running_processes(tmp_path):
    target = tmp_path / "images_16_crop.npy"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(done.stdout)
    dead = tmp_path / f"images_16_crop.npy.{dead_pid}.0123abcd.tmp"
    mine = temp_path(target)
    unrelated = tmp_path / f"images_32_crop.npy.{dead_pid}.0123abcd.tmp"
    for p in (dead, mine, unrelated):
        p.write_bytes(b"x")
    if cache._alive(dead_pid):  # the pid was reused already (very unlikely): nothing to check
        pytest.skip("pid reused")
    assert remove_stale_temps(target) == 1
    assert not dead.exists() and mine.exists() and unrelated.exists()
    assert remove_stale_temps(tmp_path / "nowhere" / "x") == 0
