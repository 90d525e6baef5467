"""Embedding extraction (:func:`cxrlib.embeddings.extract_embeddings`) against the image tower alone, in one run.

What the demo pays: notebook 01 caches every image at the PROFILE's ``data.image_size`` (demo: 224 px, the size
CLIP / BiomedCLIP read), the demo backbone reads 64 px, and notebook 02 calls ``extract_embeddings`` with the image
cache that ``open_prepared`` returns. This script goes through exactly those calls:

1. ``prepare_dataset`` (notebook 01's entry point) with the profile's data settings on the SYNTHETIC phantom
   corpus (the profile's phantom settings: the demo corpus itself, 1,600 patients), in a temporary folder;
2. ``open_prepared`` (notebooks 02-04's entry point) -> manifest and image cache; the rows notebook 02 embeds
   (splits train/val/test);
3. the two measurements, same backbone, device, batch size (``eval.batch_size``), DataLoader workers
   (``data.num_workers``), threads (``run.num_threads``) and precision:

   - ``model-only`` — ``model.encode_image`` on input tensors of the MODEL's size (B, 3, S, S), normalised and on
     the device, made before timing from the same images: the ceiling;
   - ``pipeline``   — ``extract_embeddings(..., force=True)`` as notebook 02 calls it: everything it does for the
     images counts (reading the cache, any resizing from the cache's size to the model's, normalisation, the
     forward pass, L2-normalisation, the resumable chunks, the final file); its wall time minus the text phase
     (``meta["seconds_text"]``, reported separately; the model-only side embeds no text).

   Whatever the library does to go from the profile's cache to the model's input is measured, wherever it
   lives (per batch in ``prepare_images``, or a model-size cache made once): a one-off cost shows in the first
   extraction, printed separately ("first run"); the goal uses the best of the repeated runs.

Goal (issue 16): pipeline >= 0.90 x model-only images/s at the profile's cache size.

Usage::

    python benchmarks/bench_embeddings.py                  # demo profile: 224 px cache -> demo architecture (64 px)
    python benchmarks/bench_embeddings.py --quick          # 200-patient corpus, 2 repeats (verdict marked 'smoke')
    python benchmarks/bench_embeddings.py --quick --backbone biomedclip-arch   # CPU smoke test, 32 images
    python benchmarks/bench_embeddings.py --profile paper --backbone biomedclip-arch --device cuda \\
        --batch-size 256 --num-workers 8 --patients 9000   # the paper's architecture on a GPU server

Backbones: ``demo-random`` (default; the demo architecture — a small ModifiedResNet at 64 px — with seeded random
weights, written as a bundle in the temporary folder; speed does not depend on the weights), ``biomedclip-arch``
(BiomedCLIP's architecture with RANDOM weights, built offline: open_clip has no built-in BiomedCLIP config in 3.3,
so its hub config — timm ``vit_base_patch16_224`` at 224 px + a BERT-base text tower (PubMedBERT's shape: 12
layers, 768 wide, vocab 30522), MLP projection, CLS pooler, context 256, embed dim 512 — is written here, with a
local BERT config and a small word-piece vocabulary instead of the hub files; the image tower is exact, which is
what throughput depends on), or any name ``load_backbone`` accepts (``clip``, ``biomedclip``, ``local-dir:...``)
when its weights are available. Both modes are warmed up first, then timed ``--repeat`` times, interleaved.
Timings on a shared machine are noisy: the load average is printed first; process CPU time is printed beside
the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _goals import Goal, add_common_arguments, finish, machine_line

__all__ = ["GOAL_RATIO", "BIOMEDCLIP_MODEL_CFG", "goal_for", "main"]

SCRIPT = "bench_embeddings.py"
#: pipeline images/s over model-only images/s must be at least this (issue 16).
GOAL_RATIO = 0.90

#: BiomedCLIP's open_clip model config (hub: microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224); the text
#: tower's ``hf_model_name`` / ``hf_tokenizer_name`` are replaced by a local folder at run time.
BIOMEDCLIP_MODEL_CFG = {
    "embed_dim": 512,
    "vision_cfg": {
        "timm_model_name": "vit_base_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 224,
    },
    "text_cfg": {
        "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 256,
    },
}


# ----------------------------------------------------------------------------------------------------------
# backbones
# ----------------------------------------------------------------------------------------------------------
def demo_random(device: str):
    """The demo architecture with seeded random weights, saved where ``load_backbone("demo-random")`` looks."""
    import torch
    from open_clip.model import CLIP

    from cxrlib.backbones import (
        DEMO_MODEL_CFG,
        DEMO_PREPROCESS_CFG,
        demo_bundle_dir,
        load_backbone,
        save_bundle,
    )

    torch.manual_seed(0)
    model = CLIP(**json.loads(json.dumps(DEMO_MODEL_CFG)))
    save_bundle(
        model, DEMO_MODEL_CFG, DEMO_PREPROCESS_CFG, demo_bundle_dir("demo-random"), meta={"weights": "bench"}
    )
    return load_backbone("demo-random", device=device), "demo architecture, seeded random weights"


def biomedclip_arch(device: str, workdir: Path, words: list[str]):
    """BiomedCLIP's architecture with random weights, built without the Hugging Face hub."""
    import open_clip
    import torch
    from transformers import BertConfig, BertTokenizer

    from cxrlib.backbones import backbone_from_model

    bert = workdir / "pubmedbert-arch"
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(bert / "vocab.txt"), do_lower_case=True).save_pretrained(bert)
    # BertConfig's defaults are BERT-base: 12 layers, 768 wide, 12 heads, 512 positions = PubMedBERT's shape
    BertConfig(vocab_size=30522).save_pretrained(bert)
    cfg = json.loads(json.dumps(BIOMEDCLIP_MODEL_CFG))
    cfg["text_cfg"]["hf_model_name"] = cfg["text_cfg"]["hf_tokenizer_name"] = str(bert)
    cfg_file = workdir / "biomedclip-arch.json"
    cfg_file.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "biomedclip-arch", pretrained=None, pretrained_image=False, pretrained_text=False, device=device
    )
    tokenizer = open_clip.get_tokenizer("biomedclip-arch")
    bb = backbone_from_model(
        "biomedclip-arch", "BiomedCLIP architecture, random weights", model, preprocess, tokenizer, device
    )
    return bb, "BiomedCLIP architecture (timm ViT-B/16 224 px + BERT-base text tower), RANDOM weights"


def get_backbone(name: str, device: str, workdir: Path, words: list[str]):
    from cxrlib.backbones import load_backbone

    if name == "demo-random":
        return demo_random(device)
    if name == "biomedclip-arch":
        return biomedclip_arch(device, workdir, words)
    return load_backbone(name, device=device), "weights as loaded by load_backbone"


# ----------------------------------------------------------------------------------------------------------
# data: notebook 01 and the start of notebook 02, as they run
# ----------------------------------------------------------------------------------------------------------
def prepare(work: Path, settings, n_patients: int | None, n_rows: int | None):
    """``prepare_dataset`` + ``open_prepared`` on the SYNTHETIC phantom corpus with the profile's data settings.

    Returns ``(rows, image_cache, record)``: the rows notebook 02 embeds (splits train/val/test; the first
    ``n_rows`` of them when given), the image cache ``open_prepared`` opened, and notebook 01's record.
    """
    from cxrlib.data.datasets import open_prepared, prepare_dataset

    data = settings.data.replace(dataset="phantom")
    phantom = settings.phantom if n_patients is None else settings.phantom.replace(n_patients=n_patients)
    prepare_dataset(data, work / "prepared", phantom=phantom, seed=settings.run.seed, progress=False)
    manifest, image_cache, record = open_prepared(work / "prepared")
    rows = manifest[manifest["split"].isin(["train", "val", "test"])].reset_index(drop=True)
    if n_rows is not None:
        rows = rows.iloc[:n_rows].reset_index(drop=True)
    return rows, image_cache, record


# ----------------------------------------------------------------------------------------------------------
# the two measurements
# ----------------------------------------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(bb, batches: list, use_amp: bool) -> tuple[float, float]:
    """(wall s, CPU s) of ``encode_image`` over device-resident, normalised model-size batches (one pass)."""
    import torch

    dev = bb.device
    with torch.no_grad(), torch.autocast(dev.type, enabled=use_amp):
        sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        for x in batches:
            bb.model.encode_image(x)
        sync(dev)
        return time.perf_counter() - t0, time.process_time() - c0


def pipeline(bb, rows, cache, out: Path, batch_size: int, workers: int, amp: bool | None) -> dict:
    """``extract_embeddings(..., force=True)`` as notebook 02 calls it: its meta plus ``wall_images`` (wall
    seconds of the whole call minus its text phase) and ``cpu_s`` (process CPU seconds of the whole call)."""
    from cxrlib.embeddings import extract_embeddings

    t0, c0 = time.perf_counter(), time.process_time()
    emb = extract_embeddings(
        bb, rows, cache, out, batch_size=batch_size, num_workers=workers, amp=amp, force=True, progress=False
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = dict(emb.meta)
    if "seconds_text" not in meta:
        raise SystemExit(
            "extract_embeddings no longer records meta['seconds_text']; update bench_embeddings.pipeline to "
            "separate its text phase"
        )
    meta["wall"], meta["cpu_s"] = wall, cpu
    meta["wall_images"] = wall - float(meta["seconds_text"])
    return meta


def extraction_source(bb, cache):
    """``(images, description)``: what ``extract_embeddings`` reads for ``bb`` from ``cache``, asked of the
    library itself (``cxrlib.embeddings.model_input_images`` where it exists: e.g. a model-size copy of the
    cache on CPU), else the cache as ``open_prepared`` opened it."""
    import cxrlib.embeddings as E

    pick = getattr(E, "model_input_images", None)
    src = pick(bb, cache) if pick is not None else cache
    what = (
        f"{src.size} px {'uint8 cache' if src is cache else type(src).__name__}"
        f"{', resized to ' + str(bb.image_size) + ' px per batch' if src.size != bb.image_size else ''}"
    )
    return src, what


def breakdown(bb, src, rows, batch_size: int, use_amp: bool) -> dict[str, float]:
    """Where the image time goes, per batch, reading ``src`` (:func:`extraction_source`): reading the images,
    ``prepare_images`` (normalisation and, when the images are not at the model's size, the bicubic resize),
    the forward pass. Diagnostics only, not part of the goal."""
    import torch

    ids = rows["image_id"].tolist()
    r = src.rows(ids)
    t_read = t_prep = t_model = 0.0
    nb = 0
    with torch.no_grad(), torch.autocast(bb.device.type, enabled=use_amp):
        for i in range(0, len(ids), batch_size):
            t0 = time.perf_counter()
            raw = torch.from_numpy(src.get_rows(r[i : i + batch_size]))
            t1 = time.perf_counter()
            x = bb.prepare_images(raw)
            sync(bb.device)
            t2 = time.perf_counter()
            bb.model.encode_image(x)
            sync(bb.device)
            t3 = time.perf_counter()
            t_read, t_prep, t_model, nb = t_read + t1 - t0, t_prep + t2 - t1, t_model + t3 - t2, nb + 1
    return {"read": 1e3 * t_read / nb, "prepare": 1e3 * t_prep / nb, "model": 1e3 * t_model / nb}


def goal_for(n: int, pipeline_s: float, model_s: float, detail: str, smoke: bool) -> Goal:
    """The verdict from the best timings: ``n`` images in ``pipeline_s`` (image phase) vs ``model_s``."""
    ratio = (n / pipeline_s) / (n / model_s) if pipeline_s > 0 and model_s > 0 else float("nan")
    return Goal(
        "extraction pipeline / model-only (images/s)", ratio, ">=", GOAL_RATIO, detail=detail, smoke=smoke
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap)
    ap.add_argument(
        "--profile", default="demo", help="settings of this profile (cache size, batch size, threads)"
    )
    ap.add_argument(
        "--backbone", default="demo-random", help="demo-random | biomedclip-arch | a load_backbone name"
    )
    ap.add_argument(
        "--device", default=None, help="cpu | cuda | cuda:1 | auto (default: the profile's run.device)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=None, help="images per forward pass (default eval.batch_size)"
    )
    ap.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers (default data.num_workers)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default run.num_threads)")
    ap.add_argument(
        "--patients", type=int, default=None, help="phantom patients (default: the profile's; quick 200)"
    )
    ap.add_argument(
        "--n", type=int, default=None, help="embed only the first N rows (default: all of train/val/test)"
    )
    ap.add_argument(
        "--repeat", type=int, default=None, help="timed runs per mode, best kept (default 5; quick 2)"
    )
    ap.add_argument("--no-amp", action="store_true", help="no fp16 autocast on CUDA (CPU never uses it)")
    args = ap.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 5)
    patients = args.patients or (200 if args.quick else None)
    n_rows = args.n
    if args.backbone == "biomedclip-arch" and (args.device or "cpu") == "cpu":
        # ViT-B/16 at 224 px runs at a few images/s on 2 CPU cores (and BERT-base at context 256 is slower still)
        n_rows = args.n or (32 if args.quick else 128)
        patients = args.patients or 200
        repeat = args.repeat or (1 if args.quick else 2)

    with tempfile.TemporaryDirectory(prefix="bench_embeddings_") as tmp:
        work = Path(tmp)
        # the demo bundle and everything else this script writes stay in the temporary folder
        os.environ["CXR_CACHE_DIR"] = str(work / "cxr_cache")
        import torch

        from cxrlib.config import load_settings
        from cxrlib.runtime import resolve_device, seed_everything, set_threads

        settings = load_settings(args.profile)
        seed_everything(settings.run.seed)
        threads = set_threads(settings.run.num_threads if args.threads is None else args.threads)
        dev = resolve_device(args.device or settings.run.device)
        batch_size = args.batch_size or (
            16 if args.backbone == "biomedclip-arch" and dev.type == "cpu" else None
        )
        batch_size = batch_size or settings.eval.batch_size
        workers = settings.data.num_workers if args.num_workers is None else args.num_workers
        use_amp = dev.type == "cuda" and not args.no_amp
        print(
            f"bench_embeddings: profile {args.profile!r}, backbone {args.backbone}, device {dev}"
            f"{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, batch {batch_size}, "
            f"workers {workers}, amp {use_amp}, torch threads {threads}, {repeat} repeats"
            f"{' (QUICK: smoke sizes)' if args.quick else ''}; {machine_line()}"
        )
        t0 = time.perf_counter()
        rows, cache, record = prepare(work, settings, patients, n_rows)
        t_prep = time.perf_counter() - t0
        words = rows["text"].str.lower().str.split().explode().tolist()
        bb, what = get_backbone(args.backbone, str(dev), work, words)
        n = len(rows)
        n_params = sum(p.numel() for p in bb.model.visual.parameters()) / 1e6
        print(
            f"backbone: {what}; image tower {n_params:.1f} M parameters, input {bb.image_size} px, embedding dim "
            f"{bb.embed_dim}. data: SYNTHETIC phantom, {n} rows of train/val/test ({rows['text'].nunique()} distinct "
            f"reports); image cache from open_prepared: {cache.size} px ({cache.aspect}) "
            f"{'= the model size' if cache.size == bb.image_size else '!= the model size ' + str(bb.image_size) + ' px'}"
            f"; notebook 01 step {t_prep:.1f} s"
        )

        ids = rows["image_id"].tolist()
        batches = [  # model-only input: normalised, model-size, on the device, made before any timing
            bb.prepare_images(torch.from_numpy(cache.get(ids[i : i + batch_size])))
            for i in range(0, len(ids), batch_size)
        ]
        assert all(tuple(x.shape[-2:]) == (bb.image_size, bb.image_size) for x in batches)
        amp = False if args.no_amp else None
        model_only(bb, batches[:2], use_amp)  # warm-up: kernels, allocator
        first = pipeline(bb, rows, cache, work / "emb", batch_size, workers, amp)  # includes any one-off work
        mo: list[tuple[float, float]] = []
        runs: list[dict] = []
        for r in range(
            repeat
        ):  # interleaved, order alternating, so that drift in machine load hits both alike
            for kind in ("model", "pipeline") if r % 2 == 0 else ("pipeline", "model"):
                if kind == "model":
                    mo.append(model_only(bb, batches, use_amp))
                else:
                    runs.append(pipeline(bb, rows, cache, work / "emb", batch_size, workers, amp))
        del batches
        src, src_what = extraction_source(bb, cache)
        parts = breakdown(bb, src, rows, batch_size, use_amp)
        best_mo = min(mo)
        best_pl = min(runs, key=lambda m: m["wall_images"])
        nb = -(-n // batch_size)
        print(f"{'mode':<22}{'images/s':>10}{'ms/batch':>10}{'seconds':>9}   runs (s)")
        print(
            f"{'model-only':<22}{n / best_mo[0]:>10.1f}{1e3 * best_mo[0] / nb:>10.2f}{best_mo[0]:>9.2f}   "
            f"{[round(t[0], 2) for t in mo]}"
        )
        print(
            f"{'pipeline (images)':<22}{n / best_pl['wall_images']:>10.1f}{1e3 * best_pl['wall_images'] / nb:>10.2f}"
            f"{best_pl['wall_images']:>9.2f}   {[round(m['wall_images'], 2) for m in runs]}"
        )
        print(
            f"    first run (with any one-off work): images {first['wall_images']:.2f} s = "
            f"{n / first['wall_images']:.1f} images/s; text phase {best_pl['seconds_text']:.2f} s for "
            f"{best_pl['n_unique_texts']} distinct texts (not in the ratio); the library's own image-phase rate "
            f"{best_pl.get('images_per_second')} images/s"
        )
        print(
            f"    extraction reads: {src_what}; where a batch's time goes (diagnostic): read {parts['read']:.2f} ms, "
            f"prepare_images {parts['prepare']:.2f} ms, model {parts['model']:.2f} ms; pipeline - model-only = "
            f"{1e3 * (best_pl['wall_images'] - best_mo[0]) / nb:+.2f} ms/batch"
        )
        detail = (
            f"{args.backbone} ({bb.image_size} px model) from the profile's {cache.size} px cache, N={n}, batch "
            f"{batch_size}: pipeline {best_pl['wall_images']:.2f} s vs model-only {best_mo[0]:.2f} s wall "
            f"(best of {repeat}); first run {first['wall_images']:.2f} s; reads {src_what}; read/prepare/model "
            f"{parts['read']:.1f}/{parts['prepare']:.1f}/{parts['model']:.1f} ms/batch"
        )
        goal = goal_for(n, best_pl["wall_images"], best_mo[0], detail, args.quick)
    return finish(SCRIPT, [goal], args.markdown)


if __name__ == "__main__":
    sys.exit(main())
