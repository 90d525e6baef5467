"""The README's method card lists every hyperparameter, with its source and the values the profiles run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cxrlib import methodcard
from cxrlib.config import SECTIONS

SOURCES = {
    "paper abstract",
    "paper abstract (baselines)",
    "paper abstract (t-SNE)",
    "BiomedCLIP card",
    "CLIP paper",
    "our choice",
    "paper abstract + our choice",
}


def test_every_setting_has_a_row_with_a_reason_and_a_known_source() -> None:
    rows = methodcard.method_card_rows()
    got = [(r["section"], r["field"]) for r in rows]
    want = [(s, f.name) for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
    assert got == want
    for r in rows:
        assert len(r["why"]) > 20, f"{r['section']}.{r['field']} has no reason"
        assert r["source"] in SOURCES, f"{r['section']}.{r['field']}: unknown source {r['source']!r}"


def test_profile_columns_show_what_each_profile_runs() -> None:
    rows = {(r["section"], r["field"]): r for r in methodcard.method_card_rows()}
    assert rows["loss", "pos_weight"]["demo"] == "="  # the default (None) applies
    assert rows["loss", "pos_weight"]["paper"] == "**balanced**"
    assert rows["train", "epochs"]["paper"] == "**100**"
    assert rows["eval", "backbones"]["paper"] == "**[clip, biomedclip]**"
    assert rows["projector", "in_dim"]["paper"] == "*the backbone's embedding dim*"  # derived
    assert rows["train", "eval_ks"]["demo"] == "*eval.ks*"
    assert rows["loss", "clip_logit_scale_init"]["demo"] == "**backbone**"
    assert "accepted: both, image, text" in rows["projector", "cls_on"]["why"]


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
