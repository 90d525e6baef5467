"""Comparing embedding spaces: the steps of notebooks 02 and 03 as tested functions.

- :func:`embedding_sets` — train/val/eval :class:`~cxrlib.training.EmbeddingSet` from registered embeddings;
- :func:`evaluate_spaces` — retrieval metrics (with patient-bootstrap CIs) of several spaces on one split;
- :func:`table_keys` — the columns of the result tables (R@K at every K, label P/mAP at the largest K);
- :func:`paired_comparison` / :func:`paired_verdict_lines` — is one space better than another: the paired
  patient-bootstrap CI of the difference (both are scored on the same queries), per metric; :func:`balance_table` — how balanced
  the two directions are, chance-normalised; :func:`compare_with_chance` — every space next to chance; what a table says is computed, never hand-written;
- :func:`ablation_configs`, :func:`run_loss_ablation`, :func:`summarize_ablation`,
  :func:`ablation_vs_backbone` — the loss ablation over seeds;
- :func:`pick_threshold`, :func:`classifier_summary` — the BCE head as a normal/abnormal classifier;
- :func:`train_head` — the head trained and applied for the further backbones of ``eval.also_finetune``;
- :func:`text_shortcuts` — how much of the label the report text alone gives away (length, bag of words);
- :func:`weight_sanity` — do a backbone's weights look trained (logit scale, above chance, bundle record);
- :func:`token_lengths`, :func:`truncation_table` — which reports each backbone's context length cuts, by label;
- :func:`finding_sets`, :func:`evaluate_findings`, :func:`finding_relevance_table`,
  :func:`paired_finding_comparison` — graded finding-level relevance (nDCG@K, finding precision FP@K).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxrlib.config import LossConfig, ProjectorConfig, TrainConfig
from cxrlib.embeddings import Embeddings
from cxrlib.metrics import lower_is_better, paired_difference, per_query_metrics, retrieval_metrics
from cxrlib.parallel import run_jobs, start_jobs
from cxrlib.training import EmbeddingSet, TrainResult, run_fingerprint, train_projector

__all__ = [
    "embedding_sets",
    "table_keys",
    "evaluate_spaces",
    "compare_with_chance",
    "paired_comparison",
    "paired_verdict_lines",
    "balance_table",
    "text_shortcuts",
    "train_head",
    "start_heads",
    "Heads",
    "weight_sanity",
    "token_lengths",
    "truncation_table",
    "ablation_configs",
    "ablation_keys",
    "run_loss_ablation",
    "start_loss_ablation",
    "LossAblation",
    "summarize_ablation",
    "ablation_vs_backbone",
    "pick_threshold",
    "classifier_summary",
    "finding_sets",
    "finding_keys",
    "evaluate_findings",
    "finding_relevance_table",
    "paired_finding_comparison",
    "paired_cluster_comparison",
]


def embedding_sets(rows: pd.DataFrame, source: Embeddings, splits: Sequence[str]) -> list[EmbeddingSet]:
    """One :class:`EmbeddingSet` per split name, rows in manifest order (image, text, label, patient).

    When ``rows`` has a ``tags`` column, each set also carries ``supcon_labels``: one integer class per distinct
    finding set over all of ``rows`` (:func:`finding_sets`; numbered in order of first appearance), used only by
    ``LossConfig.supcon_positives='findings'``.
    """
    classes = None
    if "tags" in rows.columns:
        import warnings

        with warnings.catch_warnings():  # notebook 02 already reported any untagged abnormal rows
            warnings.simplefilter("ignore", UserWarning)
            sets = finding_sets(rows)
        ids: dict[tuple[str, ...], int] = {}
        classes = pd.Series(
            [ids.setdefault(tuple(sorted(f)), len(ids)) for f in sets], index=rows.index, dtype="int64"
        )
    out = []
    for split in splits:
        part = rows[rows["split"] == split]
        e = source.select(part["image_id"])
        out.append(
            EmbeddingSet(
                e.image,
                e.text,
                part["label"].to_numpy(),
                part["patient_id"].to_numpy(),
                name=split,
                supcon_labels=None if classes is None else classes.loc[part.index].to_numpy(),
            )
        )
    return out


def table_keys(ks: Sequence[int]) -> list[str]:
    """Columns of the result tables: ``i2t_R@K``/``t2i_R@K`` at every K, label P and mAP at the largest K."""
    k = max(ks)
    return (
        [f"i2t_R@{x}" for x in ks]
        + [f"t2i_R@{x}" for x in ks]
        + [f"{d}_{m}@{k}_label" for m in ("P", "mAP") for d in ("i2t", "t2i")]
    )


def evaluate_spaces(
    spaces: Mapping[str, Embeddings],
    rows: pd.DataFrame,
    ks: Sequence[int],
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """:func:`cxrlib.metrics.retrieval_metrics` of every space on ``rows`` (one split of the manifest).

    Each space is restricted to ``rows["image_id"]`` in that order; labels and patient ids (the bootstrap's
    clusters) come from ``rows``. Returns ``{space name: metrics}``.
    """
    labels = rows["label"].to_numpy()
    patients = rows["patient_id"].to_numpy()
    out = {}
    for name, emb in spaces.items():
        e = emb.select(rows["image_id"])
        out[name] = retrieval_metrics(
            e.image, e.text, labels=labels, ks=ks, patient_ids=patients, n_boot=n_boot, seed=seed
        )
    return out


def compare_with_chance(
    results: Mapping[str, Mapping[str, float]], chance: Mapping[str, float], k: int
) -> list[str]:
    """One line per space: R@K and label P@K in both directions next to their chance levels."""
    keys = (f"i2t_R@{k}", f"t2i_R@{k}", f"i2t_P@{k}_label", f"t2i_P@{k}_label")
    return [
        f"{name:>12}: " + " | ".join(f"{key} {res[key]:.3f} vs chance {chance[key]:.3f}" for key in keys)
        for name, res in results.items()
    ]


def paired_comparison(
    spaces: Mapping[str, Embeddings],
    rows: pd.DataFrame,
    a: str,
    b: str,
    ks: Sequence[int],
    keys: Sequence[str],
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> pd.DataFrame:
    """Is space ``b`` better than space ``a`` on ``rows``? The paired patient-bootstrap test, per metric key.

    Both spaces are scored on the same queries (``rows``, one split of the manifest); each bootstrap replicate
    resamples the same patients for both (:func:`cxrlib.metrics.paired_difference`). Columns: the two values,
    ``change`` (b - a), the CI of the change, ``p(not better)`` and ``verdict``: ``better`` when the whole CI of
    the change is on the improving side of 0, ``worse`` when it is on the other side, else ``no difference
    shown``. Ranks improve downwards. ``n_boot`` must be >= 1.
    """
    if n_boot < 1:
        raise ValueError("paired_comparison needs n_boot >= 1 (eval.n_boot): the verdict is a bootstrap test")
    labels = rows["label"].to_numpy()
    values = {}
    for name in (a, b):
        e = spaces[name].select(rows["image_id"])
        values[name] = per_query_metrics(e.image, e.text, labels=labels, ks=ks).row_values()
    diff = paired_difference(
        values[a],
        values[b],
        rows["patient_id"].to_numpy(),
        n_boot=n_boot,
        seed=seed,
        level=level,
        median_keys=[k for k in keys if k.endswith("_median_rank")],
        keys=keys,
    )
    return _paired_table(diff, a, b, level)


def _paired_table(diff: Mapping[str, Mapping[str, float]], a: str, b: str, level: float) -> pd.DataFrame:
    """The table of :func:`paired_comparison` from :func:`cxrlib.metrics.paired_difference`'s output: the two
    values, the change, its CI, ``p(not better)`` and the verdict (ranks improve downwards)."""
    out = []
    for key, d in diff.items():
        lo, hi = (-d["hi"], -d["lo"]) if lower_is_better(key) else (d["lo"], d["hi"])
        verdict = "better" if lo > 0 else ("worse" if hi < 0 else "no difference shown")
        out.append(
            {
                "metric": key,
                a: round(d["a"], 3),
                b: round(d["b"], 3),
                "change": round(d["diff"], 3),
                f"{round(100 * level)} % CI of the change": f"[{d['lo']:+.3f}, {d['hi']:+.3f}]",
                "p(not better)": round(d["p_not_better"], 3),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(out).set_index("metric")


def paired_verdict_lines(table: pd.DataFrame, what: str) -> list[str]:
    """:func:`paired_comparison`'s table in three sentences: better / worse / no difference shown."""
    groups = {
        "better (the paired 95 % CI of the change excludes 0)": "better",
        "worse (the paired 95 % CI of the change excludes 0)": "worse",
        "not shown to differ (the paired 95 % CI of the change includes 0)": "no difference shown",
    }
    out = []
    for label, v in groups.items():
        cols = table.index[table["verdict"] == v].tolist()
        out.append(f"{what} is {label}: {', '.join(cols) if cols else 'none'}")
    return out


def balance_table(
    results: Mapping[str, Mapping[str, float]], chance: Mapping[str, float], ks: Sequence[int]
) -> pd.DataFrame:
    r"""How balanced image→report and report→image retrieval are, chance-normalised, per space and K.

    The two directions have different chance levels (t2i searches N images for one of a study's images,
    i2t searches the M distinct reports), so raw R@K is not comparable across them. Each is first put on
    the scale "0 = chance, 1 = perfect": :math:`	ilde R = (R@K - c) / (1 - c)`, with :math:`c` from
    :func:`cxrlib.metrics.chance_levels`; the **balance gap** is :math:`	ilde R_{i2t} - 	ilde R_{t2i}`
    (0 = balanced; positive = image→report is the easier direction). Columns per K: ``i2t_norm@K``,
    ``t2i_norm@K``, ``gap@K``, plus ``mean |gap|`` over the Ks.
    """
    rows = {}
    for name, res in results.items():
        row: dict[str, float] = {}
        gaps = []
        for k in ks:
            norm = {}
            for d in ("i2t", "t2i"):
                c = chance[f"{d}_R@{k}"]
                norm[d] = (res[f"{d}_R@{k}"] - c) / (1.0 - c) if c < 1 else float("nan")
                row[f"{d}_norm@{k}"] = norm[d]
            row[f"gap@{k}"] = norm["i2t"] - norm["t2i"]
            gaps.append(abs(row[f"gap@{k}"]))
        row["mean |gap|"] = float(np.mean(gaps))
        rows[name] = row
    return pd.DataFrame(rows).T


def text_shortcuts(
    train_texts: Sequence[str], train_labels: np.ndarray, test_texts: Sequence[str], test_labels: np.ndarray
) -> pd.DataFrame:
    """How well does the report text alone predict normal/abnormal, without any image? Test-split AUCs of

    - ``report length (words)``: the word count as the score (a length shortcut);
    - ``bag of words``: a logistic regression on word counts (sklearn ``CountVectorizer`` +
      ``LogisticRegression``) fitted on the train split.

    Near 1.0 means the label can be read off the text — expected when the label is derived from the report (IU
    X-ray, MIMIC-CXR and the phantom alike); a high length AUC means report length alone gives it away.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    words = np.array([len(str(t).split()) for t in test_texts], dtype=float)
    vec = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b[a-z]{2,}\b")
    clf = LogisticRegression(max_iter=2000).fit(vec.fit_transform(train_texts), train_labels)
    bow = clf.predict_proba(vec.transform(test_texts))[:, 1]
    return pd.DataFrame(
        {
            "test AUC": [roc_auc_score(test_labels, words), roc_auc_score(test_labels, bow)],
            "what it uses": [
                "the number of words only",
                f"counts of {len(vec.vocabulary_)} words (train split)",
            ],
        },
        index=pd.Index(["report length (words)", "bag of words"], name="text-only predictor"),
    )


#: exp(logit_scale) of a CLIP model that was never trained: open_clip initialises it at log(1/0.07).
UNTRAINED_LOGIT_SCALE = 1.0 / 0.07


def weight_sanity(
    results: Mapping[str, Mapping[str, float]],
    chance: Mapping[str, float],
    backbone_meta: Mapping[str, Mapping],
    k: int,
) -> tuple[pd.DataFrame, list[str]]:
    """Do the loaded weights look trained? One row per backbone, and a loud warning line for each doubt.

    Checks: the bundle's own record says ``random init``; the logit scale is still open_clip's untrained
    1/0.07 (pretrained CLIP sits near 100); R@K is not above chance in either direction (the lower end of its
    95 % CI, or the point value without CIs, at or below the chance level). ``backbone_meta[name]`` is the
    ``backbone`` record stored with the embeddings (``Embeddings.meta["backbone"]``).

    A bundle whose record carries ``near_chance_by_design`` (the demo's ``demo-random`` chance reference and
    its ``demo-general`` stand-in, whose text tower never saw a report word) still gets its doubts in the
    table, with the verdict "near chance by design" and the reason in the ``note`` column, but no warning
    line: the warning is for weights that should be trained and are not. A downloaded or user bundle never
    carries that field.
    """
    rows, warnings = [], []
    for name, res in results.items():
        meta = backbone_meta.get(name) or {}
        scale = meta.get("logit_scale")
        bundle = meta.get("bundle") or {}
        random_init = "random" in str(bundle.get("weights", "")).lower()
        by_design = str(bundle.get("near_chance_by_design") or "")
        above = {}
        for d in ("i2t", "t2i"):
            key = f"{d}_R@{k}"
            above[d] = res.get(f"{key}_lo", res[key]) > chance[key]
        untrained_scale = scale is not None and abs(float(scale) - UNTRAINED_LOGIT_SCALE) < 1e-3
        doubts = []
        if random_init:
            doubts.append("its bundle says random init")
        if untrained_scale:
            doubts.append(f"its logit scale is open_clip's untrained 1/0.07 = {UNTRAINED_LOGIT_SCALE:.2f}")
        if not (above["i2t"] or above["t2i"]):
            doubts.append(f"R@{k} is not above chance in either direction")
        rows.append(
            {
                "backbone": name,
                "logit scale": None if scale is None else round(float(scale), 2),
                f"i2t R@{k} above chance": above["i2t"],
                f"t2i R@{k} above chance": above["t2i"],
                "random init (bundle)": random_init,
                "verdict": "looks trained"
                if not doubts
                else ("near chance by design" if by_design else "CHECK THE WEIGHTS"),
                "note": "; ".join(doubts) + f" (by design: {by_design})" if doubts and by_design else "",
            }
        )
        if doubts and not by_design:
            warnings.append(f"WARNING: {name}: " + "; ".join(doubts) + " - random or wrong weights?")
    return pd.DataFrame(rows).set_index("backbone"), warnings


def token_lengths(
    tokenizer: Callable, texts: Sequence[str], probe: int = 1024, batch_size: int = 256
) -> np.ndarray:
    """Tokens per text as the backbone's own tokenizer counts them, special tokens included, before truncation.

    Works for any open_clip tokenizer (CLIP's BPE, a Hugging Face tokenizer such as BiomedCLIP's): the texts
    are tokenized with a context of ``probe`` tokens and the non-padding ids (padding id 0) are counted.
    Returns (len(texts),) int64; a text longer than ``probe`` tokens counts as ``probe``.
    """
    out = []
    for i in range(0, len(texts), batch_size):
        ids = tokenizer(list(texts[i : i + batch_size]), context_length=probe)
        out.append(np.asarray((ids != 0).sum(dim=1)))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def truncation_table(
    lengths: Mapping[str, np.ndarray], context: Mapping[str, int], labels: np.ndarray
) -> pd.DataFrame:
    """Per backbone and label: reports, how many exceed the backbone's context (and are cut), median tokens.

    ``lengths[name]`` are :func:`token_lengths` of the reports (one per row, aligned with ``labels``, 0 = normal,
    1 = abnormal), ``context[name]`` the backbone's context length. Truncation that differs by label biases
    a backbone: its abnormal reports lose their last sentences more often than its normal ones.
    """
    labels = np.asarray(labels)
    rows = []
    for name, n_tok in lengths.items():
        for label_name, mask in (("normal", labels == 0), ("abnormal", labels == 1), ("all", labels >= 0)):
            t = n_tok[mask]
            cut = int((t > context[name]).sum())
            rows.append(
                {
                    "backbone": name,
                    "context": int(context[name]),
                    "label": label_name,
                    "reports": int(mask.sum()),
                    "truncated": cut,
                    "% truncated": round(100.0 * cut / max(1, int(mask.sum())), 1),
                    "median tokens": float(np.median(t)) if t.size else float("nan"),
                    "max tokens": int(t.max()) if t.size else 0,
                }
            )
    return pd.DataFrame(rows).set_index(["backbone", "label"])


def ablation_configs(loss: LossConfig) -> dict[str, dict[str, float]]:
    """The four loss configurations of the ablation, as weight overrides of ``loss`` (0 switches a term off)."""
    return {
        "CLIP only": {"w_bce": 0.0, "w_supcon": 0.0, "w_clip": 1.0},
        "CLIP + BCE": {"w_bce": loss.w_bce or 1.0, "w_supcon": 0.0, "w_clip": 1.0},
        "CLIP + SupCon": {"w_bce": 0.0, "w_supcon": loss.w_supcon or 1.0, "w_clip": 1.0},
        "all three": {
            "w_bce": loss.w_bce or 1.0,
            "w_supcon": loss.w_supcon or 1.0,
            "w_clip": loss.w_clip or 1.0,
        },
    }


def ablation_keys(ks: Sequence[int]) -> list[str]:
    """The loss ablation's columns: R@K and label mAP@K at the largest K, image->report then report->image."""
    k = max(ks)
    return [f"i2t_R@{k}", f"t2i_R@{k}", f"i2t_mAP@{k}_label", f"t2i_mAP@{k}_label"]


def run_loss_ablation(
    train: EmbeddingSet,
    val: EmbeddingSet,
    test: EmbeddingSet,
    projector: ProjectorConfig,
    loss: LossConfig,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    keys: Sequence[str],
    ks: Sequence[int],
    progress: bool = True,
    reuse: Sequence[TrainResult] = (),
    workers: int = 1,
) -> pd.DataFrame:
    """Train every :func:`ablation_configs` configuration with every seed; one row per run.

    Columns: ``config``, ``seed``, ``best_epoch`` and the metric ``keys`` on ``test`` (no bootstrap).
    ``reuse``: results of :func:`~cxrlib.training.train_projector` already at hand (notebook 03's main
    training is "all three" with the run's seed): a run whose :func:`~cxrlib.training.run_fingerprint` (data
    and configs) equals one of theirs takes that result instead of training again, the same bits on CPU.
    ``workers``: the runs go through :mod:`cxrlib.parallel` (``run.workers`` processes side by side on CPU,
    each run at ``train_cfg.threads``); the rows are the same for any value. :func:`start_loss_ablation` is
    the same ablation started early and collected later.
    """
    return start_loss_ablation(
        train, val, test, projector, loss, train_cfg, seeds, keys, ks, progress, workers
    ).rows(reuse)


class LossAblation:
    """A loss ablation under way (:func:`start_loss_ablation`); :meth:`rows` finishes it."""

    def __init__(self, todo, runs, jobs, left, score_args) -> None:
        self._todo, self._runs, self._jobs, self._left, self._score = todo, runs, jobs, left, score_args

    def rows(self, reuse: Sequence[TrainResult] = ()) -> pd.DataFrame:
        """The ablation's rows (see :func:`run_loss_ablation`). The run left out at the start (the one that
        equals the main training) takes a result of ``reuse`` with its fingerprint, or is trained now."""
        known = {r.fingerprint: r for r in reuse if r.fingerprint is not None}
        rows = dict(zip(self._runs, self._jobs.result(), strict=True))
        test, ks, keys, workers, device, progress = self._score
        missing = []
        for j, (fp, job) in self._left.items():
            if fp in known:
                rows[j] = _scored_run(known[fp], test, ks, keys)
            else:
                missing.append((j, job))
        done = run_jobs(
            _ablation_run, [job for _, job in missing], workers=workers, device=device, progress=progress
        )
        rows.update({j: row for (j, _), row in zip(missing, done, strict=True)})
        return pd.DataFrame([{"config": n, "seed": s, **rows[j]} for j, (n, s) in enumerate(self._todo)])


def start_loss_ablation(
    train: EmbeddingSet,
    val: EmbeddingSet,
    test: EmbeddingSet,
    projector: ProjectorConfig,
    loss: LossConfig,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    keys: Sequence[str],
    ks: Sequence[int],
    progress: bool = True,
    workers: int = 1,
) -> LossAblation:
    """Start :func:`run_loss_ablation`'s runs in the worker processes (:func:`cxrlib.parallel.start_jobs`) and
    return at once; ``.rows(reuse=[main_result])`` later finishes the ablation with this process's help.

    The run that equals the main training (``loss`` and ``train_cfg`` as given, same data: the same
    :func:`~cxrlib.training.run_fingerprint`) is left out: :meth:`LossAblation.rows` takes it from ``reuse``.
    Notebook 03 starts the ablation before its main training, so the workers compute while the notebook goes
    on (on a 2-core machine the second core is otherwise idle during the single-threaded steps).
    """
    cfgs = ablation_configs(loss)
    todo = [(n, s) for n in cfgs for s in seeds]
    main = run_fingerprint(train, val, projector, loss, train_cfg)
    runs, jobs, left = [], [], {}
    for j, (name, s) in enumerate(todo):
        lc = loss.replace(**cfgs[name])
        tc = train_cfg.replace(seed=s)
        job = (train, val, test, projector, lc, tc, tuple(ks), tuple(keys))
        if run_fingerprint(train, val, projector, lc, tc) == main:
            left[j] = (main, job)
        else:
            runs.append(j)
            jobs.append(job)
    handle = start_jobs(
        _ablation_run,
        jobs,
        workers=workers,
        device=train_cfg.device,
        names=[f"ablation run {todo[j][0]!r}, seed {todo[j][1]}" for j in runs],
        desc="ablation trainings",
        progress=progress,
    )
    return LossAblation(todo, runs, handle, left, (test, ks, keys, workers, train_cfg.device, progress))


def _scored_run(r: TrainResult, test: EmbeddingSet, ks: Sequence[int], keys: Sequence[str]) -> dict:
    m = retrieval_metrics(
        r.model.project_array(test.image, "image"),
        r.model.project_array(test.text, "text"),
        labels=test.labels,
        ks=ks,
    )
    return {"best_epoch": r.best_epoch, **{k: m[k] for k in keys}}


def _ablation_run(
    train: EmbeddingSet,
    val: EmbeddingSet,
    test: EmbeddingSet,
    projector: ProjectorConfig,
    loss: LossConfig,
    train_cfg: TrainConfig,
    ks: tuple[int, ...],
    keys: tuple[str, ...],
) -> dict:
    """One ablation run (a :func:`cxrlib.parallel.run_jobs` job): train, then score ``test``."""
    r = train_projector(train, val, projector, loss, train_cfg, progress=False)
    return _scored_run(r, test, ks, keys)


def summarize_ablation(runs: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, table)``: mean and std per configuration (MultiIndex columns) and the "mean ± std" text."""
    summary = runs.groupby("config", sort=False)[list(keys)].agg(["mean", "std"])
    table = pd.DataFrame(
        {
            k: [
                f"{summary.loc[c, (k, 'mean')]:.3f} ± {summary.loc[c, (k, 'std')]:.3f}" for c in summary.index
            ]
            for k in keys
        },
        index=summary.index,
    )
    return summary, table


def ablation_vs_backbone(
    summary: pd.DataFrame, base: Mapping[str, float], keys: Sequence[str], backbone: str
) -> tuple[pd.DataFrame, list[str]]:
    """Seed means minus the untuned backbone, and the lines that say where each configuration falls below it."""
    means = summary.xs("mean", axis=1, level=1)
    vs_base = means - pd.Series({k: base[k] for k in keys})
    lines = []
    for name in means.index:
        below = [f"{k} ({means.loc[name, k]:.3f} vs {base[k]:.3f})" for k in keys if vs_base.loc[name, k] < 0]
        lines.append(
            f"{name:>14}: below the untuned {backbone} on {', '.join(below) if below else 'no column'}"
        )
    best = vs_base.mean(axis=1).idxmax()
    wins = int((means.loc["all three"] > means.loc["CLIP + SupCon"]).sum())
    lines.append(
        f"highest mean change over these columns: {best}; 'all three' beats 'CLIP + SupCon' on "
        f"{wins} of {len(keys)} columns"
    )
    return vs_base.rename(columns=lambda k: f"{k} - {backbone}"), lines


def pick_threshold(logits: np.ndarray, labels: np.ndarray) -> float:
    """The logit cut that maximises accuracy on ``(logits, labels)`` (a validation split); ties: the lowest.

    The logits of a classifier on unit vectors are small, so 0 is not a sensible cut.
    """
    cands = np.unique(logits)
    return cands[np.argmax([np.mean((logits >= c) == labels) for c in cands])]


def classifier_summary(
    logits_val: np.ndarray, labels_val: np.ndarray, logits_test: np.ndarray, labels_test: np.ndarray
) -> dict[str, float]:
    """AUC and accuracy (at the validation-chosen threshold) on test, and the majority-class rate."""
    from sklearn.metrics import roc_auc_score

    thr = pick_threshold(logits_val, labels_val)
    return {
        "auc": float(roc_auc_score(labels_test, logits_test)),
        "accuracy": float(np.mean((logits_test >= thr) == labels_test)),
        "threshold": float(thr),
        "majority": float(max(labels_test.mean(), 1 - labels_test.mean())),
    }


def train_head(
    source: Embeddings,
    rows: pd.DataFrame,
    projector: ProjectorConfig,
    loss: LossConfig,
    train: TrainConfig,
    progress: bool = False,
) -> tuple[TrainResult, Embeddings]:
    """Train the multi-task head on one backbone's embeddings and project them: notebook 03's method, for
    the further backbones of ``eval.also_finetune`` (the paper fine-tunes both of its backbones).

    The same settings as the main head: ``projector`` with its widths set to the backbone's, ``loss`` with
    ``clip_logit_scale_init="backbone"`` resolved from ``source``'s own logit scale, ``train`` as given; it
    trains on the ``train`` rows of ``rows`` and early-stops on ``val``. Returns the training result and the
    projected embeddings of every row of ``source`` (``meta["projector"]`` says it was not saved).
    """
    from cxrlib.losses import resolve_logit_scale

    width = int(source.image.shape[1])
    loss_cfg, _ = resolve_logit_scale(loss, (source.meta.get("backbone") or {}).get("logit_scale"))
    tr, va = embedding_sets(rows, source, ("train", "val"))
    result = train_projector(
        tr, va, projector.replace(in_dim=width, out_dim=width), loss_cfg, train, progress
    )
    return result, result.model.project_embeddings(source, projector="trained in notebook 03, not saved")


class Heads:
    """Heads under way (:func:`start_heads`); :meth:`result` returns ``{"<name>+multitask": Embeddings}``."""

    def __init__(self, names: list[str], jobs) -> None:
        self._names, self._jobs = names, jobs

    def result(self) -> dict[str, Embeddings]:
        """The projected embeddings of every backbone, in the order given (this process helps if needed)."""
        return {f"{n}+multitask": e for n, e in zip(self._names, self._jobs.result(), strict=True)}


def start_heads(
    names: Sequence[str],
    emb_dir,
    rows: pd.DataFrame,
    projector: ProjectorConfig,
    loss: LossConfig,
    train: TrainConfig,
    workers: int = 1,
) -> Heads:
    """:func:`train_head` on the registered embeddings of each backbone in ``names`` (``eval.also_finetune``),
    started in the worker processes now (:func:`cxrlib.parallel.start_jobs`); ``.result()`` collects them.
    Notebook 03 starts them before its main training; on a 2-core machine they train on the other core."""
    names = list(names)
    jobs = [(str(emb_dir), n, rows, projector, loss, train) for n in names]
    handle = start_jobs(
        _head_job,
        jobs,
        workers=workers,
        device=train.device,
        names=[f"the head on {n}" for n in names],
        desc="heads on further backbones",
        progress=False,
    )
    return Heads(names, handle)


def _head_job(
    emb_dir: str,
    name: str,
    rows: pd.DataFrame,
    projector: ProjectorConfig,
    loss: LossConfig,
    train: TrainConfig,
) -> Embeddings:
    """One :func:`start_heads` job: load ``name``'s registered embeddings, train the head, project them."""
    from cxrlib.embeddings import load_registered

    return train_head(load_registered(emb_dir, name), rows, projector, loss, train)[1]


# ----------------------------------------------------------------------------------------------------------
# finding-level relevance (graded by finding sets): nDCG@K and finding precision FP@K, see
# cxrlib.metrics.findings for the definitions
# ----------------------------------------------------------------------------------------------------------


def finding_sets(
    rows: pd.DataFrame, ignore: Sequence[str] = (), untagged_abnormal: str = "mark"
) -> list[frozenset[str]]:
    """The finding set of every manifest row, from its ``tags`` column (``|``-joined; ``""`` = none).

    What each dataset puts there is listed in :mod:`cxrlib.metrics.findings` (phantom: the rendered findings,
    IU X-ray: MeSH major heads, MIMIC-CXR: positive CheXpert findings incl. ``support_devices``).

    Args:
        rows: manifest rows (any subset, e.g. one split), in the order the embeddings are evaluated.
        ignore: tags to drop first, e.g. ``("support_devices",)`` for MIMIC-CXR, where a device is not a
            pathology (its label rule ignores it, so by default a normal study with a device would have gain
            0 against a plain normal one).
        untagged_abnormal: an abnormal row (``label == 1``) with no tag left (IU X-ray: major terms only
            ``normal`` / ``no indexing``) would count as normal (gain 1 against normal rows). ``"mark"`` gives
            it the single tag :data:`~cxrlib.metrics.findings.UNSPECIFIED_ABNORMALITY` and warns with the count
            and the first image ids; ``"error"`` raises ``ValueError`` instead.

    Returns:
        (len(rows),) list of frozensets of tags. A manifest with abnormal rows but no tags at all (a CSV
        loaded without ``tags_col``) raises ``ValueError``: it has no finding information to grade by.
    """
    import warnings

    from cxrlib.metrics.findings import UNSPECIFIED_ABNORMALITY, as_finding_sets

    if untagged_abnormal not in ("mark", "error"):
        raise ValueError(f"untagged_abnormal must be 'mark' or 'error'; got {untagged_abnormal!r}.")
    for col in ("tags", "label"):
        if col not in rows.columns:
            raise ValueError(
                f"the manifest rows have no {col!r} column; rebuild the manifest with notebook 01 (every loader "
                "writes 'tags' and 'label', see cxrlib.data.manifest)."
            )
    drop = frozenset(ignore)
    sets = [s - drop for s in as_finding_sets(rows["tags"].fillna("").astype(str).tolist())]
    abnormal = rows["label"].to_numpy() == 1
    empty = np.array([not s for s in sets], dtype=bool)
    bad = np.flatnonzero(abnormal & empty)
    if bad.size and bad.size == int(abnormal.sum()):
        raise ValueError(
            f"none of the {bad.size} abnormal rows has a finding tag (is the 'tags' column empty, e.g. a CSV "
            "manifest loaded without tags_col?): finding-level metrics need finding sets. Reload the data with "
            "its findings (load_csv(..., tags_col=...)) or use the label metrics only."
        )
    if bad.size:
        ids = rows["image_id"].iloc[bad[:3]].tolist() if "image_id" in rows.columns else bad[:3].tolist()
        if untagged_abnormal == "error":
            raise ValueError(
                f"{bad.size} abnormal row(s) have no finding tag, e.g. {ids}; fix their tags or pass "
                "untagged_abnormal='mark'."
            )
        warnings.warn(
            f"{bad.size} abnormal row(s) have no finding tag (e.g. {ids}); they get the tag "
            f"{UNSPECIFIED_ABNORMALITY!r} so that they do not count as normal.",
            UserWarning,
            stacklevel=2,
        )
        for i in bad:
            sets[i] = frozenset({UNSPECIFIED_ABNORMALITY})
    return sets


def finding_keys(ks: Sequence[int]) -> list[str]:
    """Columns of the finding tables: ``{i2t,t2i}_nDCG@K_findings`` at every K, ``FP`` at the largest K."""
    k = max(ks)
    return [f"{d}_nDCG@{x}_findings" for x in ks for d in ("i2t", "t2i")] + [
        f"{d}_FP@{k}_findings" for d in ("i2t", "t2i")
    ]


def evaluate_findings(
    spaces: Mapping[str, Embeddings],
    rows: pd.DataFrame,
    ks: Sequence[int],
    n_boot: int,
    seed: int,
    findings: Sequence[frozenset[str]] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`cxrlib.metrics.finding_metrics` of every space on ``rows`` (one split), like
    :func:`evaluate_spaces`: each space restricted to ``rows["image_id"]`` in that order, patients from
    ``rows`` (the bootstrap's clusters), findings from :func:`finding_sets` unless given. Returns
    ``{space name: metrics}``."""
    from cxrlib.metrics.findings import finding_metrics

    fsets = finding_sets(rows) if findings is None else findings
    patients = rows["patient_id"].to_numpy()
    out = {}
    for name, emb in spaces.items():
        e = emb.select(rows["image_id"])
        out[name] = finding_metrics(
            e.image, e.text, fsets, ks=ks, patient_ids=patients, n_boot=n_boot, seed=seed
        )
    return out


def finding_relevance_table(
    results: Mapping[str, Mapping[str, float]],
    chance: Mapping[str, float] | None,
    ks: Sequence[int],
    digits: int = 3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(numbers, text)`` of :func:`evaluate_findings`' results (one row per space, :func:`finding_keys`
    columns, ``"0.412 [0.380, 0.447]"`` with CIs) as :func:`cxrlib.metrics.metrics_table` makes them, plus a last
    row ``chance (random ranking)`` from :func:`cxrlib.metrics.finding_chance_levels` when ``chance`` is given.
    ``text`` is ready for ``nb.write_table(name, text, caption, csv=numbers)``."""
    from cxrlib.metrics import metrics_table

    keys = finding_keys(ks)
    numbers, text = metrics_table(results, keys, digits=digits)
    if chance is not None:
        name = "chance (random ranking)"
        numbers.loc[name, keys] = [round(float(chance[k]), digits) for k in keys]
        text.loc[name, keys] = [f"{float(chance[k]):.{digits}f}" for k in keys]
    return numbers, text


def paired_finding_comparison(
    spaces: Mapping[str, Embeddings],
    rows: pd.DataFrame,
    a: str,
    b: str,
    ks: Sequence[int],
    n_boot: int,
    seed: int,
    keys: Sequence[str] | None = None,
    findings: Sequence[frozenset[str]] | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Is space ``b`` better than ``a`` on the finding metrics? :func:`paired_comparison` for the
    ``*_findings`` keys (default :func:`finding_keys`): the same patients resampled for both spaces, the same
    columns and verdicts (so :func:`paired_verdict_lines` reads it). ``n_boot`` must be >= 1."""
    from cxrlib.metrics.findings import per_query_finding_metrics

    if n_boot < 1:
        raise ValueError("paired_finding_comparison needs n_boot >= 1: the verdict is a bootstrap test")
    fsets = finding_sets(rows) if findings is None else findings
    keys = finding_keys(ks) if keys is None else list(keys)
    values = {}
    for name in (a, b):
        e = spaces[name].select(rows["image_id"])
        values[name] = per_query_finding_metrics(e.image, e.text, fsets, ks=ks).row_values()
    diff = paired_difference(
        values[a], values[b], rows["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, level=level, keys=keys
    )
    return _paired_table(diff, a, b, level)  # finding metrics all improve upwards


def paired_cluster_comparison(
    before: Any,
    after: Any,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    n_boot: int,
    seed: int,
    k: int = 10,
    level: float = 0.95,
    names: tuple[str, str] = ("before", "after"),
) -> pd.DataFrame:
    """Do the label clusters of ``after`` beat those of ``before``? The paired patient bootstrap of
    :func:`paired_comparison` on the per-row cluster scores (:func:`cxrlib.metrics.cluster_row_values`:
    silhouettes of images, reports and both, leave-one-out k-NN accuracy of images and reports).

    ``before``/``after``: objects with ``.image`` and ``.text`` (N, D) on the same rows; ``labels`` and
    ``patient_ids`` (N,). Same columns and verdicts as :func:`paired_comparison` (so
    :func:`paired_verdict_lines` reads it); the bootstrap resamples patients with the evaluated set held fixed
    (a point's silhouette and neighbours depend on the others). ``n_boot`` must be >= 1.
    """
    from cxrlib.metrics.clusters import cluster_row_values

    if n_boot < 1:
        raise ValueError("paired_cluster_comparison needs n_boot >= 1: the verdict is a bootstrap test")
    a, b = names
    values = {
        name: cluster_row_values(space.image, space.text, labels, k=k)
        for name, space in ((a, before), (b, after))
    }
    diff = paired_difference(
        values[a], values[b], np.asarray(patient_ids), n_boot=n_boot, seed=seed, level=level
    )
    return _paired_table(diff, a, b, level)
