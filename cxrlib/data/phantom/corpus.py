"""The phantom corpus on disk: :func:`generate_corpus` writes the SYNTHETIC images and returns the manifest.

Per patient (one seeded generator each): sample the studies (:mod:`~cxrlib.data.phantom.anatomy`), decide
which subtle finding a noisy report misses, write the report (:mod:`~cxrlib.data.phantom.reports`), render
and save the image (:mod:`~cxrlib.data.phantom.render`), and collect one manifest row per study.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from cxrlib.config import PhantomConfig
from cxrlib.data.manifest import join_tags, validate_manifest
from cxrlib.data.phantom.anatomy import sample_patient_studies
from cxrlib.data.phantom.findings import FINDINGS, SUBTLE, Findings, cardiothoracic_ratio
from cxrlib.data.phantom.render import PhantomRenderer
from cxrlib.data.phantom.reports import write_report
from cxrlib.data.reports import compose_text
from cxrlib.paths import relative_to_repo

__all__ = ["generate_corpus"]


def _subtle_present(findings: Findings) -> list[str]:
    """The findings of a study that are at their subtle severity, sorted (candidates for a missed finding)."""
    return sorted(k for k, v in findings.items() if v["severity"] == SUBTLE[k])


def generate_corpus(
    out_dir: str | Path,
    cfg: PhantomConfig | None = None,
    seed: int = 0,
    image_size: int = 224,
    progress: bool = True,
) -> pd.DataFrame:
    """Generate the SYNTHETIC phantom corpus: PNGs under ``out_dir/images/`` and the manifest it returns.

    Args:
        out_dir: folder for the images (created). Existing files with the same names are overwritten.
        cfg: the generator's settings (``None``: :class:`~cxrlib.config.PhantomConfig` defaults, which also
            checks their ranges): ``n_patients`` patients, each with 1..``max_studies`` studies
            (mean ≈ 1.8) and one image per study; ``normal_rate`` = fraction of normal studies (the
            follow-up chain's stationary rate, kept with ``persistence``); ``report_noise`` = fraction of
            abnormal studies WITH a subtle finding whose report misses it; ``pretrain_fraction`` = fraction
            of patients reserved (``split="pretrain"``) for pretraining the demo backbone, the others get
            ``split=""`` and are split by patient in notebook 01; ``subtle_fraction`` = how often a new
            finding starts at its subtlest severity.
        seed: everything (anatomy, findings, reports, pixels) follows from it; same seed → identical bytes.
        image_size: side of the square images in pixels (at least 32).
        progress: show a progress bar over the patients.

    Returns:
        The manifest (schema of :mod:`cxrlib.data.manifest`, ``source="phantom"``) plus
        ``finding_<name>`` (0/1) columns, ``finding_detail`` (JSON), ``ctr``, ``study_index``,
        ``report_noise`` (bool) and ``missed_finding`` (str, "" when none).
    """
    cfg = PhantomConfig() if cfg is None else cfg
    if not isinstance(cfg, PhantomConfig):
        raise TypeError(f"cfg must be a PhantomConfig (or None for the defaults), got {type(cfg).__name__}")
    n_patients = cfg.n_patients
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    renderer = PhantomRenderer(image_size, seed=seed)
    root = np.random.SeedSequence(seed)
    pat_seeds = root.spawn(n_patients)
    pool_rng = np.random.default_rng(root.spawn(1)[0])
    n_pool = int(round(cfg.pretrain_fraction * n_patients))
    pool = set(pool_rng.permutation(n_patients)[:n_pool].tolist())
    rows: list[dict[str, object]] = []
    width = max(4, len(str(n_patients - 1)))
    for p in tqdm(range(n_patients), desc="phantom patients (synthetic)", disable=not progress):
        rng = np.random.default_rng(pat_seeds[p])
        pid = f"P{p:0{width}d}"
        for st in sample_patient_studies(p, rng, cfg):
            sid = f"{pid}_S{st.study_index}"
            iid = f"{sid}_PA"
            subtle = _subtle_present(st.findings)
            miss = None
            if subtle and rng.random() < cfg.report_noise:
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
            row["ctr"] = cardiothoracic_ratio(st.anatomy, st.findings)
            row["study_index"] = st.study_index
            row["report_noise"] = miss is not None
            row["missed_finding"] = miss or ""
            rows.append(row)
    return validate_manifest(pd.DataFrame(rows))
