"""SupCon with finding-level positives (LossConfig.supcon_positives = 'findings')."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.config import ConfigError, LossConfig, ProjectorConfig, TrainConfig
from cxrlib.embeddings import Embeddings
from cxrlib.evaluation import embedding_sets
from cxrlib.losses import CompositeLoss, SupConLoss
from cxrlib.training import EmbeddingSet, run_fingerprint, train_projector

D = 16
PROJ = ProjectorConfig(in_dim=D, out_dim=D, hidden_dim=32)
FAST = TrainConfig(lr=3e-3, epochs=3, batch_size=32, warmup_epochs=1, patience=None, seed=0)
TAGS = ["", "cardiomegaly", "effusion", "cardiomegaly|effusion"]


def _rows_and_source(n: int = 160, seed: int = 0) -> tuple[pd.DataFrame, Embeddings]:
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(TAGS), n)
    rows = pd.DataFrame(
        {
            "image_id": [f"im{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "split": np.where(np.arange(n) % 4 == 0, "val", "train"),
            "label": (kind > 0).astype(int),
            "tags": [TAGS[k] for k in kind],
        }
    )
    centre = rng.normal(size=(len(TAGS), D))[kind]
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    source = Embeddings(
        image=unit(centre + 0.5 * rng.normal(size=(n, D))),
        text=unit(centre + 0.5 * rng.normal(size=(n, D))),
        image_ids=rows["image_id"].to_numpy(),
    )
    return rows, source


def test_embedding_sets_number_each_finding_set_once():
    rows, source = _rows_and_source()
    train, val = embedding_sets(rows, source, ("train", "val"))
    tags = {"train": rows[rows["split"] == "train"]["tags"], "val": rows[rows["split"] == "val"]["tags"]}
    for s in (train, val):
        t = tags[s.name].to_numpy()
        for a in range(len(s)):  # same tags <=> same class, across both splits
            assert np.all((s.supcon_labels == s.supcon_labels[a]) == (t == t[a]))
    first = {tg: c for tg, c in zip(tags["train"], train.supcon_labels, strict=True)}
    assert all(first[tg] == c for tg, c in zip(tags["val"], val.supcon_labels, strict=True))
    assert sorted(set(train.supcon_labels)) == [0, 1, 2, 3]


def test_the_supcon_term_uses_the_finding_classes():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(2, 12, D, dtype=torch.float64), dim=-1)
    outputs = {"image": z[0], "text": z[1], "logits_image": torch.zeros(12, dtype=torch.float64)}
    labels = torch.tensor([0, 1] * 6)
    classes = torch.tensor([0, 1, 2, 3] * 3)
    loss = CompositeLoss(LossConfig(w_bce=0.0, w_clip=0.0, supcon_positives="findings"))
    got = loss(outputs, labels, classes)["supcon"]
    ref = SupConLoss(0.07)(torch.cat([z[0], z[1]]), torch.cat([classes, classes]))
    assert torch.allclose(got, ref, atol=1e-12)
    assert not torch.allclose(loss(outputs, labels)["supcon"], ref)  # without classes: the binary label


def test_training_by_findings_runs_differs_and_is_fingerprinted():
    rows, source = _rows_and_source()
    train, val = embedding_sets(rows, source, ("train", "val"))
    by_label = LossConfig(w_bce=0.0, w_clip=0.0)
    by_findings = dataclasses.replace(by_label, supcon_positives="findings")
    a = train_projector(train, val, PROJ, by_label, FAST, progress=False)
    b = train_projector(train, val, PROJ, by_findings, FAST, progress=False)
    assert np.isfinite(b.history["train_supcon"].iloc[1:]).all()
    assert not np.array_equal(
        a.model.project_array(val.image, "image"), b.model.project_array(val.image, "image")
    )
    assert run_fingerprint(train, val, PROJ, by_label, FAST) != run_fingerprint(
        train, val, PROJ, by_findings, FAST
    )
    # label-level runs do not depend on the finding classes at all
    plain = [EmbeddingSet(s.image, s.text, s.labels, s.patient_ids, name=s.name) for s in (train, val)]
    assert run_fingerprint(*plain, PROJ, by_label, FAST) == run_fingerprint(train, val, PROJ, by_label, FAST)


def test_findings_mode_without_classes_and_bad_values_are_clear_errors():
    rows, source = _rows_and_source()
    train, val = embedding_sets(rows, source, ("train", "val"))
    plain = EmbeddingSet(train.image, train.text, train.labels, name="train")
    cfg = LossConfig(supcon_positives="findings")
    with pytest.raises(ValueError, match=r"train set \(train\) has no supcon_labels.*embedding_sets"):
        train_projector(plain, val, PROJ, cfg, FAST, progress=False)
    with pytest.raises(ConfigError, match="supcon_positives must be 'label' or 'findings'"):
        LossConfig(supcon_positives="finding")
    with pytest.raises(ValueError, match="supcon_labels must be integers"):
        EmbeddingSet(train.image, train.text, train.labels, supcon_labels=np.zeros(3, dtype=int))
