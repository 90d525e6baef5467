"""Sampling the phantom corpus: per-patient anatomy, per-study acquisition, findings and follow-ups.

:func:`sample_patient_studies` draws all studies of one patient as :class:`Study` records (no pixels, no
text): the anatomy is shared by the patient's studies (with a small per-study repositioning), the
acquisition (exposure, contrast, noise, blur) is drawn per study, and a normal/abnormal Markov chain with
finding evolution (:func:`_evolve`) links the follow-ups. All of it is SYNTHETIC and drawn from the given
generator, so the same generator state gives the same studies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cxrlib.config import PhantomConfig
from cxrlib.data.phantom.findings import FINDING_WEIGHTS, SEVERITIES, SIDES, ZONES, Findings

__all__ = ["Study", "sample_patient_studies"]


@dataclass
class Study:
    """One study: the patient's anatomy, the study's acquisition, and its findings.

    ``findings`` maps a finding name to its attributes, e.g. ``{"pleural_effusion": {"severity": "small",
    "side": "right"}}``. ``changes`` (follow-ups only) maps a finding name to "new", "increased",
    "decreased", "unchanged" or "resolved".
    """

    patient_idx: int
    study_index: int
    anatomy: dict[str, float]
    acquisition: dict[str, float]
    findings: Findings = field(default_factory=dict)
    changes: dict[str, str] = field(default_factory=dict)


def _sample_anatomy(rng: np.random.Generator) -> dict[str, float]:
    """One patient's anatomy: position, scale, aspect, rotation, cardiothoracic ratio, diaphragm domes,
    rib phase and spacing, and the index of the vessel texture (independent of any finding)."""
    return {
        "tx": float(rng.normal(0.0, 0.025)),
        "ty": float(rng.normal(0.02, 0.025)),
        "scale": float(rng.uniform(0.92, 1.04)),
        "aspect": float(rng.uniform(0.94, 1.06)),
        "rot": float(rng.normal(0.0, math.radians(2.5))),
        "ctr": float(rng.uniform(0.40, 0.48)),  # normal cardiothoracic ratio
        "dome_r": float(rng.uniform(0.44, 0.52)),
        "dome_l": float(rng.uniform(0.50, 0.58)),
        "rib_phase": float(rng.uniform(0.0, 1.0)),
        "rib_spacing": float(rng.uniform(0.15, 0.175)),
        "texture": float(rng.integers(0, 1 << 30)),
    }


def _sample_acquisition(rng: np.random.Generator) -> dict[str, float]:
    """One study's acquisition: exposure (gain, offset, gamma), noise, blur, shift and the noise seed."""
    return {
        "gain": float(rng.uniform(0.85, 1.15)),
        "offset": float(rng.uniform(-0.04, 0.06)),
        "gamma": float(rng.uniform(0.8, 1.2)),
        "noise": float(rng.uniform(0.008, 0.03)),
        "blur": float(rng.uniform(0.35, 1.1)),
        "shift_x": float(rng.normal(0.0, 0.01)),
        "shift_y": float(rng.normal(0.0, 0.01)),
        "seed": float(rng.integers(0, 1 << 30)),
    }


def _new_finding(name: str, rng: np.random.Generator, subtle_fraction: float) -> dict[str, str | float]:
    """Attributes of a newly appearing finding ``name``: its severity (the subtle one with probability
    ``subtle_fraction``) and, where the finding has them, side, zone and position inside the zone."""
    levels = SEVERITIES[name]
    if rng.random() < subtle_fraction:
        sev = levels[0]
    else:
        sev = levels[int(rng.integers(1, len(levels)))] if len(levels) > 1 else levels[0]
    attrs: dict[str, str | float] = {"severity": sev}
    if name == "pleural_effusion":
        attrs["side"] = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.3, 0.3]))
    elif name == "pneumothorax":
        attrs["side"] = str(rng.choice(SIDES))
    elif name == "nodule":
        attrs["side"] = str(rng.choice(SIDES))
        attrs["zone"] = str(rng.choice(ZONES, p=[0.45, 0.3, 0.25]))
        attrs["u"] = float(rng.uniform(-0.6, 0.6))  # position inside the zone
        attrs["v"] = float(rng.uniform(-0.5, 0.5))
    elif name == "consolidation":
        attrs["side"] = str(rng.choice(SIDES))
        attrs["zone"] = str(rng.choice(ZONES, p=[0.25, 0.25, 0.5]))
        attrs["u"] = float(rng.uniform(-0.4, 0.4))
    elif name == "atelectasis":
        attrs["side"] = str(rng.choice(["right", "left", "bibasilar"], p=[0.35, 0.35, 0.3]))
        attrs["u"] = float(rng.uniform(-0.3, 0.3))
    return attrs


def _draw_findings(rng: np.random.Generator, cfg: PhantomConfig) -> Findings:
    """Findings of an abnormal study: 1–3 findings, with heart-failure findings tending to co-occur."""
    names = list(FINDING_WEIGHTS)
    p = np.array([FINDING_WEIGHTS[n] for n in names])
    n = int(rng.choice([1, 2, 3], p=[0.55, 0.32, 0.13]))
    chosen = list(rng.choice(names, size=n, replace=False, p=p / p.sum()))
    # heart failure pattern: edema brings cardiomegaly and/or effusions along more often than chance
    if "edema" in chosen and rng.random() < 0.5 and "cardiomegaly" not in chosen:
        chosen.append("cardiomegaly")
    if "edema" in chosen and rng.random() < 0.35 and "pleural_effusion" not in chosen:
        chosen.append("pleural_effusion")
    out = {name: _new_finding(name, rng, cfg.subtle_fraction) for name in chosen}
    if "edema" in out and "pleural_effusion" in out and rng.random() < 0.7:
        out["pleural_effusion"]["side"] = "bilateral"
    return out


def _evolve(prior: Findings, rng: np.random.Generator, cfg: PhantomConfig) -> tuple[Findings, dict[str, str]]:
    """A follow-up of an abnormal study that stays abnormal: each finding progresses, persists or regresses."""
    out: Findings = {}
    changes: dict[str, str] = {}
    for name, attrs in prior.items():
        levels = SEVERITIES[name]
        k = levels.index(str(attrs["severity"]))
        r = rng.random()
        if r < 0.2 and len(prior) > 1:
            changes[name] = "resolved"
            continue
        new = dict(attrs)
        if r < 0.45 and k + 1 < len(levels):
            new["severity"] = levels[k + 1]
            changes[name] = "increased"
        elif r < 0.65 and k > 0:
            new["severity"] = levels[k - 1]
            changes[name] = "decreased"
        else:
            changes[name] = "unchanged"
        out[name] = new
    if rng.random() < 0.2:
        extra = _draw_findings(rng, cfg)
        for name, attrs in extra.items():
            if name not in out:
                out[name] = attrs
                changes[name] = "new"
                break
    if not out:  # everything resolved: keep the mildest version of one finding
        name = next(iter(prior))
        out[name] = dict(prior[name], severity=SEVERITIES[name][0])
        changes[name] = "decreased"
    return out, changes


def sample_patient_studies(patient_idx: int, rng: np.random.Generator, cfg: PhantomConfig) -> list[Study]:
    """All studies of one patient: shared anatomy, per-study acquisition, a normal/abnormal Markov chain.

    The chain's stationary normal rate is ``cfg.normal_rate``; ``cfg.persistence`` sets how often a
    follow-up keeps the previous state (abnormal findings then evolve with :func:`_evolve`).
    """
    anatomy = _sample_anatomy(rng)
    n_studies = 1 + int(min(cfg.max_studies - 1, rng.geometric(0.55) - 1))
    studies: list[Study] = []
    normal = rng.random() < cfg.normal_rate
    prior: Findings = {}
    for k in range(n_studies):
        if k > 0:
            # move with probability (1 - persistence) to a fresh draw from the stationary distribution
            if rng.random() > cfg.persistence:
                normal = rng.random() < cfg.normal_rate
        anat = dict(anatomy)
        anat["tx"] += float(rng.normal(0.0, 0.01))
        anat["ty"] += float(rng.normal(0.0, 0.01))
        anat["rot"] += float(rng.normal(0.0, math.radians(0.8)))
        changes: dict[str, str] = {}
        if normal:
            findings: Findings = {}
            if k > 0:
                changes = dict.fromkeys(prior, "resolved")
        elif prior:
            findings, changes = _evolve(prior, rng, cfg)
        else:
            findings = _draw_findings(rng, cfg)
            if k > 0:
                changes = dict.fromkeys(findings, "new")
        studies.append(Study(patient_idx, k, anat, _sample_acquisition(rng), findings, changes))
        prior = findings
    return studies
