"""The phantom corpus (cxrlib.data.phantom): determinism, schema, report–label consistency, structure,
images without a global shortcut, learnability, tables and figures.

One module-scoped corpus (600 patients, ~1000 images at 64 px, a few seconds) serves most tests; the
determinism and parameter tests make their own tiny corpora.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from cxrlib.config import ConfigError, PhantomConfig  # noqa: E402
from cxrlib.data.manifest import join_tags, patient_split, validate_manifest  # noqa: E402
from cxrlib.data.phantom import (  # noqa: E402
    FINDINGS,
    MENTION_KEYWORDS,
    SEVERITIES,
    SUBTLE,
    PhantomRenderer,
    findings_table,
    generate_corpus,
    plot_finding_examples,
    render_speed,
    sample_patient_studies,
    write_report,
)

N_PATIENTS = 600
SIZE = 64
FINDING_COLS = [f"finding_{f}" for f in FINDINGS]

# a sentence that contains one of these words states absence (or normality) of what it names
_NEGATIVE = re.compile(r"\b(no|not|normal|within normal limits|resolved|clear)\b", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def mentions(text: str) -> tuple[set[str], set[str]]:
    """(findings named in a positive sentence, findings named in a negative sentence), by MENTION_KEYWORDS."""
    pos: set[str] = set()
    neg: set[str] = set()
    for s in sentences(text):
        low = s.lower()
        for f, words in MENTION_KEYWORDS.items():
            if any(w in low for w in words):
                (neg if _NEGATIVE.search(low) else pos).add(f)
    return pos, neg


def tagged(row: pd.Series) -> set[str]:
    return {f for f in FINDINGS if row[f"finding_{f}"] == 1}


def load_pixels(df: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in df["image_path"]])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("phantom")
    return generate_corpus(out, PhantomConfig(n_patients=N_PATIENTS), seed=0, image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def pixels(corpus: pd.DataFrame) -> np.ndarray:
    return load_pixels(corpus)


# --------------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------------
def _small(out: Path, seed: int) -> pd.DataFrame:
    return generate_corpus(out, PhantomConfig(n_patients=12), seed=seed, image_size=48, progress=False)


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The manifest without the folder part of image_path (the corpora live in different folders)."""
    return df.assign(image_path=[Path(p).name for p in df["image_path"]])


def test_same_seed_gives_identical_bytes_and_manifest(tmp_path: Path) -> None:
    a = _small(tmp_path / "a", seed=5)
    b = _small(tmp_path / "b", seed=5)
    pd.testing.assert_frame_equal(_comparable(a), _comparable(b))
    files_a = sorted((tmp_path / "a" / "images").glob("*.png"))
    files_b = sorted((tmp_path / "b" / "images").glob("*.png"))
    assert [p.name for p in files_a] == [p.name for p in files_b]
    assert len(files_a) == len(a) > 12
    for pa, pb in zip(files_a, files_b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_different_seed_differs(tmp_path: Path) -> None:
    a = _small(tmp_path / "a", seed=5)
    c = _small(tmp_path / "c", seed=6)
    assert not _comparable(a).equals(_comparable(c))
    assert a["text"].tolist() != c["text"].tolist()
    shared = sorted(
        {p.name for p in (tmp_path / "a" / "images").glob("*.png")}
        & {p.name for p in (tmp_path / "c" / "images").glob("*.png")}
    )
    assert shared, "the two corpora share no file names (P0000_S0_PA exists in both)"
    assert all(
        (tmp_path / "a" / "images" / n).read_bytes() != (tmp_path / "c" / "images" / n).read_bytes()
        for n in shared
    )


# --------------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------------
def test_manifest_schema_and_extra_columns(corpus: pd.DataFrame) -> None:
    validate_manifest(corpus)  # raises ManifestError on any schema break
    assert (corpus["source"] == "phantom").all()
    assert (corpus["view"] == "PA").all()
    assert corpus["image_id"].is_unique
    for col in [*FINDING_COLS, "finding_detail", "ctr", "study_index", "report_noise", "missed_finding"]:
        assert col in corpus.columns, col
    hot = corpus[FINDING_COLS].to_numpy()
    assert set(np.unique(hot)) <= {0, 1}
    np.testing.assert_array_equal(corpus["label"].to_numpy(), hot.max(axis=1))
    for _, row in corpus.iterrows():
        detail = json.loads(row["finding_detail"])
        assert set(detail) == tagged(row), row["image_id"]
        assert row["tags"] == join_tags(detail), row["image_id"]
        for name, attrs in detail.items():
            assert attrs["severity"] in SEVERITIES[name], (row["image_id"], name)
    # cardiothoracic ratio: > 0.5 exactly when cardiomegaly is present
    card = corpus["finding_cardiomegaly"] == 1
    assert (corpus.loc[card, "ctr"] > 0.5).all()
    assert (corpus.loc[~card, "ctr"] < 0.5).all()


# --------------------------------------------------------------------------------------------------
# reports vs labels
# --------------------------------------------------------------------------------------------------
def test_every_tagged_finding_is_named_unless_missed(corpus: pd.DataFrame) -> None:
    bad = []
    for _, row in corpus.iterrows():
        pos, _ = mentions(row["text"])
        reported = tagged(row) - {row["missed_finding"]}
        if pos != reported:
            bad.append((row["image_id"], sorted(reported), sorted(pos), row["text"]))
    assert not bad, f"{len(bad)} reports disagree with their tags, e.g. {bad[:2]}"


def test_normal_reports_name_no_finding_and_negate_the_usual_ones(corpus: pd.DataFrame) -> None:
    normal = corpus[corpus["label"] == 0]
    assert len(normal) > 100
    for _, row in normal.iterrows():
        pos, neg = mentions(row["text"])
        assert not pos, (row["image_id"], row["text"])
        assert {"cardiomegaly", "pleural_effusion", "pneumothorax"} <= neg, (row["image_id"], row["text"])
    # normal reports come from a small set of phrasings: many are identical, as in real collections
    assert normal["text"].nunique() < 0.2 * len(normal)


def test_abnormal_reports_negate_absent_findings_and_never_present_ones(corpus: pd.DataFrame) -> None:
    abnormal = corpus[corpus["label"] == 1]
    absent = dict.fromkeys(FINDINGS, 0)
    negated = dict.fromkeys(FINDINGS, 0)
    for _, row in abnormal.iterrows():
        _, neg = mentions(row["text"])
        reported = tagged(row) - {row["missed_finding"]}
        assert not (neg & reported), (row["image_id"], row["text"])
        for f in FINDINGS:
            if f not in tagged(row):
                absent[f] += 1
                negated[f] += f in neg
    # the big three are negated almost always when absent, the others sometimes (reports rarely list all)
    for f in ("cardiomegaly", "pleural_effusion", "pneumothorax"):
        assert negated[f] / absent[f] > 0.75, (f, negated[f], absent[f])
    for f in ("nodule", "consolidation", "edema", "atelectasis"):
        assert 0.05 < negated[f] / absent[f] < 0.8, (f, negated[f], absent[f])


def test_write_report_info_matches_its_text() -> None:
    """``write_report``'s own bookkeeping agrees with the words in the text, also when a finding is missed."""
    cfg = PhantomConfig()
    rng = np.random.default_rng(1)
    n_missed = 0
    for p in range(800):
        for st in sample_patient_studies(p, rng, cfg):
            subtle = sorted(k for k, v in st.findings.items() if v["severity"] == SUBTLE[k])
            miss = subtle[0] if subtle and p % 3 == 0 else None
            n_missed += miss is not None
            findings, impression, info = write_report(st, rng, miss=miss)
            pos, neg = mentions(findings + " " + impression)
            present = set(st.findings) - {miss}
            assert set(info["mentioned"]) == present == pos, (st.findings, miss, findings, impression)
            assert set(info["negated"]) <= neg, (info, findings)
            assert not set(info["negated"]) & present
            if miss is not None:
                assert miss not in pos
    assert n_missed > 20


def test_report_noise_flags_only_subtle_findings(tmp_path: Path, corpus: pd.DataFrame) -> None:
    def eligible(df: pd.DataFrame) -> pd.Series:
        return df["finding_detail"].map(
            lambda d: any(v["severity"] == SUBTLE[k] for k, v in json.loads(d).items())
        )

    # the default rate (0.05 of the eligible studies)
    rate = corpus.loc[eligible(corpus), "report_noise"].mean()
    assert 0.0 < rate < 0.15, rate
    assert not corpus.loc[~eligible(corpus), "report_noise"].any()
    assert ((corpus["missed_finding"] != "") == corpus["report_noise"]).all()

    always = generate_corpus(
        tmp_path / "all",
        PhantomConfig(n_patients=60, report_noise=1.0),
        seed=2,
        image_size=32,
        progress=False,
    )
    el = eligible(always)
    assert el.sum() > 10
    assert always.loc[el, "report_noise"].all() and not always.loc[~el, "report_noise"].any()
    for _, row in always[el].iterrows():
        miss = row["missed_finding"]
        assert json.loads(row["finding_detail"])[miss]["severity"] == SUBTLE[miss]
        assert row[f"finding_{miss}"] == 1 and row["label"] == 1  # the label keeps the image's truth
        assert miss not in mentions(row["text"])[0], row["text"]

    never = generate_corpus(
        tmp_path / "none",
        PhantomConfig(n_patients=60, report_noise=0.0),
        seed=2,
        image_size=32,
        progress=False,
    )
    assert not never["report_noise"].any() and (never["missed_finding"] == "").all()


# --------------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------------
def test_normal_prevalence_follows_normal_rate(tmp_path: Path, corpus: pd.DataFrame) -> None:
    assert abs((corpus["label"] == 0).mean() - 0.40) < 0.07
    high = generate_corpus(
        tmp_path / "high",
        PhantomConfig(n_patients=200, normal_rate=0.8),
        seed=3,
        image_size=32,
        progress=False,
    )
    assert abs((high["label"] == 0).mean() - 0.80) < 0.1


def test_subtle_fraction_sets_the_severity_of_first_studies(tmp_path: Path) -> None:
    """``cfg.subtle_fraction`` reaches the sampler: 1.0 → every finding of a first study is subtle, 0.0 → none."""

    def subtle_share(subtle_fraction: float) -> float:
        cfg = PhantomConfig(n_patients=60, normal_rate=0.0, subtle_fraction=subtle_fraction)
        df = generate_corpus(tmp_path / str(subtle_fraction), cfg, seed=4, image_size=32, progress=False)
        first = [json.loads(d) for d in df.loc[df["study_index"] == 0, "finding_detail"]]
        flags = [v["severity"] == SUBTLE[k] for d in first for k, v in d.items()]
        assert len(flags) > 50
        return float(np.mean(flags))

    assert subtle_share(1.0) == 1.0
    assert subtle_share(0.0) == 0.0


def test_patients_studies_and_pretraining_pool(corpus: pd.DataFrame) -> None:
    assert corpus["patient_id"].nunique() == N_PATIENTS
    per_patient = corpus.groupby("patient_id")["study_index"].agg(["count", "min", "max"])
    assert (per_patient["min"] == 0).all() and (per_patient["max"] == per_patient["count"] - 1).all()
    assert per_patient["count"].max() <= 4
    assert (per_patient["count"] > 1).mean() > 0.2, "follow-up studies are missing"
    assert 1.4 < len(corpus) / N_PATIENTS < 2.3
    assert corpus.groupby("study_id").size().eq(1).all()  # one frontal image per study
    # studies of one patient change over time in some patients (progression, resolution)
    changing = corpus.groupby("patient_id")["tags"].nunique()
    assert (changing > 1).sum() > 20

    pool = set(corpus.loc[corpus["split"] == "pretrain", "patient_id"])
    assert len(pool) == round(0.3 * N_PATIENTS)
    assert set(corpus["split"]) == {"pretrain", ""}
    assert corpus.groupby("patient_id")["split"].nunique().eq(1).all()

    split = patient_split(corpus, ratios=(0.7, 0.1, 0.2), seed=0)
    validate_manifest(split, require_split=True)  # raises when a patient sits in two splits
    assert set(split["split"]) == {"train", "val", "test", "pretrain"}
    assert set(split.loc[split["split"] == "pretrain", "patient_id"]) == pool
    assert not pool & set(split.loc[split["split"] != "pretrain", "patient_id"])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(split.loc[split["split"] == a, "patient_id"]) & set(
            split.loc[split["split"] == b, "patient_id"]
        )


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def test_images_are_grayscale_and_the_right_size(corpus: pd.DataFrame, pixels: np.ndarray) -> None:
    for p in corpus["image_path"].iloc[:20]:
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE) and im.format == "PNG"
    assert pixels.shape == (len(corpus), SIZE, SIZE) and pixels.dtype == np.uint8
    flat = pixels.reshape(len(pixels), -1).astype(np.float32)
    assert (flat.std(axis=1) > 20).all(), "an image without contrast"
    assert (flat == 255).mean() < 0.01, "saturated highlights"
    assert 5 < np.median(flat.mean(axis=1)) < 200


def _cohen_d(a: np.ndarray, b: np.ndarray) -> float:
    return float((b.mean() - a.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))


def test_no_global_shortcut_between_normal_and_abnormal(corpus: pd.DataFrame, pixels: np.ndarray) -> None:
    """Exposure and contrast vary per study independently of the label: the mean brightness and the
    contrast of an image say (almost) nothing about normal vs abnormal. Measured (seeds 0–2): |d| ≤ 0.10
    for the mean and ≤ 0.20 for the standard deviation."""
    from sklearn.metrics import roc_auc_score

    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    y = corpus["label"].to_numpy()
    for name, value, d_max in (("mean", flat.mean(axis=1), 0.3), ("std", flat.std(axis=1), 0.4)):
        d = _cohen_d(value[y == 0], value[y == 1])
        assert abs(d) < d_max, f"{name} intensity separates normal from abnormal (Cohen's d = {d:.2f})"
        auc = roc_auc_score(y, value)
        assert 0.38 < auc < 0.62, f"{name} intensity alone classifies with AUC {auc:.2f}"


def test_every_finding_is_rendered() -> None:
    """Each finding at each severity changes the pixels of an otherwise identical normal study."""
    cfg = PhantomConfig()
    rng = np.random.default_rng(4)
    studies = [s for p in range(10) for s in sample_patient_studies(p, rng, cfg) if not s.findings]
    renderer = PhantomRenderer(96, seed=0)
    base = studies[0]
    ref = renderer.render(base)
    np.testing.assert_array_equal(ref, renderer.render(base))  # rendering is a pure function
    attrs = {
        "cardiomegaly": {},
        "pleural_effusion": {"side": "right"},
        "pneumothorax": {"side": "left"},
        "nodule": {"side": "right", "zone": "upper", "u": 0.0, "v": 0.0},
        "consolidation": {"side": "left", "zone": "lower", "u": 0.0},
        "edema": {},
        "atelectasis": {"side": "bibasilar", "u": 0.0},
    }
    for name in FINDINGS:
        for sev in SEVERITIES[name]:
            img = renderer.render(replace(base, findings={name: {"severity": sev, **attrs[name]}}))
            diff = np.abs(img.astype(np.int16) - ref.astype(np.int16))
            assert diff.max() >= 4, (name, sev, int(diff.max()))


def test_learnable_but_not_trivial(corpus: pd.DataFrame, pixels: np.ndarray) -> None:
    """A linear model on 32×32 pixels beats the majority class clearly but is far from perfect.

    Measured on this corpus (600 patients, 64 px, held-out third of the patients): accuracy ≈ 0.78 vs
    majority ≈ 0.67, AUC ≈ 0.87 (seeds 1 and 2: AUC 0.91 and 0.87, accuracy 0.84 and 0.78).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = (
        pixels.reshape(len(pixels), SIZE // 2, 2, SIZE // 2, 2).mean(axis=(2, 4)).reshape(len(pixels), -1)
        / 255.0
    )
    y = corpus["label"].to_numpy()
    patients = np.sort(corpus["patient_id"].unique())
    held = set(np.random.default_rng(0).permutation(patients)[: len(patients) // 3])
    test = corpus["patient_id"].isin(held).to_numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
    clf.fit(x[~test], y[~test])
    prob = clf.predict_proba(x[test])[:, 1]
    acc = float(((prob > 0.5) == y[test]).mean())
    majority = float(max(y[test].mean(), 1 - y[test].mean()))
    auc = float(roc_auc_score(y[test], prob))
    assert acc > majority + 0.05, (acc, majority)
    assert 0.7 < auc < 0.995, auc
    assert acc < 0.97, acc


# --------------------------------------------------------------------------------------------------
# tables, figures, speed, arguments
# --------------------------------------------------------------------------------------------------
def test_findings_table_counts(corpus: pd.DataFrame, tmp_path: Path) -> None:
    table = findings_table(corpus)
    assert list(table.index) == [*FINDINGS, "(normal)"]
    for f in FINDINGS:
        assert table.loc[f, "total"] == corpus[f"finding_{f}"].sum(), f
        assert table.loc[f, list(SEVERITIES[f])].sum() == table.loc[f, "total"], f
    assert table.loc["(normal)", "total"] == (corpus["label"] == 0).sum()
    assert table.loc["(normal)", "% of studies"] == pytest.approx(
        100 * (corpus["label"] == 0).mean(), abs=0.05
    )
    out = tmp_path / "findings.csv"
    table.to_csv(out)
    assert pd.read_csv(out, index_col=0).loc["(normal)", "total"] == table.loc["(normal)", "total"]


def test_plot_finding_examples_writes_the_figure(corpus: pd.DataFrame, tmp_path: Path) -> None:
    from figure_checks import layout_problems

    for per_finding in (2, 1):  # 1: a single column per finding
        out = tmp_path / "figs" / f"01_examples_{per_finding}.png"
        fig = plot_finding_examples(corpus, out, per_finding=per_finding, seed=0)
        try:
            assert out.is_file() and out.stat().st_size > 10_000
            with Image.open(out) as im:
                assert im.size[0] > 0 and im.size[1] > 0
            shown = [ax for ax in fig.axes if ax.images]
            assert len(shown) == per_finding * (1 + len(FINDINGS))
            # slide-readable: two findings per row, every text >= 9 pt, nothing overlapping
            assert layout_problems(fig) == []
            assert fig.get_size_inches()[0] <= 14.5
            heads = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_fontweight() == "bold"]
            assert sum(h == "normal" for h in heads) == per_finding
            assert any(h.startswith("pleural_effusion:") for h in heads)
        finally:
            plt.close(fig)
    with pytest.raises(ValueError, match="findings_per_row"):
        plot_finding_examples(corpus, tmp_path / "x.png", findings_per_row=0)


def test_render_speed_reports_images_per_second() -> None:
    speed = render_speed(4, size=48)
    assert np.isfinite(speed) and speed > 1.0


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        PhantomRenderer(16)
    with pytest.raises(TypeError, match="PhantomConfig"):
        generate_corpus(tmp_path, 2, progress=False)  # type: ignore[arg-type]  # the old n_patients argument
    # the ranges are checked by PhantomConfig itself, before anything is generated
    for field, bad in (("n_patients", 0), ("normal_rate", 1.5), ("max_studies", 0), ("report_noise", -0.1)):
        with pytest.raises(ConfigError, match=field):
            generate_corpus(tmp_path, PhantomConfig(**{field: bad}), progress=False)
    assert not (tmp_path / "images").exists()
    assert list(inspect.signature(generate_corpus).parameters) == [
        "out_dir",
        "cfg",
        "seed",
        "image_size",
        "progress",
    ]
