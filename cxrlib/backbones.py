"""Backbones through open_clip: general CLIP, BiomedCLIP, any ``hf-hub:`` / ``local-dir:`` model, and the demo.

Accepted names for :func:`load_backbone`:

===============  ===========================================================================================
name             what loads
===============  ===========================================================================================
``clip``         ViT-B/16 with OpenAI's CLIP weights (open_clip ``ViT-B-16-quickgelu`` / ``openai``: OpenAI
                 trained with QuickGELU, and open_clip only warns when the activation does not match), context 77
``biomedclip``   ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``: ViT-B/16 image tower,
                 PubMedBERT text tower, context length 256, embedding dim 512
``hf-hub:ORG/M`` any open_clip model on the Hugging Face hub (needs internet or a warm HF cache)
``local-dir:P``  an open_clip bundle in folder P (``open_clip_config.json`` + weights); P relative to the
                 repo root or absolute. A bundle whose text tower is a Hugging Face model (BiomedCLIP) works
                 offline when the folder also holds that model's ``config.json`` and tokenizer files
                 (:func:`export_bundle` writes such a folder)
``demo``         the demo profile's small open_clip model, pretrained with the CLIP loss on the SYNTHETIC
                 phantom pretraining pool (:func:`cxrlib.demo_backbone.build_demo_backbones` makes it)
``demo-general`` the same architecture, tokenizer and budget, pretrained on the same SYNTHETIC images with
                 general-domain captions that ignore the findings: the general-purpose-CLIP stand-in
``demo-random``  the same architecture with random weights: the chance reference
===============  ===========================================================================================

Names: :func:`slug` is the one rule for every path built from a backbone name (embedding caches, checkpoints,
metrics files): plain names stay (``demo+multitask`` -> ``demo_multitask``), ``local-dir:`` / ``hf-hub:`` names
become their folder or model name plus a hash of the full name (``local-dir:/x/y`` -> ``y-<8 hex>``), so two bundle
folders called ``y`` never share a file. :func:`display_name` / :func:`display_names` give the short labels for
tables and figures; the full name stays in the metadata (``Backbone.describe``).

Offline with no cached weights, loading fails with :class:`WeightsUnavailableError`, whose message says how
to make the weights available. Loading never falls back to random weights: a bundle or hub model whose weights
file is missing is an error too (open_clip itself would only log a warning and initialise randomly).

Bundles written by :func:`save_bundle` are written atomically (:mod:`cxrlib.cache`) and record the sha256 of
their weights (``open_clip_model.safetensors.sha256``); loading checks it. A damaged, truncated or empty weights
file, an unreadable ``open_clip_config.json`` or a config that does not describe the weights raises
:class:`BundleError` (a :class:`WeightsUnavailableError`) naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cxrlib.cache import (
    atomic_path,
    file_lock,
    sha256_file,
    verify_checksum,
    write_checksum,
    write_json_atomic,
)
from cxrlib.paths import cache_dir, resolve

__all__ = [
    "ALIASES",
    "DEMO_NAMES",
    "DEMO_MODEL_CFG",
    "DEMO_PREPROCESS_CFG",
    "demo_model_cfg",
    "Backbone",
    "WeightsUnavailableError",
    "BundleError",
    "load_backbone",
    "backbone_from_model",
    "resolve_spec",
    "state_dict_checksum",
    "save_bundle",
    "export_bundle",
    "demo_bundle_dir",
    "SCHEMAS",
    "display_name",
    "display_names",
    "slug",
    "trims_text_padding",
    "encode_text_trimmed",
]

log = logging.getLogger(__name__)

#: Friendly names -> (open_clip model name, pretrained tag or None).
ALIASES: dict[str, tuple[str, str | None]] = {
    "clip": ("ViT-B-16-quickgelu", "openai"),
    "biomedclip": ("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", None),
}
DEMO_NAMES: tuple[str, ...] = ("demo", "demo-general", "demo-random")
#: Files open_clip accepts as a bundle's weights (``open_clip.factory._find_checkpoint_in_dir``).
_WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pth")

#: The demo architecture (open_clip's built-in towers), without its vocabulary size: :func:`demo_model_cfg`
#: adds the size of the demo tokenizer's vocabulary and points the tokenizer at the bundle folder.
#: Vision: a small ModifiedResNet (CLIP's ResNet with attention pooling) at 64 px, which learns much faster
#: from a few hundred pairs than a ViT; subtle findings (a 6 mm nodule) are near the limit of what 64 px
#: shows, which keeps the demo task hard. Text: a 2-layer transformer over a word-level tokenizer built from
#: the pretraining pool's text (:mod:`cxrlib.demo_backbone`), pooled at its ``[EOS]`` token (id 3, padding
#: id 0); context 112 holds every phantom report (14-102 tokens, median 39). Its MLPs are 2x wide, not CLIP's
#: 4x: the text tower was half the pretraining time, and over two seeds 2x matched 4x (R@10 and label mAP
#: within the seed-to-seed spread) at 17 % less time per step.
DEMO_MODEL_CFG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {
        "context_length": 112,
        "width": 128,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 2.0,
        "pool_type": "eos",
        "eos_id": 3,
        "pad_id": 0,
    },
}
#: Grayscale radiographs: one mean/std repeated over the three channels.
DEMO_PREPROCESS_CFG: dict = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bicubic"}


def trims_text_padding(model: torch.nn.Module) -> bool:
    """Can :func:`encode_text_trimmed` encode this model's texts? True for open_clip's built-in ``CLIP`` text
    tower (OpenAI CLIP, the demo models): a causal mask and pooling at the end-of-text token (``argmax`` or
    ``eos``), so no token ever attends to the padding after it. False for Hugging Face text towers
    (BiomedCLIP's PubMedBERT, bidirectional) and other pooling rules."""
    from open_clip.model import CLIP

    return (
        isinstance(model, CLIP)
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and getattr(model, "attn_mask", None) is not None
    )


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` (not normalised) without the padding columns after the batch's longest text.

    Exact for a model with :func:`trims_text_padding`: under the causal mask no kept token attends to a dropped
    column, and the pooled end-of-text token is kept; only the float summation order of the shorter matrices
    differs (~1e-7). Padding is token id 0 (open_clip's tokenizers and the demo's ``[PAD]``); a batch with no
    all-zero trailing column is encoded whole, and ``tokens`` may be narrower than the context. Batches of texts of similar length gain the most.

    Args:
        model: an open_clip ``CLIP`` with :func:`trims_text_padding`.
        tokens: (B, C) int64 token ids.

    Returns:
        (B, embed_dim) text features, as ``encode_text`` returns them.
    """
    if not trims_text_padding(model):
        raise ValueError(
            "encode_text_trimmed needs an open_clip CLIP whose text tower has a causal mask and pools at the "
            "end-of-text token (argmax or eos); use model.encode_text for this model"
        )
    from open_clip.transformer import text_global_pool

    used = torch.nonzero((tokens != 0).any(dim=0))
    n = int(used.max()) + 1 if len(used) else tokens.shape[1]

    t = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(t).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, t, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


class WeightsUnavailableError(RuntimeError):
    """The weights (or a config the model needs) cannot be found offline; the message says how to fix it."""


class BundleError(WeightsUnavailableError):
    """A ``local-dir:`` bundle is damaged or inconsistent; the message names the file and the fix."""


def _bundle_fix(name: str, bundle: Path) -> str:
    if name in DEMO_NAMES:
        return (
            f"Delete {bundle} and rerun notebooks/02_baseline_evaluation.ipynb (it rebuilds the demo backbones), "
            "or call cxrlib.demo_backbone.build_demo_backbones(..., force=True)."
        )
    return (
        "Write the bundle again where its weights are available (cxrlib.backbones.export_bundle / save_bundle, or "
        "`python -m cxrlib.backbones --export NAME DIR`), or copy it again from its source."
    )


@dataclass
class Backbone:
    """A loaded open_clip model with what extraction needs.

    Attributes:
        name: what the user asked for (``"biomedclip"``, ``"demo"``, ``"local-dir:..."``).
        spec: the open_clip identifier that was loaded.
        model: the open_clip model, in eval mode, on ``device``.
        preprocess: open_clip's evaluation transform (PIL image -> (3, S, S) tensor).
        tokenizer: callable ``list[str] -> LongTensor (B, context_length)``.
        image_size: side S of the model's input.
        mean, std: per-channel normalisation of the image tower.
        context_length: the text tower's token limit (longer reports are truncated).
        embed_dim: dimension of the joint embedding.
        weights_id: what identifies the weights: ``name@sha256:<first 16 hex>`` of the state dict.
        logit_scale: the model's learned CLIP temperature, exp(logit_scale).
    """

    name: str
    spec: str
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int
    embed_dim: int
    weights_id: str
    device: torch.device
    logit_scale: float
    info: dict = field(default_factory=dict)
    _norm_cache: tuple | None = field(default=None, repr=False, compare=False)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Grayscale images -> normalised float (B, 3, S, S) on ``device``.

        ``images``: uint8 (B, H, W) from the image cache, or float32 (B, S, S) in [0, 1] already at the tower's
        side S (:meth:`cxrlib.data.images.ImageCache.resized`, the same bytes the uint8 path computes). uint8
        images go through :func:`cxrlib.data.images.resize_to_unit` on ``device`` (/255; bicubic antialiased
        resize to S and clamp when H or W != S; the cache already did the aspect rule). The gray channel is
        repeated three times and normalised with the tower's mean/std.
        """
        from cxrlib.data.images import resize_to_unit

        if images.ndim != 3:
            raise ValueError(f"expected uint8 images of shape (B, H, W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = resize_to_unit(images.to(self.device, non_blocking=True), self.image_size)
        elif images.dtype == torch.float32:
            if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"float32 images must already be {self.image_size} x {self.image_size} (the tower's input side; "
                    f"ImageCache.resized({self.image_size})), got {tuple(images.shape)}"
                )
            x = images.to(self.device, non_blocking=True).unsqueeze(1)
        else:
            raise ValueError(
                f"expected uint8 images (B, H, W) or float32 images (B, S, S) in [0, 1], got dtype {images.dtype}"
            )
        scale, shift = self._norm(x.device)
        # (x - mean) / std in one pass, written channels-last (B, S, S, 3) and viewed as (B, 3, S, S): the layout
        # the CPU model runs in (backbone_from_model), so no reorder before the first convolution
        nhwc = torch.addcmul(shift, x.permute(0, 2, 3, 1).expand(-1, -1, -1, 3), scale)
        return nhwc.permute(0, 3, 1, 2)

    def _norm(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 / std, -mean / std) as (1, 1, 1, 3) tensors on ``device``, made once per device (not per batch)."""
        key = (str(device), tuple(self.mean), tuple(self.std))
        if self._norm_cache is None or self._norm_cache[0] != key:
            mean, std = (torch.tensor(v, device=device).view(1, 1, 1, 3) for v in (self.mean, self.std))
            self._norm_cache = (key, (1.0 / std, -mean / std))
        return self._norm_cache[1]

    def describe(self) -> dict:
        """JSON-able record of what was loaded (stored with every embedding file)."""
        return {
            "name": self.name,
            "spec": self.spec,
            "weights_id": self.weights_id,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "context_length": self.context_length,
            "embed_dim": self.embed_dim,
            # CLIP multiplier exp(logit_scale) the model was trained with (None when it has none): notebook 03
            # starts the head's CLIP temperature from it
            "logit_scale": self.logit_scale
            if np.isfinite(self.logit_scale) and self.logit_scale > 0
            else None,
            **self.info,
        }


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------
def state_dict_checksum(model: torch.nn.Module) -> str:
    """sha256 over the sorted state dict (names, dtypes, shapes, bytes): identifies weights wherever they came from."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def demo_model_cfg(vocab_size: int) -> dict:
    """The full open_clip model config of a demo bundle: :data:`DEMO_MODEL_CFG` with ``vocab_size`` (the demo
    tokenizer's) and ``hf_tokenizer_name = "."``, with which ``open_clip.get_tokenizer("local-dir:P")`` loads
    the Hugging Face tokenizer files saved in the bundle folder P itself (no path of this machine is stored)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 5:
        raise ValueError(
            f"vocab_size must be an integer >= 5 (4 special tokens and a word), got {vocab_size!r}"
        )
    cfg = json.loads(json.dumps(DEMO_MODEL_CFG))
    cfg["text_cfg"].update(vocab_size=vocab_size, hf_tokenizer_name=".")
    return cfg


def demo_bundle_dir(name: str) -> Path:
    """Where the demo bundles live: ``<cache>/models/<name>`` (``demo`` in ``demo-pretrained``)."""
    if name not in DEMO_NAMES:
        raise ValueError(f"{name!r} is not a demo backbone; choose from {DEMO_NAMES}")
    return cache_dir("models", name if name != "demo" else "demo-pretrained")


def resolve_spec(name: str) -> tuple[str, str | None]:
    """Friendly name -> (open_clip identifier, pretrained tag). Raises ValueError for an unknown name."""
    if name in ALIASES:
        return ALIASES[name]
    if name in DEMO_NAMES:
        return f"local-dir:{demo_bundle_dir(name)}", None
    if name.startswith("local-dir:"):
        return f"local-dir:{resolve(name[len('local-dir:') :])}", None
    if name.startswith("hf-hub:"):
        return name, None
    raise ValueError(
        f"unknown backbone {name!r}. Use one of {sorted(ALIASES)} , {list(DEMO_NAMES)}, "
        "'hf-hub:<org>/<model>' or 'local-dir:<folder with open_clip_config.json>'."
    )


# --------------------------------------------------------------------------------------------------------
# Names: a short label for tables and figures, a filesystem-safe slug for every path built from a name
# --------------------------------------------------------------------------------------------------------
#: Prefixes of backbone names that carry a location (a folder, a hub repository) rather than a short name.
SCHEMAS: tuple[str, ...] = ("local-dir:", "hf-hub:")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_PLAIN_MAX, _SHORT_MAX, _HASH_HEX = 60, 40, 8


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_HEX]


def display_name(name: str) -> str:
    """Short label of a backbone name for table rows and figure labels; the full name stays in the metadata.

    ``local-dir:P`` -> the last component of the folder P (``local-dir:/x/y`` -> ``y``); ``hf-hub:ORG/M`` -> ``M``;
    any other name (``clip``, ``biomedclip``, ``demo``, ``demo+multitask``) is returned unchanged. A suffix joined
    to a name (``local-dir:/x/y+multitask``) stays on the label (``y+multitask``). Two names can share a label
    (two bundles both called ``y``): :func:`display_names` labels a set of names without clashes.
    """
    for schema in SCHEMAS:
        if name.startswith(schema):
            where = name[len(schema) :].replace("\\", "/").rstrip("/")
            return where.rsplit("/", 1)[-1] or schema.rstrip(":")
    return name


def display_names(names) -> dict[str, str]:
    """``{name: label}`` for the names of one table or figure: :func:`display_name`, and where two names share
    a label, ``label [h]`` with ``h`` the 8-hex hash of the full name (the one in :func:`slug`), so rows never
    merge. Order of ``names`` is kept; repeated names are listed once."""
    names = list(dict.fromkeys(names))
    short = {n: display_name(n) for n in names}
    counts: dict[str, int] = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {n: (s if counts[s] == 1 else f"{s} [{_name_hash(n)}]") for n, s in short.items()}


def slug(name: str) -> str:
    """Filesystem-safe, collision-free stem for every path built from a backbone name (embedding cache files,
    checkpoint folders, metrics JSON, figure files).

    Rule (one for the whole project):

    - a *plain* name (no schema, at most 60 characters of letters, digits, ``.``, ``_``, ``-`` and ``+``,
      starting with a letter or digit) is kept, with ``+`` written ``_``: ``clip`` -> ``clip``,
      ``demo-random`` -> ``demo-random``, ``demo+multitask`` -> ``demo_multitask`` (the demo's file names);
    - every other name (``local-dir:``, ``hf-hub:``, spaces or other characters, too long) becomes its
      :func:`display_name` with unsafe characters as ``_`` (at most 40 characters), then ``-`` and the first
      8 hex digits of the sha256 of the full name as written: ``local-dir:/x/y`` -> ``y-<8 hex>``. Two bundles
      in different folders that share a folder name therefore never share a path. The hash is of the name as
      the profile gives it (a relative ``local-dir:`` path is hashed as written, so the slug does not change
      when the repository moves).

    The result never contains ``/``, ``\\``, ``:`` or spaces and never starts with ``.``. The only plain names
    that share a slug are ``a+b`` and ``a_b``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a backbone name must be a non-empty string, got {name!r}")
    if len(name) <= _PLAIN_MAX and _PLAIN.fullmatch(name):  # never a schema: ':' is not in _PLAIN
        return name.replace("+", "_")
    short = _UNSAFE.sub("_", display_name(name).replace("+", "_")).strip("_.-")[:_SHORT_MAX].strip("_.-")
    return f"{short or 'backbone'}-{_name_hash(name)}"


def _hf_text_tower(spec: str) -> str | None:
    """The Hugging Face model id of the text tower in ``spec``'s open_clip config, when the config is readable."""
    try:
        if spec.startswith("local-dir:"):
            cfg = json.loads((Path(spec[len("local-dir:") :]) / "open_clip_config.json").read_text())
            cfg = cfg.get("model_cfg", cfg)
        else:
            import open_clip

            with _quiet_hf_logging():
                cfg = open_clip.get_model_config(spec) or {}
    except Exception:  # noqa: BLE001 - only used to word an error message
        return None
    name = cfg.get("text_cfg", {}).get("hf_model_name")
    return str(name) if name else None


def _how_to_fix(name: str, spec: str) -> str:
    text_tower = _hf_text_tower(spec)
    if spec.startswith("local-dir:") and name not in DEMO_NAMES:
        bundle = spec[len("local-dir:") :]
        lines = [f"Could not load the open_clip bundle {bundle} (backbone {name!r})."]
        if text_tower is not None:
            lines += [
                f"Its text tower is the Hugging Face model {text_tower!r}, whose config.json (and tokenizer files) "
                "must be available offline. Either:",
                f"  1. put that model's config.json and tokenizer files into {bundle} (export_bundle / "
                "`python -m cxrlib.backbones --export NAME DIR` writes such a self-contained bundle); or",
                f"  2. warm the Hugging Face cache for {text_tower!r} on a machine with internet and copy the cache "
                "folder (HF_HOME, default ~/.cache/huggingface) here.",
            ]
        else:
            lines.append(
                "A bundle needs open_clip_config.json and the weights file it was saved with "
                "(open_clip_model.safetensors); rewrite it with export_bundle / save_bundle."
            )
        return "\n".join(lines)
    lines = [
        f"Could not load the weights of backbone {name!r} ({spec}) — this machine is offline or the files are "
        "not cached. To make them available:",
        "  1. On a machine with internet, warm the Hugging Face cache:",
        f"       python -m cxrlib.backbones --warm {name}",
        "     then copy the cache folder (HF_HOME, default ~/.cache/huggingface) to this machine and run with "
        "HF_HUB_OFFLINE=1; or",
        "  2. export a self-contained open_clip bundle and use it as 'local-dir:<folder>':",
        f"       python -m cxrlib.backbones --export {name} models/{slug(name)}",
    ]
    if "BiomedCLIP" in spec or name == "biomedclip":
        lines.append(
            "  BiomedCLIP's text tower (PubMedBERT) also needs its Hugging Face config and tokenizer files "
            "(microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract): --warm fetches them into the cache, and "
            "--export copies them into the bundle, whose open_clip_config.json then points the text tower at "
            "the bundle folder (hf_model_name) with hf_model_pretrained=false."
        )
    elif text_tower is not None:
        lines.append(
            f"  The text tower is the Hugging Face model {text_tower!r}: its config.json and tokenizer files are "
            "needed as well (--warm caches them, --export copies them into the bundle)."
        )
    if name in DEMO_NAMES:
        lines = [
            f"The demo backbone {name!r} has not been built yet (expected a bundle in {spec[len('local-dir:') :]}).",
            "Run notebooks/02_baseline_evaluation.ipynb, which builds it from the phantom pretraining pool, or "
            "call cxrlib.demo_backbone.build_demo_backbones(manifest, image_cache).",
        ]
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_hf_logging():
    loggers = [logging.getLogger(n) for n in ("root", "open_clip", "huggingface_hub", "transformers")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.ERROR))
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.setLevel(lvl)


def _local_text_override(bundle: Path) -> dict | None:
    """For a bundle with a Hugging Face text tower, point that tower at the bundle's own config files."""
    cfg = json.loads((bundle / "open_clip_config.json").read_text())
    text_cfg = dict(cfg.get("model_cfg", cfg).get("text_cfg", {}))
    if "hf_model_name" not in text_cfg:
        return None
    if (bundle / "config.json").is_file():
        text_cfg["hf_model_name"] = str(bundle)
        text_cfg["hf_model_pretrained"] = False  # the bundle's weights file holds the text tower too
        return text_cfg
    hf = Path(str(text_cfg["hf_model_name"]))
    if not hf.is_absolute() and (bundle / hf).is_dir():
        text_cfg["hf_model_name"] = str(bundle / hf)
        text_cfg["hf_model_pretrained"] = False
        return text_cfg
    return None


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------
def load_backbone(name: str, device: str | torch.device = "cpu", precision: str = "fp32") -> Backbone:
    """Load a backbone by name (see the module docstring). Returns a :class:`Backbone` in eval mode.

    Raises:
        ValueError: unknown name.
        WeightsUnavailableError: weights or configs cannot be found (offline, not cached, demo not built).
    """
    import open_clip

    spec, pretrained = resolve_spec(name)
    dev = torch.device(device)
    model_kwargs: dict = {}
    if spec.startswith("local-dir:"):
        bundle = Path(spec[len("local-dir:") :])
        if not (bundle / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(
                _how_to_fix(name, spec)
                if name in DEMO_NAMES
                else f"no open_clip bundle at {bundle}: expected {bundle / 'open_clip_config.json'} and a weights "
                "file (open_clip_model.safetensors or open_clip_pytorch_model.bin). Write one with "
                "cxrlib.backbones.export_bundle (or `python -m cxrlib.backbones --export NAME DIR`)."
            )
        weights = [p for ext in _WEIGHT_SUFFIXES for p in bundle.glob(f"*{ext}")]
        if not weights:
            raise WeightsUnavailableError(
                _how_to_fix(name, spec)
                if name in DEMO_NAMES
                else f"the open_clip bundle {bundle} has a config but no weights file (expected "
                "open_clip_model.safetensors or open_clip_pytorch_model.bin beside open_clip_config.json); open_clip "
                "would silently use random weights. Re-export it with cxrlib.backbones.export_bundle."
            )
        for w in weights:
            if verify_checksum(w) is False:
                raise BundleError(
                    f"the weights file {w} of the open_clip bundle {bundle} does not match the sha256 recorded "
                    f"when it was written ({w.stat().st_size} bytes now): it is truncated, damaged or was "
                    f"replaced. {_bundle_fix(name, bundle)}"
                )
        try:
            override = _local_text_override(bundle)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(
                f"{bundle / 'open_clip_config.json'} is not valid JSON ({exc}). {_bundle_fix(name, bundle)}"
            ) from exc
        if override is not None:
            model_kwargs["text_cfg"] = override
    try:
        with _quiet_hf_logging():
            # require_pretrained: open_clip only logs a warning and returns RANDOM weights when a hub model's
            # weights file is missing (e.g. a half-warmed cache); that must be an error here.
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec,
                pretrained=pretrained,
                device=dev,
                precision=precision,
                require_pretrained=True,
                **model_kwargs,
            )
            tokenizer = open_clip.get_tokenizer(spec)
    except Exception as exc:
        if spec.startswith("local-dir:"):
            _raise_bundle_error(name, Path(spec[len("local-dir:") :]), exc)
        if not isinstance(exc, (OSError, RuntimeError, ValueError)):
            raise
        msg = str(exc)
        offline_markers = (
            "offline",
            "connect",
            "resolve",
            "not found",
            "Failed initial config",
            "Failed to download",
            "LocalEntryNotFound",
            "couldn't",
            "does not appear to have",
            "No such file",
            "Temporary failure",
            "Network",
            "Required pretrained weights",
        )
        if any(m.lower() in msg.lower() for m in offline_markers):
            raise WeightsUnavailableError(
                _how_to_fix(name, spec) + f"\n(underlying error: {msg[:300]})"
            ) from exc
        raise
    info: dict = {}
    if spec.startswith("local-dir:"):
        meta = Path(spec[len("local-dir:") :]) / "cxrlib_bundle.json"
        if meta.is_file():
            b = json.loads(meta.read_text())
            info["bundle"] = {k: v for k, v in b.items() if k not in ("history", "architecture")}
    display = spec if not spec.startswith("local-dir:") else f"local-dir:{_display_path(spec)}"
    return backbone_from_model(name, display, model, preprocess, tokenizer, dev, info=info)


def _raise_bundle_error(name: str, bundle: Path, exc: Exception) -> None:
    """Turn a raw error from loading a ``local-dir:`` bundle into a :class:`BundleError` naming the file (if it
    is one of the bundle faults); otherwise return and let the caller handle ``exc``."""
    import pickle
    import zipfile

    from safetensors import SafetensorError

    weights = [p for ext in _WEIGHT_SUFFIXES for p in bundle.glob(f"*{ext}")]
    shown = ", ".join(f"{w} ({w.stat().st_size} bytes)" for w in weights)
    msg = str(exc)
    if isinstance(exc, SafetensorError | EOFError | pickle.UnpicklingError | zipfile.BadZipFile) or (
        "PytorchStreamReader" in msg
    ):
        raise BundleError(
            f"the weights file of the open_clip bundle {bundle} cannot be read: {shown} is truncated, empty or "
            f"damaged ({type(exc).__name__}: {msg[:200]}). {_bundle_fix(name, bundle)}"
        ) from exc
    if isinstance(exc, RuntimeError) and "Error(s) in loading state_dict" in msg:
        detail = "; ".join(line.strip() for line in msg.splitlines()[1:4] if line.strip())
        raise BundleError(
            f"{bundle / 'open_clip_config.json'} does not describe the architecture of the weights {shown} "
            f"({detail[:400]}). The config was edited or belongs to other weights: restore the "
            f"open_clip_config.json the bundle was saved with. {_bundle_fix(name, bundle)}"
        ) from exc


def backbone_from_model(
    name: str,
    spec: str,
    model: torch.nn.Module,
    preprocess: Callable | None,
    tokenizer: Callable,
    device: str | torch.device = "cpu",
    info: dict | None = None,
) -> Backbone:
    """Wrap an open_clip model that is already built (and on ``device``) as a :class:`Backbone`.

    :func:`load_backbone` ends here; benchmarks use it for architectures built in memory (random weights). Image
    size, mean and std come from the model's preprocess config (``open_clip.get_model_preprocess_cfg``), the
    context length from the tokenizer, the embedding dim from a probe text, and ``weights_id`` from
    :func:`state_dict_checksum`. The model is put in eval mode, and on a CPU in channels-last memory format
    (faster convolutions; the weights and ``weights_id`` are unchanged).
    """
    import open_clip

    dev = torch.device(device)
    model.eval()
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    ctx = int(getattr(tokenizer, "context_length", 77))
    with torch.no_grad():
        probe = model.encode_text(tokenizer(["probe"]).to(dev))
    checksum = state_dict_checksum(model)
    if dev.type == "cpu":  # oneDNN's convolutions run ~30 % faster on NHWC (the demo's ResNet tower)
        model.to(memory_format=torch.channels_last)
    ls = getattr(model, "logit_scale", None)
    logit_scale = float(ls.exp().item()) if isinstance(ls, torch.Tensor) else float("nan")
    return Backbone(
        name=name,
        spec=spec,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        image_size=size,
        mean=tuple(float(m) for m in pp.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(float(s) for s in pp.get("std", (0.26862954, 0.26130258, 0.27577711))),
        context_length=ctx,
        embed_dim=int(probe.shape[-1]),
        weights_id=f"{name}@sha256:{checksum[:16]}",
        device=dev,
        logit_scale=logit_scale,
        info=dict(info or {}),
    )


def _display_path(spec: str) -> str:
    from cxrlib.paths import relative_to_repo

    return relative_to_repo(spec[len("local-dir:") :])


# --------------------------------------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------------------------------------
def save_bundle(
    model: torch.nn.Module,
    model_cfg: dict,
    preprocess_cfg: dict,
    out_dir: str | Path,
    meta: dict | None = None,
) -> Path:
    """Write an open_clip ``local-dir:`` bundle: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

    ``meta`` (JSON-able) goes to ``cxrlib_bundle.json`` beside them (how the weights were made). Every file is
    written atomically; the weights' sha256 goes to ``open_clip_model.safetensors.sha256`` (checked by
    :func:`load_backbone`). Order: an earlier ``cxrlib_bundle.json`` is removed first and the new one written
    last, so a crash part-way never leaves a meta (or a checksum) that vouches for other weights. Two processes
    saving into one folder take turns (lock ``open_clip_model.safetensors.lock``).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "open_clip_model.safetensors"
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with file_lock(weights):
        (out / "cxrlib_bundle.json").unlink(missing_ok=True)
        write_json_atomic(out / "open_clip_config.json", cfg, indent=2, sort_keys=True)
        with atomic_path(weights) as tmp:
            save_file(state, str(tmp))
            digest = sha256_file(tmp)
        write_checksum(weights, digest)
        if meta is not None:
            write_json_atomic(out / "cxrlib_bundle.json", meta, indent=2, sort_keys=True)
    return out


def export_bundle(name: str, out_dir: str | Path) -> Path:
    """Export a loadable backbone as a self-contained ``local-dir:`` bundle (run where the weights are available).

    For a model with a Hugging Face text tower (BiomedCLIP), the tower's ``config.json`` and tokenizer files are
    saved into the bundle too, so it loads offline. Returns the bundle folder.
    """
    import open_clip

    bb = load_backbone(name)
    spec, pretrained = resolve_spec(name)
    if spec.startswith("hf-hub:"):
        from open_clip.factory import _get_hf_config

        full = _get_hf_config(spec[len("hf-hub:") :])
        model_cfg, pp_cfg = full["model_cfg"], full.get("preprocess_cfg", {})
    elif spec.startswith("local-dir:"):
        full = json.loads((Path(spec[len("local-dir:") :]) / "open_clip_config.json").read_text())
        model_cfg, pp_cfg = full["model_cfg"], full.get("preprocess_cfg", {})
    else:
        model_cfg = open_clip.get_model_config(spec)
        pp_cfg = {"mean": list(bb.mean), "std": list(bb.std)}
    out = Path(out_dir)
    text = getattr(bb.model, "text", None)
    hf_tower = getattr(text, "transformer", None)
    if "hf_model_name" in model_cfg.get("text_cfg", {}) and hf_tower is not None:
        hf_tower.config.save_pretrained(out)
        tok = getattr(bb.tokenizer, "tokenizer", None)
        if tok is not None:
            tok.save_pretrained(out)
        model_cfg = json.loads(json.dumps(model_cfg))
        model_cfg["text_cfg"]["hf_tokenizer_name"] = model_cfg["text_cfg"].get("hf_tokenizer_name", "") or "."
    meta = {"exported_from": name, "spec": spec, "pretrained": pretrained, "weights_id": bb.weights_id}
    return save_bundle(bb.model, model_cfg, pp_cfg, out, meta=meta)


# --------------------------------------------------------------------------------------------------------
# Command line: warm the cache / export a bundle on a machine with internet
# --------------------------------------------------------------------------------------------------------
def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cxrlib.backbones", description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--warm", metavar="NAME", help="download NAME's weights (and configs) into the HF cache")
    g.add_argument(
        "--export", nargs=2, metavar=("NAME", "DIR"), help="write NAME as a local-dir bundle in DIR"
    )
    g.add_argument("--check", metavar="NAME", help="load NAME and print what was loaded")
    a = p.parse_args(argv)
    if a.warm or a.check:
        bb = load_backbone(a.warm or a.check)
        print(json.dumps(bb.describe(), indent=2))
    else:
        out = export_bundle(a.export[0], a.export[1])
        print(f"bundle written to {out}; load it with load_backbone('local-dir:{a.export[1]}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
