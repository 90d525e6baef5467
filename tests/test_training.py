"""Projector training on cached embeddings: it learns, it is deterministic, checkpoints round-trip."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.config import ConfigError, LossConfig, ProjectorConfig, TrainConfig
from cxrlib.projector import MultiTaskProjector
from cxrlib.runtime import set_threads
from cxrlib.training import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    EmbeddingSet,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    run_fingerprint,
    save_checkpoint,
    train_projector,
)

D = 32
PROJ = ProjectorConfig(in_dim=D, out_dim=D, hidden_dim=64)
FAST = TrainConfig(lr=3e-3, epochs=10, batch_size=64, warmup_epochs=1, patience=None, seed=0)


def make_set(n: int, seed: int, name: str) -> EmbeddingSet:
    """Two label clusters in 8 signal dims shared by a pair, drowned in 24 dims of modality-specific noise.

    The untrained (identity) head ranks by all 32 dims, mostly noise; a trained head learns to ignore it.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    signal = rng.normal(size=(n, 8)) + np.where(labels[:, None] == 1, 1.0, -1.0)
    image = np.concatenate([signal + 0.3 * rng.normal(size=(n, 8)), 2.0 * rng.normal(size=(n, 24))], axis=1)
    text = np.concatenate([signal + 0.3 * rng.normal(size=(n, 8)), 2.0 * rng.normal(size=(n, 24))], axis=1)
    return EmbeddingSet(
        image=image, text=text, labels=labels, patient_ids=np.arange(n).astype(str), name=name
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy machine; restored afterwards."""
    before = torch.get_num_threads()
    set_threads(1)
    yield
    set_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[EmbeddingSet, EmbeddingSet]:
    return make_set(512, seed=1, name="train"), make_set(192, seed=2, name="val")


@pytest.fixture(scope="module")
def trained(data):
    train, val = data
    return train_projector(train, val, PROJ, LossConfig(), FAST, progress=False)


def test_training_improves_the_monitor_over_the_untrained_head(trained) -> None:
    h = trained.history
    assert list(h["epoch"]) == list(range(FAST.epochs + 1))
    untrained = h.loc[0, "monitor"]
    assert trained.best_epoch > 0
    assert trained.best_monitor == pytest.approx(h["monitor"].max())
    assert trained.best_monitor > untrained + 0.15, (untrained, trained.best_monitor)
    assert h.loc[FAST.epochs, "train_total"] < h.loc[1, "train_total"]
    for col in ("lr", "train_bce", "train_supcon", "train_clip", "train_total", "logit_scale", "val_total"):
        assert col in h.columns and np.isfinite(h[col].iloc[1:]).all(), col
    assert not trained.model.training
    assert not trained.stopped_early and trained.seconds > 0


def test_best_state_is_restored(trained, data) -> None:
    from cxrlib.metrics import retrieval_metrics

    _, val = data
    m = retrieval_metrics(
        trained.model.project_array(val.image, "image"),
        trained.model.project_array(val.text, "text"),
        labels=val.labels,
        ks=FAST.eval_ks,
    )
    assert float(np.mean([m[k] for k in FAST.monitor])) == pytest.approx(trained.best_monitor, abs=1e-6)


def test_lr_schedule_warmup_then_cosine_to_zero() -> None:
    cfg = TrainConfig(lr=1.0, epochs=5, warmup_epochs=2)
    opt = build_optimizer(MultiTaskProjector(PROJ), torch.nn.Linear(1, 1), cfg)  # type: ignore[arg-type]
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:8] == pytest.approx([(s + 1) / 8 for s in range(8)])
    assert lrs[8] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[8:], lrs[9:], strict=False))
    assert lrs[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 11 / 12)))
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.weight_decay, 0.0]


def test_foreach_adamw_updates_are_the_bits_of_the_one_tensor_loop() -> None:
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    weights = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = MultiTaskProjector(PROJ)
        opt = build_optimizer(model, torch.nn.Linear(1, 1), cfg)  # type: ignore[arg-type]
        assert opt.defaults["foreach"] is True
        if not foreach:  # the reference: torch's default on CPU, one parameter at a time
            groups = [{"params": gr["params"], "weight_decay": gr["weight_decay"]} for gr in opt.param_groups]
            opt = torch.optim.AdamW(groups, lr=cfg.lr, foreach=False)
            assert all(gr["foreach"] is False for gr in opt.param_groups)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            for q in model.parameters():
                q.grad = torch.randn(q.shape, generator=g)
            opt.step()
        weights.append([q.detach().clone() for q in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    assert not torch.equal(weights[0][0], MultiTaskProjector(PROJ).state_dict()["heads.shared.mlp.0.weight"])


def test_run_fingerprint_names_data_and_configs(data, trained) -> None:
    train, val = data
    fp = run_fingerprint(train, val, PROJ, LossConfig(), FAST)
    assert trained.fingerprint == fp and len(fp) == 64
    copy = EmbeddingSet(train.image.copy(), train.text.copy(), train.labels.copy(), name="other name")
    assert run_fingerprint(copy, val, PROJ, LossConfig(), FAST) == fp  # names and patient ids do not matter
    nudged = train.image.copy()
    nudged[3, 5] = np.nextafter(nudged[3, 5], np.float32(2))
    flipped = train.labels.copy()
    flipped[0] = 1 - flipped[0]
    for changed in (
        run_fingerprint(EmbeddingSet(nudged, train.text, train.labels), val, PROJ, LossConfig(), FAST),
        run_fingerprint(EmbeddingSet(train.image, train.text, flipped), val, PROJ, LossConfig(), FAST),
        run_fingerprint(val, train, PROJ, LossConfig(), FAST),
        run_fingerprint(train, val, dataclasses.replace(PROJ, dropout=0.2), LossConfig(), FAST),
        run_fingerprint(train, val, PROJ, LossConfig(w_bce=0.5), FAST),
        run_fingerprint(train, val, PROJ, LossConfig(), dataclasses.replace(FAST, seed=1)),
        run_fingerprint(train, val, PROJ, LossConfig(), dataclasses.replace(FAST, device="cuda")),
    ):
        assert changed != fp


def test_same_seed_is_bit_identical(data) -> None:
    train, val = data
    cfg = dataclasses.replace(FAST, epochs=2)
    a = train_projector(train, val, PROJ, LossConfig(), cfg, progress=False)
    b = train_projector(train, val, PROJ, LossConfig(), cfg, progress=False)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train_projector(train, val, PROJ, LossConfig(), dataclasses.replace(cfg, seed=1), progress=False)
    assert not c.history["train_total"].equals(a.history["train_total"])


def test_early_stopping_and_ablation_columns(data) -> None:
    train, val = data
    cfg = dataclasses.replace(FAST, epochs=30, patience=1, lr=0.05, warmup_epochs=0)
    res = train_projector(train, val, PROJ, LossConfig(w_bce=0, w_supcon=0), cfg, progress=False)
    h = res.history
    assert h["train_bce"].isna().all() and h["train_supcon"].isna().all()
    assert res.stopped_early and len(h) - 1 == res.best_epoch + 1 < cfg.epochs + 1


def test_bad_inputs_are_named(data) -> None:
    train, val = data
    image = train.image.copy()
    image[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"rows \[5\]"):
        EmbeddingSet(image=image, text=train.text, labels=train.labels, name="train")
    with pytest.raises(ValueError, match="in_dim"):
        train_projector(train, val, ProjectorConfig(in_dim=16), LossConfig(), FAST, progress=False)
    three = EmbeddingSet(image=val.image, text=val.text, labels=np.full(len(val), 2), name="val")
    with pytest.raises(ValueError, match="0/1 labels"):
        train_projector(train, three, PROJ, LossConfig(), FAST, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_projector(
            val, val, PROJ, LossConfig(), dataclasses.replace(FAST, batch_size=1000), progress=False
        )
    with pytest.raises(KeyError, match="monitor"):
        train_projector(
            train, val, PROJ, LossConfig(), dataclasses.replace(FAST, monitor=("i2t_R@3",)), progress=False
        )


def test_train_config_round_trip() -> None:
    cfg = TrainConfig(monitor=("i2t_R@1",), grad_clip=None, patience=None)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.monitor, tuple) and isinstance(back.eval_ks, tuple)
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    assert all(r["why"] for r in TrainConfig.describe())


def test_checkpoint_round_trip_is_bit_identical(trained, data, tmp_path, monkeypatch) -> None:
    _, val = data
    loss_cfg = LossConfig()
    out = save_checkpoint(trained, PROJ, loss_cfg, FAST, tmp_path / "ckpt")
    assert (out / WEIGHTS_FILE).is_file() and (out / "history.csv").is_file()
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["best_epoch"] == trained.best_epoch and meta["torch_version"] == torch.__version__
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("load_checkpoint must not unpickle"))
    model, info = load_checkpoint(out)
    assert (info.projector, info.loss, info.train) == (PROJ, loss_cfg, FAST)
    sa, sb = trained.model.state_dict(), model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    np.testing.assert_array_equal(
        model.project_array(val.image, "image"), trained.model.project_array(val.image, "image")
    )


def test_corrupted_or_mismatched_checkpoint_errors(trained, tmp_path) -> None:
    out = save_checkpoint(trained.model, PROJ, LossConfig(), FAST, tmp_path / "ckpt")
    config = json.loads((out / CONFIG_FILE).read_text())

    # config edited: depth changes the expected tensors
    edited = json.loads(json.dumps(config))
    edited["projector"]["depth"] = 1
    (out / CONFIG_FILE).write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['heads.shared.mlp.5.bias'"):
        load_checkpoint(out)

    # config edited: width changes a shape, named with both shapes
    edited = json.loads(json.dumps(config))
    edited["projector"]["hidden_dim"] = 48
    (out / CONFIG_FILE).write_text(json.dumps(edited))
    with pytest.raises(
        CheckpointError, match=r"'heads.shared.mlp.0.weight' has shape \(64, 32\).*\(48, 32\)"
    ):
        load_checkpoint(out)

    # unknown config key
    edited = json.loads(json.dumps(config))
    edited["projector"]["width"] = 64
    (out / CONFIG_FILE).write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match="unknown key"):
        load_checkpoint(out)

    # weights changed after saving
    (out / CONFIG_FILE).write_text(json.dumps(config))
    raw = bytearray((out / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (out / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(out)

    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(out)
    with pytest.raises(ValueError, match="projector_cfg"):
        save_checkpoint(trained.model, ProjectorConfig(), LossConfig(), FAST, tmp_path / "other")


def test_truncated_or_empty_checkpoint_weights_name_the_file_and_the_fix(trained, tmp_path) -> None:
    """Fault 6 for checkpoints: a truncated or zero-byte weights file is a CheckpointError with file and fix."""
    out = save_checkpoint(trained, PROJ, LossConfig(), FAST, tmp_path / "ckpt")
    names = sorted(p.name for p in out.iterdir())
    # no temp files left behind; the lock file stays (deleting it while others may open it would race)
    assert names == sorted([WEIGHTS_FILE, WEIGHTS_FILE + ".lock", CONFIG_FILE, "history.csv"])
    raw = (out / WEIGHTS_FILE).read_bytes()
    for damaged in (raw[: len(raw) // 2], b""):
        (out / WEIGHTS_FILE).write_bytes(damaged)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(out)
        msg = str(err.value)
        assert str(out / WEIGHTS_FILE) in msg and "truncated" in msg and f"({len(damaged)} bytes)" in msg
        assert "save_checkpoint" in msg and "03_multitask_finetuning" in msg
    # saving again (the fix) gives a checkpoint that loads
    save_checkpoint(trained, PROJ, LossConfig(), FAST, out)
    model, _ = load_checkpoint(out)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), trained.model.state_dict().values(), strict=True)
    )
