"""Rendering the phantom corpus: :class:`PhantomRenderer` turns a :class:`Study` into a SYNTHETIC radiograph.

The renderer draws analytic anatomy (body, lungs with vascular markings, mediastinum, heart, diaphragm,
ribs, clavicles, spine) and the seven findings, then applies the study's acquisition (exposure, contrast,
blur, noise). :func:`render_speed` measures render + PNG encode throughput (``benchmarks/bench_phantom.py``).
"""

from __future__ import annotations

import io
import math
import time
import zlib

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from cxrlib.config import PhantomConfig
from cxrlib.data.phantom.anatomy import Study, sample_patient_studies
from cxrlib.data.phantom.findings import Findings, cardiothoracic_ratio

__all__ = ["PhantomRenderer", "render_speed"]


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

    def __init__(self, size: int = 224, seed: int = 0, n_textures: int = 6) -> None:
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
        """(x, y) coordinates in [-1, 1] of the centres of an (n, n) pixel grid, float32."""
        lin = (-1.0 + (2.0 * np.arange(n, dtype=np.float32) + 1.0) / n).astype(np.float32)
        gx, gy = np.meshgrid(lin, lin)
        return gx, gy

    def _ridges(self, rng: np.random.Generator, sigma: float, width: float) -> np.ndarray:
        """A vessel-like texture: thin ridges along the zero crossings of smooth noise (full resolution)."""
        n = self._smooth(rng, self.size, sigma)
        return np.exp(-((n / width) ** 2)).astype(np.float32)

    @staticmethod
    def _smooth(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
        """An (n, n) Gaussian-smoothed noise field with unit standard deviation."""
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
        """Geometry of both lung fields in anatomy coordinates (the domes come from the patient)."""
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
        """Bilinear resize of a half-resolution float32 map to (size, size)."""
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
        self, anat: dict[str, float], acq: dict[str, float], fnd: Findings
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
        ctr = cardiothoracic_ratio(anat, fnd)
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


def render_speed(n: int, size: int = 224, seed: int = 0) -> float:
    """Images per second of render + PNG encode (to memory) on this process's one core.

    Samples ``n`` studies with the default :class:`~cxrlib.config.PhantomConfig` from ``seed``, renders
    them at ``size`` px and encodes each as PNG the way :func:`~cxrlib.data.phantom.generate_corpus` writes
    them (``compress_level=1``, Huffman only); the sampling is not timed.
    """
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
