"""Image decoding and the on-disk image cache (cxrlib.data.images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.cache import CacheWarning
from cxrlib.data import images as im
from cxrlib.data.images import ImageCache, build_image_cache, cache_paths, load_image

# --------------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(37, 53), (53, 37), (40, 40), (23, 61), (301, 257)])
@pytest.mark.parametrize(
    ("size", "aspect", "resize_mode"), [(32, "crop", "shortest"), (24, "pad", "longest")]
)
def test_load_image_equals_open_clip_preprocess(tmp_path, make_image, hw, size, aspect, resize_mode):
    """8-bit grayscale: the cached pixels are exactly open_clip's eval transform per channel (× 255).

    open_clip's image_transform(size, is_train=False) is Resize(size, BICUBIC) + CenterCrop(size) (or, for
    resize_mode="longest", ResizeKeepRatio + CenterCropOrPad) on the PIL image, then convert("RGB") and
    ToTensor; load_image runs the same PIL operations on the L image, and L→RGB copies the value to all
    three channels, so equality is exact (ToTensor's /255 is undone by ×255 up to float rounding, hence rint).
    """
    from open_clip.transform import image_transform

    path = make_image(tmp_path / "x.png", h=hw[0], w=hw[1], kind="png8", seed=sum(hw))
    ref = image_transform(size, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3, resize_mode=resize_mode)
    want = ref(Image.open(path)).numpy() * 255.0
    assert np.abs(want - np.rint(want)).max() < 1e-3
    got = load_image(path, size, aspect)
    assert got.shape == (size, size) and got.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(got, np.rint(want[c]).astype(np.uint8))


def test_pad_keeps_whole_image_on_black(tmp_path, make_image):
    path = make_image(tmp_path / "wide.png", h=20, w=80, kind="png8")
    out = load_image(path, 40, "pad")
    # 80×20 → 40×10 centred: rows 15..24 hold the image, the rest is black padding
    assert (out[:15] == 0).all() and (out[25:] == 0).all()
    assert (out[15:25] > 0).mean() > 0.9


def test_sixteen_bit_is_rescaled_min_to_max(tmp_path):
    a = np.array([[1000, 2000], [3000, 1000 + 255 * 10]], dtype=np.uint16)
    p = tmp_path / "x16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode == "I;16"
    got = load_image(p, 2, "crop")  # native size: no resampling, only the rescale
    lo, hi = 1000.0, 3550.0
    want = np.rint((a.astype(float) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert got.min() == 0 and got.max() == 255


def test_constant_sixteen_bit_image_becomes_zeros(tmp_path):
    p = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 4242, dtype=np.uint16)).save(p)
    np.testing.assert_array_equal(load_image(p, 8), np.zeros((8, 8), np.uint8))


def test_32bit_mode_i_is_rescaled(tmp_path):
    a = np.arange(16, dtype=np.int32).reshape(4, 4) * 1000 - 5000
    p = tmp_path / "x32.tif"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode == "I"
    want = np.rint((a - a.min()) * 255.0 / (a.max() - a.min())).astype(np.uint8)
    np.testing.assert_array_equal(load_image(p, 4), want)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_colour_modes_go_through_luminance(tmp_path, make_image, mode):
    src = make_image(tmp_path / "rgb.png", h=30, w=30, kind="rgb_png")
    rgb = Image.open(src).convert("RGB")
    img = rgb.convert(mode) if mode != "LA" else rgb.convert("L").convert("LA")
    p = tmp_path / f"x_{mode}.png"
    img.save(p)
    want = np.asarray(Image.open(p).convert("L"))
    np.testing.assert_array_equal(load_image(p, 30), want)


def test_large_jpeg_is_drafted_small_one_is_not(tmp_path, make_image, monkeypatch):
    from PIL import JpegImagePlugin

    calls: list[tuple] = []
    orig = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append((self.size, size))
        return orig(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    big = make_image(tmp_path / "big.jpg", h=800, w=1024, kind="jpeg")
    out = load_image(big, 64)
    assert calls == [((1024, 800), (128, 128))]
    # the drafted decode stays close to the full decode (bicubic still downsamples by ≥ 2 afterwards)
    full = np.asarray(Image.open(big).convert("L").resize((82, 64), Image.BICUBIC))[:, 9:73]
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 3.0
    calls.clear()
    small = make_image(tmp_path / "small.jpg", h=200, w=250, kind="jpeg")
    load_image(small, 64)  # 200 < 4 × 64: a draft would leave < 2 × size, so none is made
    assert calls == []


def test_load_image_errors(tmp_path, make_image):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.png", 8)
    p = make_image(tmp_path / "x.png")
    with pytest.raises(ValueError, match="aspect"):
        load_image(p, 8, "stretch")
    with pytest.raises(ValueError, match="positive"):
        load_image(p, 0)


# --------------------------------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------------------------------

KINDS = {
    "a": "png8",
    "b": "png16",
    "c": "jpeg",
    "d": "missing",
    "e": "empty",
    "f": "truncated",
    "g": "corrupt",
    "h": "rgb_png",
}


def _manifest(root: Path, make_image, ids=tuple(KINDS)) -> pd.DataFrame:
    rows = []
    for k, iid in enumerate(ids):
        kind = KINDS.get(iid, "png8")
        ext = ".jpg" if kind == "jpeg" else ".png"
        path = root / f"{iid}{ext}"
        if kind != "missing" and not path.exists():
            make_image(path, h=30 + k, w=26 + 2 * k, kind=kind, seed=k)
        rows.append({"image_id": iid, "image_path": str(path), "label": k % 2})
    return pd.DataFrame(rows)


def _last_build(cache_dir: Path, size=16, aspect="crop") -> dict:
    return json.loads(cache_paths(cache_dir, size, aspect)[1].read_text())["last_build"]


def test_build_cache_contents_and_accounting(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image)
    cache = tmp_path / "cache"
    kept, acc = build_image_cache(m, cache, 16, progress=False)
    assert list(kept["image_id"]) == ["a", "b", "c", "h"]
    assert acc.rows_in == 8 and acc.rows_kept == 4
    assert dict(acc.dropped) == {
        im.REASON_MISSING: 1,
        im.REASON_EMPTY: 1,
        im.REASON_TRUNCATED: 1,
        im.REASON_CORRUPT: 1,
    }
    assert "d.png" in acc.examples[im.REASON_MISSING][0]
    assert "f.png" in acc.examples[im.REASON_TRUNCATED][0]
    acc.check()

    npy, side = cache_paths(cache, 16, "crop")
    arr = np.load(npy)
    assert arr.shape == (8, 16, 16) and arr.dtype == np.uint8
    meta = json.loads(side.read_text())
    assert meta["image_ids"] == list("abcdefgh") and meta["complete"] and meta["format_version"] == 1
    assert meta["status"][:3] == ["ok", "ok", "ok"] and meta["status"][3] == im.REASON_MISSING
    assert (arr[3:7] == 0).all()  # skipped rows stay zero

    c = ImageCache.open(cache, 16)
    assert c.image_ids == ["a", "b", "c", "h"] and len(c) == 4 and c.size == 16
    assert c.content_hash == meta["content_hash"] and len(c.content_hash) == 16
    got = c.get(["h", "a", "b"])
    assert got.shape == (3, 16, 16)
    for k, iid in enumerate(["h", "a", "b"]):
        np.testing.assert_array_equal(got[k], load_image(m.set_index("image_id").at[iid, "image_path"], 16))
    with pytest.raises(KeyError, match="'d'"):
        c.get(["a", "d"])


def test_open_missing_cache_says_which_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_data_preparation") as e:
        ImageCache.open(tmp_path / "nowhere", 224)
    assert "images_224_crop.npy" in str(e.value)


def test_duplicate_image_ids_are_an_error(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image, ids=("a", "b"))
    m = pd.concat([m, m.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="unique"):
        build_image_cache(m, tmp_path / "cache", 16, progress=False)


def test_rerun_decodes_nothing(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image)
    cache = tmp_path / "cache"
    build_image_cache(m, cache, 16, progress=False)
    npy, side = cache_paths(cache, 16, "crop")
    stamp = (npy.stat().st_mtime_ns, side.stat().st_mtime_ns)
    kept, acc = build_image_cache(m, cache, 16, progress=False)
    assert (npy.stat().st_mtime_ns, side.stat().st_mtime_ns) == stamp  # nothing written at all
    assert acc.rows_kept == 4 and acc.dropped[im.REASON_CORRUPT] == 1
    assert list(kept["image_id"]) == ["a", "b", "c", "h"]


def test_new_rows_decode_only_the_new_ones(tmp_path, make_image):
    cache = tmp_path / "cache"
    m1 = _manifest(tmp_path / "img", make_image, ids=("a", "b", "c"))
    build_image_cache(m1, cache, 16, progress=False)
    old = ImageCache.open(cache, 16).get(["a", "b", "c"])
    m2 = _manifest(tmp_path / "img", make_image, ids=("x", "a", "y", "c", "b"))
    kept, acc = build_image_cache(m2, cache, 16, progress=False)
    assert _last_build(cache) | {"seconds": 0} == {"decoded": 2, "reused": 3, "seconds": 0}
    c = ImageCache.open(cache, 16)
    assert c.image_ids == ["x", "a", "y", "c", "b"]
    np.testing.assert_array_equal(c.get(["a", "b", "c"]), old)
    fresh, _ = build_image_cache(m2, tmp_path / "fresh", 16, progress=False)
    assert ImageCache.open(tmp_path / "fresh", 16).content_hash == c.content_hash


def test_changed_file_is_decoded_again(tmp_path, make_image):
    cache = tmp_path / "cache"
    m = _manifest(tmp_path / "img", make_image, ids=("a", "b", "d"))  # d missing
    build_image_cache(m, cache, 16, progress=False)
    h0 = ImageCache.open(cache, 16).content_hash
    make_image(Path(m.at[0, "image_path"]), h=30, w=26, kind="png8", seed=99)  # new pixels in a
    os.utime(m.at[0, "image_path"], ns=(1, 1))  # a different stamp even on coarse-mtime filesystems
    make_image(tmp_path / "img" / "d.png", kind="png8", seed=5)  # the missing file appears
    kept, acc = build_image_cache(m, cache, 16, progress=False)
    assert _last_build(cache)["decoded"] == 2 and acc.rows_kept == 3
    c = ImageCache.open(cache, 16)
    assert c.content_hash != h0
    np.testing.assert_array_equal(c.get(["a"])[0], load_image(m.at[0, "image_path"], 16))


def test_interrupted_build_resumes(tmp_path, make_image, monkeypatch):
    m = _manifest(tmp_path / "img", make_image)
    cache = tmp_path / "cache"
    calls = {"n": 0}
    real = im._decode_task

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the build
        return real(task)

    monkeypatch.setattr(im, "_decode_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_image_cache(m, cache, 16, progress=False)
    meta = json.loads(cache_paths(cache, 16, "crop")[1].read_text())
    assert not meta["complete"] and meta["status"].count("pending") == 5
    with pytest.raises(RuntimeError, match="unfinished"):
        ImageCache.open(cache, 16)
    monkeypatch.setattr(im, "_decode_task", real)
    kept, acc = build_image_cache(m, cache, 16, progress=False)
    assert _last_build(cache)["decoded"] == 5 and _last_build(cache)["reused"] == 3
    build_image_cache(m, tmp_path / "fresh", 16, progress=False)
    assert ImageCache.open(cache, 16).content_hash == ImageCache.open(tmp_path / "fresh", 16).content_hash
    np.testing.assert_array_equal(
        np.load(cache_paths(cache, 16, "crop")[0]), np.load(cache_paths(tmp_path / "fresh", 16, "crop")[0])
    )


def test_killed_build_resumes_from_checkpoint(tmp_path, make_image):
    """A hard kill (no finally blocks run) loses only the work since the last checkpoint."""
    m = _manifest(tmp_path / "img", make_image)
    csv = tmp_path / "m.csv"
    m.to_csv(csv, index=False)
    cache = tmp_path / "cache"
    code = textwrap.dedent(
        f"""
        import os, pandas as pd
        from cxrlib.data import images as im
        im._CHECKPOINT_SECONDS = 0.0
        real, n = im._decode_task, [0]
        def killer(task):
            n[0] += 1
            if n[0] == 5:
                os._exit(17)
            return real(task)
        im._decode_task = killer
        im.build_image_cache(pd.read_csv({str(csv)!r}), {str(cache)!r}, 16, progress=False)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 17, r.stderr
    meta = json.loads(cache_paths(cache, 16, "crop")[1].read_text())
    assert meta["status"].count("pending") == 4  # 4 rows checkpointed before the kill
    build_image_cache(m, cache, 16, progress=False)
    assert _last_build(cache)["decoded"] == 4


def test_worker_pool_gives_the_same_cache(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image)
    k0, a0 = build_image_cache(m, tmp_path / "c0", 16, num_workers=0, progress=False)
    k2, a2 = build_image_cache(m, tmp_path / "c2", 16, num_workers=2, progress=False)
    assert a0.dropped == a2.dropped and list(k0["image_id"]) == list(k2["image_id"])
    assert (
        ImageCache.open(tmp_path / "c0", 16).content_hash == ImageCache.open(tmp_path / "c2", 16).content_hash
    )


def test_sizes_and_aspects_are_separate_caches(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image, ids=("a", "c"))
    cache = tmp_path / "cache"
    build_image_cache(m, cache, 16, aspect="crop", progress=False)
    build_image_cache(m, cache, 12, aspect="pad", progress=False)
    assert ImageCache.open(cache, 12, "pad").get(["a"]).shape == (1, 12, 12)
    assert ImageCache.open(cache, 16).get(["a"]).shape == (1, 16, 16)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        "images_12_pad.json",
        "images_12_pad.npy",
        "images_16_crop.json",
        "images_16_crop.npy",
    ]


def test_relative_paths_resolve_against_the_repo(tmp_path, make_image):
    from cxrlib.paths import REPO_ROOT

    m = _manifest(tmp_path / "img", make_image, ids=("a",))
    rel = os.path.relpath(m.at[0, "image_path"], REPO_ROOT)
    m.loc[0, "image_path"] = rel
    kept, acc = build_image_cache(m, tmp_path / "cache", 16, progress=False)
    assert acc.rows_kept == 1


# --------------------------------------------------------------------------------------------------
# integrity: too large images, damaged rows, checksums
# --------------------------------------------------------------------------------------------------


def test_over_large_image_is_counted_as_too_large_not_corrupt(tmp_path, make_image, monkeypatch):
    """Fault 6: PIL's DecompressionBombError is its own counted reason, with the fix in the example."""
    big = make_image(tmp_path / "img" / "big.png", h=40, w=40, kind="png8")  # 1600 px
    small = make_image(tmp_path / "img" / "small.png", h=12, w=12, kind="png8")  # 144 px
    m = pd.DataFrame({"image_id": ["big", "small"], "image_path": [str(big), str(small)]})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # errors above 2 × 300 px
    kept, acc = build_image_cache(m, tmp_path / "cache", 8, progress=False)
    assert list(kept["image_id"]) == ["small"]
    assert dict(acc.dropped) == {im.REASON_TOO_LARGE: 1}
    assert im.REASON_TOO_LARGE == "image too large (decompression-bomb limit)"
    (example,) = acc.examples[im.REASON_TOO_LARGE]
    assert "big.png" in example and "MAX_IMAGE_PIXELS" in example

    # after raising the limit the row is tried again (its file did not change), the other one is reused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    kept, acc = build_image_cache(m, tmp_path / "cache", 8, progress=False)
    assert list(kept["image_id"]) == ["big", "small"] and not acc.dropped
    assert _last_build(tmp_path / "cache", size=8) | {"seconds": 0} == {
        "decoded": 1,
        "reused": 1,
        "seconds": 0,
    }


def _damage_row(npy: Path, row: int) -> None:
    arr = np.load(npy, mmap_mode="r+")
    arr[row, 3:6, 3:6] ^= 0x5A
    arr.flush()
    del arr


def test_damaged_row_is_decoded_again_on_rebuild_with_a_warning(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image, ids=("a", "b", "c", "h"))
    cache = tmp_path / "cache"
    build_image_cache(m, cache, 16, progress=False)
    npy, side = cache_paths(cache, 16, "crop")
    good = np.load(npy)
    h0 = ImageCache.open(cache, 16).content_hash
    assert all(len(d) == 16 for d in json.loads(side.read_text())["row_sha256"])
    _damage_row(npy, 1)
    with pytest.warns(CacheWarning, match=r"images_16_crop\.npy: 1 row\(s\).*'b'"):
        kept, acc = build_image_cache(m, cache, 16, progress=False)
    assert _last_build(cache)["decoded"] == 1 and acc.rows_kept == 4
    np.testing.assert_array_equal(np.load(npy), good)
    assert ImageCache.open(cache, 16).content_hash == h0  # repaired: the embedding keys stay as they were

    # the same check when a manifest with new rows copies the old rows into a new array
    _damage_row(npy, 2)
    m2 = _manifest(tmp_path / "img", make_image, ids=("x", "a", "b", "c", "h"))
    with pytest.warns(CacheWarning, match="'c'"):
        build_image_cache(m2, cache, 16, progress=False)
    assert _last_build(cache)["decoded"] == 2  # x (new) and c (damaged)
    np.testing.assert_array_equal(ImageCache.open(cache, 16).get(["a", "b", "c", "h"]), good)


def test_reading_a_damaged_row_decodes_it_again_or_names_the_file(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image, ids=("a", "b", "c"))
    cache = tmp_path / "cache"
    build_image_cache(m, cache, 16, progress=False)
    npy, _ = cache_paths(cache, 16, "crop")
    good = ImageCache.open(cache, 16).get(["a", "b", "c"])
    _damage_row(npy, 0)
    c = ImageCache.open(cache, 16)
    with pytest.warns(CacheWarning, match=r"images_16_crop\.npy.*\[.a.\].*Decoded them again"):
        np.testing.assert_array_equal(c.get(["a", "b", "c"]), good)
    with pytest.warns(CacheWarning):
        np.testing.assert_array_equal(c.get_rows(np.array([0, 1])), good[:2])
    np.testing.assert_array_equal(ImageCache.open(cache, 16, verify=False).get(["b"]), good[1:2])

    Path(m.at[0, "image_path"]).unlink()  # the source cannot restore the row any more
    with pytest.raises(im.ImageCacheError) as err:
        c.get(["a"])
    assert str(npy) in str(err.value) and "01_data_preparation" in str(err.value) and "'a'" in str(err.value)


def test_sidecar_without_row_checksums_gets_them_and_keeps_its_content_hash(tmp_path, make_image):
    m = _manifest(tmp_path / "img", make_image, ids=("a", "b", "g"))
    cache = tmp_path / "cache"
    build_image_cache(m, cache, 16, progress=False)
    npy, side = cache_paths(cache, 16, "crop")
    meta = json.loads(side.read_text())
    recorded = meta.pop("row_sha256")
    side.write_text(json.dumps(meta))  # as written before the row checksums existed
    assert ImageCache.open(cache, 16).get(["a"]).shape == (1, 16, 16)  # readable, unverified
    build_image_cache(m, cache, 16, progress=False)
    again = json.loads(side.read_text())
    assert again["row_sha256"] == recorded and again["content_hash"] == meta["content_hash"]
    assert recorded[2] == ""  # the corrupt file has no pixels, hence no checksum
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
