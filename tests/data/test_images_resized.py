"""The image cache at a model's input side: :func:`resize_to_unit` and :meth:`ImageCache.resized`.

The resize is checked against PIL's own antialiased bicubic resize (an independent implementation), and the
copy on disk against the resize of the cached pixels, byte for byte; reuse, rebuild on a changed source and on
damage, and the error for a copy at the cache's own side.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib.cache import CacheWarning
from cxrlib.data import images as im
from cxrlib.data.images import ImageCache, build_image_cache, resize_to_unit, resized_paths

SRC = 24  # side of the test caches
TO = 16  # side of the copies


def _cache(tmp_path, make_image, n: int = 7, seed0: int = 0) -> ImageCache:
    rows = []
    for k in range(n):
        path = make_image(tmp_path / "img" / f"i{k}.png", h=30 + k, w=26 + 2 * k, kind="png8", seed=seed0 + k)
        rows.append({"image_id": f"i{k}", "image_path": str(path)})
    build_image_cache(pd.DataFrame(rows), tmp_path / "cache", SRC, progress=False)
    return ImageCache.open(tmp_path / "cache", SRC)


def test_resize_to_unit_matches_pil_bicubic_and_is_per_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(9, 40, 40), dtype=np.uint8)
    a[0] = 137  # a constant image stays that constant
    out = resize_to_unit(torch.from_numpy(a), TO)
    assert out.shape == (9, 1, TO, TO) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_allclose(out[0].numpy(), 137 / 255.0, atol=1e-6)
    for k in range(1, 9):  # PIL's antialiased bicubic on the float image: an independent implementation
        ref = np.asarray(
            Image.fromarray(a[k].astype(np.float32) / 255.0, mode="F").resize((TO, TO), Image.BICUBIC)
        )
        np.testing.assert_allclose(out[k, 0].numpy(), np.clip(ref, 0, 1), atol=2e-3)
    # per image: the batch it runs in and the thread count change no bit
    one_by_one = torch.cat([resize_to_unit(torch.from_numpy(a[k : k + 1]), TO) for k in range(9)])
    assert one_by_one.numpy().tobytes() == out.numpy().tobytes()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert resize_to_unit(torch.from_numpy(a), TO).numpy().tobytes() == out.numpy().tobytes()
    finally:
        torch.set_num_threads(threads)
    # at the input's own side: only /255
    same = resize_to_unit(torch.from_numpy(a), 40)
    assert same.numpy().tobytes() == (torch.from_numpy(a).float() / 255.0).unsqueeze(1).numpy().tobytes()


def test_resize_to_unit_rejects_other_input():
    with pytest.raises(ValueError, match="uint8 tensor of shape"):
        resize_to_unit(torch.zeros(2, 8, 8), 4)
    with pytest.raises(ValueError, match="uint8 tensor of shape"):
        resize_to_unit(torch.zeros(8, 8, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="positive integer"):
        resize_to_unit(torch.zeros(1, 8, 8, dtype=torch.uint8), 0)


def test_resized_copy_holds_the_resize_of_every_row_and_is_reused(tmp_path, make_image, monkeypatch):
    cache = _cache(tmp_path, make_image)
    r = cache.resized(TO, batch_size=3)  # several batches
    npy, record = resized_paths(cache.path, TO)
    assert r.path == npy and npy.name == f"images_{SRC}_crop.at{TO}.npy" and record.is_file()
    assert r.size == TO and r.image_ids == cache.image_ids and r.content_hash == cache.content_hash
    assert len(r) == len(cache) and "i3" in r and "zz" not in r
    ref = resize_to_unit(torch.from_numpy(cache.get(cache.image_ids)), TO)[:, 0].numpy()
    got = r.get(cache.image_ids)
    assert got.dtype == np.float32 and got.shape == (len(cache), TO, TO)
    assert got.tobytes() == ref.tobytes()
    order = ["i5", "i0", "i2"]
    assert r.get(order).tobytes() == ref[[5, 0, 2]].tobytes()
    assert r.get_rows(cache.rows(order)).tobytes() == ref[[5, 0, 2]].tobytes()
    rec = json.loads(record.read_text())
    assert rec["source_content_hash"] == cache.content_hash and rec["size"] == TO
    assert rec["rule"] == im.RESIZE_RULE and rec["torch_version"] == torch.__version__

    def boom(*a, **k):
        raise AssertionError("the copy was computed again")

    monkeypatch.setattr(im, "resize_to_unit", boom)
    again = ImageCache.open(tmp_path / "cache", SRC).resized(TO)
    assert again.get(cache.image_ids).tobytes() == ref.tobytes()


def test_resized_copy_is_rebuilt_when_damaged_or_the_cache_changes(tmp_path, make_image):
    cache = _cache(tmp_path, make_image)
    r = cache.resized(TO)
    good = r.get(cache.image_ids)
    del r
    npy, _ = resized_paths(cache.path, TO)
    arr = np.load(npy, mmap_mode="r+")
    arr[2, 3, 3] += 0.5
    arr.flush()
    del arr
    with pytest.warns(CacheWarning, match="does not match the sha256"):
        repaired = cache.resized(TO)
    assert repaired.get(cache.image_ids).tobytes() == good.tobytes()

    # another image content: another content hash, so the copy is computed again (no warning: not damage)
    make_image(tmp_path / "img" / "i0.png", h=30, w=26, kind="png8", seed=99)
    rows = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(7)],
            "image_path": [str(tmp_path / "img" / f"i{k}.png") for k in range(7)],
        }
    )
    build_image_cache(rows, tmp_path / "cache", SRC, progress=False)
    changed = ImageCache.open(tmp_path / "cache", SRC)
    assert changed.content_hash != cache.content_hash
    r2 = changed.resized(TO)
    ref = resize_to_unit(torch.from_numpy(changed.get(changed.image_ids)), TO)[:, 0].numpy()
    assert r2.get(changed.image_ids).tobytes() == ref.tobytes()
    assert r2.get(["i0"]).tobytes() != good[:1].tobytes()


def test_resized_at_the_caches_own_side_is_an_error(tmp_path, make_image):
    cache = _cache(tmp_path, make_image, n=2)
    with pytest.raises(ValueError, match="already has side 24"):
        cache.resized(SRC)
    with pytest.raises(ValueError, match="batch_size"):
        cache.resized(TO, batch_size=0)
