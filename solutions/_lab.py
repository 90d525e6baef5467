"""The lab the solutions run on: a manifest, its image cache and the baseline embeddings, small or full size.

- :func:`build_small` makes a reduced lab in a folder of its own: notebook 01 by library calls with
  :data:`SMALL_OVERRIDES` (900 SYNTHETIC phantom patients at 64 px), and, instead of pretraining the demo
  backbone (minutes of CPU), a *constructed* embedding space (:func:`constructed_spaces`): every finding,
  severity and side of the phantom's ground truth is a random direction, an image is the sum of its
  findings' directions plus noise, a report the sum of the findings it mentions plus noise seeded by its
  text (identical reports embed identically), each modality shifted by its own offset (a modality gap).
  It has the structure the exercises need (instance alignment, label groups, shared normal reports) at no
  training cost; ``tests/test_solutions.py`` uses it. Its numbers are not the demo's.
- :func:`open_run` reads the caches of an isolated demo run
  (``python -m cxrlib.reproduce --profile demo --out DIR``): the full-size numbers quoted in the notebooks.

:class:`Lab` then gives each exercise what notebook 03 would have: the embedding sets of each split, the
settings of notebook 03 (the head's CLIP temperature resolved from the backbone) and a memoised
:meth:`Lab.train`. :func:`expect` prints a measured value with its expected range and asserts it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.config import LossConfig, ProjectorConfig, Settings, TrainConfig, load_settings
from cxrlib.data.images import ImageCache
from cxrlib.embeddings import Embeddings
from cxrlib.training import EmbeddingSet, TrainResult

__all__ = [
    "SIZES",
    "SMALL_OVERRIDES",
    "Range",
    "Lab",
    "isolated",
    "embed_baselines",
    "constructed_spaces",
    "build_small",
    "open_run",
    "expect",
    "full_only",
    "run_exercises",
    "main",
]

SIZES: tuple[str, ...] = ("small", "full")

#: The reduced lab of the tests: 900 SYNTHETIC phantom patients (about 1,600 image-report pairs, 1,100 of them
#: in train/val/test) at 64 px, 50 bootstrap replicates, one torch thread, a 128-wide head, at most 25 epochs
#: (patience 5); its embeddings are constructed (:func:`constructed_spaces`).
SMALL_OVERRIDES: dict[str, dict[str, Any]] = {
    "run": {"num_threads": 1},  # a shared 2-core CPU: one thread costs a tenth of the CPU time of two
    "phantom": {"n_patients": 900},
    "projector": {"hidden_dim": 128},  # a quarter of the demo head's width: the same exercises, less CPU
    "train": {"epochs": 25, "patience": 5},  # the demo's 50 / 8: the small lab's heads stop by epoch ~15
    "data": {"image_size": 64},
    "eval": {"n_boot": 50},
    "ablation": {"enabled": False},
}

_ENV = ("CXR_CACHE_DIR", "CXR_RESULTS_DIR")


@dataclass(frozen=True)
class Range:
    """The expected interval of a measured value at each lab size: ``small`` and ``full`` ``(lo, hi)``."""

    small: tuple[float, float]
    full: tuple[float, float]

    def at(self, size: str) -> tuple[float, float]:
        if size not in SIZES:
            raise ValueError(f"lab size must be one of {SIZES}, got {size!r}")
        return getattr(self, size)


@contextmanager
def isolated(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Send caches and results under ``root`` (``root/cache``, ``root/results``) for the ``with`` block only,
    as ``python -m cxrlib.reproduce --out root`` does for a whole run; the environment is restored after."""
    root = Path(root).resolve()
    old = {k: os.environ.get(k) for k in _ENV}
    os.environ["CXR_CACHE_DIR"] = str(root / "cache")
    os.environ["CXR_RESULTS_DIR"] = str(root / "results")
    try:
        yield root
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Lab:
    """What the exercises read: settings, manifest, image cache and registered embeddings of one demo run.

    ``root`` is the run's isolated folder: its caches are ``root/cache/demo`` (manifest, images, embeddings).
    ``size`` is ``"small"`` or ``"full"`` and selects the expected ranges (:func:`expect`). ``backbone`` is
    the space the head is trained on (``demo`` in a run), ``chance`` the chance reference (``demo-random``);
    ``spaces`` holds embeddings kept in memory (the small lab's constructed ones), looked up before the run's
    registered embeddings.
    """

    size: str
    root: Path
    settings: Settings
    manifest: pd.DataFrame
    image_cache: ImageCache
    backbone: str = "demo"
    chance: str = "demo-random"
    spaces: dict[str, Embeddings] = field(default_factory=dict, repr=False)
    _trained: dict[str, TrainResult] = field(default_factory=dict, repr=False)
    _sets: dict[str, tuple[EmbeddingSet, EmbeddingSet, EmbeddingSet]] = field(
        default_factory=dict, repr=False
    )

    @property
    def work_dir(self) -> Path:
        return self.root / "cache" / "demo"

    @property
    def emb_dir(self) -> Path:
        return self.work_dir / "embeddings"

    def rows(self, *splits: str) -> pd.DataFrame:
        """Manifest rows of ``splits`` (default train/val/test), in manifest order, index reset."""
        want = splits or ("train", "val", "test")
        return self.manifest[self.manifest["split"].isin(want)].reset_index(drop=True)

    def space(self, name: str | None = None) -> Embeddings:
        """The embeddings ``name`` (default :attr:`backbone`) of every train/val/test row: from
        :attr:`spaces`, else those registered under that name in the run."""
        from cxrlib.embeddings import load_registered

        name = name or self.backbone
        return self.spaces[name] if name in self.spaces else load_registered(self.emb_dir, name)

    def sets(self, name: str | None = None) -> tuple[EmbeddingSet, EmbeddingSet, EmbeddingSet]:
        """``(train, val, test)`` embedding sets of space ``name`` (default :attr:`backbone`), as notebook 03
        builds them (memoised)."""
        from cxrlib.evaluation import embedding_sets

        name = name or self.backbone
        if name not in self._sets:
            train, val, test = embedding_sets(self.rows(), self.space(name), ("train", "val", "test"))
            self._sets[name] = (train, val, test)
        return self._sets[name]

    def configs(
        self,
        loss: Mapping[str, Any] | None = None,
        projector: Mapping[str, Any] | None = None,
        train: Mapping[str, Any] | None = None,
    ) -> tuple[ProjectorConfig, LossConfig, TrainConfig]:
        """Notebook 03's configs with ``{field: value}`` changes per section (checked like an override)."""
        from cxrlib.losses import resolve_logit_scale

        s = self.settings
        source = self.space()
        proj = s.projector.replace(**dict(projector or {}))
        proj = proj.replace(in_dim=int(source.image.shape[1]), out_dim=int(source.image.shape[1]))
        loss_cfg, _ = resolve_logit_scale(
            s.loss.replace(**dict(loss or {})), (source.meta.get("backbone") or {}).get("logit_scale")
        )
        return proj, loss_cfg, s.train.replace(**dict(train or {}))

    def train(
        self,
        loss: Mapping[str, Any] | None = None,
        projector: Mapping[str, Any] | None = None,
        train: Mapping[str, Any] | None = None,
        sets: tuple[EmbeddingSet, EmbeddingSet] | None = None,
        tag: str = "",
    ) -> TrainResult:
        """Train the projector on the :attr:`backbone` train split (or on ``sets`` = ``(train, val)``),
        memoised by the resolved configs and ``tag`` (name a custom ``sets`` with a tag)."""
        from cxrlib.training import train_projector

        proj, loss_cfg, train_cfg = self.configs(loss, projector, train)
        # keyed by the resolved configs: a change that restates a default reuses the default run
        key = json.dumps(
            [c.to_dict() for c in (proj, loss_cfg, train_cfg)] + [tag], sort_keys=True, default=str
        )
        if key not in self._trained:
            tr, va = sets if sets is not None else self.sets()[:2]
            self._trained[key] = train_projector(tr, va, proj, loss_cfg, train_cfg, progress=False)
        return self._trained[key]

    def test_metrics(self, result: TrainResult, ks: Sequence[int] | None = None) -> dict[str, float]:
        """Retrieval metrics (no bootstrap) of a trained head on the test split."""
        from cxrlib.metrics import retrieval_metrics

        test = self.sets()[2]
        return retrieval_metrics(
            result.model.project_array(test.image, "image"),
            result.model.project_array(test.text, "text"),
            labels=test.labels,
            ks=tuple(ks or self.settings.eval.ks),
        )


def embed_baselines(settings: Settings, manifest: pd.DataFrame, cache: ImageCache, emb_dir: Path) -> None:
    """Notebook 02's first half: build the demo backbones and embed train/val/test with each of
    ``settings.eval.backbones`` (registered by name in ``emb_dir``). Call it inside :func:`isolated`: the
    demo bundles go to ``<cache>/models``."""
    from cxrlib.backbones import DEMO_NAMES, load_backbone
    from cxrlib.demo_backbone import build_demo_backbones
    from cxrlib.embeddings import extract_embeddings, register_embeddings

    ev = settings.eval
    if any(n in DEMO_NAMES for n in ev.backbones):
        build_demo_backbones(manifest, cache, settings.demo_backbone, seed=settings.run.seed, progress=False)
    rows = manifest[manifest["split"].isin(["train", "val", "test"])].reset_index(drop=True)
    for name in ev.backbones:
        bb = load_backbone(name, device="cpu", precision=ev.precision)
        emb = extract_embeddings(bb, rows, cache, emb_dir, batch_size=ev.batch_size, progress=False)
        register_embeddings(emb_dir, name, emb)


def constructed_spaces(
    manifest: pd.DataFrame,
    dim: int = 64,
    image_noise: float = 3.5,
    text_noise: float = 2.0,
    gap: float = 1.5,
    seed: int = 0,
) -> dict[str, Embeddings]:
    """Two embedding spaces of the train/val/test rows of a phantom manifest, built from its ground truth.

    ``"constructed"``: each (finding, severity, side) and each finding gets a random direction (N(0, 1) per
    coordinate, ``dim`` wide); an image is the sum of its findings' directions + ``image_noise`` x N(0, 1) +
    ``gap`` x a shared image offset; a report the sum over the findings it *mentions* (the missed one left
    out) + ``text_noise`` x noise seeded by its text (identical texts, identical rows) + ``gap`` x a shared
    report offset; rows are L2-normalised (float32). ``"noise"``: the same rows with random unit vectors
    (identical texts identical), the chance reference. Deterministic for ``seed``. SYNTHETIC and
    constructed: a test fixture with the structure of a pretrained space, not a model.
    """
    import hashlib

    rows = manifest[manifest["split"].isin(["train", "val", "test"])].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    details = [json.loads(d) for d in rows["finding_detail"]]
    keys = sorted(
        {(f, str(a.get("severity", "")), str(a.get("side", ""))) for d in details for f, a in d.items()}
    )
    combo = dict(zip(keys, rng.normal(size=(len(keys), dim)), strict=True))
    finding = {f: rng.normal(size=dim) for f in sorted({k[0] for k in keys})}

    def code(d: dict, skip: str = "") -> np.ndarray:
        v = np.zeros(dim)
        for f, a in d.items():
            if f != skip:
                v += finding[f] + combo[(f, str(a.get("severity", "")), str(a.get("side", "")))]
        return v

    offset_img, offset_txt = rng.normal(size=dim), rng.normal(size=dim)
    image = np.stack([code(d) for d in details]) + image_noise * rng.normal(size=(len(rows), dim))
    image += gap * offset_img
    noise_img = rng.normal(size=(len(rows), dim))
    text, noise_txt = np.zeros_like(image), np.zeros_like(image)
    for i, (t, d, miss) in enumerate(zip(rows["text"], details, rows["missed_finding"], strict=True)):
        r = np.random.default_rng(int(hashlib.sha256(str(t).encode()).hexdigest()[:12], 16))
        text[i] = code(d, miss) + text_noise * r.normal(size=dim) + gap * offset_txt
        noise_txt[i] = r.normal(size=dim)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ids = rows["image_id"].to_numpy()
    meta = {"backbone": {"weights_id": "constructed from the phantom's ground truth (SYNTHETIC)"}}
    return {
        "constructed": Embeddings(unit(image), unit(text), ids, dict(meta)),
        "noise": Embeddings(unit(noise_img), unit(noise_txt), ids, dict(meta)),
    }


def build_small(root: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> Lab:
    """Build the reduced lab under ``root``: notebook 01 by library calls (SYNTHETIC phantom data) and the
    :func:`constructed_spaces` in place of the pretrained demo backbones (module docstring).

    ``overrides`` (default :data:`SMALL_OVERRIDES`) go on top of the demo profile. Deterministic: one seed
    (``run.seed``) and a fixed thread count, as in the notebooks.
    """
    from cxrlib import paths
    from cxrlib.data.datasets import open_prepared, prepare_dataset
    from cxrlib.runtime import seed_everything, set_threads

    settings = load_settings("demo", dict(SMALL_OVERRIDES if overrides is None else overrides))
    with isolated(root) as r:
        seed_everything(settings.run.seed)
        set_threads(settings.run.num_threads)
        work = paths.profile_cache_dir("demo")
        prepare_dataset(settings.data, work, settings.phantom, seed=settings.run.seed, progress=False)
        manifest, cache, _ = open_prepared(work)
    spaces = constructed_spaces(manifest, seed=settings.run.seed)
    return Lab("small", r, settings, manifest, cache, backbone="constructed", chance="noise", spaces=spaces)


def open_run(out: str | os.PathLike[str]) -> Lab:
    """The lab of an isolated demo run made by ``python -m cxrlib.reproduce --profile demo --out <out>``
    (at least notebooks 01 and 02, with the profile's settings); its caches are only read."""
    from cxrlib.data.datasets import open_prepared
    from cxrlib.runtime import seed_everything, set_threads

    root = Path(out).resolve()
    work = root / "cache" / "demo"
    if not (work / "embeddings" / "index.json").is_file():
        raise FileNotFoundError(
            f"{out} holds no demo run (no {work / 'embeddings' / 'index.json'}). Make one first: "
            f"python -m cxrlib.reproduce --profile demo --out {out}  (about 3 minutes on 2 cores)"
        )
    settings = load_settings("demo")
    seed_everything(settings.run.seed)
    set_threads(settings.run.num_threads)
    manifest, cache, _ = open_prepared(work)
    return Lab("full", root, settings, manifest, cache)


def expect(lab: Lab | str, name: str, value: float, expected: Range, why: str) -> float:
    """Print ``name = value`` with its expected range at the lab's size (a :class:`Lab` or ``"small"`` /
    ``"full"``), and assert that it lies inside; the error says what the value means (``why``)."""
    size = lab if isinstance(lab, str) else lab.size
    lo, hi = expected.at(size)
    v = float(value)
    ok = bool(np.isfinite(v) and lo <= v <= hi)
    print(f"    {name} = {v:.4g}   expected [{lo:g}, {hi:g}] ({size}) {'ok' if ok else 'OUT OF RANGE'}")
    if not ok:
        raise AssertionError(
            f"{name} = {v:.4g} is outside the expected range [{lo:g}, {hi:g}] for the {size} lab ({why}). "
            "If the demo backbone or training changed on purpose, re-measure and update the range in the "
            "solution and in the notebook's exercise text."
        )
    return v


def full_only(why: str) -> Callable:
    """Mark an exercise that runs only on a full lab (``--run``), with the reason it cannot run small."""

    def mark(fn: Callable) -> Callable:
        fn.sizes = ("full",)  # type: ignore[attr-defined]
        fn.why_not = why  # type: ignore[attr-defined]
        return fn

    return mark


def run_exercises(
    lab: Lab, exercises: Mapping[str, Callable[[Lab], dict[str, float]]], only: Sequence[str] = ()
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Run ``{name: exercise}`` on ``lab`` (all, or the names in ``only``), printing each with its CPU time.

    An exercise whose value leaves its range is reported and the others still run; returns the results
    and the failures (``"name: message"``).
    """
    out, failed = {}, []
    for name, fn in exercises.items():
        if only and name not in only:
            continue
        print(f"== {name}: {(fn.__doc__ or '').strip().splitlines()[0]}", flush=True)
        if lab.size not in getattr(fn, "sizes", SIZES):
            print(f"   skipped at size {lab.size}: {getattr(fn, 'why_not', '')}")
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            out[name] = fn(lab)
        except AssertionError as exc:
            failed.append(f"{name}: {exc}")
        print(f"   ({time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU)", flush=True)
    return out, failed


def main(
    exercises: Mapping[str, Callable[[Lab], dict[str, float]]], argv: Sequence[str] | None, what: str
) -> int:
    """Command line of every solution module: ``[--run DIR] [--only NAME ...] [--keep DIR]``."""
    p = argparse.ArgumentParser(description=f"Solutions of {what} (SYNTHETIC demo data).")
    p.add_argument(
        "--run", metavar="DIR", help="an isolated demo run (cxrlib.reproduce --out DIR): full-size numbers"
    )
    p.add_argument("--only", nargs="+", default=[], metavar="NAME", help="e.g. exercise_2")
    p.add_argument("--keep", metavar="DIR", help="build the small lab in DIR (kept) instead of a temp folder")
    a = p.parse_args(argv)
    unknown = sorted(set(a.only) - set(exercises))
    if unknown:
        p.error(f"unknown exercise(s) {unknown}; choose from {sorted(exercises)}")
    c0 = time.process_time()
    if a.run:
        _, failed = run_exercises(open_run(a.run), exercises, a.only)
    elif a.keep:
        _, failed = run_exercises(build_small(a.keep), exercises, a.only)
    else:
        with tempfile.TemporaryDirectory(prefix="cxr-solutions-") as tmp:
            _, failed = run_exercises(build_small(tmp), exercises, a.only)
    print(f"all done: {time.process_time() - c0:.1f} s CPU in this process")
    for f in failed:
        print(f"FAILED {f}")
    return 1 if failed else 0
