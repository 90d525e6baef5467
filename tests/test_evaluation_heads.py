"""cxrlib.evaluation.train_head: the head for the further backbones of eval.also_finetune."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrlib.config import LossConfig, ProjectorConfig, TrainConfig
from cxrlib.embeddings import Embeddings
from cxrlib.evaluation import embedding_sets, train_head
from cxrlib.losses import resolve_logit_scale
from cxrlib.training import train_projector


def _space(n: int = 48, dim: int = 12, scale: float | None = 20.0) -> tuple[pd.DataFrame, Embeddings]:
    rng = np.random.default_rng(3)
    rows = pd.DataFrame(
        {
            "image_id": [f"i{k:03d}" for k in range(n)],
            "patient_id": [f"p{k // 2:03d}" for k in range(n)],
            "label": rng.integers(0, 2, n),
            "split": np.array(["train", "train", "val", "test"])[np.arange(n) % 4],
        }
    )
    img = rng.normal(size=(n, dim)).astype(np.float32)
    txt = (img + 0.5 * rng.normal(size=img.shape)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    meta = {"backbone": {"logit_scale": scale}} if scale is not None else {}
    return rows, Embeddings(img, txt, rows["image_id"].to_numpy(), meta)


def test_train_head_is_the_main_recipe_with_the_backbones_own_width_and_temperature():
    rows, src = _space()
    proj = ProjectorConfig(hidden_dim=16)
    loss = LossConfig(clip_logit_scale_init="backbone")
    train = TrainConfig(epochs=3, batch_size=8)
    result, projected = train_head(src, rows, proj, loss, train)
    # the same thing by hand: widths of the backbone, logit scale from its record, train/val rows
    loss_by_hand, _ = resolve_logit_scale(loss, 20.0)
    assert loss_by_hand.clip_logit_scale_init == 20.0
    tr, va = embedding_sets(rows, src, ("train", "val"))
    ref = train_projector(tr, va, proj.replace(in_dim=12, out_dim=12), loss_by_hand, train, progress=False)
    assert result.best_epoch == ref.best_epoch
    np.testing.assert_array_equal(projected.image, ref.model.project_array(src.image, "image"))
    np.testing.assert_array_equal(projected.text, ref.model.project_array(src.text, "text"))
    assert projected.image.shape == (48, 12) and list(projected.image_ids) == list(src.image_ids)
    assert "not saved" in projected.meta["projector"]
    assert abs(float(result.history["logit_scale"].iloc[0]) - 20.0) < 1e-3  # started at the backbone's own


def test_train_head_without_a_recorded_scale_starts_at_clips_default():
    rows, src = _space(scale=None)
    result, _ = train_head(
        src,
        rows,
        ProjectorConfig(hidden_dim=8),
        LossConfig(clip_logit_scale_init="backbone"),
        TrainConfig(epochs=1, batch_size=8),
    )
    assert abs(float(result.history["logit_scale"].iloc[0]) - 1 / 0.07) < 1e-3  # epoch 0 = untrained start
