"""The report grammar of the phantom corpus: :func:`write_report` writes FINDINGS and IMPRESSION.

A stochastic grammar with synonyms, varied sentence order, explicit negations of (some) absent findings,
laterality and severity words that match the study, and comparisons with the prior study for follow-ups.
Normal reports come from a small weighted set of phrasings, so many are identical, as in real collections; two
of them list more negatives, so that normal and abnormal report lengths overlap as they do in real collections.
All text is SYNTHETIC.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrlib.data.phantom.anatomy import Study
from cxrlib.data.phantom.findings import FINDINGS

__all__ = ["write_report"]

#: FINDINGS sections of normal reports, with their weights.
_NORMAL_FINDINGS: tuple[tuple[str, float], ...] = (
    (
        "The heart size and mediastinal contours are within normal limits. The lungs are clear. "
        "No pleural effusion or pneumothorax.",
        0.42,
    ),
    ("Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.", 0.2),
    (
        "The cardiomediastinal silhouette is normal. No focal airspace consolidation. "
        "No pleural effusion or pneumothorax. No acute osseous abnormality.",
        0.16,
    ),
    ("Normal heart size. Clear lungs. No effusion or pneumothorax.", 0.12),
    (
        "The lungs are well expanded and clear. The cardiomediastinal silhouette is within normal limits. "
        "No pneumothorax or pleural effusion.",
        0.1,
    ),
    # longer phrasings that list more negatives, as many real normal reports do: normal and abnormal lengths
    # overlap, so a report's length gives its label away less (notebook 01 measures it)
    (
        "Heart size is normal. The lungs are clear. No focal consolidation. No pulmonary edema. "
        "No pleural effusion or pneumothorax. No suspicious pulmonary nodule or mass. No acute osseous abnormality.",
        0.24,
    ),
    (
        "The heart size and mediastinal contours are within normal limits. The lungs are clear. "
        "No focal airspace consolidation. There is no pulmonary edema. No pleural effusion or pneumothorax. "
        "No discrete nodule or mass. The osseous structures are intact.",
        0.2,
    ),
)
#: IMPRESSION sections of normal reports, with their weights.
_NORMAL_IMPRESSIONS: tuple[tuple[str, float], ...] = (
    ("No acute cardiopulmonary abnormality.", 0.5),
    ("No acute cardiopulmonary process.", 0.25),
    ("Normal chest radiograph.", 0.15),
    ("No active disease.", 0.1),
)
#: (side, zone) -> the lobe named in the report.
_LOBE: dict[tuple[str, str], str] = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}
#: Reported nodule diameter range (mm) per nodule severity, and mass diameter range (cm).
_NODULE_MM: dict[str, tuple[int, int]] = {"small": (6, 10), "medium": (14, 25)}
_MASS_CM: tuple[float, float] = (3.5, 6.0)

#: Negation sentences; each lists the findings it negates. Used only for absent findings.
_NEGATIONS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("cardiomegaly",): (
        "Heart size is normal.",
        "The heart is normal in size.",
        "Normal cardiac silhouette.",
    ),
    ("pleural_effusion", "pneumothorax"): (
        "No pleural effusion or pneumothorax.",
        "There is no pleural effusion or pneumothorax.",
        "No pneumothorax or pleural effusion.",
    ),
    ("pleural_effusion",): ("No pleural effusion.", "No effusion is seen."),
    ("pneumothorax",): ("No pneumothorax.", "There is no pneumothorax."),
    ("consolidation",): ("No focal consolidation.", "No focal airspace consolidation."),
    ("edema",): ("No pulmonary edema.", "There is no pulmonary edema."),
    ("nodule",): ("No suspicious pulmonary nodule or mass.", "No discrete nodule or mass."),
    ("atelectasis",): ("No atelectasis.",),
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of ``options``, uniformly."""
    return str(options[int(rng.integers(0, len(options)))])


def _weighted(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    """One text of ``options`` (pairs of text and weight), with probability proportional to its weight."""
    p = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=p / p.sum()))][0]


def _side_words(side: str, plural_noun: str, singular_noun: str) -> tuple[str, str]:
    """(side word, noun) for a side: ``bilateral`` takes the plural noun, ``right``/``left`` the singular."""
    if side == "bilateral":
        return "bilateral", plural_noun
    return side, singular_noun


def _positive(name: str, a: dict[str, str | float], rng: np.random.Generator) -> tuple[str, str]:
    """(findings sentence, impression phrase) for a present finding."""
    sev = str(a["severity"])
    if name == "cardiomegaly":
        word = {"mild": "Mild", "moderate": "Moderate", "severe": _pick(rng, ["Severe", "Marked"])}[sev]
        s = _pick(
            rng,
            [
                f"{word} cardiomegaly.",
                f"The cardiac silhouette is {word.lower()}ly enlarged.",
                f"{word} enlargement of the cardiac silhouette.",
                f"The heart is {word.lower()}ly enlarged.",
            ],
        )
        return s, f"{word.lower()} cardiomegaly"
    if name == "pleural_effusion":
        side, noun = _side_words(str(a["side"]), "pleural effusions", "pleural effusion")
        s = _pick(
            rng,
            [
                f"{sev.capitalize()} {side} {noun}.",
                f"There is a {sev} {side} {noun}."
                if side != "bilateral"
                else f"There are {sev} {side} {noun}.",
                f"{sev.capitalize()} {side} {noun} with blunting of the costophrenic angle"
                + ("s." if side == "bilateral" else "."),
            ],
        )
        return s, f"{sev} {side} {noun}"
    if name == "pneumothorax":
        side = str(a["side"])
        if sev == "small":
            s = _pick(rng, [f"Small {side} apical pneumothorax.", f"There is a small {side} pneumothorax."])
        else:
            s = _pick(
                rng, [f"Large {side} pneumothorax.", f"Large {side} pneumothorax with partial lung collapse."]
            )
        return s, f"{sev} {side} pneumothorax"
    if name == "nodule":
        lobe = _LOBE[(str(a["side"]), str(a["zone"]))]
        if sev == "mass":
            cm = rng.uniform(*_MASS_CM)
            s = _pick(
                rng, [f"{cm:.1f} cm mass in the {lobe}.", f"There is a {cm:.1f} cm mass in the {lobe}."]
            )
            return s, f"{lobe} mass"
        lo, hi = _NODULE_MM[sev]
        mm = int(rng.integers(lo, hi + 1))
        adj = "small " if sev == "small" else ""
        s = _pick(rng, [f"{mm} mm nodule in the {lobe}.", f"There is a {adj}{mm} mm nodule in the {lobe}."])
        return s, f"{adj}{lobe} nodule"
    if name == "consolidation":
        lobe = _LOBE[(str(a["side"]), str(a["zone"]))]
        if sev == "dense":
            s = _pick(
                rng,
                [f"Dense consolidation in the {lobe}.", f"Dense {lobe} consolidation with air bronchograms."],
            )
        else:
            s = _pick(
                rng, [f"Patchy airspace opacity in the {lobe}.", f"Patchy consolidation in the {lobe}."]
            )
        return s, f"{lobe} consolidation, which may represent pneumonia"
    if name == "edema":
        s = {
            "mild": _pick(
                rng,
                ["Mild pulmonary vascular congestion and interstitial edema.", "Mild interstitial edema."],
            ),
            "moderate": _pick(
                rng,
                ["Moderate pulmonary edema.", "Moderate interstitial pulmonary edema with Kerley B lines."],
            ),
            "severe": _pick(rng, ["Severe pulmonary edema.", "Diffuse bilateral alveolar edema."]),
        }[sev]
        return s, f"{sev} pulmonary edema"
    if name == "atelectasis":
        side = str(a["side"])
        where = "bibasilar" if side == "bibasilar" else f"{side} basilar"
        s = _pick(rng, [f"{sev.capitalize()} {where} atelectasis.", f"There is {sev} {where} atelectasis."])
        return s, f"{sev} {where} atelectasis"
    raise KeyError(name)


#: Sentences about the change since the prior study (``Study.changes``), ``{x}`` = the finding's noun.
_CHANGE_SENTENCES: dict[str, tuple[str, ...]] = {
    "increased": ("Compared with the prior study, the {x} has increased.", "Interval increase in the {x}."),
    "decreased": ("Compared with the prior study, the {x} has decreased.", "Interval decrease in the {x}."),
    "unchanged": ("The {x} is unchanged from the prior study.", "Stable {x}."),
    "new": ("The {x} is new since the prior study.",),
}
#: The noun used for each finding in comparison sentences.
_CHANGE_NOUNS: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "nodule": "nodule",
    "consolidation": "consolidation",
    "edema": "pulmonary edema",
    "atelectasis": "atelectasis",
}


def write_report(
    study: Study, rng: np.random.Generator, miss: str | None = None
) -> tuple[str, str, dict[str, list[str]]]:
    """FINDINGS and IMPRESSION for ``study``. ``miss`` names a finding the "radiologist" overlooks.

    Returns ``(findings, impression, info)`` where ``info["mentioned"]`` lists the findings stated as
    present and ``info["negated"]`` those stated as absent (sentence level; used by the tests).
    """
    present = {k: v for k, v in study.findings.items() if k != miss}
    mentioned: list[str] = []
    negated: list[str] = []
    if not present:
        findings = _weighted(rng, _NORMAL_FINDINGS)
        impression = _weighted(rng, _NORMAL_IMPRESSIONS)
        negated = ["cardiomegaly", "pleural_effusion", "pneumothorax"]
        negated += [f for f in ("consolidation", "edema", "nodule") if f in findings]
        resolved = [k for k, c in study.changes.items() if c == "resolved" and k != miss]
        if resolved and rng.random() < 0.6:
            noun = _CHANGE_NOUNS[resolved[0]]
            findings = f"Previously seen {noun} has resolved. " + findings
            negated.append(resolved[0])
        return findings, impression, {"mentioned": [], "negated": sorted(set(negated))}

    order = sorted(present, key=lambda k: FINDINGS.index(k))
    if rng.random() < 0.35:
        rng.shuffle(order)
    sentences: list[str] = []
    phrases: list[str] = []
    for name in order:
        s, p = _positive(name, present[name], rng)
        change = study.changes.get(name)
        if change in _CHANGE_SENTENCES and rng.random() < 0.7:
            s = s + " " + _pick(rng, _CHANGE_SENTENCES[change]).format(x=_CHANGE_NOUNS[name])
        sentences.append(s)
        phrases.append(p)
        mentioned.append(name)
    # negate a random subset of absent findings (reports rarely list every negative)
    absent = [f for f in FINDINGS if f not in present]
    neg_sentences: list[str] = []
    groups = sorted(_NEGATIONS, key=len, reverse=True)
    covered: set[str] = set()
    for group in groups:
        if all(g in absent and g not in covered for g in group):
            keep = 0.9 if group[0] in ("cardiomegaly", "pleural_effusion", "pneumothorax") else 0.45
            if rng.random() < keep:
                neg_sentences.append(_pick(rng, _NEGATIONS[group]))
                covered.update(group)
                negated.extend(group)
    for name, change in study.changes.items():
        if change == "resolved" and name in absent and name != miss and rng.random() < 0.7:
            neg_sentences.append(f"Previously seen {_CHANGE_NOUNS[name]} has resolved.")
            negated.append(name)
    if rng.random() < 0.3:
        neg_sentences.append(
            _pick(rng, ["No acute osseous abnormality.", "The osseous structures are intact."])
        )
    body = sentences + neg_sentences
    if rng.random() < 0.3:
        # occasionally lead with negatives (heart first is the usual order)
        body = neg_sentences[:1] + sentences + neg_sentences[1:]
    findings = " ".join(body)
    if len(phrases) == 1:
        impression = phrases[0][0].upper() + phrases[0][1:] + "."
    elif rng.random() < 0.5:
        impression = " ".join(f"{i + 1}. {p[0].upper() + p[1:]}." for i, p in enumerate(phrases))
    else:
        impression = (", ".join(phrases[:-1]) + " and " + phrases[-1]).capitalize() + "."
    return findings, impression, {"mentioned": sorted(set(mentioned)), "negated": sorted(set(negated))}
