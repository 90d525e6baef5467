"""Report text rules: anonymisation tokens removed without leftovers, sections composed in order."""

from __future__ import annotations

import pytest

from cxrlib.data.reports import clean_text, compose_text


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
