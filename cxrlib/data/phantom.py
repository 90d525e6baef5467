"""The phantom corpus: SYNTHETIC chest radiographs with known findings and radiology-style reports.

Nothing here is a real patient. The corpus exists so that the whole method runs offline, anywhere, in
seconds, on data that behaves like the real task:

- **Images** — grayscale frontal (PA) radiograph-like images drawn from analytic anatomy: body and soft
  tissue, two lung fields with vascular markings, mediastinum with trachea and aortic knob, heart
  silhouette, diaphragm domes with sharp costophrenic angles, ribs, clavicles and spine. Every patient has
  their own anatomy (size, position, small rotation, cardiothoracic ratio); every study its own exposure,
  contrast, noise and blur. All of these are drawn independently of the label: the ONLY difference between a
  normal and an abnormal image is the rendered findings.
- **Findings** (7) with laterality/location and severity, rendered the way they look on a film:

  =================  ===================================  =============================================
  finding            attributes                           how it is drawn
  =================  ===================================  =============================================
  cardiomegaly       mild / moderate / severe             heart widened (cardiothoracic ratio > 0.5)
  pleural_effusion   right / left / bilateral;            basal opacity with a meniscus rising
                     small / moderate / large             laterally, blunting the costophrenic angle
  pneumothorax       right / left; small / large          lucent apical-lateral rim without lung
                                                          markings, thin visceral pleural line
  nodule             side + zone; small / medium / mass   round (small, subtle) to lobulated (mass)
                                                          soft-tissue opacity
  consolidation      side + lobe; patchy / dense          irregular airspace opacity with air
                                                          bronchograms when dense
  edema              mild / moderate / severe             bilateral perihilar haze, upper-zone
                                                          vessel prominence, Kerley B lines
  atelectasis        right / left / bibasilar;            linear / plate-like basal band
                     minimal / mild / plate-like
  =================  ===================================  =============================================

  Subtle cases (the first severity of each finding, e.g. small nodule, mild cardiomegaly) are common.
- **Reports** — FINDINGS and IMPRESSION from a stochastic grammar: synonyms, varied sentence order,
  explicit negations of absent findings, laterality and severity words that match the image, comparisons
  with the prior study for follow-ups. Normal reports come from a small set of phrasings, so many are
  identical (as in IU X-ray and MIMIC-CXR). A configurable fraction of the studies that have a subtle
  finding get a report that misses it (``report_noise``, a rate among those studies, not among all reports;
  the missed finding is recorded in ``missed_finding``). Such a report treats the finding as absent, as a
  radiologist who overlooked it would, so it may also negate it ("No pulmonary edema."): noise rows are the
  one place where report and labels disagree. The label and tags are the image's ground truth.
- **Structure** — patients with one to several studies; follow-ups where findings progress, persist,
  regress or resolve, and new ones appear; one frontal image per study; normal prevalence configurable
  (default 40 %); a reserved pretraining pool of patients (``split == "pretrain"``) for the demo backbone,
  disjoint from the patients that notebook 01 later splits into train/val/test.

Public entry point: :func:`generate_corpus`. The returned manifest follows
:mod:`cxrlib.data.manifest` and adds ``finding_<name>`` multi-hot columns, ``finding_detail`` (JSON),
``ctr`` (cardiothoracic ratio), ``study_index``, ``report_noise`` and ``missed_finding``.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from cxrlib.config import PhantomConfig
from cxrlib.data.manifest import join_tags, validate_manifest
from cxrlib.data.reports import compose_text
from cxrlib.paths import relative_to_repo

__all__ = [
    "FINDINGS",
    "SEVERITIES",
    "SUBTLE",
    "MENTION_KEYWORDS",
    "PhantomRenderer",
    "Study",
    "sample_patient_studies",
    "write_report",
    "generate_corpus",
    "findings_table",
    "plot_finding_examples",
    "render_speed",
]

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


# --------------------------------------------------------------------------------------------------------
# Configuration and the per-study record
# --------------------------------------------------------------------------------------------------------
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
    findings: dict[str, dict[str, str | float]] = field(default_factory=dict)
    changes: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Sampling anatomy, acquisition and findings
# --------------------------------------------------------------------------------------------------------
def _sample_anatomy(rng: np.random.Generator) -> dict[str, float]:
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


_SIDES = ("right", "left")
_ZONES = ("upper", "middle", "lower")


def _new_finding(name: str, rng: np.random.Generator, subtle_fraction: float) -> dict[str, str | float]:
    levels = SEVERITIES[name]
    if rng.random() < subtle_fraction:
        sev = levels[0]
    else:
        sev = levels[int(rng.integers(1, len(levels)))] if len(levels) > 1 else levels[0]
    attrs: dict[str, str | float] = {"severity": sev}
    if name == "pleural_effusion":
        attrs["side"] = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.3, 0.3]))
    elif name == "pneumothorax":
        attrs["side"] = str(rng.choice(_SIDES))
    elif name == "nodule":
        attrs["side"] = str(rng.choice(_SIDES))
        attrs["zone"] = str(rng.choice(_ZONES, p=[0.45, 0.3, 0.25]))
        attrs["u"] = float(rng.uniform(-0.6, 0.6))  # position inside the zone
        attrs["v"] = float(rng.uniform(-0.5, 0.5))
    elif name == "consolidation":
        attrs["side"] = str(rng.choice(_SIDES))
        attrs["zone"] = str(rng.choice(_ZONES, p=[0.25, 0.25, 0.5]))
        attrs["u"] = float(rng.uniform(-0.4, 0.4))
    elif name == "atelectasis":
        attrs["side"] = str(rng.choice(["right", "left", "bibasilar"], p=[0.35, 0.35, 0.3]))
        attrs["u"] = float(rng.uniform(-0.3, 0.3))
    return attrs


def _draw_findings(rng: np.random.Generator, cfg: PhantomConfig) -> dict[str, dict[str, str | float]]:
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


def _evolve(
    prior: dict[str, dict[str, str | float]], rng: np.random.Generator, cfg: PhantomConfig
) -> tuple[dict[str, dict[str, str | float]], dict[str, str]]:
    """A follow-up of an abnormal study that stays abnormal: each finding progresses, persists or regresses."""
    out: dict[str, dict[str, str | float]] = {}
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
    prior: dict[str, dict[str, str | float]] = {}
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
            findings: dict[str, dict[str, str | float]] = {}
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


# --------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------
def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 1 where d << 0, 0 where d >> 0, linear over ``width`` (cheaper than a sigmoid)."""
    return np.clip(0.5 - d * (1.0 / width), 0.0, 1.0)


class PhantomRenderer:
    """Renders :class:`Study` records into uint8 (size, size) images.

    Coordinates: x from -1 (image left = the patient's right) to 1, y from -1 (top) to 1, at pixel centres.
    Anatomy is drawn in a per-study rotated, shifted and scaled frame. For speed, the smooth anatomy and
    the diffuse findings are drawn on a half-resolution grid and upsampled (bilinear); the fine structures
    (vessel texture, small nodules, noise) are added at full resolution. Banks of vessel-like textures
    (ridged band-pass noise), blob fields and noise fields are made once per renderer from ``seed``.
    """

    def __init__(self, size: int = 224, seed: int = 0, n_textures: int = 6):
        if size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {size}")
        self.size = size
        self.half = (size + 1) // 2
        self.gx, self.gy = self._grid(size)
        self.hx, self.hy = self._grid(self.half)
        rng = np.random.default_rng(seed + 7919)
        self.vessels = [self._ridges(rng, sigma=size / 90.0, width=0.12) for _ in range(n_textures)]
        self.blobs = [self._smooth(rng, self.half, sigma=self.half / 28.0) for _ in range(n_textures)]
        # noise fields twice the image size: a study takes a random window (no per-image RNG cost)
        self.noise = [rng.standard_normal((2 * size, 2 * size), dtype=np.float32) for _ in range(2)]

    @staticmethod
    def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
        lin = (-1.0 + (2.0 * np.arange(n, dtype=np.float32) + 1.0) / n).astype(np.float32)
        gx, gy = np.meshgrid(lin, lin)
        return gx, gy

    def _ridges(self, rng: np.random.Generator, sigma: float, width: float) -> np.ndarray:
        n = self._smooth(rng, self.size, sigma)
        return np.exp(-((n / width) ** 2)).astype(np.float32)

    @staticmethod
    def _smooth(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
        f = gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sigma)
        return (f / (f.std() + 1e-8)).astype(np.float32)

    # -- geometry helpers ------------------------------------------------------------------------------
    @staticmethod
    def _frame(
        gx: np.ndarray, gy: np.ndarray, anat: dict[str, float], acq: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image grid -> anatomy coordinates (undo shift, rotation, scale and aspect of this study)."""
        c, s = math.cos(anat["rot"]), math.sin(anat["rot"])
        x = gx - (anat["tx"] + acq["shift_x"])
        y = gy - (anat["ty"] + acq["shift_y"])
        sc = 1.0 / anat["scale"]
        xr = (c * x + s * y) * (sc / anat["aspect"])
        yr = (-s * x + c * y) * sc
        return xr, yr

    @staticmethod
    def _lungs(anat: dict[str, float]) -> dict[str, dict[str, float]]:
        # per side: centre (cx, cy), half axes (a, b), diaphragm dome peak y and its x, lateral sign
        return {
            "right": {
                "cx": -0.43,
                "cy": 0.06,
                "a": 0.31,
                "b": 0.68,
                "dome": anat["dome_r"],
                "dx": -0.42,
                "sgn": -1.0,
            },
            "left": {
                "cx": 0.41,
                "cy": 0.08,
                "a": 0.29,
                "b": 0.67,
                "dome": anat["dome_l"],
                "dx": 0.40,
                "sgn": 1.0,
            },
        }

    def _box(
        self, x0: float, y0: float, r: float, anat: dict[str, float], acq: dict[str, float]
    ) -> tuple[slice, slice]:
        """Full-resolution pixel box that safely contains a disc of radius r around anatomy point (x0, y0)."""
        pad = r * anat["scale"] * 1.5 + 0.03
        cx = x0 * anat["scale"] + anat["tx"] + acq["shift_x"]
        cy = y0 * anat["scale"] + anat["ty"] + acq["shift_y"]
        to_px = self.size / 2.0
        i0 = int(max(0, math.floor((cy - pad + 1) * to_px)))
        i1 = int(min(self.size, math.ceil((cy + pad + 1) * to_px) + 1))
        j0 = int(max(0, math.floor((cx - pad + 1) * to_px)))
        j1 = int(min(self.size, math.ceil((cx + pad + 1) * to_px) + 1))
        return slice(i0, max(i0, i1)), slice(j0, max(j0, j1))

    def _upsample(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a, mode="F").resize((self.size, self.size), Image.BILINEAR))

    # -- the image -------------------------------------------------------------------------------------
    def render(self, study: Study) -> np.ndarray:
        """Render one study. Returns a (size, size) uint8 array."""
        anat, acq, fnd = study.anatomy, study.acquisition, study.findings
        dens, mark_w = self._anatomy_and_findings(anat, acq, fnd)
        tex = int(anat["texture"])
        vessels = self.vessels[tex % len(self.vessels)]
        if (tex >> 3) & 1:
            vessels = vessels[:, ::-1]
        img = self._upsample(dens) + self._upsample(mark_w) * vessels

        nod = fnd.get("nodule")
        if nod is not None:  # at full resolution: a small nodule is only a few pixels across
            L = self._lungs(anat)[str(nod["side"])]
            zy = {"upper": -0.38, "middle": -0.02, "lower": 0.28}[str(nod["zone"])]
            x0 = L["cx"] + float(nod["u"]) * L["a"] * 0.55
            y0 = zy + float(nod["v"]) * 0.14
            r = {"small": 0.024, "medium": 0.045, "mass": 0.095}[str(nod["severity"])]
            sy, sx = self._box(x0, y0, r * 1.3, anat, acq)
            xb, yb = self._frame(self.gx[sy, sx], self.gy[sy, sx], anat, acq)
            xb, yb = xb - x0, yb - y0
            rr = np.sqrt(xb**2 + yb**2)
            if nod["severity"] == "mass":
                phi = np.arctan2(yb, xb)
                r_eff = r * (1.0 + 0.14 * np.sin(3 * phi + float(nod["u"]) * 5) + 0.08 * np.sin(5 * phi))
            else:
                r_eff = r
            blob = _ramp(rr - r_eff, 0.012)
            contrast = {"small": 0.16, "medium": 0.2, "mass": 0.24}[str(nod["severity"])]
            img[sy, sx] += contrast * blob

        # ---- acquisition: exposure, contrast, blur, noise ----------------------------------------------
        img -= acq["offset"]
        img *= acq["gain"]
        np.clip(img, 0.0, 1.0, out=img)
        img **= acq["gamma"]
        sigma = acq["blur"] * self.size / 224.0
        if sigma > 0.45:
            img = gaussian_filter(
                img, math.sqrt(sigma**2 - 0.2), truncate=2.0
            )  # bilinear already blurs ~0.45 px
        seed = int(acq["seed"])
        field_ = self.noise[seed % len(self.noise)]
        oy, ox = (seed >> 1) % self.size, (seed >> 12) % self.size
        img += acq["noise"] * field_[oy : oy + self.size, ox : ox + self.size]
        img *= 255.0
        img += 0.5
        np.clip(img, 0.0, 255.0, out=img)
        return img.astype(np.uint8)

    def _anatomy_and_findings(
        self, anat: dict[str, float], acq: dict[str, float], fnd: dict[str, dict[str, str | float]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Half-resolution density map and vessel-marking weight (both (half, half) float32)."""
        x, y = self._frame(self.hx, self.hy, anat, acq)
        blobs = self.blobs[(int(anat["texture"]) >> 5) % len(self.blobs)]
        ax = np.abs(x)

        # body outline: a wide ellipse, wider at the shoulders
        body_w = 0.9 + 0.1 * _ramp(y + 0.55, 0.5)
        q_body = (x / body_w) ** 2 + ((y - 0.08) / 1.08) ** 2
        body = _ramp(q_body - 1.0, 0.06)
        dens = 0.03 + 0.52 * body

        lungs = self._lungs(anat)
        # heart: cardiothoracic ratio -> half width; enlargement grows leftwards (image right) and down
        ctr = anat["ctr"]
        card = fnd.get("cardiomegaly")
        if card is not None:
            ctr = _CTR[str(card["severity"])] + 0.1 * (anat["ctr"] - 0.44)
        thorax_w = (lungs["left"]["cx"] + lungs["left"]["a"]) - (lungs["right"]["cx"] - lungs["right"]["a"])
        ha = 0.5 * ctr * thorax_w
        hcx = 0.05 + 0.55 * (ha - 0.31)
        hcy = 0.36 + 0.25 * (ha - 0.31)
        hb = 0.25 + 0.3 * (ha - 0.31)
        heart = _ramp(((x - hcx) / ha) ** 2 + ((y - hcy) / hb) ** 2 - 1.0, 0.05)
        # mediastinum: a column from the neck down to the heart, with the aortic knob on the left
        medi = _ramp(np.abs(x - 0.01) - 0.11, 0.02) * _ramp(y - hcy, 0.05) * _ramp(-0.95 - y, 0.05)
        knob = _ramp(((x - 0.12) / 0.07) ** 2 + ((y + 0.22) / 0.06) ** 2 - 1.0, 0.2)
        medi = np.maximum(medi, knob)
        not_central = (1.0 - heart) * (1.0 - medi)

        side_masks: dict[str, np.ndarray] = {}
        diaph: dict[str, np.ndarray] = {}
        for side, L in lungs.items():
            taper = 0.62 + 0.38 * np.clip((y - (L["cy"] - L["b"])) / (1.1 * L["b"]), 0.0, 1.0) ** 0.6
            xl = x - L["cx"] - 0.25 * L["sgn"] * L["a"] * (1.0 - taper)
            q = (xl / (L["a"] * taper)) ** 2 + ((y - L["cy"]) / L["b"]) ** 2
            diaph[side] = L["dome"] + 1.5 * (x - L["dx"]) ** 2
            side_masks[side] = _ramp(q - 1.0, 0.09) * _ramp(y - diaph[side], 0.012)
        lung_mask = np.maximum(side_masks["right"], side_masks["left"]) * not_central

        # pneumothorax: a collapsed lung inside the hemithorax; the rim between is air without markings
        ptx_rim = None
        ptx = fnd.get("pneumothorax")
        if ptx is not None:
            L = lungs[str(ptx["side"])]
            sm = side_masks[str(ptx["side"])]
            f = {"small": 0.8, "large": 0.62}[str(ptx["severity"])]
            ccx = L["cx"] - L["sgn"] * L["a"] * (1 - f) * 0.9
            ccy = L["cy"] + L["b"] * (1 - f) * 0.75
            qc = ((x - ccx) / (L["a"] * f)) ** 2 + ((y - ccy) / (L["b"] * f)) ** 2
            ptx_rim = (1.0 - _ramp(qc - 1.0, 0.03)) * sm * not_central
            pleural_line = np.exp(-(((qc - 1.0) / 0.05) ** 2)) * sm * (1.0 - medi)
            dens += 0.1 * pleural_line - 0.07 * ptx_rim
            if ptx["severity"] == "large":
                dens += 0.05 * sm * (1.0 - ptx_rim) * (1.0 - heart)

        # lung air; vessel weight densest near the hila, fading to the periphery
        hil_r = np.sqrt((ax - 0.22) ** 2 + ((y - 0.05) / 1.4) ** 2)
        mark_w = np.clip(1.15 - 1.1 * hil_r, 0.15, 1.0)
        edema = fnd.get("edema")
        if edema is not None:  # cephalisation: upper-zone vessels become prominent
            boost = {"mild": 0.35, "moderate": 0.6, "severe": 0.8}[str(edema["severity"])]
            mark_w = mark_w * (1.0 + boost * _ramp(y + 0.1, 0.3))
        mark_w = 0.12 * mark_w * lung_mask
        if ptx_rim is not None:
            mark_w = mark_w * (1.0 - ptx_rim)
        soft_overlap = 0.06 * _ramp(0.1 - y, 0.5) + 0.03 * _ramp(y + 0.45, 0.2)  # breasts / apical muscles
        dens += (soft_overlap - 0.3) * lung_mask

        # heart and mediastinum over the lungs (silhouette), trachea as an air column, abdomen
        dens += 0.10 * heart + 0.12 * medi
        trachea = _ramp(np.abs(x - 0.005) - 0.028, 0.01) * _ramp(y + 0.2, 0.04) * _ramp(-0.95 - y, 0.04)
        dens -= 0.16 * trachea
        below = np.where(x < 0.0, _ramp(diaph["right"] - y, 0.012), _ramp(diaph["left"] - y, 0.012))
        dens += 0.04 * below * body

        # spine with vertebral bodies, ribs, clavicles
        spine = _ramp(ax - 0.065, 0.02) * body
        vert = 0.5 + 0.5 * np.cos(2 * np.pi * (y / 0.095 + anat["rib_phase"]))
        dens += (0.06 + 0.04 * vert) * spine
        u = (y - 0.85 * ax**2 + 0.3 * ax) / anat["rib_spacing"] + anat["rib_phase"]
        rib = np.clip((np.cos(2 * np.pi * u) - 0.35) / 0.65, 0.0, 1.0) ** 1.5
        rib_region = _ramp(q_body - 0.78, 0.08) * _ramp(y - 0.62, 0.1) * _ramp(0.08 - ax, 0.04)
        dens += 0.1 * rib * rib_region
        clav_y = -0.74 - 0.16 * (ax - 0.08)
        clav = _ramp(np.abs(y - clav_y) - 0.022, 0.015) * _ramp(ax - 0.62, 0.05) * _ramp(0.07 - ax, 0.03)
        dens += 0.13 * clav

        # ---- diffuse findings --------------------------------------------------------------------------
        eff = fnd.get("pleural_effusion")
        if eff is not None:
            h = {"small": 0.14, "moderate": 0.26, "large": 0.42}[str(eff["severity"])]
            for side in ("right", "left") if eff["side"] == "bilateral" else (str(eff["side"]),):
                L = lungs[side]
                t = np.clip((x - L["cx"]) * L["sgn"] / L["a"], -1.0, 1.0)  # -1 medial .. 1 lateral
                y_cp = L["dome"] + 1.5 * (L["a"] * 0.93) ** 2  # level of the costophrenic angle
                y_f = (y_cp - h) + 0.09 * (1.0 - t) ** 1.5  # meniscus: higher laterally
                fluid = _ramp(y_f - y, 0.035) * side_masks[side] * not_central
                dens += 0.3 * fluid * (0.85 + 0.2 * _ramp(y_cp - y, 0.15))
                mark_w = mark_w * (1.0 - fluid)

        cons = fnd.get("consolidation")
        if cons is not None:
            L = lungs[str(cons["side"])]
            zy = {"upper": -0.35, "middle": 0.05, "lower": 0.32}[str(cons["zone"])]
            zx = L["cx"] + float(cons["u"]) * L["a"] * 0.5
            region = _ramp(((x - zx) / (L["a"] * 0.75)) ** 2 + ((y - zy) / 0.24) ** 2 - 1.0, 0.4)
            dense = cons["severity"] == "dense"
            patch = _ramp(0.1 - blobs - (0.9 if dense else 0.3) * region, 0.5) * region * lung_mask
            dens += (0.26 if dense else 0.16) * patch
            if dense:  # air bronchograms: the vessel texture turns into dark branching lines
                mark_w = mark_w * (1.0 - 2.5 * patch)

        if edema is not None:
            a = {"mild": 0.05, "moderate": 0.11, "severe": 0.19}[str(edema["severity"])]
            haze = np.exp(-(((ax - 0.2) / 0.3) ** 2 + ((y - 0.08) / 0.34) ** 2))
            if edema["severity"] == "severe":
                haze = haze + 0.6 * _ramp(0.15 - blobs, 0.8) * _ramp(hil_r - 0.45, 0.2)
            dens += a * haze * lung_mask
            if edema["severity"] != "mild":  # Kerley B lines: short horizontal lines at the lateral bases
                lines = np.clip(np.cos(2 * np.pi * y / 0.05) - 0.5, 0.0, 1.0)
                lateral = _ramp(ax - 0.7, 0.06) * _ramp(0.47 - ax, 0.05) * _ramp(0.2 - y, 0.1)
                dens += 0.07 * lines * lateral * lung_mask

        atel = fnd.get("atelectasis")
        if atel is not None:
            thick = {"minimal": 0.012, "mild": 0.02, "plate-like": 0.032}[str(atel["severity"])]
            for side in ("right", "left") if atel["side"] == "bibasilar" else (str(atel["side"]),):
                L = lungs[side]
                y0 = L["dome"] - 0.11 + 0.03 * float(atel.get("u", 0.0))
                line_y = y0 + 0.12 * (x - L["cx"]) * L["sgn"]
                band = _ramp(np.abs(y - line_y) - thick, 0.014) * _ramp(
                    np.abs(x - L["cx"]) - 0.6 * L["a"], 0.04
                )
                dens += 0.2 * band * side_masks[side] * (1.0 - heart)
        return dens.astype(np.float32, copy=False), mark_w.astype(np.float32, copy=False)


_CTR = {"mild": 0.535, "moderate": 0.59, "severe": 0.66}


# --------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------
_NORMAL_FINDINGS = (
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
)
_NORMAL_IMPRESSIONS = (
    ("No acute cardiopulmonary abnormality.", 0.5),
    ("No acute cardiopulmonary process.", 0.25),
    ("Normal chest radiograph.", 0.15),
    ("No active disease.", 0.1),
)
_LOBE = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}
_ZONE_WORDS = {"upper": "upper", "middle": "mid", "lower": "lower"}
_NODULE_MM = {"small": (6, 10), "medium": (14, 25)}
_MASS_CM = (3.5, 6.0)

# Negation sentences; each lists the findings it negates. Used only for absent findings.
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
    return str(options[int(rng.integers(0, len(options)))])


def _weighted(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    p = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=p / p.sum()))][0]


def _side_words(side: str, plural_noun: str, singular_noun: str) -> tuple[str, str]:
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


_CHANGE_SENTENCES = {
    "increased": ("Compared with the prior study, the {x} has increased.", "Interval increase in the {x}."),
    "decreased": ("Compared with the prior study, the {x} has decreased.", "Interval decrease in the {x}."),
    "unchanged": ("The {x} is unchanged from the prior study.", "Stable {x}."),
    "new": ("The {x} is new since the prior study.",),
}
_CHANGE_NOUNS = {
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
        if "consolidation" in findings:
            negated.append("consolidation")
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


# --------------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------------
def _subtle_present(findings: dict[str, dict[str, str | float]]) -> list[str]:
    return sorted(k for k, v in findings.items() if v["severity"] == SUBTLE[k])


def generate_corpus(
    out_dir: str | Path,
    n_patients: int,
    seed: int = 0,
    image_size: int = 224,
    normal_rate: float = PhantomConfig.normal_rate,
    report_noise: float = PhantomConfig.report_noise,
    pretrain_fraction: float = PhantomConfig.pretrain_fraction,
    max_studies: int = PhantomConfig.max_studies,
    progress: bool = True,
) -> pd.DataFrame:
    """Generate the SYNTHETIC phantom corpus: PNGs under ``out_dir/images/`` and the manifest it returns.

    Args:
        out_dir: folder for the images (created). Existing files with the same names are overwritten.
        n_patients: number of patients; each has 1..``max_studies`` studies (mean ≈ 1.8), one image each.
        seed: everything (anatomy, findings, reports, pixels) follows from it; same seed → identical bytes.
        image_size: side of the square images in pixels.
        normal_rate: fraction of normal studies (the follow-up chain's stationary rate).
        report_noise: fraction of abnormal studies WITH a subtle finding whose report misses it.
        pretrain_fraction: fraction of patients reserved (``split="pretrain"``) for pretraining the demo
            backbone; the others get ``split=""`` and are split by patient in notebook 01.

    Returns:
        The manifest (schema of :mod:`cxrlib.data.manifest`, ``source="phantom"``) plus
        ``finding_<name>`` (0/1) columns, ``finding_detail`` (JSON), ``ctr``, ``study_index``,
        ``report_noise`` (bool) and ``missed_finding`` (str, "" when none).
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if max_studies < 1:
        raise ValueError(f"max_studies must be >= 1, got {max_studies}")
    for name, v in (
        ("normal_rate", normal_rate),
        ("report_noise", report_noise),
        ("pretrain_fraction", pretrain_fraction),
    ):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    cfg = PhantomConfig(
        normal_rate=normal_rate,
        report_noise=report_noise,
        pretrain_fraction=pretrain_fraction,
        max_studies=max_studies,
    )
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    renderer = PhantomRenderer(image_size, seed=seed)
    root = np.random.SeedSequence(seed)
    pat_seeds = root.spawn(n_patients)
    pool_rng = np.random.default_rng(root.spawn(1)[0])
    n_pool = int(round(pretrain_fraction * n_patients))
    pool = set(pool_rng.permutation(n_patients)[:n_pool].tolist())
    rows = []
    width = max(4, len(str(n_patients - 1)))
    for p in tqdm(range(n_patients), desc="phantom patients (synthetic)", disable=not progress):
        rng = np.random.default_rng(pat_seeds[p])
        pid = f"P{p:0{width}d}"
        for st in sample_patient_studies(p, rng, cfg):
            sid = f"{pid}_S{st.study_index}"
            iid = f"{sid}_PA"
            subtle = _subtle_present(st.findings)
            miss = None
            if subtle and rng.random() < report_noise:
                miss = str(rng.choice(subtle))
            findings, impression, _ = write_report(st, rng, miss=miss)
            img = renderer.render(st)
            path = img_dir / f"{iid}.png"
            Image.fromarray(img, mode="L").save(path, compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)
            row = {
                "image_id": iid,
                "study_id": sid,
                "patient_id": pid,
                "image_path": relative_to_repo(path),
                "view": "PA",
                "findings": findings,
                "impression": impression,
                "text": compose_text(findings, impression),
                "label": int(bool(st.findings)),
                "tags": join_tags(st.findings),
                "split": "pretrain" if p in pool else "",
                "source": "phantom",
            }
            for f in FINDINGS:
                row[f"finding_{f}"] = int(f in st.findings)
            row["finding_detail"] = json.dumps(st.findings, sort_keys=True)
            card = st.findings.get("cardiomegaly")
            row["ctr"] = (
                _CTR[str(card["severity"])] + 0.1 * (st.anatomy["ctr"] - 0.44) if card else st.anatomy["ctr"]
            )
            row["study_index"] = st.study_index
            row["report_noise"] = miss is not None
            row["missed_finding"] = miss or ""
            rows.append(row)
    return validate_manifest(pd.DataFrame(rows))


# --------------------------------------------------------------------------------------------------------
# Tables and figures
# --------------------------------------------------------------------------------------------------------
def findings_table(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per finding and severity (rows: findings; columns: severities, total, % of studies)."""
    recs = []
    for detail in df["finding_detail"]:
        for name, attrs in json.loads(detail).items():
            recs.append({"finding": name, "severity": attrs["severity"]})
    counts = pd.DataFrame(recs, columns=["finding", "severity"])
    table = counts.pivot_table(index="finding", columns="severity", aggfunc="size", fill_value=0)
    sev_order = [s for f in FINDINGS for s in SEVERITIES[f]]
    cols = [c for c in dict.fromkeys(sev_order) if c in table.columns]
    table = table.reindex(index=[f for f in FINDINGS if f in table.index], columns=cols).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table["% of studies"] = (100.0 * table["total"] / len(df)).round(1)
    normal = pd.DataFrame(
        {
            "total": [int((df["label"] == 0).sum())],
            "% of studies": [round(100.0 * (df["label"] == 0).mean(), 1)],
        },
        index=["(normal)"],
    )
    out = pd.concat([table, normal]).fillna(0)
    for c in cols:
        out[c] = out[c].astype(int)
    out["total"] = out["total"].astype(int)
    out.index.name = "finding"
    return out


def plot_finding_examples(
    df: pd.DataFrame, out_path: str | Path, per_finding: int = 3, seed: int = 0, excerpt_chars: int = 90
):
    """A grid: one row per finding (plus normal), ``per_finding`` example images with report excerpts.

    Examples are chosen by a stated rule: studies whose only finding is that one (cleanest view), one per
    severity where available, then random with ``seed``. Returns the matplotlib Figure (also saved).
    """
    import matplotlib.pyplot as plt

    from cxrlib.paths import resolve

    rng = np.random.default_rng(seed)
    rows = [("normal", df[df["label"] == 0])]
    n_find = df[[f"finding_{f}" for f in FINDINGS]].sum(axis=1)
    for f in FINDINGS:
        rows.append((f, df[(df[f"finding_{f}"] == 1) & (n_find == 1)]))
    fig, axes = plt.subplots(
        len(rows), per_finding, figsize=(3.2 * per_finding, 3.55 * len(rows)), squeeze=False
    )
    for r, (name, sub) in enumerate(rows):
        picks: list[int] = []
        if name != "normal" and len(sub):
            for sev in SEVERITIES[name]:
                cand = [
                    i
                    for i, d in zip(sub.index, sub["finding_detail"], strict=True)
                    if json.loads(d)[name]["severity"] == sev
                ]
                if cand:
                    picks.append(int(rng.choice(cand)))
        rest = [i for i in sub.index if i not in picks]
        if rest:
            picks += [int(i) for i in rng.choice(rest, size=min(len(rest), per_finding), replace=False)]
        picks = picks[:per_finding]
        for c in range(per_finding):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(picks):
                continue
            row = df.loc[picks[c]]
            ax.imshow(np.asarray(Image.open(resolve(row["image_path"]))), cmap="gray", vmin=0, vmax=255)
            detail = json.loads(row["finding_detail"]).get(name, {})
            head = (
                name
                if name == "normal"
                else f"{name}: {detail.get('severity', '')} {detail.get('side', '')}".strip()
            )
            text = row["text"]
            excerpt = text if len(text) <= excerpt_chars else text[: excerpt_chars - 1] + "…"
            import textwrap

            ax.set_title(head + "\n" + "\n".join(textwrap.wrap(excerpt, 38)), fontsize=7, loc="left")
    fig.suptitle("Phantom corpus (SYNTHETIC images and reports): examples per finding", fontsize=11)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    return fig


def render_speed(n: int, size: int = 224, seed: int = 0) -> float:
    """Images per second of render + PNG encode (to memory) on this process's one core."""
    import io

    cfg = PhantomConfig()
    rng = np.random.default_rng(seed)
    renderer = PhantomRenderer(size, seed=seed)
    studies: list[Study] = []
    p = 0
    while len(studies) < n:
        studies.extend(sample_patient_studies(p, rng, cfg))
        p += 1
    studies = studies[:n]
    t0 = time.perf_counter()
    for st in studies:
        buf = io.BytesIO()
        Image.fromarray(renderer.render(st), mode="L").save(
            buf, format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY
        )
    return n / (time.perf_counter() - t0)
