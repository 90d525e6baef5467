"""Builders for the paper-profile smoke test: a small SYNTHETIC IU X-ray corpus in both on-disk layouts and two
tiny ``local-dir:`` bundles shaped like the paper's baselines, all written at run time (nothing binary is
committed, nothing is downloaded).

- :func:`synthetic_reports` makes radiology-style reports with MeSH terms (normal iff every major term is
  ``normal``); abnormal ones are longer, so some pass CLIP's 77-token context and fewer BiomedCLIP's 256.
- :func:`build_openi` writes layout A (``ecgen-radiology/<n>.xml`` in the Open-i schema + ``NLMCXR_png/``),
  :func:`build_kaggle` layout B (``indiana_reports.csv``, ``indiana_projections.csv``, ``images/images_normalized``).
- :func:`build_clip_like` is open_clip's ``CLIP`` with a ViT image tower (patch 16) and the CLIP BPE tokenizer,
  context 77, as ``ViT-B-16-quickgelu`` / ``openai``, only narrow and shallow.
- :func:`build_biomedclip_like` has BiomedCLIP's open_clip config layout: a timm ViT image tower (timm's
  ``test_vit``: patch 16, 64 wide, 6 blocks, class token) with ``timm_pool=""`` and a linear projection, and a
  Hugging Face BERT text tower (``hf_proj_type="mlp"``, ``hf_pooler_type="cls_last_hidden_state_pooler"``,
  context 256) built from a config folder with ``hf_model_pretrained=False``; its WordPiece vocabulary is
  trained on the fixture's reports with ``tokenizers``; the bundle holds the BERT config and tokenizer files
  (the layout :func:`cxrlib.backbones.export_bundle` writes), so it loads with the Hugging Face hub offline.

Both bundles have random weights and say so in ``cxrlib_bundle.json`` (``"weights": "random init ..."``), which
notebook 02's weight check must flag.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrlib.backbones import save_bundle

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "PUBMEDBERT",
    "synthetic_reports",
    "build_openi",
    "build_kaggle",
    "build_clip_like",
    "build_biomedclip_like",
]

_spec = importlib.util.spec_from_file_location("_iu_fixtures", Path(__file__).parent / "data" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_iu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_iu)

#: CLIP's (and BiomedCLIP's) image normalisation.
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
#: BiomedCLIP's text tower id, as its open_clip_config.json names it (never downloaded here).
PUBMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"

_NORMAL_FINDINGS = (
    "The heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "The lungs are clear.",
    "There is no focal airspace consolidation.",
    "No pleural effusion or pneumothorax.",
    "Osseous structures are intact.",
)
_NORMAL_IMPRESSIONS = ("No acute cardiopulmonary abnormality.", "Normal chest.", "No active disease.")
#: (MeSH major term, findings sentence, impression)
_FINDINGS = (
    ("Cardiomegaly/mild", "The cardiac silhouette is mildly enlarged.", "Mild cardiomegaly."),
    (
        "Pleural Effusion/right/small",
        "There is a small right pleural effusion with blunting of the costophrenic angle.",
        "Small right pleural effusion.",
    ),
    (
        "Opacity/lung/base/left",
        "Patchy opacity is present in the left lung base, which may represent atelectasis or pneumonia.",
        "Left basilar opacity.",
    ),
    (
        "Nodule/lung/upper lobe/right",
        "A rounded nodular density projects over the right upper lobe, measuring approximately 9 mm.",
        "Right upper lobe nodule, follow-up CT recommended.",
    ),
    (
        "Spine/degenerative",
        "There are degenerative changes of the thoracic spine with marginal osteophytes.",
        "Degenerative changes of the spine.",
    ),
)
_DETAIL = (
    "Comparison is made to the prior examination, and the appearance is not significantly changed.",
    "Lateral view confirms the finding, without evidence of an associated mass or adenopathy.",
    "The visualized upper abdomen is unremarkable, and there are surgical clips in the right upper quadrant.",
    "Recommend clinical correlation and short-interval follow-up radiographs to document resolution.",
)


def synthetic_reports(n: int = 48, seed: int = 0, abnormal_rate: float = 0.5) -> list[dict]:
    """``n`` SYNTHETIC IU-style reports: ``{"n", "findings", "impression", "major", "images", "label"}``.

    Report ``n`` has one frontal image, every fourth report a second (lateral) one; image ids follow Open-i
    (``CXR<n>_IM-<4 digits>-<4 digits>``). Abnormal reports carry 1-2 findings and 0-4 detail sentences, so
    their token counts spread across CLIP's 77-token context. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(1, n + 1):
        abnormal = bool(rng.random() < abnormal_rate)
        normal = list(rng.permutation(_NORMAL_FINDINGS)[: rng.integers(3, 6)])
        if abnormal:
            picks = [_FINDINGS[j] for j in rng.choice(len(_FINDINGS), size=rng.integers(1, 3), replace=False)]
            details = list(rng.permutation(_DETAIL)[: rng.integers(0, 5)])
            findings = " ".join([p[1] for p in picks] + normal[:2] + details)
            impression = " ".join(p[2] for p in picks)
            major = [p[0] for p in picks]
        else:
            findings = " ".join(normal)
            impression = str(rng.choice(_NORMAL_IMPRESSIONS))
            major = ["normal"]
        images = [f"CXR{i}_IM-{1000 + i:04d}-1001"] + (
            [f"CXR{i}_IM-{1000 + i:04d}-2001"] if i % 4 == 0 else []
        )
        out.append(
            {
                "n": i,
                "findings": findings,
                "impression": impression,
                "major": major,
                "images": images,
                "label": int(abnormal),
            }
        )
    return out


def _write_png(path: Path, label: int, seed: int) -> None:
    """A small 8-bit grayscale picture (not square, so the image cache's crop runs); abnormal ones get a blob."""
    _iu.write_image(path, h=72, w=60, kind="png8", seed=seed)
    if label:
        from PIL import Image

        a = np.asarray(Image.open(path), dtype=np.float64)
        y, x = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
        a += 90 * np.exp(-((y - 30) ** 2 + (x - 25) ** 2) / 60.0)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L").save(path, format="PNG")


def build_openi(root: Path, reports: list[dict]) -> Path:
    """Layout A in ``root``: ``ecgen-radiology/<n>.xml`` (Open-i schema) and ``NLMCXR_png/<image id>.png``."""
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True, exist_ok=True)
    for r in reports:
        (xml_dir / f"{r['n']}.xml").write_text(
            _iu.openi_xml(r["n"], r["findings"], r["impression"], r["major"], r["images"])
        )
        for k, iid in enumerate(r["images"]):
            _write_png(root / "NLMCXR_png" / f"{iid}.png", r["label"], seed=100 * r["n"] + k)
    return root


def build_kaggle(root: Path, reports: list[dict]) -> Path:
    """Layout B in ``root``: the Kaggle CSVs and ``images/images_normalized/<n>_IM-....dcm.png`` (first image
    frontal, second lateral)."""
    root.mkdir(parents=True, exist_ok=True)
    rows, proj = [], []
    for r in reports:
        mesh = ";".join(r["major"])
        rows.append(
            (str(r["n"]), mesh, mesh, "Xray Chest PA and Lateral", "", "", r["findings"], r["impression"])
        )
        for k, iid in enumerate(r["images"]):
            fname = iid.removeprefix("CXR") + ".dcm.png"
            proj.append((str(r["n"]), fname, "Frontal" if k == 0 else "Lateral"))
            _write_png(root / "images" / "images_normalized" / fname, r["label"], seed=100 * r["n"] + k)
    cols = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
    pd.DataFrame(rows, columns=cols).to_csv(root / "indiana_reports.csv", index=False)
    pd.DataFrame(proj, columns=["uid", "filename", "projection"]).to_csv(
        root / "indiana_projections.csv", index=False
    )
    return root


def _meta(shape: str) -> dict:
    return {
        "weights": f"random init (test fixture shaped like {shape})",
        "made_by": "tests/paper_fixtures.py",
    }


def build_clip_like(out: Path, seed: int = 0) -> Path:
    """A tiny CLIP ViT-B/16-shaped bundle (random weights): ViT patch 16 at 64 px, 2 blocks of width 64;
    text transformer 2 x 64 with the CLIP BPE tokenizer (vocab 49408) and context 77; QuickGELU."""
    from open_clip.model import CLIP

    cfg = {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    torch.manual_seed(seed)
    model = CLIP(**json.loads(json.dumps(cfg))).eval()
    pp = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    return save_bundle(model, cfg, pp, out, meta=_meta("CLIP ViT-B/16"))


def _write_bert(folder: Path, texts: list[str], context_length: int) -> Path:
    """A 2-layer, 32-wide BERT config and a WordPiece tokenizer trained on ``texts``, saved with transformers."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    # [PAD] first: id 0 is padding for open_clip's HFTokenizer and for cxrlib.evaluation.token_lengths
    wp.train_from_iterator(
        texts, vocab_size=400, min_frequency=1, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    wp.save_model(str(folder))
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=context_length,
        pad_token_id=0,
    ).save_pretrained(folder)
    return folder


def build_biomedclip_like(out: Path, texts: list[str], scratch: Path, seed: int = 0) -> Path:
    """A tiny BiomedCLIP-shaped bundle (random weights) in ``out``; ``texts`` train its WordPiece vocabulary,
    ``scratch`` holds the BERT folder it is built from."""
    from open_clip.model import CustomTextCLIP

    context = 256
    bert = _write_bert(scratch / "tiny_pubmedbert", texts, context)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "test_vit",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 48,
        },
        "text_cfg": {
            "hf_model_name": PUBMEDBERT,
            "hf_tokenizer_name": PUBMEDBERT,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": context,
        },
    }
    build_text = {**cfg["text_cfg"], "hf_model_name": str(bert), "hf_model_pretrained": False}
    torch.manual_seed(seed)
    model = CustomTextCLIP(
        embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]), text_cfg=build_text
    )
    pp = {"mean": OPENAI_MEAN, "std": OPENAI_STD}
    bundle = save_bundle(model.eval(), cfg, pp, out, meta=_meta("BiomedCLIP"))
    for f in bert.iterdir():
        shutil.copy(f, bundle / f.name)
    return bundle
