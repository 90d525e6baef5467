"""Report text rules: anonymisation tokens removed without leftovers, sections composed in order."""

from __future__ import annotations

import random

import pytest

from cxrlib.data.reports import DEFAULT_TEXT_SOURCE, TEXT_SOURCES, clean_text, compose_text, select_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Heart size XXXX.  No  pneumothorax .", "Heart size. No pneumothorax."),
        ("Seen on XXXX-XXXX views.", "Seen on views."),
        ("left XXXX/XXXX rib fracture", "left rib fracture"),
        ("Dr. XXXXX was notified at XXXX a.m.", "Dr. was notified at a.m."),
        ("MIMIC ___ was called ___.", "MIMIC was called."),
        ("xxxx lowercase is a word, X-ray stays", "xxxx lowercase is a word, X-ray stays"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_compose_text_skips_empty_sections():
    assert compose_text("No effusion.", None) == "No effusion."
    assert compose_text("XXXX", "Normal chest.") == "Normal chest."


# --------------------------------------------------------------------------------------------------
# select_text: which sections become the encoder's text (data.text_source)
# --------------------------------------------------------------------------------------------------
F = "Heart size normal. Lungs are clear. No pleural effusion."
I = "No acute disease."  # noqa: E741 - I for impression


@pytest.mark.parametrize(
    ("source", "findings", "impression", "text", "note"),
    [
        ("findings+impression", F, I, F + " " + I, ""),
        ("findings+impression", "", I, I, ""),
        ("impression", F, I, I, ""),
        ("impression", F, "", F, "text_source=impression: no impression, findings used"),
        (
            "impression",
            F,
            "XXXX.",
            F,
            "text_source=impression: no impression, findings used",
        ),  # empty once cleaned
        ("findings", F, I, F, ""),
        ("findings", None, I, I, "text_source=findings: no findings, impression used"),
        ("longest", F, I, F, ""),
        ("longest", "Clear.", I, I, ""),
        ("longest", "Abc.", "Xyz.", "Abc.", ""),  # a tie: findings
        ("longest", "", I, I, ""),  # one section: it is the longest, not a fallback
        ("impression", "", "", "", ""),  # nothing to embed: the loader skips the report
        ("longest", None, None, "", ""),
    ],
)
def test_select_text_cases(source, findings, impression, text, note):
    assert select_text(findings, impression, source) == (text, note)


def test_select_text_default_is_compose_text():
    """The default reproduces compose_text exactly (the demo's text column must not change)."""
    rng = random.Random(0)
    words = ["Heart", "XXXX", "normal", ".", ",", "  ", "lungs", "clear", "___", "effusion", ""]
    for _ in range(500):
        f = " ".join(rng.choice(words) for _ in range(rng.randrange(8)))
        i = " ".join(rng.choice(words) for _ in range(rng.randrange(8)))
        assert select_text(f, i) == (compose_text(f, i), "")
        assert select_text(f, i, DEFAULT_TEXT_SOURCE)[0] == compose_text(f, i)


def test_select_text_against_a_reference_rule():
    """Every source on random section pairs, against the rule written out plainly."""
    rng = random.Random(1)
    pool = ["", "XXXX", "Clear.", "No effusion.", "Mild cardiomegaly with small effusions.", "Normal."]
    for _ in range(300):
        f, i = rng.choice(pool), rng.choice(pool)
        cf, ci = clean_text(f), clean_text(i)
        want = {
            "findings+impression": " ".join(p for p in (cf, ci) if p),
            "impression": ci or cf,
            "findings": cf or ci,
            "longest": ci if len(ci) > len(cf) else cf,
        }
        for source in TEXT_SOURCES:
            assert select_text(f, i, source)[0] == want[source], (source, f, i)


def test_select_text_unknown_source_names_the_choices():
    with pytest.raises(ValueError, match="text_source must be one of") as e:
        select_text("a", "b", "summary")
    assert all(s in str(e.value) for s in TEXT_SOURCES)


def test_config_choices_are_the_text_sources():
    import dataclasses

    from cxrlib.config import ConfigError, DataConfig

    field = {f.name: f for f in dataclasses.fields(DataConfig)}["text_source"]
    assert field.metadata["choices"] == TEXT_SOURCES and DataConfig().text_source == DEFAULT_TEXT_SOURCE
    with pytest.raises(ConfigError, match="data.text_source must be one of"):
        DataConfig(text_source="summary")
    with pytest.raises(ValueError, match="not accepted"):
        DataConfig.from_dict({"text_source": "Summary"})
