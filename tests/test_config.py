"""cxrlib.config: one declaration per setting, profiles as differences, every value checked up front."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cxrlib.config import (
    DERIVED,
    SECTIONS,
    ConfigError,
    DataConfig,
    LossConfig,
    TrainConfig,
    build_settings,
    diff_from_defaults,
    load_settings,
    merge_overrides,
)


def test_defaults_build_and_every_field_is_declared_with_a_reason():
    s = build_settings({})
    for name, cls in SECTIONS.items():
        assert isinstance(getattr(s, name), cls)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("why"), f"{name}.{f.name} has no reason"


def test_derived_fields_follow_their_source_and_cannot_be_set():
    s = build_settings({"run": {"seed": 7, "device": "auto"}, "eval": {"ks": [1, 5, 10, 3]}})
    assert (s.train.seed, s.train.device, s.train.eval_ks) == (7, "auto", (1, 5, 10, 3))
    with pytest.raises(ConfigError, match=r"train\.seed is derived from run\.seed"):
        build_settings({"train": {"seed": 3}})
    assert ("projector", "in_dim") in DERIVED
    assert s.projector_for(128).in_dim == 128 == s.projector_for(128).out_dim


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"loss": {"pos_weight": "balanced2"}}, "pos_weight must be None, 'balanced' or a float"),
        ({"projector": {"cls_on": "imagez"}}, "'imagez' is not accepted (did you mean 'image'?). Accepted:"),
        ({"viz": {"methods": ["tsne", "pca2"]}}, "'pca2' is not accepted (did you mean 'pca'?)"),
        ({"eval": {"split": "tset"}}, "eval.split = 'tset'"),
        ({"train": {"lr": "1e-3"}}, "write it as a number: 0.001"),
        ({"train": {"epochs": 2.5}}, "train.epochs = 2.5 (float): expected int"),
        ({"data": {"split_ratios": [0.5, 0.2]}}, "three fractions"),
        ({"lossy": {"w_bce": 1.0}}, "unknown section 'lossy' (did you mean 'loss'?)"),
        ({"loss": {"w_bcee": 1.0}}, "did you mean w_bce?"),
        ({"eval": {"ks": [1, 5]}}, "train.monitor key 'i2t_mAP@10_label' needs K=10 in eval.ks"),
        ({"phantom": {"normal_rate": 1.5}}, "phantom.normal_rate must be a finite number >= 0.0 and <= 1.0"),
        ({"eval": {"also_finetune": ["clip"]}}, "eval.also_finetune lists 'clip': each entry must be one of"),
        ({"eval": {"also_finetune": ["demo"]}}, "other than eval.finetune ('demo')"),
        ({"eval": {"also_finetune": ["demo-random", "demo-random"]}}, "lists a backbone twice"),
    ],
)
def test_bad_values_name_the_setting_and_what_is_accepted(values, says):
    with pytest.raises(ConfigError) as err:
        build_settings(values, source="profiles/x.yaml")
    assert says in str(err.value) and "profiles/x.yaml" in str(err.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        build_settings({"eval": {"split": "tset"}, "viz": {"methods": ["x"]}})
    assert "eval.split" in str(err.value) and "viz.methods" in str(err.value)


def test_lists_become_tuples_and_round_trip():
    s = build_settings({"eval": {"backbones": ["a", "b"]}, "ablation": {"seeds": [4]}})
    assert s.eval.backbones == ("a", "b") and s.ablation.seeds == (4,)
    for cfg in s.sections().values():
        assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_profiles_and_overrides_merge(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("loss:\n  w_bce: 0.5  # half\ntrain:\n  epochs: 3  # short\n")
    s = load_settings("p", {"loss": {"w_clip": 0.0}}, folder=tmp_path)
    assert (s.loss.w_bce, s.loss.w_clip, s.train.epochs) == (0.5, 0.0, 3)
    assert diff_from_defaults(s) == {"loss": {"w_bce": 0.5, "w_clip": 0.0}, "train": {"epochs": 3}}
    with pytest.raises(ConfigError, match="must map field names"):
        merge_overrides({}, {"loss": 3})


def test_shipped_profiles_build():
    demo, paper = load_settings("demo"), load_settings("paper")
    assert demo.synthetic and not paper.synthetic
    assert demo.tuned_name == "demo+multitask" and paper.tuned_name == "biomedclip+multitask"


def test_replace_checks_like_from_dict():
    assert LossConfig().replace(w_bce=0.0).w_bce == 0.0
    with pytest.raises(ConfigError, match="all three weights are 0"):
        LossConfig().replace(w_bce=0.0, w_supcon=0.0, w_clip=0.0)
    assert TrainConfig().replace(monitor=["i2t_R@5"]).monitor == ("i2t_R@5",)
    assert DataConfig().csv_options == {} and DataConfig().csv_options is not DataConfig().csv_options
