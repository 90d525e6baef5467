"""Composite loss: each term against an independent reference, weights of 0, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from cxrlib.config import ConfigError, LossConfig, ProjectorConfig
from cxrlib.losses import CompositeLoss, SupConLoss, balanced_pos_weight, clip_loss
from cxrlib.projector import MultiTaskProjector


def reference_supcon(z: torch.Tensor, y: list[int], tau: float) -> float:
    """Khosla et al. 2020 L_out, written as plain loops over anchors and positives (float64 math)."""
    z = z.double()
    n = len(y)
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and y[p] == y[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        s = sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives)
        per_anchor.append(-s / len(positives))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def reference_clip(u: torch.Tensor, v: torch.Tensor, scale: float) -> float:
    """Symmetric cross-entropy over the image-text similarity matrix, with loops."""
    u, v = u.double(), v.double()
    b = u.shape[0]
    loss = 0.0
    for i in range(b):
        row_i = [scale * float(u[i] @ v[j]) for j in range(b)]
        row_t = [scale * float(v[i] @ u[j]) for j in range(b)]
        loss += -(row_i[i] - math.log(sum(math.exp(x) for x in row_i)))
        loss += -(row_t[i] - math.log(sum(math.exp(x) for x in row_t)))
    return loss / (2 * b)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


LABEL_PATTERNS = {
    "all_same": [1] * 10,
    "all_different": list(range(10)),
    "binary": [0, 1, 1, 0, 0, 1, 0, 1, 1, 1],
    "multiclass": [0, 1, 2, 2, 1, 0, 3, 3, 1, 2],
    "singleton_class": [0, 0, 1, 1, 1, 2, 0, 1, 0, 1],  # class 2 has one member: no positive
}


@pytest.mark.parametrize("pattern", sorted(LABEL_PATTERNS))
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_loop_reference(pattern: str, tau: float) -> None:
    y = LABEL_PATTERNS[pattern]
    z = unit(len(y), 16, seed=len(pattern))
    got = SupConLoss(tau)(z, torch.tensor(y))
    assert got.ndim == 0
    assert float(got.detach()) == pytest.approx(reference_supcon(z, y, tau), rel=1e-5, abs=1e-6)


def test_supcon_all_different_labels_is_zero_and_backpropagates() -> None:
    z = unit(6, 8, seed=1).requires_grad_(True)
    loss = SupConLoss(0.1)(z, torch.arange(6))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_supcon_stable_at_tiny_temperature_and_gradients_finite() -> None:
    z = unit(12, 8, seed=2).requires_grad_(True)
    y = torch.tensor([0, 1] * 6)
    loss = SupConLoss(1e-3)(z, y)  # logits up to 1000: exp would overflow without the row-max shift
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_supcon_pulls_same_label_together() -> None:
    y = torch.tensor([0, 0, 1, 1])
    clustered = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]), dim=1)
    mixed = F.normalize(torch.tensor([[1.0, 0.1], [-1.0, -0.1], [-1.0, 0.1], [1.0, -0.1]]), dim=1)
    loss = SupConLoss(0.1)
    assert float(loss(clustered, y)) < float(loss(mixed, y))


def outputs_for(cfg: ProjectorConfig, b: int = 8, seed: int = 0) -> tuple[dict, torch.Tensor]:
    torch.manual_seed(seed)
    model = MultiTaskProjector(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    x_img = torch.randn(b, cfg.in_dim, generator=g)
    x_txt = torch.randn(b, cfg.in_dim, generator=g)
    y = torch.tensor([0, 1] * (b // 2))
    with torch.no_grad():  # only the loss's own logit scale needs a gradient in these tests
        return model(x_img, x_txt), y


SMALL = ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16, residual=False, dropout=0.0)


def test_clip_term_matches_open_clip_and_loop_reference() -> None:
    outputs, y = outputs_for(SMALL)
    loss_fn = CompositeLoss(LossConfig(w_bce=0, w_supcon=0, clip_logit_scale_init=20.0))
    got = loss_fn(outputs, y)["clip"]
    direct = ClipLoss()(outputs["image"], outputs["text"], torch.tensor(20.0))
    assert float(got.detach()) == pytest.approx(float(direct), rel=1e-6)
    assert float(got.detach()) == pytest.approx(
        reference_clip(outputs["image"], outputs["text"], 20.0), rel=1e-5
    )


@pytest.mark.parametrize(("b", "d", "scale"), [(2, 3, 1.0), (7, 16, 14.3), (64, 32, 100.0)])
def test_clip_loss_is_open_clips_value_and_gradients_bit_for_bit(b: int, d: int, scale: float) -> None:
    g = torch.Generator().manual_seed(b * 1000 + d)
    img = F.normalize(torch.randn(b, d, generator=g), dim=1)
    txt = F.normalize(img + 0.7 * torch.randn(b, d, generator=g), dim=1)
    grads = []
    for fn in (clip_loss, ClipLoss()):
        i, t = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
        theta = torch.tensor(math.log(scale), requires_grad=True)
        value = fn(i, t, theta.exp())
        value.backward()
        grads.append((value.detach(), i.grad, t.grad, theta.grad))
    for ours, theirs in zip(*grads, strict=True):
        assert ours.dtype == theirs.dtype and ours.numpy().tobytes() == theirs.numpy().tobytes()
    # and a different input changes the value (the comparison above can fail)
    assert float(clip_loss(img, txt.roll(1, dims=0), scale)) != float(grads[0][0])


def test_losses_module_does_not_import_open_clip() -> None:
    import subprocess
    import sys

    code = "import sys, cxrlib.losses, cxrlib.training, cxrlib.evaluation; print('open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_clip_logit_scale_default_learnable_and_clamped() -> None:
    loss_fn = CompositeLoss(LossConfig())
    assert float(loss_fn.logit_scale().detach()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert isinstance(loss_fn.log_logit_scale, torch.nn.Parameter)
    with torch.no_grad():
        loss_fn.log_logit_scale.fill_(math.log(500.0))
    assert float(loss_fn.logit_scale().detach()) == pytest.approx(100.0)
    loss_fn.clamp_logit_scale_()
    assert float(loss_fn.log_logit_scale.detach()) == pytest.approx(math.log(100.0))
    fixed = CompositeLoss(LossConfig(learnable_temperature=False, clip_logit_scale_init=50.0))
    assert not any(p is fixed.log_logit_scale for p in fixed.parameters())
    assert float(fixed.logit_scale().detach()) == pytest.approx(50.0, rel=1e-6)


@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_bce_matches_torch_with_pos_weight(pos_weight: float | None) -> None:
    outputs, y = outputs_for(SMALL)
    loss_fn = CompositeLoss(LossConfig(w_supcon=0, w_clip=0, pos_weight=pos_weight))
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    expected = (ref(outputs["image_logit"], y.float()) + ref(outputs["text_logit"], y.float())) / 2
    assert float(loss_fn(outputs, y)["bce"].detach()) == pytest.approx(float(expected), rel=1e-6)


def test_bce_single_modality_and_balanced_pos_weight() -> None:
    cfg = ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16, cls_on="image")
    outputs, y = outputs_for(cfg)
    assert "text_logit" not in outputs
    train_labels = np.array([0, 0, 0, 1])
    loss_fn = CompositeLoss(
        LossConfig(w_supcon=0, w_clip=0, pos_weight="balanced"), train_labels=train_labels
    )
    assert loss_fn.pos_weight_value == 3.0
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(outputs["image_logit"], y.float())
    assert float(loss_fn(outputs, y)["bce"].detach()) == pytest.approx(float(ref), rel=1e-6)
    with pytest.raises(ValueError, match="both classes"):
        balanced_pos_weight(np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="needs train_labels"):
        CompositeLoss(LossConfig(pos_weight="balanced"))


def test_supcon_term_uses_stacked_image_and_text() -> None:
    outputs, y = outputs_for(SMALL)
    loss_fn = CompositeLoss(LossConfig(w_bce=0, w_clip=0, supcon_temperature=0.2))
    z = torch.cat([outputs["image"], outputs["text"]]).detach()
    expected = reference_supcon(z, torch.cat([y, y]).tolist(), 0.2)
    assert float(loss_fn(outputs, y)["supcon"].detach()) == pytest.approx(expected, rel=1e-5)


def test_composite_total_and_gradients_finite() -> None:
    cfg = ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16)
    outputs, y = outputs_for(cfg)
    loss_fn = CompositeLoss(LossConfig(w_bce=0.5, w_supcon=2.0, w_clip=1.5))
    out = loss_fn(outputs, y)
    assert set(out) == {"bce", "supcon", "clip", "total"}
    assert torch.equal(out["total"], 0.5 * out["bce"] + 2.0 * out["supcon"] + 1.5 * out["clip"])
    out["total"].backward()
    assert loss_fn.log_logit_scale.grad is not None and torch.isfinite(loss_fn.log_logit_scale.grad)


def _grads(cfg: ProjectorConfig, loss_cfg: LossConfig, which: str) -> tuple[dict, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = MultiTaskProjector(cfg)
    g = torch.Generator().manual_seed(1)
    x_img, x_txt = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    loss_fn = CompositeLoss(loss_cfg)
    out = loss_fn(model(x_img, x_txt), y)
    target = (
        out["total"]
        if which == "total"
        else sum(getattr(LossConfig(), "w_" + t) * out[t] for t in which.split("+"))
    )
    target.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return out, grads


@pytest.mark.parametrize("which", ["total", "bce", "supcon", "clip"])
@pytest.mark.parametrize("residual", [True, False])
def test_every_parameter_gradient_is_finite(which: str, residual: bool) -> None:
    """Backward through the projector (autograd on): the full loss and each term alone give finite gradients
    to every parameter they reach, and the full loss reaches every parameter."""
    cfg = ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16, residual=residual, dropout=0.0)
    _, grads = _grads(cfg, LossConfig(pos_weight=2.0), which)
    reached = {n: g for n, g in grads.items() if g is not None}
    assert reached, "the loss reached no parameter"
    for name, g in reached.items():
        assert torch.isfinite(g).all(), f"{which}: non-finite gradient in {name}"
    if which == "total":
        assert set(reached) == set(grads), f"parameters without a gradient: {set(grads) - set(reached)}"
        assert any(float(g.abs().sum()) > 0 for g in reached.values())


@pytest.mark.parametrize("off", ["bce", "supcon", "clip"])
def test_zero_weight_removes_term_exactly(off: str) -> None:
    cfg = ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16, residual=False, dropout=0.0)
    kept = [t for t in ("bce", "supcon", "clip") if t != off]
    ablated, g_ablated = _grads(cfg, LossConfig(**{f"w_{off}": 0.0}), "total")
    full, g_kept = _grads(cfg, LossConfig(), "+".join(kept))
    assert math.isnan(float(ablated[off])) and not ablated[off].requires_grad
    for t in kept:
        assert torch.equal(ablated[t], full[t])
    assert torch.equal(ablated["total"], 1.0 * full[kept[0]] + 1.0 * full[kept[1]])
    for name, g in g_ablated.items():
        if g_kept[name] is None:
            assert g is None or torch.all(g == 0), name
        else:
            assert g is not None and torch.allclose(g, g_kept[name], rtol=1e-6, atol=1e-8), name


def test_clip_only_gives_no_gradient_to_classifier() -> None:
    cfg = ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16)
    out, grads = _grads(cfg, LossConfig(w_bce=0, w_supcon=0), "total")
    assert torch.equal(out["total"], 1.0 * out["clip"])
    assert all(g is None for n, g in grads.items() if n.startswith("classifiers."))


def test_loss_config_validation_and_round_trip() -> None:
    cfg = LossConfig(w_bce=0.3, pos_weight="balanced", clip_logit_scale_init=30.0)
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        LossConfig.from_dict({"w_bec": 1.0})
    with pytest.raises(ConfigError, match="all three weights"):
        LossConfig(w_bce=0, w_supcon=0, w_clip=0)
    with pytest.raises(ConfigError, match="w_clip"):
        LossConfig(w_clip=-1.0)
    with pytest.raises(ConfigError, match="multiplier"):
        LossConfig(clip_logit_scale_init=math.log(1 / 0.07) - 10)
    with pytest.raises(ConfigError, match="pos_weight"):
        LossConfig(pos_weight="auto")
    assert all(row["why"] for row in LossConfig.describe())
