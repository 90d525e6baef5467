"""The findings of the phantom corpus: names, severities, frequencies and the words that mention them.

Everything here describes the seven SYNTHETIC findings; nothing depends on numpy or on how they are drawn.
The other modules of :mod:`cxrlib.data.phantom` (sampling, rendering, reports, figures) read these tables.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "FINDINGS",
    "SEVERITIES",
    "SUBTLE",
    "FINDING_WEIGHTS",
    "MENTION_KEYWORDS",
    "SIDES",
    "ZONES",
    "CARDIOMEGALY_CTR",
    "Findings",
    "cardiothoracic_ratio",
]

#: A study's findings: finding name -> attributes (``severity`` and, per finding, ``side``, ``zone``,
#: ``u``, ``v``), e.g. ``{"pleural_effusion": {"severity": "small", "side": "right"}}``.
Findings = dict[str, dict[str, str | float]]

#: The seven findings, in the order of the ``finding_<name>`` columns and of the reports' sentences.
FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "nodule",
    "consolidation",
    "edema",
    "atelectasis",
)
#: Severity levels per finding, mildest first. The first level of each is the "subtle" case.
SEVERITIES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("mild", "moderate", "severe"),
    "pleural_effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "large"),
    "nodule": ("small", "medium", "mass"),
    "consolidation": ("patchy", "dense"),
    "edema": ("mild", "moderate", "severe"),
    "atelectasis": ("minimal", "mild", "plate-like"),
}
#: The subtle case of each finding: its first (mildest) severity.
SUBTLE: dict[str, str] = {f: s[0] for f, s in SEVERITIES.items()}
#: Relative frequency of each finding among abnormal studies (roughly IU X-ray / MIMIC-like ordering).
FINDING_WEIGHTS: dict[str, float] = {
    "cardiomegaly": 0.22,
    "pleural_effusion": 0.18,
    "atelectasis": 0.16,
    "consolidation": 0.12,
    "nodule": 0.12,
    "edema": 0.12,
    "pneumothorax": 0.08,
}
#: Words that count as a mention of each finding in a report (used by the tests and the figures).
MENTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        "cardiomegaly",
        "heart size",
        "cardiac silhouette",
        "cardiomediastinal silhouette",
        "cardiac enlargement",
        "heart is",
    ),
    "pleural_effusion": ("effusion",),
    "pneumothorax": ("pneumothorax", "pneumothoraces"),
    "nodule": ("nodule", "mass"),
    "consolidation": ("consolidation", "airspace"),
    "edema": ("edema", "vascular congestion"),
    "atelectasis": ("atelectasis",),
}
#: Laterality of one-sided findings and the lung zones (top to bottom) a focal finding sits in.
SIDES: tuple[str, ...] = ("right", "left")
ZONES: tuple[str, ...] = ("upper", "middle", "lower")
#: Cardiothoracic ratio of each cardiomegaly severity (normal hearts have 0.40-0.48, drawn per patient).
CARDIOMEGALY_CTR: dict[str, float] = {"mild": 0.535, "moderate": 0.59, "severe": 0.66}


def cardiothoracic_ratio(anatomy: Mapping[str, float], findings: Findings) -> float:
    """The study's cardiothoracic ratio: the patient's own (``anatomy["ctr"]``) unless cardiomegaly is
    present, then that severity's :data:`CARDIOMEGALY_CTR` plus a tenth of the patient's deviation."""
    card = findings.get("cardiomegaly")
    if card is None:
        return anatomy["ctr"]
    return CARDIOMEGALY_CTR[str(card["severity"])] + 0.1 * (anatomy["ctr"] - 0.44)
