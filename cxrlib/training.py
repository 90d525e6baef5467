"""Training the projector on cached backbone embeddings, early stopping, and safetensors checkpoints.

No backbone forward happens here: the inputs are the image and text embeddings that notebook 02 cached
(:class:`EmbeddingSet`). All tensors live on the device; each epoch draws one seeded permutation
(``torch.Generator``) and batches are slices of it — no per-sample ``DataLoader`` (see
``benchmarks/bench_training.py`` for what that saves). Optimiser: AdamW, weight decay on weight matrices only
(biases, LayerNorm and the CLIP logit scale are exempt, as in open_clip); learning rate: linear warmup, then
cosine decay to 0, stepped per batch. After every epoch the validation set is projected and scored with
:func:`cxrlib.metrics.retrieval_metrics`; the monitor is the mean of ``TrainConfig.monitor``'s keys, the best
state is kept and restored at the end, and training stops after ``patience`` epochs without improvement.

Epoch 0 of the history is the untrained projector (the identity map at init with the default residual head),
so ``best_epoch == 0`` means training never beat the pretrained space and the returned model is that map.

On CPU a run is bit-identical for the same seed, data and thread count: ``TrainConfig.threads`` (1 by default, so
the bits do not depend on the machine's cores nor on :mod:`cxrlib.parallel` running trainings side by side).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrlib.cache import atomic_path, atomic_write, file_lock, sha256_data, sha256_file, write_json_atomic
from cxrlib.config import LOSS_TERMS, ConfigError, LossConfig, ProjectorConfig, TrainConfig
from cxrlib.losses import CompositeLoss
from cxrlib.projector import MultiTaskProjector
from cxrlib.runtime import resolve_device, seed_everything, torch_threads

__all__ = [
    "EmbeddingSet",
    "TrainResult",
    "CheckpointError",
    "CheckpointInfo",
    "train_projector",
    "run_fingerprint",
    "train_one_epoch",
    "evaluate",
    "build_optimizer",
    "build_scheduler",
    "save_checkpoint",
    "load_checkpoint",
    "WEIGHTS_FILE",
    "CONFIG_FILE",
]

WEIGHTS_FILE = "projector.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "cxrlib-projector-checkpoint/1"


@dataclass
class EmbeddingSet:
    """Cached, paired backbone embeddings of one split.

    ``image``, ``text``: ``(N, D)`` float32 (row i of both is one image–report pair); ``labels``: ``(N,)``
    int (0 normal, 1 abnormal); ``patient_ids``: optional ``(N,)``. ``name`` appears in error messages.
    ``supcon_labels``: optional ``(N,)`` int classes for SupCon when ``LossConfig.supcon_positives='findings'``
    (one class per distinct finding set; :func:`cxrlib.evaluation.embedding_sets` fills it).
    Arrays are converted on construction; non-finite rows raise an error naming them.
    """

    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray | None = None
    name: str = "embeddings"
    supcon_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image = np.ascontiguousarray(self.image, dtype=np.float32)
        self.text = np.ascontiguousarray(self.text, dtype=np.float32)
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise ValueError(f"{self.name}: labels must be 1-D (N,), got shape {labels.shape}")
        if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            bad = np.flatnonzero(~(np.isfinite(labels) & (labels == np.round(labels))))
            raise ValueError(f"{self.name}: labels must be integers; row(s) {bad[:5].tolist()} are not")
        if labels.dtype.kind not in "biuf":
            raise ValueError(f"{self.name}: labels must be integers, got dtype {labels.dtype}")
        self.labels = labels.astype(np.int64)
        for key in ("image", "text"):
            a = getattr(self, key)
            if a.ndim != 2:
                raise ValueError(f"{self.name}: {key} must be (N, D), got shape {a.shape}")
            if a.shape[0] != self.labels.shape[0]:
                raise ValueError(
                    f"{self.name}: {key} has {a.shape[0]} rows but labels has {self.labels.shape[0]}"
                )
            bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
            if bad.size:
                raise ValueError(
                    f"{self.name}: {bad.size} {key} embedding row(s) hold NaN/inf, e.g. rows {bad[:5].tolist()}; "
                    "re-extract the embeddings (notebook 02) or drop those rows from the manifest"
                )
        if self.image.shape[1] != self.text.shape[1]:
            raise ValueError(f"{self.name}: image dim {self.image.shape[1]} != text dim {self.text.shape[1]}")
        if self.supcon_labels is not None:
            sl = np.asarray(self.supcon_labels)
            if sl.shape != self.labels.shape or sl.dtype.kind not in "biu":
                raise ValueError(
                    f"{self.name}: supcon_labels must be integers of shape {self.labels.shape}, got "
                    f"{sl.dtype} {sl.shape}"
                )
            self.supcon_labels = sl.astype(np.int64)
        if self.patient_ids is not None:
            self.patient_ids = np.asarray(self.patient_ids)
            if self.patient_ids.shape != self.labels.shape:
                raise ValueError(
                    f"{self.name}: patient_ids has shape {self.patient_ids.shape}, labels {self.labels.shape}"
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        return int(self.image.shape[1])


@dataclass
class TrainResult:
    """What :func:`train_projector` returns.

    ``model``: the best projector (by monitor), on the training device, in eval mode. ``history``: one row per
    epoch (0 = untrained): ``epoch, lr, train_bce, train_supcon, train_clip, train_total, logit_scale,
    val_bce, val_supcon, val_clip, val_total``, every validation metric, ``monitor``. ``logit_scale`` and
    ``pos_weight``: the CLIP multiplier at the best epoch and the resolved BCE weight (None = unweighted).
    ``fingerprint``: :func:`run_fingerprint` of the run's inputs (None for a result not made by
    :func:`train_projector`).
    """

    model: MultiTaskProjector
    history: pd.DataFrame
    best_epoch: int
    best_monitor: float
    stopped_early: bool
    seconds: float
    logit_scale: float
    pos_weight: float | None
    fingerprint: str | None = None


def run_fingerprint(
    train: EmbeddingSet,
    val: EmbeddingSet,
    projector_cfg: ProjectorConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
) -> str:
    """sha256 of everything a :func:`train_projector` run depends on: the train and val arrays (image, text,
    labels: dtypes, shapes, bytes) and the three configs (seed and device included).

    Two runs with the same fingerprint compute the same thing (bit for bit on CPU), so one can stand in for the
    other: :func:`cxrlib.evaluation.run_loss_ablation` reuses a given result instead of training it again.
    """
    parts: list[Any] = []
    for data in (train, val):
        arrays = [data.image, data.text, data.labels]
        if loss_cfg.supcon_positives == "findings" and data.supcon_labels is not None:
            arrays.append(
                data.supcon_labels
            )  # only where it changes the run: label-SupCon runs keep their bits
        for a in arrays:
            a = np.ascontiguousarray(a)
            parts += [f"{a.dtype}{a.shape}".encode(), a]
    configs = {type(c).__name__: c.to_dict() for c in (projector_cfg, loss_cfg, train_cfg)}
    parts.append(json.dumps(configs, sort_keys=True, default=repr).encode())
    return sha256_data(*parts)


def build_optimizer(model: MultiTaskProjector, loss_fn: CompositeLoss, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the projector and the loss's learnable logit scale; no weight decay on 0-/1-d parameters.

    ``foreach=True`` (torch's multi-tensor update, the default only on CUDA): the same arithmetic per tensor
    as the one-tensor-at-a-time loop torch uses on CPU by default, so the weights are the same bits
    (``tests/test_training.py`` checks it), with one call per operation instead of one per parameter.
    """
    decay, no_decay = [], []
    for module in (model, loss_fn):
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step factor: ``(s+1)/W`` for the first ``W = warmup_epochs·steps_per_epoch`` steps, then cosine to 0
    at step ``epochs·steps_per_epoch``."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if total <= warmup:
            return 1.0
        progress = min((step - warmup) / (total - warmup), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: MultiTaskProjector,
    loss_fn: CompositeLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    image: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    drop_last: bool = True,
    grad_clip: float | None = None,
    supcon_labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """One pass over device tensors ``image``/``text`` ``(N, D)`` and ``labels`` ``(N,)`` (``supcon_labels``:
    optional ``(N,)`` SupCon classes) in a seeded random order, batches by slicing one permutation. Returns the epoch means ``{"bce", "supcon", "clip", "total"}``
    (NaN for inactive terms) and ``"lr"`` (the learning rate of the last step).

    Loss sums are accumulated on the device and read once at the end (no per-step host sync).
    """
    n = image.shape[0]
    model.train()
    loss_fn.train()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(image.device)
    stop = n - n % batch_size if drop_last else n
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sums = torch.zeros(len(LOSS_TERMS) + 1, dtype=torch.float64, device=image.device)
    n_steps = 0
    lr = float("nan")
    for start in range(0, stop, batch_size):
        idx = perm[start : start + batch_size]
        outputs = model(image[idx], text[idx])
        losses = loss_fn(outputs, labels[idx], None if supcon_labels is None else supcon_labels[idx])
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if loss_fn.cfg.learnable_temperature:
            loss_fn.clamp_logit_scale_()
        sums += torch.stack([losses[k].detach() for k in (*LOSS_TERMS, "total")]).double()
        n_steps += 1
    means = (sums / max(n_steps, 1)).tolist()
    out = dict(zip((*LOSS_TERMS, "total"), means, strict=True))
    out["lr"] = lr
    return out


@torch.no_grad()
def evaluate(
    model: MultiTaskProjector,
    loss_fn: CompositeLoss,
    image: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    ks: tuple[int, ...],
    batch_size: int,
    supcon_labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Validation: losses (``val_*``, batch-size-weighted means over consecutive batches, eval mode) and
    :func:`cxrlib.metrics.retrieval_metrics` of the projected ``(N, out_dim)`` embeddings."""
    from cxrlib.metrics import retrieval_metrics

    was_training = model.training
    model.eval()
    loss_fn.eval()
    n = image.shape[0]
    sums = torch.zeros(len(LOSS_TERMS) + 1, dtype=torch.float64, device=image.device)
    img_parts, txt_parts = [], []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        outputs = model(image[sl], text[sl])
        losses = loss_fn(outputs, labels[sl], None if supcon_labels is None else supcon_labels[sl])
        sums += torch.stack([losses[k] for k in (*LOSS_TERMS, "total")]).double() * outputs["image"].shape[0]
        img_parts.append(outputs["image"])
        txt_parts.append(outputs["text"])
    model.train(was_training)
    out = {f"val_{k}": v / n for k, v in zip((*LOSS_TERMS, "total"), sums.tolist(), strict=True)}
    img = torch.cat(img_parts).float().cpu().numpy()
    txt = torch.cat(txt_parts).float().cpu().numpy()
    metrics = retrieval_metrics(img, txt, labels=labels.cpu().numpy(), ks=tuple(ks))
    out.update({k: float(v) for k, v in metrics.items()})
    return out


def _monitor_value(metrics: dict[str, float], keys: tuple[str, ...]) -> float:
    missing = [k for k in keys if k not in metrics]
    if missing:
        available = sorted(k for k in metrics if not k.startswith("val_"))
        raise KeyError(
            f"TrainConfig.monitor key(s) {missing} are not validation metrics; available: {available}"
        )
    return float(np.mean([metrics[k] for k in keys]))


def _history_row(
    epoch: int, lr: float, train_losses: dict[str, float], logit_scale: float, val: dict[str, float]
) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": epoch, "lr": lr}
    row.update({f"train_{k}": train_losses[k] for k in (*LOSS_TERMS, "total")})
    row["logit_scale"] = logit_scale
    row.update(val)
    return row


def _check_set(data: EmbeddingSet, what: str, in_dim: int, need_binary: bool) -> None:
    if not isinstance(data, EmbeddingSet):
        raise TypeError(f"{what} must be an EmbeddingSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{what} set ({data.name}) is empty")
    if data.dim != in_dim:
        raise ValueError(
            f"{what} set ({data.name}) has embedding dim {data.dim} but ProjectorConfig.in_dim={in_dim}; "
            "set in_dim to the backbone's embedding dim"
        )
    if need_binary:
        bad = np.flatnonzero(~np.isin(data.labels, (0, 1)))
        if bad.size:
            raise ValueError(
                f"{what} set ({data.name}): BCE needs 0/1 labels, but {bad.size} row(s) are not, e.g. rows "
                f"{bad[:5].tolist()} = {data.labels[bad[:5]].tolist()}; fix the labels or set LossConfig.w_bce=0"
            )


def train_projector(
    train: EmbeddingSet,
    val: EmbeddingSet,
    projector_cfg: ProjectorConfig | None = None,
    loss_cfg: LossConfig | None = None,
    train_cfg: TrainConfig | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a :class:`MultiTaskProjector` with :class:`CompositeLoss` on cached embeddings.

    ``train``/``val``: paired embeddings ``(N, in_dim)`` with labels. ``None`` configs mean the defaults.
    Seeds everything with ``train_cfg.seed`` (:func:`cxrlib.runtime.seed_everything`) and, on CPU, runs at
    ``train_cfg.threads`` torch threads (restored after). Returns the best model (by the validation monitor,
    restored at the end) and the per-epoch history (module docstring).
    """
    projector_cfg = projector_cfg if projector_cfg is not None else ProjectorConfig()
    loss_cfg = loss_cfg if loss_cfg is not None else LossConfig()
    train_cfg = train_cfg if train_cfg is not None else TrainConfig()
    need_binary = loss_cfg.w_bce != 0
    _check_set(train, "train", projector_cfg.in_dim, need_binary)
    _check_set(val, "val", projector_cfg.in_dim, need_binary)
    by_findings = loss_cfg.supcon_positives == "findings" and loss_cfg.w_supcon != 0
    for data, what in ((train, "train"), (val, "val")):
        if by_findings and data.supcon_labels is None:
            raise ValueError(
                f"LossConfig.supcon_positives='findings' needs finding classes, but the {what} set ({data.name}) "
                "has no supcon_labels; build the sets with cxrlib.evaluation.embedding_sets (it reads the "
                "manifest's tags) or set loss.supcon_positives=label"
            )
    steps = train_cfg.steps_per_epoch(len(train))
    if steps == 0:
        raise ValueError(
            f"train set ({train.name}) has {len(train)} pairs, fewer than batch_size={train_cfg.batch_size} "
            "with drop_last=True: no step would run; lower TrainConfig.batch_size or set drop_last=False"
        )

    device = resolve_device(train_cfg.device)
    with torch_threads(train_cfg.threads if device.type == "cpu" else 0):
        return _train(train, val, projector_cfg, loss_cfg, train_cfg, progress, device, by_findings, steps)


def _train(
    train: EmbeddingSet,
    val: EmbeddingSet,
    projector_cfg: ProjectorConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    progress: bool,
    device: torch.device,
    by_findings: bool,
    steps: int,
) -> TrainResult:
    t0 = time.perf_counter()
    seed_everything(train_cfg.seed)
    model = MultiTaskProjector(projector_cfg).to(device)
    loss_fn = CompositeLoss(loss_cfg, train_labels=train.labels).to(device)
    optimizer = build_optimizer(model, loss_fn, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg, steps)
    generator = torch.Generator(device=device)
    generator.manual_seed(train_cfg.seed)

    def to_dev(data: EmbeddingSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(data.image).to(device),
            torch.from_numpy(data.text).to(device),
            torch.from_numpy(data.labels).to(device),
        )

    tr, va = to_dev(train), to_dev(val)
    sc_tr, sc_va = (
        (torch.from_numpy(train.supcon_labels).to(device), torch.from_numpy(val.supcon_labels).to(device))
        if by_findings
        else (None, None)
    )

    def val_row() -> dict[str, float]:
        m = evaluate(
            model, loss_fn, *va, ks=train_cfg.eval_ks, batch_size=train_cfg.batch_size, supcon_labels=sc_va
        )
        m["monitor"] = _monitor_value(m, train_cfg.monitor)
        return m

    def state() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    nan = float("nan")
    first = val_row()
    no_train = {k: nan for k in (*LOSS_TERMS, "total")}
    rows: list[dict[str, Any]] = [
        _history_row(0, nan, no_train, float(loss_fn.logit_scale().detach()), first)
    ]
    best_epoch, best_monitor, best_state = 0, first["monitor"], state()
    best_scale = float(loss_fn.logit_scale().detach())
    if not math.isfinite(best_monitor):
        best_monitor = -math.inf
    since_best = 0
    stopped_early = False
    bar = tqdm(range(1, train_cfg.epochs + 1), desc="train projector", unit="epoch", disable=not progress)
    for epoch in bar:
        tl = train_one_epoch(
            model,
            loss_fn,
            optimizer,
            scheduler,
            *tr,
            batch_size=train_cfg.batch_size,
            generator=generator,
            drop_last=train_cfg.drop_last,
            grad_clip=train_cfg.grad_clip,
            supcon_labels=sc_tr,
        )
        if not math.isfinite(tl["total"]):
            raise FloatingPointError(
                f"epoch {epoch}: the training loss is {tl['total']} (bce={tl['bce']}, supcon={tl['supcon']}, "
                f"clip={tl['clip']}); lower TrainConfig.lr or keep grad_clip on"
            )
        m = val_row()
        scale = float(loss_fn.logit_scale().detach())
        rows.append(_history_row(epoch, tl["lr"], tl, scale, m))
        if math.isfinite(m["monitor"]) and m["monitor"] > best_monitor + train_cfg.min_delta:
            best_epoch, best_monitor, best_state, best_scale = epoch, m["monitor"], state(), scale
            since_best = 0
        else:
            since_best += 1
        bar.set_postfix(
            loss=f"{tl['total']:.3f}", monitor=f"{m['monitor']:.4f}", best=f"{best_monitor:.4f}@{best_epoch}"
        )
        if train_cfg.patience is not None and since_best >= train_cfg.patience:
            stopped_early = epoch < train_cfg.epochs
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        history=pd.DataFrame(rows),
        best_epoch=best_epoch,
        best_monitor=float(best_monitor),
        stopped_early=stopped_early,
        seconds=time.perf_counter() - t0,
        logit_scale=best_scale,
        pos_weight=loss_fn.pos_weight_value,
        fingerprint=run_fingerprint(train, val, projector_cfg, loss_cfg, train_cfg),
    )


# --------------------------------------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or does not match its config; the message says what and where."""


@dataclass
class CheckpointInfo:
    """The configs stored next to a projector's weights, and the rest of ``config.json`` in ``meta``."""

    projector: ProjectorConfig
    loss: LossConfig
    train: TrainConfig
    meta: dict[str, Any]


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def save_checkpoint(
    result_or_model: TrainResult | MultiTaskProjector,
    projector_cfg: ProjectorConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
) -> Path:
    """Write ``out_dir/projector.safetensors`` (the state dict) and ``out_dir/config.json`` (the three configs,
    best epoch/monitor, logit scale, torch/cxrlib versions, sha256 of the weights file); with a
    :class:`TrainResult`, also ``out_dir/history.csv``. Returns ``out_dir``.

    Each file is written atomically under a per-process temporary name (:mod:`cxrlib.cache`), the weights
    before the config that vouches for them, with the lock ``projector.safetensors.lock`` held so that two runs
    saving into one folder cannot mix their files.
    """
    from safetensors.torch import save_file

    result = result_or_model if isinstance(result_or_model, TrainResult) else None
    model = result.model if result is not None else result_or_model
    if not isinstance(model, MultiTaskProjector):
        raise TypeError(
            f"save_checkpoint needs a TrainResult or a MultiTaskProjector, got {type(model).__name__}"
        )
    if model.cfg != projector_cfg:
        raise ValueError(
            f"the model was built with {model.cfg} but projector_cfg is {projector_cfg}; pass the model's own config"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = out_dir / WEIGHTS_FILE
    with file_lock(weights):
        with atomic_path(weights) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            digest = sha256_file(tmp)
        _write_checkpoint_config(out_dir, digest, result, projector_cfg, loss_cfg, train_cfg)
    return out_dir


def _write_checkpoint_config(
    out_dir: Path,
    digest: str,
    result: TrainResult | None,
    projector_cfg: ProjectorConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
) -> None:
    import cxrlib

    config = {
        "format": CHECKPOINT_FORMAT,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": digest,
        "projector": projector_cfg.to_dict(),
        "loss": loss_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "best_epoch": None if result is None else int(result.best_epoch),
        "best_monitor": None if result is None else _finite_or_none(result.best_monitor),
        "logit_scale": None if result is None else _finite_or_none(result.logit_scale),
        "pos_weight": None if result is None else result.pos_weight,
        "torch_version": torch.__version__,
        "cxrlib_version": cxrlib.__version__,
    }
    write_json_atomic(out_dir / CONFIG_FILE, config, indent=2, allow_nan=False, newline=True)
    if result is not None:
        with atomic_write(out_dir / "history.csv", "w") as fh:
            result.history.to_csv(fh, index=False)


def load_checkpoint(out_dir: str | Path, device: str = "cpu") -> tuple[MultiTaskProjector, CheckpointInfo]:
    """Load a projector saved by :func:`save_checkpoint` — safetensors only, no pickle — in eval mode.

    Verifies the weights' sha256 against ``config.json`` and that every tensor's name and shape match the
    stored :class:`ProjectorConfig`; raises :class:`CheckpointError` naming the file, key or shape otherwise.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    cfg_path, weights = out_dir / CONFIG_FILE, out_dir / WEIGHTS_FILE
    for p in (cfg_path, weights):
        if not p.is_file():
            raise CheckpointError(
                f"checkpoint file {p} is missing; train and save the projector first (notebook 03, "
                "cxrlib.training.save_checkpoint)"
            )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); re-save the checkpoint") from e
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{cfg_path} is not a {CHECKPOINT_FORMAT} config (format={config.get('format')!r})"
        )
    for key in ("projector", "loss", "train", "weights_sha256"):
        if key not in config:
            raise CheckpointError(f"{cfg_path} lacks the {key!r} entry; re-save the checkpoint")
    try:
        info = CheckpointInfo(
            projector=ProjectorConfig.from_dict(config["projector"]),
            loss=LossConfig.from_dict(config["loss"]),
            train=TrainConfig.from_dict(config["train"]),
            meta={k: v for k, v in config.items() if k not in ("projector", "loss", "train")},
        )
    except ConfigError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e
    digest = sha256_file(weights)
    if digest != config["weights_sha256"]:
        raise CheckpointError(
            f"{weights} does not match {cfg_path}: sha256 {digest} != recorded {config['weights_sha256']} "
            f"({weights.stat().st_size} bytes). The weights are truncated, damaged, modified or belong to another "
            "run; re-save the checkpoint (cxrlib.training.save_checkpoint) or re-train it "
            "(notebooks/03_multitask_finetuning.ipynb)."
        )
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} cannot be read as safetensors ({e})") from e
    model = MultiTaskProjector(info.projector)
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing tensor(s) {missing}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {unexpected}")
    for k in sorted(set(expected) & set(tensors)):
        if tuple(tensors[k].shape) != tuple(expected[k].shape):
            problems.append(
                f"tensor {k!r} has shape {tuple(tensors[k].shape)} in the file but "
                f"{tuple(expected[k].shape)} for the stored config"
            )
    if problems:
        raise CheckpointError(
            f"{weights} does not fit the ProjectorConfig in {cfg_path} ({info.projector}): "
            + "; ".join(problems)
            + ". Was config.json edited (e.g. depth or width) or the weights copied from another run?"
        )
    model.load_state_dict(tensors, strict=True)
    model.to(resolve_device(device))
    model.eval()
    return model, info
