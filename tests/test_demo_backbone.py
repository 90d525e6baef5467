"""The demo stand-in backbones (:mod:`cxrlib.demo_backbone`): the word-level demo tokenizer, the general-domain
captions, the length-sorted text encoding and the bundles ``demo``, ``demo-general`` and ``demo-random``.

Everything runs on a small SYNTHETIC phantom pool (18 patients, 64 px) with one pretraining epoch, offline, with
``CXR_CACHE_DIR`` in ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from cxrlib.backbones import DEMO_MODEL_CFG, DEMO_NAMES, demo_bundle_dir, demo_model_cfg, load_backbone
from cxrlib.config import DemoBackboneConfig, PhantomConfig
from cxrlib.data.phantom import FINDINGS, MENTION_KEYWORDS, SEVERITIES, generate_corpus
from cxrlib.data.phantom.findings import SIDES, ZONES
from cxrlib.demo_backbone import (
    BOS_ID,
    CAPTION_ATTRIBUTES,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    build_demo_backbones,
    build_demo_tokenizer,
    create_demo_model,
    encode_text_by_length,
    general_captions,
    save_demo_tokenizer,
    words_of,
)

SIZE = DEMO_MODEL_CFG["vision_cfg"]["image_size"]
CTX = DEMO_MODEL_CFG["text_cfg"]["context_length"]
#: Words of the phantom's findings vocabulary: finding names, mention keywords, severities, sides, zones, lobes
#: and the words that say a study is (ab)normal. Built from the phantom's own tables, not from the captions.
FINDING_WORDS: frozenset[str] = frozenset(
    {w for f in FINDINGS for w in f.split("_")}
    | {w for kws in MENTION_KEYWORDS.values() for kw in kws for w in kw.split()}
    | {w for levels in SEVERITIES.values() for lvl in levels for w in re.split(r"\W+", lvl)}
    | set(SIDES)
    | set(ZONES)
    | {
        "bilateral",
        "bibasilar",
        "basilar",
        "lobe",
        "lingula",
        "normal",
        "abnormal",
        "clear",
        "opacity",
        "pleural",
    }
)
#: Function words that captions and reports may share (nothing clinical).
SHARED_OK: frozenset[str] = frozenset({"a", "of", "with", "and", "the", ".", ",", ";", ":", "-", "x"})


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cxr_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A small SYNTHETIC pretraining pool: (manifest, image cache)."""
    from cxrlib.data.images import ImageCache, build_image_cache

    tmp = tmp_path_factory.mktemp("pool")
    manifest = generate_corpus(
        tmp / "corpus",
        PhantomConfig(n_patients=18, pretrain_fraction=1.0),
        seed=3,
        image_size=SIZE,
        progress=False,
    )
    build_image_cache(manifest, tmp / "images", SIZE, progress=False)
    return manifest, ImageCache.open(tmp / "images", SIZE)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------------------
def test_words_of_splits_words_and_punctuation():
    assert words_of("There is a 3.5 cm mass in the Right upper lobe.") == [
        "there", "is", "a", "3", ".", "5", "cm", "mass", "in", "the", "right", "upper", "lobe", ".",
    ]  # fmt: skip
    assert words_of("Plate-like  atelectasis,\tbibasilar.") == [
        "plate",
        "-",
        "like",
        "atelectasis",
        ",",
        "bibasilar",
        ".",
    ]


def test_tokenizer_round_trips_pool_words_and_maps_unseen_words_to_unk(pool):
    texts = pool[0]["text"].tolist()
    tok = build_demo_tokenizer(texts)
    vocab = tok.get_vocab()
    words = sorted({w for t in texts for w in words_of(t)})
    # the brute-force reference: specials, then the sorted distinct words
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == [*SPECIAL_TOKENS, *words]
    assert build_demo_tokenizer(texts[::-1]).get_vocab() == vocab  # order of the texts does not matter
    for text in texts[:20]:
        enc = tok.encode(text)
        assert enc.ids[0] == BOS_ID and enc.ids[-1] == EOS_ID
        assert enc.tokens[1:-1] == words_of(text)  # every pool word is its own token
        assert UNK_ID not in enc.ids
    # a constructed case with known ids: words the pool never used map to [UNK]
    small = build_demo_tokenizer(["Heart size is normal.", "No effusion."])
    assert small.get_vocab() == {
        **dict(zip(SPECIAL_TOKENS, range(4), strict=True)),
        **{w: 4 + i for i, w in enumerate([".", "effusion", "heart", "is", "no", "normal", "size"])},
    }
    enc = small.encode("Heart size is ABNORMAL, zebra.")
    assert enc.ids == [BOS_ID, 6, 10, 7, UNK_ID, UNK_ID, UNK_ID, 4, EOS_ID]
    with pytest.raises(ValueError, match="split == 'pretrain'"):
        build_demo_tokenizer(["", "  "])


def test_tokenizer_is_loaded_by_open_clip_from_the_bundle(pool, tmp_path):
    texts = pool[0]["text"].tolist()
    tok = build_demo_tokenizer(texts)
    bundle = save_demo_tokenizer(tok, tmp_path / "bundle", CTX)
    cfg = demo_model_cfg(tok.get_vocab_size())
    (bundle / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    oc_tok = open_clip.get_tokenizer(f"local-dir:{bundle}")
    assert type(oc_tok).__name__ == "HFTokenizer" and oc_tok.context_length == CTX
    ids = oc_tok(texts[:8])
    assert ids.shape == (8, CTX) and ids.dtype == torch.long
    for row, text in zip(ids.tolist(), texts[:8], strict=True):
        ref = tok.encode(text).ids
        assert row[: len(ref)] == ref and set(row[len(ref) :]) <= {PAD_ID}  # same ids, padded with 0
    long_ids = oc_tok(["no effusion " * 200])[0]
    assert long_ids[0] == BOS_ID and long_ids[-1] == EOS_ID  # truncated, [EOS] kept for pooling
    for f in bundle.glob("*.json"):  # nothing of this machine in the bundle
        assert str(tmp_path) not in f.read_text() and "/" not in json.dumps(
            cfg["text_cfg"]["hf_tokenizer_name"]
        )


def test_encode_text_by_length_matches_open_clip(pool):
    torch.manual_seed(0)
    model = create_demo_model(40).eval()
    lengths = torch.tensor([3, 17, 5, 60, 2, 33, 9, 3, 41, 12, 7, 25, 4, 19, 6, 50, 8, 3, 11])
    tokens = torch.zeros(len(lengths), CTX, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        tokens[i, 0], tokens[i, 1 : n - 1], tokens[i, n - 1] = BOS_ID, torch.randint(4, 40, (n - 2,)), EOS_ID
    ref = model.encode_text(tokens, normalize=True)
    got = encode_text_by_length(model, tokens, chunk=4)
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    # gradients agree too (training uses it)
    model.zero_grad()
    model.encode_text(tokens, normalize=True).pow(3).sum().backward()
    g_ref = model.token_embedding.weight.grad.clone()
    model.zero_grad()
    encode_text_by_length(model, tokens, chunk=4).pow(3).sum().backward()
    assert torch.allclose(model.token_embedding.weight.grad, g_ref, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# general-domain captions
# --------------------------------------------------------------------------------------------------------
def test_general_captions_name_no_finding(pool):
    manifest, cache = pool
    caps = general_captions(cache.get(manifest["image_id"].tolist()), seed=0)
    assert len(caps) == len(manifest)
    cap_words = {w for c in caps for w in words_of(c)}
    assert not cap_words & FINDING_WORDS
    report_words = {w for t in manifest["text"] for w in words_of(t)}
    assert cap_words & report_words <= SHARED_OK  # nothing but function words in common with the reports
    assert general_captions(cache.get(manifest["image_id"].tolist()), seed=0) == caps  # deterministic


def test_general_captions_follow_the_image_statistics():
    rng = np.random.default_rng(0)
    levels = np.repeat([40, 128, 215], 4)  # four dark, four mid-gray, four bright images
    images = np.clip(levels[:, None, None] + rng.normal(0, 10, (12, 32, 32)), 0, 255).astype(np.uint8)
    caps = general_captions(images, seed=1)
    bright = dict(CAPTION_ATTRIBUTES)["brightness"]
    for cap, want in zip(caps, np.repeat(bright, 4), strict=True):
        others = [w for w in bright if w != want]
        assert re.search(rf"\b{want}\b", cap) and not any(
            re.search(rf"(?<![\w-]){o}(?![\w-])", cap) for o in others
        )
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        general_captions(np.zeros((0, 8, 8), np.uint8), seed=0)


# --------------------------------------------------------------------------------------------------------
# bundles
# --------------------------------------------------------------------------------------------------------
KW = {"seed": 0, "cfg": DemoBackboneConfig(epochs=1, batch_size=16), "progress": False}
BUNDLE_FILES = (
    "open_clip_model.safetensors",
    "open_clip_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def test_build_demo_backbones(pool, tmp_path):
    manifest, cache = pool
    assert set(DEMO_NAMES) == {"demo", "demo-general", "demo-random"}
    first = build_demo_backbones(manifest, cache, force=True, **KW)
    assert not first["reused"] and set(first["seconds_by_backbone"]) == {"demo", "demo-general"}
    shas = {n: {f: _sha(first[n] / f) for f in BUNDLE_FILES} for n in DEMO_NAMES}
    assert len({s["open_clip_model.safetensors"] for s in shas.values()}) == 3  # three different weights
    assert len({s["tokenizer.json"] for s in shas.values()}) == 1  # one tokenizer for all three
    for n in DEMO_NAMES:
        assert first[n] == demo_bundle_dir(n) and first[n].is_relative_to(tmp_path)
        bb = load_backbone(n)
        assert (bb.image_size, bb.context_length, bb.embed_dim) == (SIZE, CTX, 128)
        assert type(bb.tokenizer).__name__ == "HFTokenizer"
    general = load_backbone("demo-general").info["bundle"]
    assert (
        general["trained_on"] == "synthetic general-domain captions"
        and "general-domain" in general["weights"]
    )
    assert load_backbone("demo").info["bundle"]["trained_on"] == "synthetic phantom reports"

    # determinism: a second build gives bit-identical files and history
    second = build_demo_backbones(manifest, cache, force=True, **KW)
    assert {n: {f: _sha(second[n] / f) for f in BUNDLE_FILES} for n in DEMO_NAMES} == shas
    assert second["history"] == first["history"] and second["history_general"] == first["history_general"]

    # reuse by key: nothing retrained or rewritten
    mtime = (first["demo"] / "open_clip_model.safetensors").stat().st_mtime_ns
    third = build_demo_backbones(manifest, cache, **KW)
    assert third["reused"] and third["seconds"] == 0.0 and third["history"] == first["history"]
    assert (first["demo"] / "open_clip_model.safetensors").stat().st_mtime_ns == mtime

    # a changed setting changes the key: rebuilt, different weights
    fourth = build_demo_backbones(
        manifest, cache, seed=0, cfg=DemoBackboneConfig(epochs=1, batch_size=16, lr=1e-3), progress=False
    )
    assert not fourth["reused"]
    assert _sha(fourth["demo"] / "open_clip_model.safetensors") != shas["demo"]["open_clip_model.safetensors"]
    # a missing tokenizer file invalidates the bundle too
    (fourth["demo-general"] / "tokenizer.json").unlink()
    fifth = build_demo_backbones(
        manifest, cache, seed=0, cfg=DemoBackboneConfig(epochs=1, batch_size=16, lr=1e-3), progress=False
    )
    assert not fifth["reused"] and (fifth["demo-general"] / "tokenizer.json").is_file()


def test_too_small_pool_names_the_fix(pool):
    manifest, cache = pool
    with pytest.raises(ValueError) as err:
        build_demo_backbones(manifest.iloc[:10], cache, **KW)
    msg = str(err.value)
    assert (
        "split == 'pretrain'" in msg and "10" in msg and "batch_size=16" in msg and "pretrain_fraction" in msg
    )
