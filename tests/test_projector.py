"""Projector head: shapes, unit norm, identity at init, shared vs separate, cls_on, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlib.config import ConfigError, ProjectorConfig
from cxrlib.projector import MultiTaskProjector


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs(b: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g) * 3.0, torch.randn(b, d, generator=g) * 3.0


@pytest.mark.parametrize(
    "cfg", [ProjectorConfig(), ProjectorConfig(in_dim=64, out_dim=32, depth=0, shared=False)]
)
def test_shapes_and_unit_norm(cfg: ProjectorConfig) -> None:
    torch.manual_seed(0)
    model = MultiTaskProjector(cfg)
    x_img, x_txt = inputs(5, cfg.in_dim)
    out = model(x_img, x_txt)
    assert out["image"].shape == (5, cfg.out_dim) and out["text"].shape == (5, cfg.out_dim)
    assert out["image_logit"].shape == (5,) and out["text_logit"].shape == (5,)
    for key in ("image", "text"):
        assert torch.allclose(out[key].norm(dim=1), torch.ones(5), atol=1e-6)


def test_residual_head_is_normalize_at_init() -> None:
    cfg = ProjectorConfig(in_dim=32, out_dim=32, hidden_dim=48)
    torch.manual_seed(0)
    model = MultiTaskProjector(cfg).train()  # dropout active: the zero last layer still makes it exact
    x_img, x_txt = inputs(7, 32)
    out = model(x_img, x_txt)
    assert torch.allclose(out["image"], F.normalize(x_img, dim=1), atol=1e-6)
    assert torch.allclose(out["text"], F.normalize(x_txt, dim=1), atol=1e-6)


def test_residual_with_wider_output_preserves_cosines_at_init() -> None:
    torch.manual_seed(0)
    model = MultiTaskProjector(ProjectorConfig(in_dim=16, out_dim=32, hidden_dim=16)).eval()
    x_img, x_txt = inputs(6, 16)
    out = model(x_img, x_txt)
    before = F.normalize(x_img, dim=1) @ F.normalize(x_txt, dim=1).T
    assert torch.allclose(out["image"] @ out["text"].T, before, atol=1e-5)


def test_non_residual_head_is_not_identity() -> None:
    torch.manual_seed(0)
    model = MultiTaskProjector(ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16, residual=False)).eval()
    x_img, x_txt = inputs(4, 16)
    assert not torch.allclose(model(x_img, x_txt)["image"], F.normalize(x_img, dim=1), atol=1e-3)


def test_shared_vs_separate_parameter_counts() -> None:
    d, h, depth = 16, 24, 2
    kw = {"in_dim": d, "out_dim": d, "hidden_dim": h, "depth": depth}
    shared = MultiTaskProjector(ProjectorConfig(shared=True, **kw))
    separate = MultiTaskProjector(ProjectorConfig(shared=False, **kw))
    head = (d * h + h) + 2 * h + (h * h + h) + 2 * h + (h * d + d)  # Linear, LN, Linear, LN, Linear
    classifier = d + 1
    assert n_params(shared) == head + classifier  # one head, one shared classifier
    assert n_params(separate) == 2 * head + 2 * classifier
    assert set(dict(shared.named_children())["heads"].keys()) == {"shared"}
    assert set(dict(separate.named_children())["heads"].keys()) == {"image", "text"}
    # separate heads really are separate: perturbing the text head leaves image outputs unchanged
    x_img, x_txt = inputs(3, d)
    before = separate(x_img, x_txt)["image"].detach().clone()
    with torch.no_grad():
        for p in separate.heads["text"].parameters():
            p.add_(1.0)
    assert torch.equal(separate(x_img, x_txt)["image"], before)


def test_depth_zero_is_a_single_linear() -> None:
    model = MultiTaskProjector(ProjectorConfig(in_dim=8, out_dim=8, depth=0, residual=False))
    linears = [m for m in model.heads["shared"].modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and n_params(model.heads["shared"]) == 8 * 8 + 8


@pytest.mark.parametrize(
    ("cls_on", "shared", "logits", "classifiers"),
    [
        ("both", True, {"image_logit", "text_logit"}, {"shared"}),
        ("both", False, {"image_logit", "text_logit"}, {"image", "text"}),
        ("image", True, {"image_logit"}, {"image"}),
        ("text", False, {"text_logit"}, {"text"}),
    ],
)
def test_cls_on_variants(cls_on: str, shared: bool, logits: set[str], classifiers: set[str]) -> None:
    model = MultiTaskProjector(
        ProjectorConfig(in_dim=8, out_dim=8, hidden_dim=8, cls_on=cls_on, shared=shared)
    )
    out = model(*inputs(4, 8))
    assert {k for k in out if k.endswith("_logit")} == logits
    assert set(model.classifiers.keys()) == classifiers


def test_project_array_matches_project_in_chunks_without_grad() -> None:
    torch.manual_seed(0)
    model = MultiTaskProjector(ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16, residual=False))
    model.train()
    x = np.random.default_rng(0).normal(size=(37, 16)).astype(np.float32)
    got = model.project_array(x, "text", batch_size=5)
    assert got.dtype == np.float32 and got.shape == (37, 16)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        ref = model.project_text(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    logits = model.logits_array(x, "image", batch_size=8)
    assert logits.shape == (37,)
    with pytest.raises(ValueError, match="shape"):
        model.project_array(x[:, :10], "image")
    with pytest.raises(ValueError, match="modality"):
        model.project_array(x, "audio")


def test_wrong_input_dim_names_the_fix() -> None:
    model = MultiTaskProjector(ProjectorConfig(in_dim=16, out_dim=16, hidden_dim=16))
    with pytest.raises(ValueError, match="in_dim"):
        model(torch.zeros(2, 12), torch.zeros(2, 12))


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = ProjectorConfig(depth=3, shared=False, cls_on="text", dropout=0.2)
    assert ProjectorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['hiddn_dim'\]"):
        ProjectorConfig.from_dict({"hiddn_dim": 128})
    with pytest.raises(ConfigError, match="cls_on"):
        ProjectorConfig(cls_on="report")
    with pytest.raises(ConfigError, match="depth"):
        ProjectorConfig(depth=-1)
    with pytest.raises(ConfigError, match="dropout"):
        ProjectorConfig(dropout=1.0)
    rows = ProjectorConfig.describe()
    assert [r["field"] for r in rows] == list(ProjectorConfig().to_dict())
    assert all(r["why"] and r["source"] for r in rows)


def test_project_embeddings_keeps_ids_and_meta_and_clears_the_cache_key():
    from cxrlib.embeddings import Embeddings

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    emb = Embeddings(
        x, x[::-1].copy(), np.array([f"i{k}" for k in range(5)]), {"key": "abc", "backbone": {"n": 1}}
    )
    model = MultiTaskProjector(ProjectorConfig(in_dim=8, out_dim=8, hidden_dim=8, depth=1))
    out = model.project_embeddings(emb, projector="ckpt")
    assert np.array_equal(out.image, model.project_array(x, "image"))
    assert np.array_equal(out.text, model.project_array(x[::-1].copy(), "text"))
    assert list(out.image_ids) == list(emb.image_ids)
    assert out.meta == {"key": None, "backbone": {"n": 1}, "projector": "ckpt"}
