r"""The composite loss: BCE (normal vs abnormal) + supervised contrastive + CLIP.

The three terms are the paper's (abstract); their exact forms, weights and temperatures are **our
documented choices** (:class:`LossConfig`). Notation for a batch of :math:`B` image–report pairs: projected,
L2-normalised embeddings :math:`u_i` (image) and :math:`v_i` (text), labels :math:`y_i \in \{0, 1\}`
(1 = abnormal), classifier logits :math:`s_i`.

**(1) Binary cross-entropy** (torch's ``binary_cross_entropy_with_logits``, the function behind
``torch.nn.BCEWithLogitsLoss``), with an optional positive-class weight
:math:`w_+` against class imbalance, averaged over the modalities :math:`\mathcal{M}` that carry a
classifier (``ProjectorConfig.cls_on``; "both" → image and text):

.. math::

    \mathcal{L}_{\mathrm{BCE}} = \frac{1}{|\mathcal{M}|} \sum_{m \in \mathcal{M}} \frac{1}{B} \sum_{i=1}^{B}
        -\Big[ w_+\, y_i \log \sigma(s^m_i) + (1 - y_i) \log\big(1 - \sigma(s^m_i)\big) \Big]

**(2) Supervised contrastive loss** (Khosla et al. 2020, the :math:`\mathcal{L}^{sup}_{out}` form), on the
:math:`N = 2B` rows :math:`z = [u_1..u_B, v_1..v_B]` with labels repeated, so an image's positives are all
same-label images *and* reports in the batch (its own report included):

.. math::

    \mathcal{L}_{\mathrm{SupCon}} = \frac{1}{|A'|} \sum_{i \in A'} \frac{-1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \neq i} \exp(z_i \cdot z_a / \tau)},
    \qquad P(i) = \{p \neq i : y_p = y_i\},\; A' = \{i : |P(i)| > 0\}

Anchors without any positive are left out of the mean (they carry no supervised signal); a batch with no
anchor at all gives 0 (still attached to the graph, so ``backward`` works).

**(3) CLIP loss** (:func:`clip_loss`, ``open_clip.loss.ClipLoss``'s computation bit for bit): symmetric
cross-entropy over the :math:`B \times B` image–report similarity matrix, the matching report being the target,
with logit scale :math:`t = \min(e^{\theta}, 100)` (learnable :math:`\theta` or fixed):

.. math::

    \mathcal{L}_{\mathrm{CLIP}} = \frac{1}{2B} \sum_{i=1}^{B} \Big[
        -\log \frac{\exp(t\, u_i \cdot v_i)}{\sum_j \exp(t\, u_i \cdot v_j)}
        -\log \frac{\exp(t\, v_i \cdot u_i)}{\sum_j \exp(t\, v_i \cdot u_j)} \Big]

**Total**: :math:`\mathcal{L} = \lambda_{\mathrm{BCE}} \mathcal{L}_{\mathrm{BCE}} + \lambda_{\mathrm{SupCon}}
\mathcal{L}_{\mathrm{SupCon}} + \lambda_{\mathrm{CLIP}} \mathcal{L}_{\mathrm{CLIP}}` over the *active* terms. A
term with weight 0 is not computed at all (no gradient, no cost) and is reported as a detached NaN, so an
ablation table shows "off" rather than a misleading 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.config import LOSS_TERMS, LossConfig

__all__ = ["SupConLoss", "CompositeLoss", "clip_loss", "balanced_pos_weight", "resolve_logit_scale"]
_DEFAULT_LOGIT_SCALE = 1.0 / 0.07


def balanced_pos_weight(labels: np.ndarray) -> float:
    """``n_negative / n_positive`` of binary training labels ``(N,)`` — BCE's ``pos_weight`` for balance.

    Raises a clear error when a class is absent (the weight would be 0 or infinite).
    """
    y = np.asarray(labels).reshape(-1)
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(
            f"pos_weight='balanced' needs binary 0/1 labels; row(s) {np.flatnonzero(bad)[:5].tolist()} hold "
            f"{y[bad][:5].tolist()}"
        )
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"pos_weight='balanced' needs both classes in the training labels, got {n_neg} normal and "
            f"{n_pos} abnormal; use pos_weight=None or a float"
        )
    return n_neg / n_pos


def resolve_logit_scale(cfg: LossConfig, backbone_logit_scale: float | None) -> tuple[LossConfig, str]:
    """``cfg`` with ``clip_logit_scale_init="backbone"`` replaced by a number, and where that number came from.

    ``backbone_logit_scale`` is the backbone's ``exp(logit_scale)`` (recorded with its embeddings). When it
    is missing or outside ``(0, max_logit_scale]``, the head starts at CLIP's own 1/0.07 (``None``).
    """
    if cfg.clip_logit_scale_init != "backbone":
        what = "CLIP's default 1/0.07" if cfg.clip_logit_scale_init is None else "loss.clip_logit_scale_init"
        return cfg, what
    s = backbone_logit_scale
    if s and 0 < float(s) <= cfg.max_logit_scale:
        return cfg.replace(clip_logit_scale_init=float(s)), "the backbone's own logit scale"
    return cfg.replace(
        clip_logit_scale_init=None
    ), "CLIP's default 1/0.07 (the backbone records no usable scale)"


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """The CLIP loss of ``open_clip.loss.ClipLoss()`` in one process: image ``(B, D)``, text ``(B, D)`` -> scalar.

    The same operations in the same order as open_clip's single-process path (``logit_scale * image @ text.T``
    and ``logit_scale * text @ image.T``, cross-entropy against ``arange(B)`` in each direction, averaged), so
    the value and its gradients are the same bits (``tests/test_losses.py`` checks them against ``ClipLoss``).
    Written out here because ``import open_clip`` costs ~3 s (it loads torchvision and transformers), which
    training on cached embeddings does not otherwise need.
    """
    logits_per_image = logit_scale * image @ text.T
    logits_per_text = logit_scale * text @ image.T
    labels = torch.arange(logits_per_image.shape[0], device=image.device, dtype=torch.long)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


class SupConLoss(nn.Module):
    r"""Supervised contrastive loss, Khosla et al. 2020, :math:`\mathcal{L}^{sup}_{out}` (see module docstring).

    ``forward(embeddings (N, D) L2-normalised, labels (N,) int) -> scalar``. Self-contrast is excluded from
    numerator and denominator; anchors without a positive are excluded from the mean; no anchor at all → 0
    (attached to the graph). Numerically stable: the row max is subtracted before the log-sum-exp. Unlike
    Khosla's reference code there is no extra ``temperature / base_temperature`` factor (it is 1 there by
    default). Memory is ``O(N²)``.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got {tuple(embeddings.shape)}")
        labels = labels.reshape(-1)
        n = embeddings.shape[0]
        if labels.shape[0] != n:
            raise ValueError(f"labels has {labels.shape[0]} entries for {n} embeddings")
        if n < 2:
            return embeddings.sum() * 0.0
        self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
        logits = embeddings @ embeddings.T / self.temperature
        # stability: subtract each row's max over a != i (a constant per row, so the loss is unchanged)
        logits = logits - logits.masked_fill(self_mask, float("-inf")).amax(dim=1, keepdim=True).detach()
        log_denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
        log_prob = logits - log_denominator  # (N, N); the diagonal is never used
        pos_mask = (labels[:, None] == labels[None, :]) & ~self_mask
        n_pos = pos_mask.sum(dim=1)
        has_pos = (n_pos > 0).to(log_prob.dtype)
        # masked means without boolean indexing (no host sync on GPU); anchors without positives weigh 0
        mean_log_prob_pos = torch.where(pos_mask, log_prob, 0.0).sum(dim=1) / n_pos.clamp(min=1)
        return -(mean_log_prob_pos * has_pos).sum() / has_pos.sum().clamp(min=1.0)


class CompositeLoss(nn.Module):
    """``λ_bce·BCE + λ_supcon·SupCon + λ_clip·CLIP`` over the projector's outputs (see module docstring).

    ``train_labels`` (binary ``(N,)``) is needed only for ``cfg.pos_weight == "balanced"``. The learnable
    temperature is the parameter ``log_logit_scale`` (θ, the scale is ``min(exp θ, max_logit_scale)``);
    the training loop puts it in a no-weight-decay group and calls :meth:`clamp_logit_scale_` after each step.
    """

    def __init__(self, cfg: LossConfig, train_labels: np.ndarray | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, LossConfig):
            raise TypeError(f"CompositeLoss needs a LossConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.active = cfg.active_terms()
        if cfg.pos_weight == "balanced":
            if train_labels is None:
                raise ValueError("LossConfig.pos_weight='balanced' needs train_labels to compute the weight")
            self.pos_weight_value: float | None = balanced_pos_weight(train_labels)
        else:
            self.pos_weight_value = None if cfg.pos_weight is None else float(cfg.pos_weight)
        pw = None if self.pos_weight_value is None else torch.tensor(self.pos_weight_value)
        self.register_buffer("pos_weight", pw, persistent=False)
        self.supcon = SupConLoss(cfg.supcon_temperature)
        if cfg.clip_logit_scale_init == "backbone":
            raise ValueError(
                "LossConfig.clip_logit_scale_init='backbone' must be resolved to a number first: "
                "cxrlib.losses.resolve_logit_scale(cfg, <the backbone's exp(logit_scale)>)"
            )
        init = _DEFAULT_LOGIT_SCALE if cfg.clip_logit_scale_init is None else float(cfg.clip_logit_scale_init)
        theta = torch.tensor(math.log(init), dtype=torch.float32)
        if cfg.learnable_temperature:
            self.log_logit_scale = nn.Parameter(theta)
        else:
            self.register_buffer("log_logit_scale", theta)

    def logit_scale(self) -> torch.Tensor:
        """The CLIP multiplier ``min(exp θ, max_logit_scale)`` (a 0-d tensor, differentiable in θ)."""
        return self.log_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """In place ``θ ← min(θ, log max_logit_scale)`` (CLIP's post-step clamp)."""
        self.log_logit_scale.clamp_(max=math.log(self.cfg.max_logit_scale))

    def bce_term(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        keys = [k for k in ("image_logit", "text_logit") if k in outputs]
        if not keys:
            raise ValueError(
                "w_bce > 0 but the projector outputs no logits (no 'image_logit'/'text_logit'); "
                "check ProjectorConfig.cls_on or set LossConfig.w_bce=0"
            )
        target = labels.to(outputs[keys[0]].dtype)
        terms = [
            F.binary_cross_entropy_with_logits(outputs[k], target, pos_weight=self.pos_weight) for k in keys
        ]
        return terms[0] if len(terms) == 1 else (terms[0] + terms[1]) / 2

    def supcon_term(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        z = torch.cat([outputs["image"], outputs["text"]], dim=0)
        return self.supcon(z, torch.cat([labels, labels], dim=0))

    def clip_term(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return clip_loss(outputs["image"], outputs["text"], self.logit_scale())

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        supcon_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``outputs``: :meth:`MultiTaskProjector.forward`'s dict; ``labels``: ``(B,)`` 0/1 (not checked here —
        :func:`cxrlib.training.train_projector` checks the dataset once); ``supcon_labels``: optional ``(B,)``
        integer classes for the SupCon term instead of ``labels`` (``LossConfig.supcon_positives='findings'``:
        one class per distinct finding set).

        Returns ``{"bce", "supcon", "clip", "total"}`` 0-d tensors; inactive terms are a detached NaN and
        ``total`` is exactly ``Σ w_k · L_k`` over the active terms in that order.
        """
        labels = labels.reshape(-1)
        nan = torch.full((), float("nan"), device=outputs["image"].device)
        out: dict[str, torch.Tensor] = {t: nan for t in LOSS_TERMS}
        total: torch.Tensor | None = None
        for term in self.active:
            if term == "bce":
                value = self.bce_term(outputs, labels)
            elif term == "supcon":
                value = self.supcon_term(
                    outputs, labels if supcon_labels is None else supcon_labels.reshape(-1)
                )
            else:
                value = self.clip_term(outputs)
            out[term] = value
            weighted = getattr(self.cfg, f"w_{term}") * value
            total = weighted if total is None else total + weighted
        assert total is not None  # LossConfig guarantees one active term
        out["total"] = total
        return out
