"""Report text: cleaning, the text-encoder input rule, and section extraction.

The text encoder sees ``compose_text(findings, impression)``:

1. each section is cleaned by :func:`clean_text` (whitespace collapsed, anonymisation tokens such as
   IU X-ray's ``XXXX`` removed, stray spaces before punctuation dropped);
2. FINDINGS then IMPRESSION are joined with one space; a missing section is left out;
3. no section headers are added (the encoders were not trained on them, and they would use up tokens).

Encoders truncate at their context length (CLIP: 77 tokens, BiomedCLIP: 256); FINDINGS comes first,
so a long report loses the end of its IMPRESSION first.

Which sections are embedded is the ``data.text_source`` setting (:data:`TEXT_SOURCES`, applied by
:func:`select_text` in every loader); the manifest always keeps both cleaned sections in ``findings`` and
``impression``, and ``text`` is what the encoder sees:

- ``"findings+impression"`` (default): :func:`compose_text`, as above;
- ``"impression"``: the IMPRESSION alone (the radiologist's summary, short enough for CLIP's 77 tokens in
  most reports); a report without one falls back to its FINDINGS (counted as a note by the loader);
- ``"findings"``: the FINDINGS alone; a report without them falls back to its IMPRESSION (counted);
- ``"longest"``: the longer of the two cleaned sections in characters (FINDINGS on a tie), the section
  that carries the most of the report when only one is embedded; one section missing: the other is used
  (not a fallback: it is the longest).

A report with neither section has no text under any choice and is skipped by the loader (counted).
"""

from __future__ import annotations

import re

__all__ = [
    "ANONYMISATION_TOKENS",
    "TEXT_SOURCES",
    "DEFAULT_TEXT_SOURCE",
    "clean_text",
    "compose_text",
    "select_text",
    "fallback_note",
    "extract_sections",
]

#: Tokens that datasets use to hide identifying words (IU X-ray: "XXXX"; MIMIC-CXR: "___").
ANONYMISATION_TOKENS: tuple[str, ...] = ("XXXX", "___")

#: A run of 2+ capital X, also hyphen- or slash-joined ("XXXX-XXXX", "XXXX/XXXX"), or 3+ underscores.
_ANON_RE = re.compile(r"\bX{2,}(?:[-/]X{2,})*\b|_{3,}")
_SPACE_RE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([.,;:!?])")
_PUNCT_RUN_RE = re.compile(r"[.,;:](?:\s*[.,;:])+")


def _collapse_punct(m: re.Match[str]) -> str:
    run = m.group(0)
    return "." if "." in run else run[0]


def clean_text(text: object) -> str:
    """Normalise one report section. ``None``/NaN become ``""``.

    >>> clean_text("Heart size XXXX.  No  pneumothorax .")
    'Heart size. No pneumothorax.'
    """
    if text is None:
        return ""
    if isinstance(text, float):  # NaN from pandas
        return ""
    s = str(text)
    s = _ANON_RE.sub(" ", s)
    s = _SPACE_RE.sub(" ", s).strip()
    s = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", s)
    s = _PUNCT_RUN_RE.sub(_collapse_punct, s)
    s = s.lstrip(" .,;:").rstrip(" ,;:")
    return s


def compose_text(findings: object, impression: object) -> str:
    """The text-encoder input: cleaned FINDINGS, a space, cleaned IMPRESSION (either may be absent)."""
    parts = [clean_text(findings), clean_text(impression)]
    return " ".join(p for p in parts if p)


#: The accepted values of ``data.text_source``: which report sections become the ``text`` column.
TEXT_SOURCES: tuple[str, ...] = ("findings+impression", "impression", "findings", "longest")
DEFAULT_TEXT_SOURCE = "findings+impression"


def fallback_note(source: str) -> str:
    """The accounting note for a kept row whose ``source`` section was empty, so the other one was used."""
    other = {"impression": "findings", "findings": "impression"}[source]
    return f"text_source={source}: no {source}, {other} used"


def select_text(findings: object, impression: object, source: str = DEFAULT_TEXT_SOURCE) -> tuple[str, str]:
    """The text-encoder input chosen by ``source`` (one of :data:`TEXT_SOURCES`; rules in the module docstring).

    Returns ``(text, note)``: ``note`` is ``""`` when the chosen section was used as asked, else
    :func:`fallback_note` (``"impression"``/``"findings"`` fell back to the other section); ``text`` is ``""``
    only when both sections are empty. ``"findings+impression"`` gives exactly :func:`compose_text`.

    >>> select_text("Heart normal. Lungs clear.", "No acute disease.", "longest")
    ('Heart normal. Lungs clear.', '')
    >>> select_text("", "No acute disease.", "findings")
    ('No acute disease.', 'text_source=findings: no findings, impression used')
    """
    if source not in TEXT_SOURCES:
        raise ValueError(f"text_source must be one of {list(TEXT_SOURCES)}, got {source!r}")
    f, i = clean_text(findings), clean_text(impression)
    if source == "findings+impression":
        return " ".join(p for p in (f, i) if p), ""
    if source == "longest":
        return (f if len(f) >= len(i) else i), ""
    chosen, other = (i, f) if source == "impression" else (f, i)
    if chosen:
        return chosen, ""
    return other, (fallback_note(source) if other else "")


_SECTION_RE = re.compile(
    r"^\s*(FINDINGS?|IMPRESSIONS?|INDICATIONS?|HISTORY|COMPARISONS?|TECHNIQUE|EXAMINATION|"
    r"CLINICAL INFORMATION|REASON FOR EXAMINATION|CONCLUSIONS?|RECOMMENDATIONS?|NOTIFICATION|"
    r"FINAL REPORT|WET READ)\s*(?:\(S\))?\s*:",
    re.IGNORECASE | re.MULTILINE,
)


def extract_sections(report: str) -> dict[str, str]:
    """Split a free-text report (MIMIC-CXR style ``FINDINGS: ... IMPRESSION: ...``) into sections.

    Returns a dict with lower-case keys (``findings``, ``impression``, ``indication``, ``comparison``,
    ``history``, ``technique``, ...) mapping to the raw (uncleaned) section text. Headers are matched at
    the start of a line, case-insensitively; singular/plural forms map to one key. Text before the first
    header is returned under ``preamble``.
    """
    out: dict[str, str] = {}
    matches = list(_SECTION_RE.finditer(report))
    if not matches:
        out["preamble"] = report.strip()
        return out
    pre = report[: matches[0].start()].strip()
    if pre:
        out["preamble"] = pre
    for m, nxt in zip(matches, [*matches[1:], None], strict=True):
        name = m.group(1).lower()
        name = {
            "finding": "findings",
            "impressions": "impression",
            "indications": "indication",
            "comparisons": "comparison",
            "conclusions": "conclusion",
            "recommendations": "recommendation",
        }.get(name, name)
        body = report[m.end() : nxt.start() if nxt is not None else len(report)].strip()
        out[name] = (out[name] + " " + body).strip() if name in out else body
    return out
