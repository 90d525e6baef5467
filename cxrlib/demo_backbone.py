"""The demo profile's stand-in backbones, all pretrained on the SYNTHETIC phantom pool:

- ``demo`` — CLIP-loss pretraining on the pool's image-report pairs (the domain model, BiomedCLIP's role);
- ``demo-general`` — the same architecture, tokenizer and budget, pretrained on the same images with
  *general-domain captions* that ignore the findings (what a general-purpose captioner would say: how bright,
  contrasty, sharp and grainy the picture is and how it is framed; the role of general-purpose CLIP);
- ``demo-random`` — the same architecture with random weights (the chance reference).

This is application code for the demo, kept apart from :mod:`cxrlib.backbones` (which only loads models):
it trains the small open_clip models once, writes them as ``local-dir:`` bundles under ``.cache/models/`` and
reuses them while their key (architecture, tokenizer, data, seed, :class:`~cxrlib.config.DemoBackboneConfig`,
caption rule, code version) matches.

**The demo tokenizer.** A word-level Hugging Face ``tokenizers`` tokenizer whose vocabulary is built
deterministically from the pretraining pool's text only: the four special tokens ``[PAD]`` (id 0), ``[UNK]``
(1), ``[BOS]`` (2), ``[EOS]`` (3), then every distinct lowercased word and punctuation run of the pool's reports
and of its general-domain captions, sorted. Text is NFKC-normalised, lowercased and split into ``\\w+`` and
``[^\\w\\s]+`` runs; a word the pool never used (a report of another split or dataset) maps to ``[UNK]``, never
to an error. The tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``)
are saved in each bundle and the bundle's ``open_clip_config.json`` names them with ``"hf_tokenizer_name": "."``
(the bundle folder itself): for a ``local-dir:`` model, ``open_clip.get_tokenizer`` always loads an
``HFTokenizer`` from the bundle folder when ``hf_tokenizer_name`` is set, so no path of this machine is written.
The text tower pools at the ``[EOS]`` token (``pool_type="eos"``, ``eos_id=3``) behind CLIP's causal mask.
The phantom's reports need 14-102 tokens (median 39); the context of 112 covers them all.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrlib.backbones import (
    DEMO_MODEL_CFG,
    DEMO_PREPROCESS_CFG,
    Backbone,
    demo_bundle_dir,
    demo_model_cfg,
    encode_text_trimmed,
    save_bundle,
)
from cxrlib.cache import file_lock
from cxrlib.config import DemoBackboneConfig
from cxrlib.data.manifest import manifest_hash
from cxrlib.parallel import run_jobs, start_workers
from cxrlib.runtime import seed_everything

__all__ = [
    "SPECIAL_TOKENS",
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "CAPTION_ATTRIBUTES",
    "words_of",
    "build_demo_tokenizer",
    "save_demo_tokenizer",
    "general_captions",
    "create_demo_model",
    "encode_text_by_length",
    "clip_loss_distinct_texts",
    "build_demo_backbones",
]

#: Special tokens of the demo tokenizer, in id order: padding (0, what ``token_lengths`` counts as padding),
#: unknown word, begin and end of text (the text tower pools at ``[EOS]``).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: Bumped whenever the training code, tokenizer rule or caption rule changes the weights (part of the key).
_KEY_VERSION = 4
#: Weight decay of the pretraining's AdamW (CLIP's and open_clip_train's usual small value).
_WEIGHT_DECAY = 0.05
#: Share of the pretraining steps spent warming the learning rate up linearly (it keeps the first steps from
#: collapsing every embedding onto one direction, which a small model at full rate does within a few steps).
_WARMUP = 0.25
#: Texts per length-sorted chunk in :func:`encode_text_by_length`.
_TEXT_CHUNK = 16

#: The general-domain captions' attributes: (name, words from lowest to highest pool tertile). Each is an image
#: statistic of the SYNTHETIC radiograph that a general-purpose captioner could describe and that no finding
#: defines (see :func:`general_captions`); none of the words occurs in the phantom's reports.
CAPTION_ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("brightness", ("dark", "mid-gray", "bright")),
    ("contrast", ("flat", "balanced", "punchy")),
    ("sharpness", ("blurry", "soft", "crisp")),
    ("grain", ("smooth", "fine-grained", "grainy")),
    ("framing", ("centered", "off-center", "far off-center")),
)
#: Caption templates (one is drawn per image with the build's seed); ``{brightness}`` etc. are the words above.
_TEMPLATES: tuple[str, ...] = (
    "a {brightness} grayscale x-ray photo, {contrast} and {sharpness}, {grain} texture, {framing} subject.",
    "{sharpness} {brightness} black-and-white scan of a torso with {contrast} tones; {grain}; {framing}.",
    "x-ray picture: {brightness}, {contrast}, {sharpness} detail, {grain} film, {framing} framing.",
    "a {grain}, {sharpness} film of a person, {brightness} exposure, {contrast} tones, {framing}.",
)
_WORD_RE = re.compile(r"\w+|[^\w\s]+")


# --------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------
def words_of(text: str) -> list[str]:
    """The demo tokenizer's pre-tokenisation of one text (NFKC, lowercase, ``\\w+`` / ``[^\\w\\s]+`` runs).

    The same rule as the saved tokenizer's normaliser and pre-tokeniser (the tests check they agree).
    """
    import unicodedata

    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).lower())


def build_demo_tokenizer(texts: Sequence[str]):
    """A word-level ``tokenizers.Tokenizer`` whose vocabulary is :data:`SPECIAL_TOKENS` + the sorted distinct
    words of ``texts`` (see the module docstring). Deterministic: the same texts in any order give the same ids.

    Raises:
        ValueError: ``texts`` is empty or holds no word.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab_words = sorted({w for t in texts for w in words_of(str(t))} - set(SPECIAL_TOKENS))
    if not vocab_words:
        raise ValueError(
            "the demo tokenizer's vocabulary is built from the pretraining pool's text, but it holds no word: "
            "give the rows with split == 'pretrain' a non-empty 'text'."
        )
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *vocab_words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+, as words_of
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)]
    )
    return tok


def save_demo_tokenizer(tokenizer, folder: str | Path, context_length: int) -> Path:
    """Save ``tokenizer`` (from :func:`build_demo_tokenizer`) into a bundle ``folder`` in the Hugging Face
    format that open_clip's ``HFTokenizer`` loads (``tokenizer.json`` + ``tokenizer_config.json`` +
    ``special_tokens_map.json``). Returns the folder."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=SPECIAL_TOKENS[UNK_ID],
        pad_token=SPECIAL_TOKENS[PAD_ID],
        bos_token=SPECIAL_TOKENS[BOS_ID],
        eos_token=SPECIAL_TOKENS[EOS_ID],
        model_max_length=context_length,
    )
    fast.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------------------------------------
# General-domain captions
# --------------------------------------------------------------------------------------------------------
def _image_statistics(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 5) float64: brightness, contrast, sharpness, grain, framing (the order of
    :data:`CAPTION_ATTRIBUTES`).

    brightness = mean gray level; contrast = its standard deviation; sharpness = mean absolute difference of
    neighbouring pixels relative to the contrast; grain = mean absolute residual of a 3x3 box blur relative to
    the contrast; framing = distance of the gray-level centroid from the image centre (fraction of the side).
    """
    n, h, w = images.shape
    out = np.empty((n, 5), np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    for s in range(0, n, 64):  # float64 in blocks of 64 images: the same numbers, a fraction of the memory
        x = images[s : s + 64].astype(np.float64) / 255.0
        mean = x.mean(axis=(1, 2))
        std = x.std(axis=(1, 2)) + 1e-8
        gy, gx = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)), np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
        pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        rows3 = pad[:, :-2] + pad[:, 1:-1] + pad[:, 2:]  # separable 3x3 box: rows, then columns
        box = (rows3[:, :, :-2] + rows3[:, :, 1:-1] + rows3[:, :, 2:]) / 9.0
        grain = np.abs(x - box).mean(axis=(1, 2))
        mass = x.sum(axis=(1, 2)) + 1e-8
        cy = (x * yy).sum(axis=(1, 2)) / mass / h - 0.5 + 0.5 / h
        cx = (x * xx).sum(axis=(1, 2)) / mass / w - 0.5 + 0.5 / w
        out[s : s + 64] = np.stack([mean, std, 0.5 * (gy + gx) / std, grain / std, np.hypot(cx, cy)], axis=1)
    return out


def general_captions(images: np.ndarray, seed: int) -> list[str]:
    """General-domain captions of SYNTHETIC radiographs: what a general-purpose captioner would say.

    Each image gets one word per :data:`CAPTION_ATTRIBUTES` entry, from the tertile (over ``images``) of its
    image statistic (:func:`_image_statistics`), set into one of four templates drawn with ``seed``. The
    captions never name a finding, a side, a zone or a severity; they describe global properties of the
    picture (exposure, contrast, focus, noise, framing), most of which the phantom draws per study
    independently of the findings (findings still shift brightness and contrast a little, as they would for
    a general-purpose captioner).

    Args:
        images: (N, H, W) uint8 grayscale images (the image cache's rows), N >= 1.
        seed: picks the template of each caption.

    Returns:
        N captions, in the order of ``images``.
    """
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"expected uint8 images of shape (N, H, W) with N >= 1, got {images.shape}")
    stats = _image_statistics(images)
    words = {}
    for j, (name, levels) in enumerate(CAPTION_ATTRIBUTES):
        cuts = np.quantile(stats[:, j], [1 / 3, 2 / 3])
        words[name] = [levels[int(k)] for k in np.searchsorted(cuts, stats[:, j], side="right")]
    pick = np.random.default_rng(seed).integers(0, len(_TEMPLATES), size=len(images))
    return [
        _TEMPLATES[int(pick[i])].format(**{name: words[name][i] for name, _ in CAPTION_ATTRIBUTES})
        for i in range(len(images))
    ]


# --------------------------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------------------------
def create_demo_model(vocab_size: int) -> torch.nn.Module:
    """The demo architecture (:func:`cxrlib.backbones.demo_model_cfg`) with open_clip's random init, drawn from
    torch's global generator (seed it first)."""
    from open_clip.model import CLIP

    cfg = demo_model_cfg(vocab_size)
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])


def encode_text_by_length(
    model: torch.nn.Module, tokens: torch.Tensor, chunk: int = _TEXT_CHUNK
) -> torch.Tensor:
    """``model.encode_text(tokens, normalize=True)`` computed on length-sorted chunks cut to their longest text.

    Exact for the demo's text tower (open_clip's built-in ``TextTransformer`` inside ``CLIP``, causal mask,
    pooled at ``[EOS]``): a token never attends to the padding after it, so dropping trailing padding changes
    no output; only the float summation order of the shorter matrices differs. Training spends most of its
    time in the text tower, and the phantom's median report is a third of the context.

    Args:
        model: an open_clip ``CLIP`` with ``text_pool_type == "eos"``.
        tokens: (B, C) int64 token ids, padded with :data:`PAD_ID` after ``[EOS]``.

    Returns:
        (B, embed_dim) L2-normalised text features, rows in the order of ``tokens``.
    """
    if getattr(model, "text_pool_type", None) != "eos":
        raise ValueError(
            "encode_text_by_length needs a CLIP whose text tower pools at [EOS] (the demo model)"
        )
    # each chunk cut to its longest text: cxrlib.backbones.encode_text_trimmed
    lengths = (tokens != PAD_ID).sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    parts = [encode_text_trimmed(model, tokens[order[s : s + chunk]]) for s in range(0, len(order), chunk)]
    feats = torch.empty((len(tokens), parts[0].shape[1]), dtype=parts[0].dtype)
    feats = feats.index_put((order,), torch.cat(parts))
    return torch.nn.functional.normalize(feats, dim=-1)


def clip_loss_distinct_texts(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    inverse: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss for a batch whose identical texts are embedded once.

    open_clip's ``ClipLoss`` treats a report that occurs twice in a batch as two different texts, so each
    copy is a false negative for the other's image. Here image i's positive is its text ``inverse[i]`` among
    the U distinct texts (image->text: cross-entropy over U texts), and a text's positives are all the images
    that carry it (text->image: cross-entropy against the uniform distribution over them). With no repeated
    text this is exactly ``ClipLoss`` (the tests check it).

    Args:
        image_features: (B, D) L2-normalised image embeddings.
        text_features: (U, D) L2-normalised embeddings of the batch's distinct texts.
        inverse: (B,) int64, the row of ``text_features`` that pairs with each image (every row is used).
        logit_scale: scalar tensor, exp of the learned log temperature.

    Returns:
        Scalar loss: the mean of the two directions.
    """
    logits = logit_scale * image_features @ text_features.T  # (B, U)
    i2t = torch.nn.functional.cross_entropy(logits, inverse)
    target = torch.nn.functional.one_hot(inverse, num_classes=text_features.shape[0]).T.to(logits.dtype)
    t2i = torch.nn.functional.cross_entropy(logits.T, target / target.sum(dim=1, keepdim=True))
    return 0.5 * (i2t + t2i)


def _pretrain(
    model: torch.nn.Module,
    x_all: torch.Tensor,
    tokens: torch.Tensor,
    text_idx: np.ndarray,
    cfg: DemoBackboneConfig,
    seed: int,
    desc: str,
    progress: bool,
) -> list[dict]:
    """CLIP-loss pretraining of ``model`` in place on pairs (x_all[i], tokens[text_idx[i]]).

    x_all: (N, 3, S, S) model-ready images; tokens: (U, C) distinct texts; text_idx: (N,) row of each pair's
    text. AdamW, linear warm-up over the first tenth of the steps, cosine decay to 0; the CLIP logit scale is
    learned and clamped to [1, 100]. Each step embeds a batch's distinct texts once (identical reports are
    frequent among normal studies) and scores them with :func:`clip_loss_distinct_texts`, so a repeated
    report is never its own negative. Returns the per-epoch history.
    """
    n = len(x_all)
    steps_per_epoch = n // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    warm = max(1, int(round(_WARMUP * total)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=_WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm)
            * 0.5
            * (1 + np.cos(np.pi * min(1.0, max(0, s - warm) / max(1, total - warm))))
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    text_idx_t = torch.from_numpy(np.asarray(text_idx, dtype=np.int64))
    model.train()
    model.to(memory_format=torch.channels_last)  # faster small convolutions on CPU; weights saved contiguous
    x_all = x_all.contiguous(memory_format=torch.channels_last)
    history = []
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress)
    for ep in bar:
        perm = torch.randperm(n, generator=gen)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            uniq, inverse = torch.unique(text_idx_t[idx], return_inverse=True)
            img_f = model.encode_image(x_all[idx], normalize=True)
            txt_f = encode_text_by_length(model, tokens[uniq])
            loss = clip_loss_distinct_texts(img_f, txt_f, inverse, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))
            losses.append(loss.item())
        history.append(
            {
                "epoch": ep + 1,
                "clip_loss": float(np.mean(losses)),
                "logit_scale": model.logit_scale.exp().item(),
            }
        )
        bar.set_postfix(loss=f"{history[-1]['clip_loss']:.3f}")
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


# --------------------------------------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------------------------------------
_NAMES: tuple[str, ...] = ("demo", "demo-general", "demo-random")


def _demo_key(data_hash: str, vocab_hash: str, seed: int, cfg: DemoBackboneConfig) -> str:
    blob = json.dumps(
        {
            "cfg": DEMO_MODEL_CFG,
            "pp": DEMO_PREPROCESS_CFG,
            "data": data_hash,
            "vocab": vocab_hash,
            "captions": [CAPTION_ATTRIBUTES, _TEMPLATES],
            "seed": seed,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "weight_decay": _WEIGHT_DECAY,
            "v": _KEY_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _bundle_key(path: Path) -> str | None:
    meta = path / "cxrlib_bundle.json"
    needed = ("open_clip_model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not meta.is_file() or not all((path / f).is_file() for f in needed):
        return None
    try:
        return json.loads(meta.read_text()).get("key")
    except ValueError:
        return None


def _save(model, tokenizer, vocab_size: int, out: Path, meta: dict) -> None:
    """Tokenizer files first, then the bundle (whose meta, written last, vouches for both)."""
    cfg = demo_model_cfg(vocab_size)
    (out / "cxrlib_bundle.json").unlink(missing_ok=True)
    save_demo_tokenizer(tokenizer, out, cfg["text_cfg"]["context_length"])
    save_bundle(model, cfg, DEMO_PREPROCESS_CFG, out, meta=meta)


def build_demo_backbones(
    manifest: pd.DataFrame,
    image_cache,
    cfg: DemoBackboneConfig | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Build (or reuse) the three demo bundles: ``demo``, ``demo-general`` and ``demo-random``.

    ``demo`` is trained with open_clip's CLIP loss on the manifest rows with ``split == "pretrain"`` — the
    phantom's reserved pool, whose patients never appear in train/val/test — so it stands in for a
    domain foundation model that has seen chest X-rays and reports but was never trained for normal/abnormal
    retrieval. ``demo-general`` gets the same images, architecture, tokenizer, seed and budget, but
    general-domain captions (:func:`general_captions`) instead of the reports: a general-purpose model.
    ``demo-random`` is the untrained architecture. Training is deterministic on CPU for a fixed seed (each
    pretraining runs at one thread, whichever process runs it). The bundles are reused when their key (architecture, tokenizer vocabulary, data, seed,
    hyper-parameters, caption rule, code version) matches; ``force=True`` rebuilds.

    Args:
        manifest: the manifest (rows with ``split == "pretrain"`` are used).
        image_cache: a :class:`cxrlib.data.images.ImageCache` holding those rows.
        cfg: epochs, batch size and learning rate (both trained backbones use the same).
        seed: initial weights, batch order and caption templates.
        force: rebuild even when the bundles' key matches.
        progress: show progress bars.
        workers: processes for the two pretrainings (``run.workers``; :func:`cxrlib.parallel.run_jobs`). Each
            pretraining runs at one thread, so the weights are the same bits for any value.

    Returns:
        ``{"demo": Path, "demo-general": Path, "demo-random": Path, "history": list[dict] (demo's epochs),
        "history_general": list[dict], "seconds": float (wall time of both pretrainings), "seconds_by_backbone":
        {"demo": float, "demo-general": float}, "reused": bool}``.

    Raises:
        ValueError: fewer pretraining rows than one batch (the message says what to change).
    """
    out = demo_bundle_dir("demo")
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out):  # two runs building the demo backbones at once: the second waits, then reuses
        return _build(manifest, image_cache, cfg or DemoBackboneConfig(), seed, force, progress, workers)


def _build(
    manifest, image_cache, cfg: DemoBackboneConfig, seed: int, force: bool, progress: bool, workers: int
) -> dict:
    pool = manifest[manifest["split"] == "pretrain"].reset_index(drop=True)
    if len(pool) < cfg.batch_size:
        raise ValueError(
            f"the demo backbones are pretrained on rows with split == 'pretrain', but the manifest has {len(pool)} "
            f"(need at least demo_backbone.batch_size={cfg.batch_size}). Use the phantom dataset (it reserves a "
            "pretraining pool; raise phantom.n_patients or phantom.pretrain_fraction for more rows) or lower "
            "demo_backbone.batch_size."
        )
    paths = {name: demo_bundle_dir(name) for name in _NAMES}
    raw = image_cache.get(pool["image_id"].tolist())  # (N, H, W) uint8
    captions = general_captions(raw, seed)
    report_texts = pool["text"].astype(str).tolist()
    tokenizer = build_demo_tokenizer(report_texts + captions)
    vocab = tokenizer.get_vocab()
    vocab_size = len(vocab)
    vocab_hash = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
    data_hash = manifest_hash(pool, ("image_id", "text")) + image_cache.content_hash
    key = _demo_key(data_hash, vocab_hash, seed, cfg)
    if not force and all(_bundle_key(p) == key for p in paths.values()):
        metas = {
            n: json.loads((paths[n] / "cxrlib_bundle.json").read_text()) for n in ("demo", "demo-general")
        }
        return {
            **paths,
            "history": metas["demo"].get("history", []),
            "history_general": metas["demo-general"].get("history", []),
            "seconds": 0.0,
            "seconds_by_backbone": {"demo": 0.0, "demo-general": 0.0},
            "reused": True,
        }

    start_workers(workers, "cpu", ("cxrlib.demo_backbone",))  # they import torch while this process prepares
    seed_everything(seed)
    init = create_demo_model(vocab_size)
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    model_cfg = demo_model_cfg(vocab_size)
    meta_base = {
        "key": key,
        "architecture": model_cfg,
        "seed": seed,
        "synthetic_data": True,
        "tokenizer": {
            "kind": "word-level (Hugging Face tokenizers), vocabulary from the pretraining pool's text",
            "vocab_size": vocab_size,
            "vocab_sha256_16": vocab_hash,
            "unknown_token": SPECIAL_TOKENS[UNK_ID],
        },
    }
    _save(
        init,
        tokenizer,
        vocab_size,
        paths["demo-random"],
        {
            **meta_base,
            "weights": "random init",
            "near_chance_by_design": "the chance reference: random weights",
        },
    )

    # one tokenizer, loaded the way extraction loads it (open_clip's local-dir: path)
    hf_tok = open_clip.get_tokenizer(f"local-dir:{paths['demo-random']}")
    images = torch.from_numpy(raw)
    stub = Backbone(
        name="demo",
        spec="",
        model=init,
        preprocess=None,
        tokenizer=hf_tok,
        image_size=model_cfg["vision_cfg"]["image_size"],
        mean=tuple(DEMO_PREPROCESS_CFG["mean"]),
        std=tuple(DEMO_PREPROCESS_CFG["std"]),
        context_length=model_cfg["text_cfg"]["context_length"],
        embed_dim=model_cfg["embed_dim"],
        weights_id="",
        device=torch.device("cpu"),
        logit_scale=0.0,
    )
    x_all = torch.cat([stub.prepare_images(images[i : i + 256]) for i in range(0, len(images), 256)])

    corpora = {
        "demo": (report_texts, "CLIP-loss pretraining on the phantom pretraining pool's image-report pairs"),
        "demo-general": (
            captions,
            "CLIP-loss pretraining on the phantom pretraining pool's images with general-domain captions that "
            "ignore the findings (image brightness, contrast, sharpness, grain and framing tertiles; "
            "cxrlib.demo_backbone.general_captions)",
        ),
    }
    result: dict = {**paths, "seconds_by_backbone": {}, "reused": False}
    names = list(corpora)
    # jobs travel to the worker processes pickled: numpy arrays, not torch tensors (cxrlib.parallel)
    init_numpy = {k: v.numpy() for k, v in init_state.items()}
    x_numpy = x_all.numpy()
    jobs = []
    for name in names:
        uniq_texts, text_idx = np.unique(np.asarray(corpora[name][0], dtype=str), return_inverse=True)
        tokens = hf_tok(list(uniq_texts)).numpy()
        jobs.append((vocab_size, init_numpy, x_numpy, tokens, text_idx, cfg, seed))
        corpora[name] = (*corpora[name], uniq_texts)
    # both start from the random init of demo-random; one process each (run.workers), one thread each
    t0 = time.perf_counter()
    trained = run_jobs(
        _pretrain_job,
        jobs,
        workers=workers,
        names=[f"pretraining {n}" for n in names],
        desc="pretraining demo, demo-general (CLIP loss, synthetic pool)",
        progress=progress,
    )
    for name, (state, history, seconds) in zip(names, trained, strict=True):
        _texts, what, uniq_texts = corpora[name]
        model = create_demo_model(vocab_size)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        meta = {
            **meta_base,
            "weights": what,
            "trained_on": "synthetic phantom reports"
            if name == "demo"
            else "synthetic general-domain captions",
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "n_pairs": len(pool),
            "n_distinct_texts": len(uniq_texts),
            "history": history,
            "seconds": round(seconds, 1),
        }
        if name == "demo-general":
            meta["near_chance_by_design"] = (
                "a general-domain stand-in: trained on captions that never name a finding, so its text tower "
                "never learned a report word"
            )
            meta["caption_attributes"] = {a: list(w) for a, w in CAPTION_ATTRIBUTES}
            meta["caption_examples"] = list(uniq_texts[:5])
        _save(model, tokenizer, vocab_size, paths[name], meta)
        result["seconds_by_backbone"][name] = seconds
        result["history" if name == "demo" else "history_general"] = history
    result["seconds"] = time.perf_counter() - t0
    return result


def _pretrain_job(
    vocab_size: int,
    init_state: dict[str, np.ndarray],
    x_all: np.ndarray,
    tokens: np.ndarray,
    text_idx: np.ndarray,
    cfg: DemoBackboneConfig,
    seed: int,
) -> tuple[dict[str, np.ndarray], list[dict], float]:
    """One backbone's pretraining (a :func:`cxrlib.parallel.run_jobs` job, at one thread): the demo model
    from ``init_state`` trained by :func:`_pretrain` on ``x_all`` (N, 3, S, S) float32 and ``tokens`` (U, C)
    int64. Returns ``(state_dict as numpy arrays, history, seconds)``."""
    t0 = time.perf_counter()
    model = create_demo_model(vocab_size)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in init_state.items()})
    history = _pretrain(
        model, torch.from_numpy(x_all), torch.from_numpy(tokens), text_idx, cfg, seed, "pretraining", False
    )
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return state, history, time.perf_counter() - t0
