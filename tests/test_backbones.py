"""Backbone loading through the same names users pass to ``load_backbone``, with tiny models in the true formats.

No weights are downloaded: every model here is a tiny open_clip model written at run time as a ``local-dir:``
bundle (``open_clip_config.json`` + ``open_clip_model.safetensors``) or as a snapshot in a private, offline
Hugging Face cache. The BiomedCLIP-shaped bundle has BiomedCLIP's config layout (timm ViT image tower, Hugging
Face BERT text tower with ``hf_proj_type="mlp"``, ``hf_pooler_type="cls_last_hidden_state_pooler"``, context
length 256) with a 2-layer, 32-wide BERT and a 32-px ViT. Every test runs with ``HF_HUB_OFFLINE=1`` and an empty
Hugging Face cache in ``tmp_path``, and with ``CXR_CACHE_DIR`` in ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import backbones
from cxrlib.backbones import (
    DEMO_MODEL_CFG,
    BundleError,
    WeightsUnavailableError,
    demo_bundle_dir,
    export_bundle,
    load_backbone,
    resolve_spec,
    save_bundle,
    state_dict_checksum,
)
from cxrlib.config import DemoBackboneConfig
from cxrlib.demo_backbone import build_demo_backbones
from cxrlib.paths import REPO_ROOT

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic"}
#: BiomedCLIP's text tower id, as its open_clip_config.json names it (never downloaded here).
PUBMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BERT_WORDS = (
    "the heart size is normal lungs are clear no pleural effusion or pneumothorax small right left".split()
)
TOKENIZER_FILES = ("config.json", "tokenizer_config.json", "vocab.txt")


# --------------------------------------------------------------------------------------------------------
# fixtures and builders
# --------------------------------------------------------------------------------------------------------
def go_offline(mp: pytest.MonkeyPatch, tmp: Path) -> Path:
    """Offline Hugging Face with an empty cache in ``tmp``, and cxrlib's cache in ``tmp``; returns the hub cache.

    huggingface_hub reads its environment once at import, so its constants are patched as well.
    """
    import huggingface_hub.constants as hf_constants

    hf_home = tmp / "hf_home"
    hub = hf_home / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    for var, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub),
        "CXR_CACHE_DIR": str(tmp / "cxr_cache"),
    }.items():
        mp.setenv(var, value)
    mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    mp.setattr(hf_constants, "HF_HOME", str(hf_home))
    mp.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    return hub


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Every test: offline, empty HF cache in tmp, CXR_CACHE_DIR in tmp (nothing is written to the repo)."""
    return go_offline(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def biomed(tmp_path_factory):
    """One BiomedCLIP-shaped model and its self-contained bundle, shared (read-only) by the tests below."""
    tmp = tmp_path_factory.mktemp("biomed")
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp, tmp)
        model, cfg, bert = make_biomedclip_like(tmp)
        bundle = save_bundle(
            model, cfg, {"mean": [0.48145466, 0.4578275, 0.40821073]}, tmp / "biomedclip_like"
        )
        for f in bert.iterdir():
            shutil.copy(f, bundle / f.name)
    return {"model": model, "cfg": cfg, "bert": bert, "bundle": bundle}


def copy_bundle(biomed: dict, dest: Path) -> Path:
    """A private copy of the shared bundle (for tests that delete files)."""
    return Path(shutil.copytree(biomed["bundle"], dest))


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**json.loads(json.dumps(TINY_CFG))).eval()


def write_tiny_bert(folder: Path, context_length: int = 256) -> Path:
    """A 2-layer, 32-wide BERT config and a matching WordPiece tokenizer, saved with transformers into ``folder``."""
    from transformers import BertConfig, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS]) + "\n")
    BertTokenizer(str(vocab), do_lower_case=True).save_pretrained(folder)
    BertConfig(
        vocab_size=5 + len(BERT_WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=context_length,
        pad_token_id=0,
    ).save_pretrained(folder)
    return folder


def biomedclip_like_cfg(context_length: int = 256) -> dict:
    """BiomedCLIP's open_clip model config, shrunk: timm ViT (32 px) + BERT text tower (MLP proj, CLS pooler)."""
    return {
        "embed_dim": 16,
        "vision_cfg": {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 32,
        },
        "text_cfg": {
            "hf_model_name": PUBMEDBERT,
            "hf_tokenizer_name": PUBMEDBERT,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": context_length,
        },
    }


def make_biomedclip_like(tmp: Path, seed: int = 0) -> tuple[torch.nn.Module, dict, Path]:
    """(model with random weights, its model_cfg, folder holding the tiny BERT's config + tokenizer)."""
    from open_clip.model import CustomTextCLIP

    bert = write_tiny_bert(tmp / "tiny_bert")
    cfg = biomedclip_like_cfg()
    build_text = {**cfg["text_cfg"], "hf_model_name": str(bert), "hf_model_pretrained": False}
    torch.manual_seed(seed)
    model = CustomTextCLIP(
        embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]), text_cfg=build_text
    )
    return model.eval(), cfg, bert


def add_snapshot(hub: Path, repo_id: str, files: list[Path]) -> Path:
    """Put ``files`` into the offline HF cache as the ``main`` revision of ``repo_id`` (the hub's cache layout)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for f in files:
        shutil.copy(f, snap / f.name)
    return snap


def bert_text_out(model: torch.nn.Module, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(tokenizer([text]))


# --------------------------------------------------------------------------------------------------------
# local-dir bundles
# --------------------------------------------------------------------------------------------------------
def test_tiny_open_clip_bundle_loads_through_local_dir(tmp_path):
    model = tiny_clip(seed=1)
    bundle = save_bundle(model, TINY_CFG, PREPROCESS, tmp_path / "tiny", meta={"made_by": "test"})
    assert sorted(p.name for p in bundle.iterdir()) == [
        "cxrlib_bundle.json",
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "open_clip_model.safetensors.lock",
        "open_clip_model.safetensors.sha256",  # checked by load_backbone
    ]
    # the path is given relative to the repo root, as a profile would store it
    rel = os.path.relpath(bundle, REPO_ROOT)
    bb = load_backbone(f"local-dir:{rel}")

    assert bb.embed_dim == 16
    assert bb.image_size == 32
    assert bb.context_length == 24
    assert bb.mean == (0.5, 0.5, 0.5) and bb.std == (0.25, 0.25, 0.25)
    assert bb.tokenizer(["the heart is normal", "clear lungs"]).shape == (2, 24)
    assert not bb.model.training
    assert bb.info["bundle"] == {"made_by": "test"}
    checksum = state_dict_checksum(model)
    assert bb.weights_id == f"local-dir:{rel}@sha256:{checksum[:16]}"
    assert state_dict_checksum(bb.model) == checksum

    # open_clip's own preprocessing: any PIL image -> (3, 32, 32)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8), mode="L")
    assert tuple(bb.preprocess(img).shape) == (3, 32, 32)
    # ... and prepare_images (the cache path) agrees with it on a square 32-px image
    sq = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    ours = bb.prepare_images(torch.from_numpy(sq[None]))[0]
    theirs = bb.preprocess(Image.fromarray(sq, mode="L"))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        z = bb.model.encode_image(ours[None])
        z_ref = model.encode_image(ours[None])
    torch.testing.assert_close(z, z_ref)
    assert z.shape == (1, 16)


def test_biomedclip_shaped_bundle_loads_offline(biomed):
    model, bundle = biomed["model"], biomed["bundle"]
    cfg = json.loads((bundle / "open_clip_config.json").read_text())["model_cfg"]
    assert (
        cfg["text_cfg"]["hf_model_name"] == PUBMEDBERT
    )  # the hub id stays; the bundle's config.json is used

    bb = load_backbone(f"local-dir:{bundle}")
    assert bb.context_length == 256
    assert bb.image_size == 32
    assert bb.embed_dim == 16
    assert state_dict_checksum(bb.model) == state_dict_checksum(model)
    assert bb.weights_id.endswith(state_dict_checksum(model)[:16])
    text_tower = bb.model.text
    assert type(text_tower).__name__ == "HFTextEncoder"
    assert text_tower.config.hidden_size == 32 and text_tower.config.num_hidden_layers == 2
    assert isinstance(text_tower.proj, torch.nn.Sequential)  # hf_proj_type="mlp"
    assert type(text_tower.pooler).__name__ == "ClsLastHiddenStatePooler"

    tok = bb.tokenizer(["The heart size is normal.", " ".join(["lungs"] * 400)])
    assert tok.shape == (2, 256)  # padded / truncated to the context length
    assert tok[0, 0].item() == 2  # [CLS] of the bundle's vocab
    assert tok[0, 1].item() == 5 + BERT_WORDS.index("the")
    assert (tok[1] != 0).all()  # the long text fills all 256 positions

    out = bert_text_out(bb.model, bb.tokenizer, "no pleural effusion")
    ref = bert_text_out(model, bb.tokenizer, "no pleural effusion")
    assert out.shape == (1, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


def test_export_bundle_roundtrip_of_biomedclip_shaped_bundle(tmp_path, biomed):
    model, bundle = biomed["model"], copy_bundle(biomed, tmp_path / "source")
    out = export_bundle(f"local-dir:{bundle}", tmp_path / "exported")
    for f in ("open_clip_config.json", "open_clip_model.safetensors", "cxrlib_bundle.json", "config.json"):
        assert (out / f).is_file(), f
    assert (out / "tokenizer_config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()  # as transformers saves it
    meta = json.loads((out / "cxrlib_bundle.json").read_text())
    assert meta["weights_id"].endswith(state_dict_checksum(model)[:16])

    shutil.rmtree(bundle)  # the export must not depend on the source folder
    bb = load_backbone(f"local-dir:{out}")
    assert state_dict_checksum(bb.model) == state_dict_checksum(model)
    assert bb.context_length == 256
    torch.testing.assert_close(
        bert_text_out(bb.model, bb.tokenizer, "small right pneumothorax"),
        bert_text_out(model, bb.tokenizer, "small right pneumothorax"),
    )


def test_warm_hf_cache_loads_offline_and_exports(tmp_path, offline, biomed):
    """The paper's route: ``hf-hub:`` names offline from a warm Hugging Face cache (+ the text tower's files)."""
    model, staged, bert = biomed["model"], biomed["bundle"], biomed["bert"]
    add_snapshot(
        offline,
        "org/tiny-biomedclip",
        [staged / "open_clip_config.json", staged / "open_clip_model.safetensors"],
    )
    add_snapshot(offline, PUBMEDBERT, [bert / f for f in TOKENIZER_FILES])

    bb = load_backbone("hf-hub:org/tiny-biomedclip")
    assert bb.weights_id == f"hf-hub:org/tiny-biomedclip@sha256:{state_dict_checksum(model)[:16]}"
    assert bb.context_length == 256

    out = export_bundle("hf-hub:org/tiny-biomedclip", tmp_path / "from_cache")
    shutil.rmtree(offline / ("models--" + PUBMEDBERT.replace("/", "--")))  # the bundle needs no cache
    assert state_dict_checksum(load_backbone(f"local-dir:{out}").model) == state_dict_checksum(model)


# --------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------
def test_unknown_name_lists_accepted_names():
    with pytest.raises(ValueError, match="unknown backbone 'ViT-B-16'") as err:
        load_backbone("ViT-B-16")
    msg = str(err.value)
    for accepted in ("clip", "biomedclip", "demo", "demo-random", "hf-hub:", "local-dir:"):
        assert accepted in msg


def test_clip_alias_matches_the_activation_of_openai_weights():
    """OpenAI's CLIP was trained with QuickGELU; open_clip 3 only warns when the config says otherwise."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    for name, (spec, tag) in backbones.ALIASES.items():
        if tag is None:
            continue
        quick = get_pretrained_cfg(spec, tag).get("quick_gelu", False)
        assert open_clip.get_model_config(spec).get("quick_gelu", False) == quick, name
    assert resolve_spec("clip") == ("ViT-B-16-quickgelu", "openai")


def test_clip_offline_with_empty_cache_says_how_to_fix():
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone("clip")
    msg = str(err.value)
    assert "--warm clip" in msg and "HF_HOME" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "local-dir:" in msg and "--export clip" in msg


def test_biomedclip_offline_with_empty_cache_mentions_text_tower():
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone("biomedclip")
    msg = str(err.value)
    assert "--warm biomedclip" in msg and "local-dir:" in msg
    assert "text tower" in msg and "BiomedBERT" in msg and "config" in msg


def test_hf_hub_with_cached_config_but_no_weights_is_an_error_not_random_weights(offline, tmp_path):
    staged = save_bundle(tiny_clip(), TINY_CFG, PREPROCESS, tmp_path / "staged")
    add_snapshot(offline, "org/tiny", [staged / "open_clip_config.json"])  # weights never cached
    with pytest.raises(WeightsUnavailableError, match="could not be loaded"):
        load_backbone("hf-hub:org/tiny")


def test_local_dir_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match="open_clip_config.json") as err:
        load_backbone(f"local-dir:{empty}")
    assert "export_bundle" in str(err.value)
    with pytest.raises(WeightsUnavailableError, match="no open_clip bundle"):
        load_backbone(f"local-dir:{tmp_path / 'does-not-exist'}")

    # config without weights: open_clip would silently initialise randomly
    no_weights = save_bundle(tiny_clip(), TINY_CFG, PREPROCESS, tmp_path / "no_weights")
    (no_weights / "open_clip_model.safetensors").unlink()
    with pytest.raises(WeightsUnavailableError, match="no weights file"):
        load_backbone(f"local-dir:{no_weights}")


def test_damaged_bundles_name_the_file_and_the_fix(tmp_path):
    """Fault 6 for bundles: truncated / zero-byte / altered weights and a config that does not fit them."""
    raw_bundle = save_bundle(tiny_clip(), TINY_CFG, PREPROCESS, tmp_path / "good")
    raw = (raw_bundle / "open_clip_model.safetensors").read_bytes()
    flipped = bytearray(raw)
    flipped[-7] ^= 0x10  # a weight changes, the file still parses: only the checksum can tell
    cases = {
        "truncated": raw[: len(raw) // 2],
        "zero-byte": b"",
        "altered": bytes(flipped),
    }
    for label, content in cases.items():
        for recorded in (True, False):  # with the checksum save_bundle writes, and a bundle without one
            if label == "altered" and not recorded:
                continue  # undetectable without a checksum: that is what the record is for
            bundle = Path(shutil.copytree(raw_bundle, tmp_path / f"{label}-{recorded}"))
            weights = bundle / "open_clip_model.safetensors"
            weights.write_bytes(content)
            if not recorded:
                (bundle / "open_clip_model.safetensors.sha256").unlink()
            with pytest.raises(BundleError) as err:
                load_backbone(f"local-dir:{bundle}")
            msg = str(err.value)
            assert str(weights) in msg and f"{len(content)} bytes" in msg, (label, recorded, msg)
            assert ("sha256" in msg) if recorded else ("cannot be read" in msg), (label, msg)
            assert "export_bundle" in msg
            assert isinstance(err.value, WeightsUnavailableError)

    # a config that does not describe the weights (edited embed_dim): named, with the fix
    bundle = Path(shutil.copytree(raw_bundle, tmp_path / "edited"))
    cfg = json.loads((bundle / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 32
    (bundle / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError) as err:
        load_backbone(f"local-dir:{bundle}")
    msg = str(err.value)
    assert str(bundle / "open_clip_config.json") in msg and "does not describe" in msg
    assert "size mismatch" in msg and "restore" in msg
    (bundle / "open_clip_config.json").write_text('{"model_cfg": ')
    with pytest.raises(BundleError, match="not valid JSON"):
        load_backbone(f"local-dir:{bundle}")

    # the demo bundle's fix says how to rebuild it
    demo = save_bundle(tiny_clip(), TINY_CFG, PREPROCESS, demo_bundle_dir("demo-random"))
    (demo / "open_clip_model.safetensors").write_bytes(raw[:100])
    with pytest.raises(BundleError, match="build_demo_backbones"):
        load_backbone("demo-random")


def test_biomedclip_shaped_bundle_without_text_tower_config(tmp_path, biomed):
    bundle = copy_bundle(biomed, tmp_path / "no_text_config")
    for f in TOKENIZER_FILES + ("tokenizer.json",):
        (bundle / f).unlink(missing_ok=True)
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone(f"local-dir:{bundle}")
    msg = str(err.value)
    assert PUBMEDBERT in msg and "config.json" in msg and "export" in msg and "HF_HOME" in msg


def test_demo_not_built_says_how_to_build(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="build_demo_backbones"):
        load_backbone("demo")
    assert demo_bundle_dir("demo-random").is_relative_to(tmp_path)


def test_state_dict_checksum_identifies_weights():
    a, b = tiny_clip(seed=0), tiny_clip(seed=0)
    assert state_dict_checksum(a) == state_dict_checksum(b)
    with torch.no_grad():
        b.logit_scale.add_(1e-6)
    assert state_dict_checksum(a) != state_dict_checksum(b)
    assert state_dict_checksum(a) != state_dict_checksum(tiny_clip(seed=1))


# --------------------------------------------------------------------------------------------------------
# the demo backbones
# --------------------------------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_demo_backbones_deterministic_and_reused(tmp_path):
    from cxrlib.config import PhantomConfig
    from cxrlib.data.images import ImageCache, build_image_cache
    from cxrlib.data.phantom import generate_corpus

    size = DEMO_MODEL_CFG["vision_cfg"]["image_size"]
    manifest = generate_corpus(
        tmp_path / "corpus",
        PhantomConfig(n_patients=18, pretrain_fraction=1.0),
        seed=3,
        image_size=size,
        progress=False,
    )
    build_image_cache(manifest, tmp_path / "images", size, progress=False)
    cache = ImageCache.open(tmp_path / "images", size)
    kw = {"seed": 0, "cfg": DemoBackboneConfig(epochs=1, batch_size=16), "progress": False}

    with pytest.raises(ValueError, match="split == 'pretrain'"):
        build_demo_backbones(manifest.iloc[:10], cache, **kw)

    first = build_demo_backbones(manifest, cache, force=True, **kw)
    assert not first["reused"]
    assert first["demo"].is_relative_to(tmp_path / "cxr_cache")  # CXR_CACHE_DIR is honoured
    assert len(first["history"]) == 1 and np.isfinite(first["history"][0]["clip_loss"])
    files = {k: first[k] / "open_clip_model.safetensors" for k in ("demo", "demo-random")}
    sha1 = {k: _sha(f) for k, f in files.items()}
    assert sha1["demo"] != sha1["demo-random"]  # trained vs random

    r1, r2 = load_backbone("demo-random"), load_backbone("demo-random")
    assert r1.weights_id == r2.weights_id
    d1 = load_backbone("demo")
    assert d1.weights_id != r1.weights_id
    assert (d1.image_size, d1.context_length, d1.embed_dim) == (size, 112, 128)
    assert d1.info["bundle"]["epochs"] == 1

    second = build_demo_backbones(manifest, cache, force=True, **kw)
    assert not second["reused"]
    assert {k: _sha(f) for k, f in files.items()} == sha1  # bit-identical rebuild
    assert second["history"] == first["history"]
    assert load_backbone("demo").weights_id == d1.weights_id

    mtime = files["demo"].stat().st_mtime_ns
    third = build_demo_backbones(manifest, cache, **kw)
    assert third["reused"] and third["seconds"] == 0.0
    assert third["history"] == first["history"]
    assert files["demo"].stat().st_mtime_ns == mtime  # not retrained, not rewritten


# --------------------------------------------------------------------------------------------------------
# names: display_name / display_names / slug
# --------------------------------------------------------------------------------------------------------
def _h8(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


WINDOWS_DIR = "local-dir:C:\\exports\\y"


@pytest.mark.parametrize(
    ("name", "label", "stem"),
    [
        ("clip", "clip", "clip"),
        ("biomedclip", "biomedclip", "biomedclip"),
        ("demo", "demo", "demo"),
        ("demo-random", "demo-random", "demo-random"),
        ("demo+multitask", "demo+multitask", "demo_multitask"),  # the demo's cache file name
        ("biomedclip+multitask", "biomedclip+multitask", "biomedclip_multitask"),
        ("multitask", "multitask", "multitask"),  # notebook 03's metrics file
        ("local-dir:/x/y", "y", f"y-{_h8('local-dir:/x/y')}"),
        ("local-dir:models/y/", "y", f"y-{_h8('local-dir:models/y/')}"),
        (WINDOWS_DIR, "y", "y-" + _h8(WINDOWS_DIR)),
        ("local-dir:/x/y+multitask", "y+multitask", f"y_multitask-{_h8('local-dir:/x/y+multitask')}"),
        (
            "hf-hub:org/tiny-biomedclip",
            "tiny-biomedclip",
            f"tiny-biomedclip-{_h8('hf-hub:org/tiny-biomedclip')}",
        ),
        ("my model", "my model", f"my_model-{_h8('my model')}"),
    ],
)
def test_display_name_and_slug_of_every_kind(name, label, stem):
    assert backbones.display_name(name) == label
    assert backbones.slug(name) == stem


def test_biomedclip_hub_id_slug_is_short_and_keeps_the_model_name():
    hub = backbones.ALIASES["biomedclip"][0]
    assert backbones.display_name(hub) == "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    s = backbones.slug(hub)
    assert s.startswith("BiomedCLIP-PubMedBERT_256") and s.endswith(f"-{_h8(hub)}") and len(s) <= 49


ODD_NAMES = [
    "local-dir:/a b/c:d",
    "local-dir:.",
    "local-dir:/",
    "local-dir:/x/.hidden",
    "local-dir:../..",
    "hf-hub:org/",
    "hf-hub:org/m?x=1&y=*",
    "x" * 100,
    "-leading-dash",
    ".dotfile",
    "tab\tand\nnewline",
    "ünïcode/ñame",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_slug_is_always_a_safe_file_name(name):
    s = backbones.slug(name)
    assert s and len(s) <= 60
    assert not set(s) & set("/\\: \t\n"), s
    assert not s.startswith(".") and s not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in s), s
    assert backbones.slug(name) == s  # deterministic


def test_slug_keeps_bundles_with_the_same_folder_name_apart():
    names = [f"local-dir:/exports/run{i}/y" for i in range(300)] + [
        f"local-dir:/other/{i}/y" for i in range(300)
    ]
    names += ["local-dir:/x/y", "local-dir:x/y", "hf-hub:org/y", "hf-hub:other/y", "y"]
    slugs = [backbones.slug(n) for n in names]
    assert len(set(slugs)) == len(names)  # brute force: no two names share a path
    assert all(backbones.display_name(n) == "y" for n in names)
    # a suffix joined to a name gets a path of its own, distinct from its base
    assert backbones.slug("local-dir:/x/y+multitask") != backbones.slug("local-dir:/x/y")
    # truncation of a long name does not merge names that differ only at the end
    assert backbones.slug("a" * 70 + "1") != backbones.slug("a" * 70 + "2")


def test_display_names_label_a_set_without_clashes():
    labels = backbones.display_names(["local-dir:/a/y", "local-dir:/b/y", "clip", "local-dir:/a/y"])
    assert labels == {
        "local-dir:/a/y": f"y [{_h8('local-dir:/a/y')}]",
        "local-dir:/b/y": f"y [{_h8('local-dir:/b/y')}]",
        "clip": "clip",
    }
    assert backbones.display_names(["local-dir:/a/clip_vit", "biomedclip"]) == {
        "local-dir:/a/clip_vit": "clip_vit",
        "biomedclip": "biomedclip",
    }


def test_slug_refuses_an_empty_name():
    for bad in ("", "   ", None):
        with pytest.raises(ValueError, match="non-empty string"):
            backbones.slug(bad)


def test_demo_names_keep_the_committed_metrics_file_names():
    """results/demo/metrics/*.json are committed (``<NN>_<name>.json``): the slug rule must not move them."""
    committed = sorted(p.name for p in (REPO_ROOT / "results" / "demo" / "metrics").glob("*.json"))
    assert {"02_demo.json", "02_demo-random.json", "03_multitask.json"} <= set(committed)
    for name in committed:
        number, stem = name.removesuffix(".json").split("_", 1)
        assert f"{number}_{backbones.slug(stem)}.json" == name  # slug leaves every demo name as it is
    for plain in ("demo", "demo-random", "demo-general", "multitask", "clip", "biomedclip"):
        assert backbones.slug(plain) == plain
    assert backbones.slug("demo+multitask") == "demo_multitask"  # the projected embeddings' cache file


def test_how_to_fix_suggests_a_slug_folder_for_the_export():
    msg = backbones._how_to_fix("hf-hub:org/m", "hf-hub:org/m")
    assert f"models/m-{_h8('hf-hub:org/m')}" in msg


@pytest.mark.parametrize("pool", ["argmax", "eos"])
def test_encode_text_trimmed_equals_encode_text(pool):
    from open_clip.model import CLIP

    from cxrlib.backbones import encode_text_trimmed, trims_text_padding

    torch.manual_seed(0)
    text_cfg = {
        "context_length": 24,
        "vocab_size": 60,
        "width": 32,
        "heads": 2,
        "layers": 2,
        "pool_type": pool,
    }
    if pool == "eos":
        text_cfg["eos_id"] = 3
    vision_cfg = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}
    model = CLIP(16, vision_cfg, text_cfg).eval()
    assert trims_text_padding(model)
    tokens = torch.zeros((5, 24), dtype=torch.long)
    for i, n in enumerate((4, 9, 6, 11, 5)):  # [2, words..., 3 or the largest id], then padding
        tokens[i, : n - 1] = torch.randint(4, 50, (n - 1,))
        tokens[i, 0], tokens[i, n - 1] = 2, (3 if pool == "eos" else 59)
    with torch.no_grad():
        full, cut = model.encode_text(tokens), encode_text_trimmed(model, tokens)
        whole = encode_text_trimmed(model, torch.randint(4, 50, (2, 24)))  # no padding: encoded whole
    assert torch.allclose(full, cut, atol=1e-5)
    assert whole.shape == (2, 16)
    model.text_pool_type = "last"  # the last position moves with the cut: refused
    assert not trims_text_padding(model)
    with pytest.raises(ValueError, match="causal mask"):
        encode_text_trimmed(model, tokens)
