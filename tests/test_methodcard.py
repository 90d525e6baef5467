"""The README's method card lists every hyperparameter, with its source and the values the profiles run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cxrlib import methodcard
from cxrlib.losses import LossConfig
from cxrlib.paths import REPO_ROOT
from cxrlib.profiles import load_profile, notebook_parameters
from cxrlib.projector import ProjectorConfig
from cxrlib.training import TrainConfig

CONFIGS = (ProjectorConfig, LossConfig, TrainConfig)
SOURCES = {"paper abstract", "BiomedCLIP card", "CLIP paper", "our choice", "paper abstract + our choice"}


def test_every_config_field_has_a_row_with_a_reason_and_a_known_source() -> None:
    rows = methodcard.method_card_rows()
    got = [(r["config"], r["field"]) for r in rows]
    want = [(c.__name__, f.name) for c in CONFIGS for f in dataclasses.fields(c)]
    assert got == want
    for r in rows:
        assert len(r["why"]) > 20, f"{r['config']}.{r['field']} has no reason"
        assert r["source"] in SOURCES, f"{r['config']}.{r['field']}: unknown source {r['source']!r}"


def test_profile_columns_show_what_notebook_03_receives() -> None:
    rows = {(r["config"], r["field"]): r for r in methodcard.method_card_rows()}
    demo, paper = load_profile("demo"), load_profile("paper")
    assert rows["LossConfig", "pos_weight"]["demo"] == "None"  # profile "none" -> the config's None
    assert rows["LossConfig", "pos_weight"]["paper"] == "balanced"
    assert rows["TrainConfig", "batch_size"]["demo"] == str(demo["train_batch_size"])
    assert rows["TrainConfig", "epochs"]["paper"] == str(paper["epochs"])
    assert (
        rows["ProjectorConfig", "layernorm"]["demo"] == "-"
    )  # not a notebook parameter: the default applies
    assert rows["ProjectorConfig", "in_dim"]["paper"] == "*the backbone's dim*"  # derived, not the default
    assert rows["TrainConfig", "eval_ks"]["demo"] == str(demo["ks"]).replace("'", "")
    assert rows["LossConfig", "clip_logit_scale_init"]["demo"] == "*the backbone's*"  # profile 0.0
    # every profile column that is not "-" names a parameter that notebook 03 really declares
    nb03 = notebook_parameters(next((REPO_ROOT / "notebooks").glob("03_*.ipynb")))
    for (cfg, field), r in rows.items():
        param = methodcard.PARAM_FOR_FIELD.get((cfg, field), field)
        if r["demo"] != "-" and (cfg, field) not in methodcard.DERIVED:
            assert param in nb03, f"{param} is in the demo profile but not a parameter of notebook 03"


def test_readme_method_card_is_up_to_date() -> None:
    assert not methodcard.update_readme(write=False), (
        "README.md's method card is out of date: run `python -m cxrlib.methodcard --write`"
    )


def test_update_readme_replaces_only_the_marked_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{methodcard.BEGIN}\nold table\n{methodcard.END}\nafter\n")
    assert methodcard.update_readme(readme) is True
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{methodcard.END}\nafter\n")
    assert "old table" not in text and "| `supcon_temperature` |" in text
    assert methodcard.update_readme(readme) is False  # idempotent


def test_update_readme_without_markers_says_what_to_add(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="method-card:begin"):
        methodcard.update_readme(readme)
