"""The demo profile's stand-in backbones: ``demo`` (CLIP-loss pretraining on the SYNTHETIC phantom pool) and
``demo-random`` (the same architecture with random weights, the chance reference).

This is application code for the demo, kept apart from :mod:`cxrlib.backbones` (which only loads models):
it trains a small open_clip model once, writes both as ``local-dir:`` bundles under ``.cache/models/`` and
reuses them while their key (architecture, data, seed, :class:`~cxrlib.config.DemoBackboneConfig`) matches.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from cxrlib.backbones import DEMO_MODEL_CFG, DEMO_PREPROCESS_CFG, Backbone, demo_bundle_dir, save_bundle
from cxrlib.cache import file_lock
from cxrlib.config import DemoBackboneConfig
from cxrlib.data.manifest import manifest_hash
from cxrlib.runtime import seed_everything

__all__ = ["build_demo_backbones"]


def _demo_key(data_hash: str, seed: int, epochs: int, batch_size: int, lr: float) -> str:
    blob = json.dumps(
        {
            "cfg": DEMO_MODEL_CFG,
            "pp": DEMO_PREPROCESS_CFG,
            "data": data_hash,
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "v": 1,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _bundle_key(path: Path) -> str | None:
    meta = path / "cxrlib_bundle.json"
    if not meta.is_file() or not (path / "open_clip_model.safetensors").is_file():
        return None
    return json.loads(meta.read_text()).get("key")


def build_demo_backbones(
    manifest,
    image_cache,
    cfg: DemoBackboneConfig | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build (or reuse) the two demo bundles: ``demo`` (pretrained) and ``demo-random`` (chance reference).

    ``demo`` is trained with open_clip's CLIP loss on the manifest rows with ``split == "pretrain"`` — the
    phantom's reserved pool, whose patients never appear in train/val/test — so it stands in for a foundation
    model that has seen chest X-rays but was never trained for normal/abnormal retrieval. Training is
    deterministic on CPU for a fixed seed and thread count. A bundle is reused when its key (architecture,
    data, seed and hyper-parameters) matches; ``force=True`` rebuilds.

    Args:
        manifest: the manifest (rows with ``split == "pretrain"`` are used).
        image_cache: a :class:`cxrlib.data.images.ImageCache` holding those rows.

    Returns:
        ``{"demo": Path, "demo-random": Path, "history": list[dict], "seconds": float, "reused": bool}``.
    """
    out = demo_bundle_dir("demo")
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out):  # two runs building the demo backbone at once: the second waits, then reuses
        return _build(manifest, image_cache, cfg or DemoBackboneConfig(), seed, force, progress)


def _build(manifest, image_cache, cfg: DemoBackboneConfig, seed: int, force: bool, progress: bool) -> dict:
    epochs, batch_size, lr = cfg.epochs, cfg.batch_size, cfg.lr
    pool = manifest[manifest["split"] == "pretrain"].reset_index(drop=True)
    if len(pool) < batch_size:
        raise ValueError(
            f"the demo backbone is pretrained on rows with split == 'pretrain', but the manifest has {len(pool)} "
            f"(need at least batch_size={batch_size}). Use the phantom dataset (it reserves a pretraining pool)."
        )
    key = _demo_key(
        manifest_hash(pool, ("image_id", "text")) + image_cache.content_hash, seed, epochs, batch_size, lr
    )
    out_pre, out_rand = demo_bundle_dir("demo"), demo_bundle_dir("demo-random")
    if not force and _bundle_key(out_pre) == key and _bundle_key(out_rand) == key:
        hist = json.loads((out_pre / "cxrlib_bundle.json").read_text()).get("history", [])
        return {"demo": out_pre, "demo-random": out_rand, "history": hist, "seconds": 0.0, "reused": True}

    t0 = time.perf_counter()
    seed_everything(seed)
    model = _create_demo_model()
    meta_base = {"key": key, "architecture": DEMO_MODEL_CFG, "seed": seed, "synthetic_data": True}
    save_bundle(
        model, DEMO_MODEL_CFG, DEMO_PREPROCESS_CFG, out_rand, meta={**meta_base, "weights": "random init"}
    )

    tokenizer = open_clip.get_tokenizer(f"local-dir:{out_rand}")
    # unique texts tokenized once
    texts, text_idx = np.unique(pool["text"].to_numpy().astype(str), return_inverse=True)
    tokens = tokenizer(list(texts))
    images = torch.from_numpy(image_cache.get(pool["image_id"].tolist()))
    bb_stub = Backbone(
        name="demo",
        spec="",
        model=model,
        preprocess=None,
        tokenizer=tokenizer,
        image_size=DEMO_MODEL_CFG["vision_cfg"]["image_size"],
        mean=tuple(DEMO_PREPROCESS_CFG["mean"]),
        std=tuple(DEMO_PREPROCESS_CFG["std"]),
        context_length=DEMO_MODEL_CFG["text_cfg"]["context_length"],
        embed_dim=DEMO_MODEL_CFG["embed_dim"],
        weights_id="",
        device=torch.device("cpu"),
        logit_scale=0.0,
    )
    x_all = torch.cat([bb_stub.prepare_images(images[i : i + 256]) for i in range(0, len(images), 256)])
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = len(pool) // batch_size
    total = epochs * steps_per_epoch
    warm = max(1, steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(1, total))))
    )
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    bar = tqdm(
        range(epochs), desc="pretraining demo backbone (CLIP loss, synthetic pool)", disable=not progress
    )
    for ep in bar:
        perm = torch.randperm(len(pool), generator=gen)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            img_f = model.encode_image(x_all[idx], normalize=True)
            txt_f = model.encode_text(tokens[torch.from_numpy(text_idx[idx.numpy()])], normalize=True)
            loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))
            losses.append(loss.item())
        history.append(
            {
                "epoch": ep + 1,
                "clip_loss": float(np.mean(losses)),
                "logit_scale": model.logit_scale.exp().item(),
            }
        )
        bar.set_postfix(loss=f"{history[-1]['clip_loss']:.3f}")
    model.eval()
    seconds = time.perf_counter() - t0
    save_bundle(
        model,
        DEMO_MODEL_CFG,
        DEMO_PREPROCESS_CFG,
        out_pre,
        meta={
            **meta_base,
            "weights": "CLIP-loss pretraining on the phantom pretraining pool",
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "n_pairs": len(pool),
            "history": history,
            "seconds": round(seconds, 1),
        },
    )
    return {"demo": out_pre, "demo-random": out_rand, "history": history, "seconds": seconds, "reused": False}


def _create_demo_model() -> torch.nn.Module:
    from open_clip.model import CLIP

    cfg = json.loads(json.dumps(DEMO_MODEL_CFG))
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
