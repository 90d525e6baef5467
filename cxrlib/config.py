"""Every setting of the method and the demo in one place: the config dataclasses and the profile loader.

Each field is declared once, with ``_f(default, why, source, choices=...)``: its default, the one-line reason
for it, where the value comes from (*paper abstract*, *BiomedCLIP card*, *our choice*) and, for a text
setting, the accepted values. Everything else is derived from these declarations:

- a **profile** (``profiles/<name>.yaml``) is nested by section (``data:``, ``loss:``, ...) and lists only what
  differs from the defaults; :func:`load_settings` merges it (and any overrides) into one :class:`Settings`
  and checks every value (type, range, accepted values) before anything runs;
- the **notebooks** have two parameters, ``profile`` and ``overrides``, and build their settings with one call;
- the runner's ``--param section.field=value`` goes through the same checks;
- the **method card** in the README is generated from the declarations (:mod:`cxrlib.methodcard`);
- **cache stamps** hash a section's ``to_dict()``, so a new field joins the stamp by itself.

Sections (``Settings`` attribute = YAML key): ``run`` :class:`RunConfig`, ``data`` :class:`DataConfig`,
``phantom`` :class:`PhantomConfig`, ``eval`` :class:`EvalConfig`, ``demo_backbone``
:class:`DemoBackboneConfig`, ``projector`` :class:`ProjectorConfig`, ``loss`` :class:`LossConfig`, ``train``
:class:`TrainConfig`, ``ablation`` :class:`AblationConfig`, ``viz`` :class:`VizConfig`.

Derived fields (set from another section, never given in a profile): ``train.seed`` = ``run.seed``,
``train.device`` = ``run.device``, ``train.eval_ks`` = ``eval.ks``; ``projector.in_dim`` / ``out_dim`` = the
backbone's embedding dim (:meth:`Settings.projector_for`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "MODALITIES",
    "LOSS_TERMS",
    "DATASETS",
    "DEFAULT_MONITOR",
    "RunConfig",
    "DataConfig",
    "PhantomConfig",
    "EvalConfig",
    "DemoBackboneConfig",
    "ProjectorConfig",
    "LossConfig",
    "TrainConfig",
    "AblationConfig",
    "VizConfig",
    "Settings",
    "SECTIONS",
    "DERIVED",
    "load_settings",
    "build_settings",
    "merge_overrides",
    "diff_from_defaults",
]

LOSS_TERMS: tuple[str, ...] = ("bce", "supcon", "clip")
DATASETS: tuple[str, ...] = ("phantom", "iu_xray", "mimic_cxr", "csv")


class ConfigError(ValueError):
    """A config value or a config dict is invalid; the message names the field and the fix."""


def _f(default: Any, why: str, source: str = "our choice", choices: tuple | None = None) -> Any:
    """A dataclass field: its default, the one-line reason for it, where the value comes from and, for a
    text setting, the accepted values (checked by :meth:`_JsonConfig.from_dict`)."""
    meta = {"why": why, "source": source, "choices": choices}
    if isinstance(default, dict | list):
        frozen = dict(default) if isinstance(default, dict) else list(default)
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _type_name(hint: object) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _conforms(value: object, hint: object) -> bool:
    """Does ``value`` (read from YAML/JSON) fit the type hint? ints count as floats, bools never as numbers."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return isinstance(value, list | tuple) and all(_conforms(v, inner) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _looks_like_number(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


class _JsonConfig:
    """Mixin for the config dataclasses: ``to_dict`` (JSON types only) and a strict ``from_dict``.

    ``from_dict`` rejects unknown keys (with the closest names), values of the wrong type and text values
    outside the field's ``choices``, naming the field, the value and what is accepted. Tuple-typed fields
    are written as JSON lists and read back as tuples. :meth:`describe` lists the fields for the method card.
    """

    _NAME: ClassVar[str] = "config"

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per field: ``{"config", "section", "field", "default", "why", "source", "choices"}``."""
        rows = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = _default(f)
            rows.append(
                {
                    "config": cls.__name__,
                    "section": cls._NAME,
                    "field": f.name,
                    "default": list(default) if isinstance(default, tuple) else default,
                    "why": f.metadata.get("why", ""),
                    "source": f.metadata.get("source", "our choice"),
                    "choices": f.metadata.get("choices"),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
        return out

    def replace(self, **changes: Any):
        """A copy with some fields changed, checked like :meth:`from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def check_value(cls, name: str, value: Any) -> Any:
        """``value`` checked against field ``name``'s type and choices; lists become tuples where typed so."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        hint = typing.get_type_hints(cls)[name]
        where = f"{cls._NAME}.{name}"
        if not _conforms(value, hint):
            fix = ""
            if _looks_like_number(value) and _conforms(float(value), hint):
                fix = f" (write it as a number: {float(value)!r}; YAML reads 1e-3 without a dot as text)"
            raise ConfigError(
                f"{where} = {value!r} ({type(value).__name__}): expected {_type_name(hint)}{fix}"
            )
        choices = fields[name].metadata.get("choices")
        if choices is not None:
            items = value if isinstance(value, list | tuple) else [value]
            bad = [v for v in items if isinstance(v, str) and v not in choices]
            if bad:
                lowered = {str(c).lower(): c for c in choices}
                close = difflib.get_close_matches(str(bad[0]).lower(), list(lowered), n=1)
                hint_txt = f" (did you mean {lowered[close[0]]!r}?)" if close else ""
                raise ConfigError(
                    f"{where} = {value!r}: {bad[0]!r} is not accepted{hint_txt}. Accepted: "
                    + ", ".join(repr(c) for c in choices)
                )
        if isinstance(value, list) and _is_tuple_hint(hint):
            value = tuple(value)
        return value

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        if not isinstance(d, Mapping):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(names))
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), names, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {unknown} in the {cls._NAME} dict{hint}. Valid keys: {names}. "
                "Fix the spelling, or remove keys written by another version of cxrlib."
            )
        return cls(**{k: cls.check_value(k, v) for k, v in d.items()})


def _is_tuple_hint(hint: object) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_tuple_hint(a) for a in typing.get_args(hint))
    return False


def _check_number(
    where: str, value: object, lo: float, hi: float | None = None, lo_open: bool = False
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
    if not ok:
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ConfigError(f"{where} must be a finite number {rng}, got {value!r}")


# --------------------------------------------------------------------------------------------------------
# run, data, phantom, eval, demo backbone
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig(_JsonConfig):
    """What every notebook shares: the seed, the thread count and the device."""

    _NAME: ClassVar[str] = "run"

    seed: int = _f(
        0,
        "one seed for data generation, splits, training, bootstrap and maps: reruns are bit-identical on CPU",
    )
    num_threads: int = _f(
        2, "torch/BLAS threads, fixed so CPU results are bit-identical; 0 = leave torch's default (a server)"
    )
    device: str = _f(
        "cpu",
        "extraction and projector training device: the demo runs on CPU; 'cuda' or 'auto' on a GPU server",
        choices=("cpu", "cuda", "auto", "mps"),
    )
    workers: int = _f(
        2,
        "processes for independent jobs on CPU (02: the two demo backbones; 03: the heads and the loss ablation; "
        "04: the 2-D maps), this one included; each job runs at one thread, so this changes the wall time, never a "
        "number (cxrlib.parallel); 1 = one after another in this process",
    )

    def __post_init__(self) -> None:
        _check_number("run.num_threads", self.num_threads, 0)
        _check_int("run.workers", self.workers, 1)


@dataclass(frozen=True)
class DataConfig(_JsonConfig):
    """Notebook 01: which dataset, how the images are cached, how the rows are split."""

    _NAME: ClassVar[str] = "data"

    dataset: str = _f(
        "phantom",
        "the embedded SYNTHETIC corpus runs anywhere offline; iu_xray / mimic_cxr / csv on a server",
        choices=DATASETS,
    )
    data_dir: str = _f("", "raw data folder; '' = data/<dataset> (or $CXR_DATA_DIR/<dataset>)")
    image_size: int = _f(
        224, "cached image side: CLIP ViT-B/16 and BiomedCLIP read 224 px", "BiomedCLIP card"
    )
    aspect: str = _f(
        "crop",
        "crop = shorter side to image_size, centre crop (what open_clip does); pad = letterbox",
        choices=("crop", "pad"),
    )
    split_ratios: tuple[float, ...] = _f(
        (0.7, 0.1, 0.2),
        "train / val / test, dealt by patient (stratified): no patient in two splits; the abstract gives none",
    )
    row_limit: int = _f(0, "keep the first N reports/studies (0 = all): a quick look at a big dataset")
    frontal_only: bool = _f(
        True,
        "PA/AP views only where the view is recorded (IU X-ray: from a view table, data/README.md): the "
        "backbones saw frontal films",
    )
    text_source: str = _f(
        "findings+impression",
        "report text embedded: both sections keep every finding (long reports are cut at the encoder's "
        "context, CLIP 77 tokens); impression / findings alone (the other if empty, counted) or the longest",
        choices=("findings+impression", "impression", "findings", "longest"),
    )
    mimic_uncertain: str = _f(
        "negative",
        "MIMIC-CXR: CheXpert -1 (uncertain) read as negative, positive or the study excluded",
        choices=("negative", "positive", "exclude"),
    )
    csv_options: dict = _f(
        {}, "dataset csv only: the arguments of cxrlib.data.csv_manifest.load_csv (path, image_col, ...)"
    )
    num_workers: int = _f(
        0, "processes decoding images and DataLoader workers (0 = in this process: 2 cores; 4-8 on a server)"
    )

    def __post_init__(self) -> None:
        _check_number("data.image_size", self.image_size, 8)
        _check_number("data.row_limit", self.row_limit, 0)
        _check_number("data.num_workers", self.num_workers, 0)
        sources = {f.name: f for f in dataclasses.fields(self)}["text_source"].metadata["choices"]
        if self.text_source not in sources:
            raise ConfigError(f"data.text_source must be one of {list(sources)}, got {self.text_source!r}")
        r = self.split_ratios
        if len(r) != 3 or any(x < 0 for x in r) or not math.isclose(sum(r), 1.0, abs_tol=1e-6):
            raise ConfigError(f"data.split_ratios must be three fractions >= 0 summing to 1, got {list(r)!r}")


@dataclass(frozen=True)
class PhantomConfig(_JsonConfig):
    """Knobs of the SYNTHETIC phantom generator (dataset ``phantom``). Defaults give the demo corpus."""

    _NAME: ClassVar[str] = "phantom"

    n_patients: int = _f(
        1600, "about 2,800 image-report pairs: enough for stable metrics, minutes on 2 cores"
    )
    normal_rate: float = _f(0.40, "fraction of normal studies (stationary rate of the follow-up chain)")
    max_studies: int = _f(4, "studies per patient are 1..max_studies (geometric-like, mean ~1.9)")
    report_noise: float = _f(
        0.05,
        "share of studies with a subtle finding whose report misses it (label noise, as in real reports)",
    )
    pretrain_fraction: float = _f(
        0.30, "fraction of patients reserved for the demo backbone's pretraining (split 'pretrain')"
    )
    subtle_fraction: float = _f(0.45, "probability that a new finding starts at its subtlest severity")
    persistence: float = _f(0.5, "0 = follow-ups independent of the prior study, 1 = never change state")

    def __post_init__(self) -> None:
        _check_number("phantom.n_patients", self.n_patients, 1)
        _check_number("phantom.max_studies", self.max_studies, 1)
        for name in ("normal_rate", "report_noise", "pretrain_fraction", "subtle_fraction", "persistence"):
            _check_number(f"phantom.{name}", getattr(self, name), 0.0, 1.0)


@dataclass(frozen=True)
class EvalConfig(_JsonConfig):
    """Notebooks 02-04: which backbones are embedded and compared, and how retrieval is scored."""

    _NAME: ClassVar[str] = "eval"

    backbones: tuple[str, ...] = _f(
        ("demo-random", "demo-general", "demo"),
        "backbones embedded by 02 and compared in 02/03 (paper: clip, biomedclip; demo: the chance reference, the "
        "general-domain stand-in (CLIP's role) and the domain stand-in (BiomedCLIP's role), all trained on the "
        "synthetic pool)",
        "paper abstract (baselines)",
    )
    finetune: str = _f(
        "demo",
        "the backbone whose embeddings the projector is trained on (paper: biomedclip); the 'before' space of 04",
        "paper abstract",
    )
    also_finetune: tuple[str, ...] = _f(
        (),
        "further backbones that get the same head, loss and schedule in 03 (the paper fine-tunes both of its "
        "backbones; paper: [clip], demo: [demo-general]); their '<name>+multitask' rows join 03's comparison and paired tests, while the "
        "curves, ablation and 04's maps stay on eval.finetune",
        "paper abstract",
    )
    precision: str = _f(
        "fp32",
        "weights precision (extraction runs under fp16 autocast on CUDA anyway)",
        choices=("fp32", "fp16", "bf16"),
    )
    batch_size: int = _f(
        128, "images per forward pass during extraction (CPU: amortises the per-batch overhead; 256 on a GPU)"
    )
    ks: tuple[int, ...] = _f((1, 5, 10), "cut-offs K of Recall@K, Precision@K and mAP@K")
    n_boot: int = _f(200, "patient-bootstrap replicates for the 95 % CIs (0 = none; 1000 for a paper table)")
    split: str = _f("test", "split of the tables, maps and galleries", choices=("train", "val", "test"))

    def __post_init__(self) -> None:
        if not self.backbones:
            raise ConfigError("eval.backbones must name at least one backbone")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"eval.ks must be a non-empty list of integers >= 1, got {list(self.ks)!r}")
        _check_number("eval.batch_size", self.batch_size, 1)
        _check_number("eval.n_boot", self.n_boot, 0)
        for name in self.also_finetune:
            if name == self.finetune or name not in self.backbones:
                raise ConfigError(
                    f"eval.also_finetune lists {name!r}: each entry must be one of eval.backbones "
                    f"{list(self.backbones)} other than eval.finetune ({self.finetune!r}); add it to eval.backbones "
                    "or drop it from eval.also_finetune (e.g. --param eval.also_finetune=[] ; the demo profile "
                    "sets [demo-general])"
                )
        if len(set(self.also_finetune)) != len(self.also_finetune):
            raise ConfigError(f"eval.also_finetune lists a backbone twice: {list(self.also_finetune)}")


@dataclass(frozen=True)
class DemoBackboneConfig(_JsonConfig):
    """The demo profile's stand-in backbone: CLIP-loss pretraining on the phantom's reserved pool."""

    _NAME: ClassVar[str] = "demo_backbone"

    epochs: int = _f(15, "CLIP-loss pretraining epochs on the synthetic pool (about a minute on 2 cores)")
    batch_size: int = _f(64, "pairs per pretraining step")
    lr: float = _f(0.002, "AdamW learning rate of the pretraining")

    def __post_init__(self) -> None:
        _check_number("demo_backbone.epochs", self.epochs, 1)
        _check_number("demo_backbone.batch_size", self.batch_size, 2)
        _check_number("demo_backbone.lr", self.lr, 0.0, lo_open=True)


# --------------------------------------------------------------------------------------------------------
# projector, loss, training (notebook 03)
# --------------------------------------------------------------------------------------------------------
MODALITIES: tuple[str, ...] = ("image", "text")
_CLS_ON: tuple[str, ...] = ("both", "image", "text")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ProjectorConfig(_JsonConfig):
    """Shape of the projector head. Each field: ``_f(default, why, source)`` (source "our choice" unless given);
    ``ProjectorConfig.describe()`` lists them."""

    _NAME: ClassVar[str] = "projector"

    in_dim: int = _f(
        512,
        "the backbone's embedding dim (BiomedCLIP and CLIP ViT-B/16: 512); must match the cached embeddings",
        "BiomedCLIP card",
    )
    out_dim: int = _f(
        512, "same as the input, so the residual head starts as the identity map (pretrained space)"
    )
    hidden_dim: int = _f(
        512, "'lightweight' head: ~0.26 M parameters per 512-wide layer, tiny next to the backbone"
    )
    depth: int = _f(
        2, "number of hidden layers: enough non-linearity to regroup the space by label; 0 = one Linear"
    )
    dropout: float = _f(
        0.1, "mild regularisation: the head sees a few thousand cached pairs and overfits easily"
    )
    residual: bool = _f(
        True,
        "output = input projection + MLP(x) with the MLP's last Linear zero-initialised: step 0 is exactly the "
        "pretrained space, so training learns a correction and never starts by destroying image-report alignment",
    )
    layernorm: bool = _f(
        True,
        "LayerNorm in each hidden block: insensitive to the tiny (~1/sqrt(512)) unit-norm input coordinates",
    )
    shared: bool = _f(
        True,
        "one projector for both modalities: the abstract speaks of 'a lightweight MLP projector', and sharing keeps "
        "image and text in the same coordinates; False = separate image and text heads",
        "paper abstract + our choice",
    )
    cls_on: str = _f(
        "both",
        "where the normal/abnormal classifier sits ('both' | 'image' | 'text'): the label belongs to the study, "
        "i.e. to the image-report pair, so both projections are asked to carry it",
        choices=_CLS_ON,
    )
    normalize_input: bool = _f(
        True,
        "L2-normalise the backbone embedding first: backbone retrieval is cosine and raw open_clip feature norms "
        "differ by backbone; makes step 0 exactly normalize(x)",
    )

    def __post_init__(self) -> None:
        _check_int("ProjectorConfig.in_dim", self.in_dim, 1)
        _check_int("ProjectorConfig.out_dim", self.out_dim, 1)
        _check_int("ProjectorConfig.hidden_dim", self.hidden_dim, 1)
        _check_int("ProjectorConfig.depth", self.depth, 0)
        if not (isinstance(self.dropout, int | float) and 0.0 <= float(self.dropout) < 1.0):
            raise ConfigError(f"ProjectorConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("residual", "layernorm", "shared", "normalize_input"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ProjectorConfig.{name} must be true/false, got {getattr(self, name)!r}")
        if self.cls_on not in _CLS_ON:
            raise ConfigError(f"ProjectorConfig.cls_on must be one of {_CLS_ON}, got {self.cls_on!r}")

    @property
    def cls_modalities(self) -> tuple[str, ...]:
        """The modalities that get a classification logit: ``("image", "text")``, ``("image",)``, …"""
        return MODALITIES if self.cls_on == "both" else (self.cls_on,)


@dataclass(frozen=True)
class LossConfig(_JsonConfig):
    """Weights and temperatures of the composite loss. Each field: ``_f(default, why, source)``."""

    _NAME = "loss"

    w_bce: float = _f(
        1.0, "equal weights: the abstract gives none, and all three terms are O(1) at init", "our choice"
    )
    w_supcon: float = _f(1.0, "equal weights (see w_bce); 0 switches the term off exactly (ablations)")
    w_clip: float = _f(1.0, "equal weights (see w_bce); keeps the image-report alignment the retrieval needs")
    supcon_temperature: float = _f(
        0.07, "Khosla et al. 2020's value, also CLIP's initial temperature: a common scale for both contrasts"
    )
    supcon_positives: str = _f(
        "label",
        "which pairs SupCon pulls together: 'label' = same normal/abnormal label (the paper's two classes, which "
        "can collapse each class to a point); 'findings' = the same finding set (manifest tags), finer positives "
        "that keep apart studies the binary label lumps together",
        choices=("label", "findings"),
    )
    clip_logit_scale_init: float | str | None = _f(
        None,
        "initial CLIP logit scale as a multiplier (exp domain): None = 1/0.07, CLIP's own init; 'backbone' = the "
        "backbone's own exp(logit_scale), recorded with its embeddings, so the head inherits its sharpness (both "
        "profiles; 1/0.07 when the backbone records none); or a number",
    )
    learnable_temperature: bool = _f(
        True, "learn log(logit scale) like CLIP does (no weight decay, clamped at max_logit_scale)"
    )
    max_logit_scale: float = _f(100.0, "CLIP's clamp: prevents the logit scale from blowing up", "CLIP paper")
    pos_weight: float | str | None = _f(
        None,
        "BCE positive-class weight: None (plain BCE; the demo data are roughly balanced), a float, or "
        "'balanced' (= n_normal / n_abnormal of the training labels) for skewed datasets",
    )

    def __post_init__(self) -> None:
        for name in ("w_bce", "w_supcon", "w_clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"LossConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.w_bce == 0 and self.w_supcon == 0 and self.w_clip == 0:
            raise ConfigError("LossConfig: all three weights are 0 — nothing to train; set at least one > 0")
        if self.supcon_positives not in ("label", "findings"):
            raise ConfigError(
                f"LossConfig.supcon_positives must be 'label' or 'findings', got {self.supcon_positives!r}"
            )
        if not (isinstance(self.supcon_temperature, int | float) and self.supcon_temperature > 0):
            raise ConfigError(f"LossConfig.supcon_temperature must be > 0, got {self.supcon_temperature!r}")
        if not (isinstance(self.max_logit_scale, int | float) and self.max_logit_scale > 0):
            raise ConfigError(f"LossConfig.max_logit_scale must be > 0, got {self.max_logit_scale!r}")
        s = self.clip_logit_scale_init
        if (
            s is not None
            and s != "backbone"
            and not (isinstance(s, int | float) and 0 < s <= self.max_logit_scale)
        ):
            raise ConfigError(
                f"LossConfig.clip_logit_scale_init must be 'backbone', None or in (0, {self.max_logit_scale}] "
                f"(a multiplier, not its log), got {s!r}"
            )
        if not isinstance(self.learnable_temperature, bool):
            raise ConfigError(
                f"LossConfig.learnable_temperature must be true/false, got {self.learnable_temperature!r}"
            )
        pw = self.pos_weight
        if not (
            pw is None
            or pw == "balanced"
            or (isinstance(pw, int | float) and not isinstance(pw, bool) and pw > 0)
        ):
            raise ConfigError(f"LossConfig.pos_weight must be None, 'balanced' or a float > 0, got {pw!r}")

    def active_terms(self) -> tuple[str, ...]:
        """The terms with a non-zero weight, in the fixed order ``("bce", "supcon", "clip")``."""
        return tuple(t for t in LOSS_TERMS if getattr(self, f"w_{t}") != 0)


DEFAULT_MONITOR: tuple[str, ...] = ("i2t_R@5", "t2i_R@5", "i2t_mAP@10_label", "t2i_mAP@10_label")


@dataclass(frozen=True)
class TrainConfig(_JsonConfig):
    """Optimisation and early stopping. Each field: ``_f(default, why, source)``."""

    _NAME = "train"

    lr: float = _f(1e-3, "AdamW's usual rate for a small head on frozen features; warmup makes it safe")
    weight_decay: float = _f(1e-4, "light L2 on weight matrices only (biases, LayerNorm, logit scale exempt)")
    epochs: int = _f(50, "upper bound; early stopping usually ends sooner on a few thousand pairs")
    batch_size: int = _f(
        256, "SupCon and CLIP need many in-batch negatives; 256 pairs = 512 SupCon rows, cheap on a CPU"
    )
    warmup_epochs: float = _f(
        2,
        "linear warmup from ~0, then cosine decay to 0 (per step): no large first steps off the identity map",
    )
    patience: int | None = _f(
        8, "epochs without monitor improvement before stopping; None = never stop early"
    )
    min_delta: float = _f(0.0, "the monitor must beat the best by more than this to count as an improvement")
    monitor: tuple[str, ...] = _f(
        DEFAULT_MONITOR,
        "validation metric keys averaged into the early-stopping monitor: balances instance alignment "
        "(R@5, CLIP's goal) and label-aware retrieval (mAP@10_label, BCE/SupCon's goal)",
    )
    eval_ks: tuple[int, ...] = _f(
        (1, 5, 10), "cut-offs for the validation retrieval metrics (R@k, P@k, mAP@k)"
    )
    seed: int = _f(0, "one seed for init, dropout and batch order: reruns are bit-identical on CPU")
    device: str = _f("cpu", "the demo runs on CPU; 'cuda' or 'auto' on a GPU server")
    grad_clip: float | None = _f(
        1.0, "clip the global grad norm: guards against rare spikes from the contrasts"
    )
    drop_last: bool = _f(
        True, "drop the last incomplete batch: a tiny batch has almost no negatives for SupCon/CLIP"
    )
    threads: int = _f(
        1,
        "torch threads of a training on CPU: 1 = the same bits on any machine and whether trainings run side by "
        "side or not (run.workers); 0 = leave torch's setting",
    )

    def __post_init__(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < 0 or (v == 0 and not allow_zero):
                raise ConfigError(
                    f"TrainConfig.{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {v!r}"
                )

        positive("lr")
        positive("weight_decay", allow_zero=True)
        positive("warmup_epochs", allow_zero=True)
        positive("min_delta", allow_zero=True)
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 1, got {v!r}")
        if self.patience is not None and (
            isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1
        ):
            raise ConfigError(f"TrainConfig.patience must be None or an integer >= 1, got {self.patience!r}")
        if isinstance(self.monitor, str):
            object.__setattr__(self, "monitor", (self.monitor,))
        if isinstance(self.monitor, list):
            object.__setattr__(self, "monitor", tuple(self.monitor))
        if not self.monitor or not all(isinstance(k, str) and k for k in self.monitor):
            raise ConfigError(
                f"TrainConfig.monitor must be a non-empty list of metric keys, got {self.monitor!r}"
            )
        if isinstance(self.eval_ks, list):
            object.__setattr__(self, "eval_ks", tuple(self.eval_ks))
        if not self.eval_ks or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in self.eval_ks
        ):
            raise ConfigError(
                f"TrainConfig.eval_ks must be a non-empty list of integers >= 1, got {self.eval_ks!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        if self.grad_clip is not None:
            positive("grad_clip")
        if not isinstance(self.drop_last, bool):
            raise ConfigError(f"TrainConfig.drop_last must be true/false, got {self.drop_last!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"TrainConfig.device must be a string such as 'cpu', got {self.device!r}")
        _check_int("TrainConfig.threads", self.threads, 0)

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimiser steps in one epoch over ``n_train`` pairs."""
        return n_train // self.batch_size if self.drop_last else -(-n_train // self.batch_size)


# --------------------------------------------------------------------------------------------------------
# ablation (03) and visualisation (04)
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AblationConfig(_JsonConfig):
    """Notebook 03's loss ablation: CLIP only, CLIP + BCE, CLIP + SupCon, all three, over seeds."""

    _NAME: ClassVar[str] = "ablation"

    enabled: bool = _f(True, "run the loss ablation (4 configurations x len(seeds) trainings)")
    seeds: tuple[int, ...] = _f((0, 1, 2), "seeds of the ablation: mean +- std over them (paper profile: 5)")

    def __post_init__(self) -> None:
        if self.enabled and not self.seeds:
            raise ConfigError("ablation.seeds must list at least one seed when ablation.enabled is true")


@dataclass(frozen=True)
class VizConfig(_JsonConfig):
    """Notebook 04: the 2-D maps, the cluster scores and the retrieval galleries."""

    _NAME: ClassVar[str] = "viz"

    tuned: str = _f("", "the 'after' space; '' = '<eval.finetune>+multitask' (registered by notebook 03)")
    max_points: int = _f(800, "points per modality in the maps (stratified by label, seeded; all when fewer)")
    methods: tuple[str, ...] = _f(
        ("tsne", "pca"),
        "2-D methods: t-SNE (the paper's view) and PCA (linear, a second opinion); UMAP on request "
        "([tsne, umap, pca]): its first fit in a process spends ~10-15 s compiling numba code",
        "paper abstract (t-SNE)",
        choices=("tsne", "umap", "pca"),
    )
    perplexity: float = _f(30.0, "t-SNE perplexity (sklearn's default)")
    n_neighbors: int = _f(15, "UMAP neighbourhood size (umap-learn's default)")
    knn_k: int = _f(10, "neighbours of the k-NN label accuracy")
    n_gallery_per_label: int = _f(2, "gallery queries per label (normal, abnormal); rule: first by image id")
    gallery_k: int = _f(5, "results shown per gallery query")

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("viz.methods must list at least one of 'tsne', 'umap', 'pca'")
        _check_number("viz.max_points", self.max_points, 2)
        _check_number("viz.perplexity", self.perplexity, 0.0, lo_open=True)
        for name in ("n_neighbors", "knn_k", "gallery_k"):
            _check_number(f"viz.{name}", getattr(self, name), 1)
        _check_number("viz.n_gallery_per_label", self.n_gallery_per_label, 0)


# --------------------------------------------------------------------------------------------------------
# All sections together, profiles and overrides
# --------------------------------------------------------------------------------------------------------
#: YAML section -> config class, in the order of the data flow.
SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "phantom": PhantomConfig,
    "eval": EvalConfig,
    "demo_backbone": DemoBackboneConfig,
    "projector": ProjectorConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "ablation": AblationConfig,
    "viz": VizConfig,
}

#: (section, field) -> what sets it. Such fields are never given in a profile or an override.
DERIVED: dict[tuple[str, str], str] = {
    ("projector", "in_dim"): "the backbone's embedding dim",
    ("projector", "out_dim"): "the backbone's embedding dim",
    ("train", "seed"): "run.seed",
    ("train", "device"): "run.device",
    ("train", "eval_ks"): "eval.ks",
}


@dataclass(frozen=True)
class Settings:
    """Every section of one run: ``settings.loss.w_bce``, ``settings.data.dataset``, ... (see the module doc)."""

    profile: str
    run: RunConfig
    data: DataConfig
    phantom: PhantomConfig
    eval: EvalConfig
    demo_backbone: DemoBackboneConfig
    projector: ProjectorConfig
    loss: LossConfig
    train: TrainConfig
    ablation: AblationConfig
    viz: VizConfig

    @property
    def synthetic(self) -> bool:
        """True for the phantom corpus: every figure and table then says SYNTHETIC."""
        return self.data.dataset == "phantom"

    @property
    def tuned_name(self) -> str:
        """The registered name of the fine-tuned space: ``viz.tuned`` or ``<eval.finetune>+multitask``."""
        return self.viz.tuned or f"{self.eval.finetune}+multitask"

    def projector_for(self, in_dim: int) -> ProjectorConfig:
        """The projector config for backbone embeddings of width ``in_dim`` (output width the same)."""
        return self.projector.replace(in_dim=int(in_dim), out_dim=int(in_dim))

    def sections(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SECTIONS}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: cfg.to_dict() for name, cfg in self.sections().items()}


def merge_overrides(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``base`` with ``extra`` laid over it, one level deep (``{section: {field: value}}``)."""
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"overrides: {section!r} must map field names to values, e.g. {{{section!r}: {{'field': value}}}}"
                f", got {values!r}"
            )
        out.setdefault(section, {}).update(values)
    return out


def build_settings(values: Mapping[str, Any], profile: str = "demo", source: str = "settings") -> Settings:
    """Check ``{section: {field: value}}`` against the declarations and build the :class:`Settings`.

    Every problem is reported at once, each naming ``source``, the section and field, the value and what is
    accepted: an unknown section or field (with the closest name), a derived field, a wrong type, a text
    value outside its choices, a number out of range.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {values!r}")
    problems: list[str] = []
    for section in values:
        if section not in SECTIONS:
            close = difflib.get_close_matches(str(section), list(SECTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown section {section!r}{hint}; sections: {', '.join(SECTIONS)}")
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        given = values.get(section) or {}
        if not isinstance(given, Mapping):
            problems.append(f"section {section!r} must map field names to values, got {given!r}")
            given = {}
        for name in given:
            if (section, name) in DERIVED:
                problems.append(
                    f"{section}.{name} is derived from {DERIVED[(section, name)]}: set that instead"
                )
        given = {k: v for k, v in given.items() if (section, k) not in DERIVED}
        if section == "train":
            run, ev = built.get("run") or RunConfig(), built.get("eval") or EvalConfig()
            given = {**given, "seed": run.seed, "device": run.device, "eval_ks": list(ev.ks)}
        try:
            built[section] = cls.from_dict(given)
        except ConfigError as exc:
            problems.append(str(exc))
            built[section] = None
    if built.get("train") is not None:
        # the early-stopping monitor reads validation metrics at the cut-offs eval.ks computes
        ks = set(built["train"].eval_ks)
        for key in built["train"].monitor:
            m = re.search(r"@(\d+)", key)
            if m and int(m.group(1)) not in ks:
                problems.append(
                    f"train.monitor key {key!r} needs K={m.group(1)} in eval.ks (now {sorted(ks)}): add it to "
                    "eval.ks or monitor another key"
                )
    if problems:
        raise ConfigError(f"{source}: " + f"\n{source}: ".join(problems))
    return Settings(profile=profile, **built)


def _profiles_dir() -> Path:
    from cxrlib.paths import profiles_dir

    return profiles_dir()


def read_profile(name: str, folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """The raw nested mapping of ``profiles/<name>.yaml`` (only what differs from the defaults)."""
    from cxrlib.profiles import load_profile

    return load_profile(name, folder or _profiles_dir())


def load_settings(
    profile: str = "demo", overrides: Mapping[str, Any] | None = None, folder: Path | None = None
) -> Settings:
    """Defaults, then ``profiles/<profile>.yaml``, then ``overrides``, checked: the one call notebooks make."""
    values = read_profile(profile, folder)
    source = f"profiles/{profile}.yaml"
    if overrides:
        values = merge_overrides(values, overrides)
        source += " + overrides"
    return build_settings(values, profile=profile, source=source)


def diff_from_defaults(settings: Settings) -> dict[str, dict[str, Any]]:
    """The fields of ``settings`` that differ from the declared defaults (derived fields left out)."""
    defaults = build_settings({}, profile=settings.profile)
    out: dict[str, dict[str, Any]] = {}
    for name, cfg in settings.sections().items():
        base = getattr(defaults, name).to_dict()
        changed = {k: v for k, v in cfg.to_dict().items() if v != base[k] and (name, k) not in DERIVED}
        if changed:
            out[name] = changed
    return out
