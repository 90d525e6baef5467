"""CPU smoke test of the paper profile: the four notebooks end to end through ``python -m cxrlib.reproduce
--profile paper``, on a small SYNTHETIC IU X-ray corpus in the Open-i layout and two tiny random-weight
``local-dir:`` bundles shaped like the paper's baselines (tests/paper_fixtures.py), with the Hugging Face hub
offline.

The run is isolated (``--out`` in ``tmp_path``: nothing is written to ``results/`` or ``.cache/``); the paper
profile is kept, and ``--param`` overrides change only what a CPU and a few dozen images need (device, data
folder, image size, batch sizes, epochs, bootstrap replicates, no loss ablation, a small t-SNE). Select it
with ``-m paper_smoke``; it is part of the ordinary test run too, so a change that breaks the paper route fails
here rather than on a GPU server.

The Kaggle layout (layout B) of IU X-ray goes through the data step (``prepare_dataset``) only.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from paper_fixtures import (
    build_biomedclip_like,
    build_clip_like,
    build_kaggle,
    build_openi,
    synthetic_reports,
)

from cxrlib.backbones import display_name, slug
from cxrlib.config import DataConfig
from cxrlib.data.datasets import prepare_dataset
from cxrlib.paths import REPO_ROOT
from cxrlib.reproduce import KERNEL_NAME, check_kernel

pytestmark = [pytest.mark.paper_smoke, pytest.mark.slow]

N_REPORTS = 48  # every fourth has a second image: 60 (report, image) rows
IMAGE_SIZE = 64  # the image cache's side; the BiomedCLIP-like tower reads 48 px (resized on the fly)
NOTEBOOKS = (
    "01_data_preparation",
    "02_baseline_evaluation",
    "03_multitask_finetuning",
    "04_embedding_visualization",
)
#: Tables each notebook must write (others may be added; these are the paper's outputs).
TABLES = {
    "01": ("accounting", "split_balance"),
    "02": ("baselines", "truncation", "weight_sanity"),
    "03": ("comparison", "balance", "paired"),
    "04": ("cluster_scores", "geometry"),
}
FIGURES = ("02_baselines", "03_comparison", "03_training_curves", "04_tsne", "04_i2t_gallery_after")
_SAFE_FILE = re.compile(r"[A-Za-z0-9._+-]+")


@dataclass
class PaperRun:
    root: Path
    results: Path  # <out>/results/paper
    cache: Path  # <out>/cache/paper
    clip: str  # backbone names as the profile gives them
    biomed: str
    stdout: str
    wall_s: float
    cpu_s: float  # user + system CPU of the runner and its kernels


def _params(data_dir: Path, clip: str, biomed: str) -> list[str]:
    """``--param`` overrides on top of profiles/paper.yaml: a CPU and a few dozen images."""
    values = {
        "run.device": "cpu",
        "run.num_threads": 1,  # tiny tensors: one thread per process is fastest on 2 shared cores
        "data.data_dir": str(data_dir),
        "data.image_size": IMAGE_SIZE,
        "data.num_workers": 0,
        "eval.backbones": f"[{clip}, {biomed}]",
        "eval.finetune": biomed,
        "eval.also_finetune": f"[{clip}]",  # the paper fine-tunes both backbones
        "eval.batch_size": 16,
        "eval.n_boot": 20,
        "train.epochs": 3,
        "train.batch_size": 16,
        "ablation.enabled": "false",  # the same code as the demo's ablation, which the demo tests run
        "viz.methods": "[tsne]",  # the paper's map; UMAP's first call compiles for ~10 s
        "viz.perplexity": 5,  # below the 11 test pairs
        "viz.n_gallery_per_label": 1,
    }
    out = []
    for k, v in values.items():
        out += ["--param", f"{k}={v}"]
    return out


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory) -> PaperRun:
    check_kernel(KERNEL_NAME)  # `make venv` registers it; without it nothing below can run
    root = tmp_path_factory.mktemp("paper_smoke")
    reports = synthetic_reports(N_REPORTS, seed=0)
    data_dir = build_openi(root / "iu_xray", reports)
    texts = [f"{r['findings']} {r['impression']}" for r in reports]
    clip_dir = build_clip_like(root / "bundles" / "clip-vit-b16-tiny")
    biomed_dir = build_biomedclip_like(root / "bundles" / "biomedclip-tiny", texts, root / "scratch")
    clip, biomed = f"local-dir:{clip_dir}", f"local-dir:{biomed_dir}"
    hf_home = root / "hf_home"  # an empty Hugging Face cache, offline: the bundles must be self-contained
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "MPLBACKEND": "Agg",
    }
    cmd = [sys.executable, "-m", "cxrlib.reproduce", "--profile", "paper", "--out", str(root / "run")]
    cmd += _params(data_dir, clip, biomed)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"paper smoke run: {wall:.1f} s wall, {cpu:.1f} s CPU (runner + kernels)")
    assert proc.returncode == 0, (
        f"the paper profile failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return PaperRun(
        root,
        root / "run" / "results" / "paper",
        root / "run" / "cache" / "paper",
        clip,
        biomed,
        proc.stdout,
        wall,
        cpu,
    )


def _table(run: PaperRun, name: str, index: list[int] | int = 0) -> pd.DataFrame:
    return pd.read_csv(run.results / "tables" / f"{name}.csv", index_col=index)


def _label(run: PaperRun, labels, name: str) -> str:
    """The row label a table uses for backbone ``name``: its full name, or its display name (either is
    accepted, so the checks hold before and after the notebooks switch to display names)."""
    found = [x for x in (name, display_name(name)) if x in set(labels)]
    assert found, f"{name!r} (or {display_name(name)!r}) is not among the rows {sorted(set(labels))}"
    return found[0]


# ------------------------------------------------------------------------------------------------ the run
def test_every_notebook_ran_without_errors(paper_run):
    for stem in NOTEBOOKS:
        nb = nbformat.read(paper_run.results / "executed" / f"{stem}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        errors = [o for o in errors if o.get("output_type") == "error"]
        assert not errors, f"{stem}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert "all done" in paper_run.stdout


def test_each_notebook_wrote_its_tables_figures_and_summary(paper_run):
    tables = paper_run.results / "tables"
    for number, names in TABLES.items():
        for name in names:
            for ext in ("md", "csv"):
                path = tables / f"{number}_{name}.{ext}"
                assert path.is_file() and path.stat().st_size > 0, f"missing {path.name}"
    for name in FIGURES:
        path = paper_run.results / "figures" / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 1000, f"missing or empty {path.name}"
    summary = (paper_run.results / "SUMMARY.md").read_text()
    assert (
        "profile `paper`" in summary and "## 02_truncation" in summary and "## 04_cluster_scores" in summary
    )


def test_data_step_reads_every_fixture_row(paper_run):
    acc = _table(paper_run, "01_accounting")
    assert int(acc.loc["rows read", "rows"]) == int(acc.loc["rows kept", "rows"]) == 60
    balance = _table(paper_run, "01_split_balance")
    assert int(balance[["normal", "abnormal"]].to_numpy().sum()) == 60
    assert set(balance.index) == {"train", "val", "test"}
    manifest = pd.read_parquet(paper_run.cache / "manifest.parquet")
    assert len(manifest) == 60 and set(manifest["source"]) == {"iu_xray"}
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()


def test_metrics_files_are_named_by_slug_and_keep_the_full_name(paper_run):
    metrics = paper_run.results / "metrics"
    names = sorted(p.name for p in metrics.iterdir())
    want = {f"02_{slug(paper_run.clip)}.json", f"02_{slug(paper_run.biomed)}.json", "03_multitask.json"}
    assert want <= set(names), names
    assert all(_SAFE_FILE.fullmatch(n) and ":" not in n for n in names), names
    assert all(p.is_file() for p in metrics.iterdir())  # no folders made out of a name's '/'
    for spec in (paper_run.clip, paper_run.biomed):
        record = json.loads((metrics / f"02_{slug(spec)}.json").read_text())
        assert record["backbone"]["name"] == spec  # the full name stays in the record
        assert record["n_boot"] == 20 and 0.0 <= record["metrics"]["i2t_R@1"] <= 1.0
    tuned = json.loads((metrics / "03_multitask.json").read_text())
    assert tuned["backbone"] == paper_run.biomed and tuned["configs"]["train"]["epochs"] == 3


def test_embedding_cache_files_are_named_by_slug(paper_run):
    emb = paper_run.cache / "embeddings"
    index = json.loads((emb / "index.json").read_text())
    tuned = f"{paper_run.biomed}+multitask"
    assert set(index) == {paper_run.clip, paper_run.biomed, tuned}
    for name, entry in index.items():
        assert entry["file"].startswith(slug(name)), (name, entry["file"])
        assert (emb / entry["file"]).is_file() and ":" not in entry["file"]
        assert entry["n"] == 60


def test_truncation_table_lists_both_backbones_with_their_own_context(paper_run):
    """Each backbone's context and truncation counts, checked against the tokenizers counted here."""
    import open_clip
    from transformers import BertTokenizerFast

    trunc = _table(paper_run, "02_truncation", index=[0, 1])
    labels = trunc.index.get_level_values(0)
    manifest = pd.read_parquet(paper_run.cache / "manifest.parquet")
    rows = manifest[manifest["split"].isin(["train", "val", "test"])]
    texts, abnormal = rows["text"].tolist(), rows["label"].to_numpy() == 1
    bpe = open_clip.SimpleTokenizer()
    n_clip = [len(bpe.encode(t)) + 2 for t in texts]  # + start and end tokens
    bert = BertTokenizerFast.from_pretrained(paper_run.biomed.removeprefix("local-dir:"))
    n_bert = [len(bert(t)["input_ids"]) for t in texts]  # [CLS] ... [SEP]
    for spec, context, counts in ((paper_run.clip, 77, n_clip), (paper_run.biomed, 256, n_bert)):
        label = _label(paper_run, labels, spec)
        assert int(trunc.loc[(label, "all"), "context"]) == context
        cut = sum(1 for n, a in zip(counts, abnormal, strict=True) if a and n > context)
        assert int(trunc.loc[(label, "abnormal"), "truncated"]) == cut
        assert int(trunc.loc[(label, "all"), "max tokens"]) == min(max(counts), 1024)
    assert int(trunc.loc[(_label(paper_run, labels, paper_run.clip), "abnormal"), "truncated"]) > 0  # 77 cuts
    assert (
        int(trunc.loc[(_label(paper_run, labels, paper_run.biomed), "all"), "truncated"]) == 0
    )  # 256 does not


def test_weight_sanity_flags_both_random_bundles(paper_run):
    sanity = _table(paper_run, "02_weight_sanity")
    for spec in (paper_run.clip, paper_run.biomed):
        row = sanity.loc[_label(paper_run, sanity.index, spec)]
        assert bool(row["random init (bundle)"]) and row["verdict"] == "CHECK THE WEIGHTS"
        assert abs(float(row["logit scale"]) - 14.29) < 0.01  # open_clip's untrained 1/0.07
    warned = (paper_run.results / "warnings" / "02.txt").read_text()
    assert warned.count("its bundle says random init") == 2
    assert "## ⚠ Warnings" in (paper_run.results / "SUMMARY.md").read_text()


def test_finetuning_and_maps_compare_the_biomedclip_space_before_and_after(paper_run):
    comparison = _table(paper_run, "03_comparison")
    assert len(comparison) == 4  # two baselines + the two heads (eval.also_finetune)
    history = pd.read_csv(paper_run.results / "tables" / "03_training_history.csv")
    assert len(history) == 4  # the untrained row, then 3 epochs
    scores = _table(paper_run, "04_cluster_scores")
    assert len(scores) == 3 and scores.index[-1] == "change"
    assert all(display_name(paper_run.biomed) in s for s in scores.index[:2])


def test_no_cache_or_results_path_is_built_from_a_raw_name(paper_run):
    bad = [p for base in (paper_run.cache, paper_run.results) for p in base.rglob("*") if ":" in p.name]
    assert not bad, f"paths with ':' (a raw backbone name): {[str(p) for p in bad[:3]]}"
    ckpt = paper_run.cache / "checkpoints" / f"{slug(paper_run.biomed)}-multitask"
    assert (ckpt / "config.json").is_file() and (ckpt / "projector.safetensors").is_file()


def test_table_rows_use_display_names(paper_run):
    for name in ("02_baselines", "02_weight_sanity", "03_comparison"):
        labels = set(_table(paper_run, name).index)
        assert not any(str(x).startswith("local-dir:") for x in labels), (name, labels)
    # eval.also_finetune: the second backbone's head joins the comparison
    assert f"{display_name(paper_run.clip)}+multitask" in set(_table(paper_run, "03_comparison").index)


# ------------------------------------------------------------------------------- layout B: data step only
def test_kaggle_layout_through_the_data_step(tmp_path):
    reports = synthetic_reports(N_REPORTS, seed=0)
    root = build_kaggle(tmp_path / "iu_kaggle", reports)
    prep = prepare_dataset(
        DataConfig("iu_xray", str(root), image_size=IMAGE_SIZE), tmp_path / "work", progress=False
    )
    df = prep.manifest
    n_lateral = sum(len(r["images"]) - 1 for r in reports)
    assert n_lateral == N_REPORTS // 4
    assert prep.accounting.rows_in == 60 and len(df) == 60 - n_lateral  # frontal_only drops the laterals
    assert set(df["view"]) == {"FRONTAL"} and set(df["split"]) == {"train", "val", "test"}
    assert sorted(df["study_id"].unique(), key=lambda s: int(s[3:])) == [f"CXR{r['n']}" for r in reports]
    want = {f"CXR{r['n']}": r["label"] for r in reports}
    assert df.set_index("study_id")["label"].to_dict() == want  # normal iff every MeSH major term is "normal"
    assert prep.image_cache_dir.is_dir()
