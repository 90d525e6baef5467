"""Report text: cleaning, the text-encoder input rule, and section extraction.

The text encoder sees ``compose_text(findings, impression)``:

1. each section is cleaned by :func:`clean_text` (whitespace collapsed, anonymisation tokens such as
   IU X-ray's ``XXXX`` removed, stray spaces before punctuation dropped);
2. FINDINGS then IMPRESSION are joined with one space; a missing section is left out;
3. no section headers are added (the encoders were not trained on them, and they would use up tokens).

Encoders truncate at their context length (CLIP: 77 tokens, BiomedCLIP: 256); FINDINGS comes first,
so a long report loses the end of its IMPRESSION first.
"""

from __future__ import annotations

import re

__all__ = ["ANONYMISATION_TOKENS", "clean_text", "compose_text", "extract_sections"]

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
