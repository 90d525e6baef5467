r"""Cluster scores of an embedding space: label separation (silhouette, k-NN) and the modality gap.

The paper argues with t-SNE plots (:mod:`cxrlib.viz`) that the fine-tuned space separates normal from abnormal
studies more clearly than the pretrained backbone; these numbers back the plots:

- :func:`cluster_scores` — silhouettes (image, text, joint), leave-one-out k-NN label accuracy and the
  modality gap of one space; :func:`scores_table` puts several spaces (before vs after) side by side.
- :func:`knn_loo_predict` — the exact, chunked leave-one-out k-NN classifier behind the k-NN accuracy.
- :func:`topk_sorted` — exact top-k with ties by lower index (shared with the viz galleries).

Inputs are paired embeddings: row ``i`` of ``image_emb`` (N, D) and of ``text_emb`` (N, D) are one image
and the report of its study; ``labels`` (N,). Unlike :func:`~cxrlib.metrics.retrieval_metrics`, these
functions normalise their input themselves (float64; idempotent on unit rows); zero rows, NaN or inf raise
``ValueError`` naming the row.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.metrics._inputs import per_row, unit_rows
from cxrlib.metrics.groups import subsample

__all__ = ["topk_sorted", "knn_loo_predict", "cluster_scores", "cluster_row_values", "scores_table"]

_CHUNK_ELEMS = 2**22  # float64 similarity entries per chunk in the k-NN search (32 MB)


def topk_sorted(S: np.ndarray, k: int) -> np.ndarray:
    """Column indices (m, k) of the k largest entries of each row of S (m, n), ordered by (score desc, index
    asc); ``1 <= k <= n``.

    Ties are exact: when the k-th value is tied beyond position k, the lower indices win. Also ranks the
    retrieval galleries of :mod:`cxrlib.viz`."""
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    sv = np.take_along_axis(S, part, axis=1)
    order = np.lexsort((part, -sv), axis=-1)
    nb = np.take_along_axis(part, order, axis=1)
    kth = sv.min(axis=1)
    tied = np.flatnonzero((S >= kth[:, None]).sum(axis=1) > k)
    for r in tied:  # rare: exact ties at the k-th place
        cand = np.flatnonzero(S[r] >= kth[r])
        nb[r] = cand[np.lexsort((cand, -S[r, cand]))[:k]]
    return nb


def knn_loo_predict(x: np.ndarray, labels: np.ndarray | Sequence[int], k: int = 10) -> np.ndarray:
    """Leave-one-out k-NN label prediction with cosine similarity.

    Each row's neighbours are the k other rows with the highest cosine similarity (ties: lower row index
    first; the row itself is excluded, identical rows elsewhere are not). The prediction is the majority label
    of the k neighbours; a tie between labels goes to the tied label whose first neighbour is nearest (for two
    labels: the label of the nearest neighbour). ``k`` is clamped to ``n - 1`` with a warning.

    Computed exactly in float64 by a chunked ``X @ X.T`` (about 32 MB of scores at a time, never n × n).

    Args:
        x: (n, D) embeddings (normalised here).
        labels: (n,) labels (any sortable values).
        k: number of neighbours.

    Returns:
        (n,) predicted labels, same dtype as ``labels``.
    """
    X = unit_rows(x, "x")
    n = X.shape[0]
    lab = per_row(labels, n)
    if n < 2:
        raise ValueError("k-NN leave-one-out needs at least 2 rows.")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    k = int(k)
    if k > n - 1:
        warnings.warn(f"k = {k} >= n = {n}; using k = {n - 1}.", UserWarning, stacklevel=2)
        k = n - 1
    values, codes = np.unique(lab, return_inverse=True)
    codes = codes.reshape(-1)
    n_cls = values.shape[0]
    chunk = max(1, min(n, _CHUNK_ELEMS // n))
    pred = np.empty(n, np.int64)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        S = X[r0:r1] @ X.T
        S[np.arange(r1 - r0), np.arange(r0, r1)] = -np.inf
        nl = codes[topk_sorted(S, k)]  # (m, k) neighbour labels, nearest first
        hit = nl[:, :, None] == np.arange(n_cls)[None, None, :]  # (m, k, C)
        votes = hit.sum(axis=1)
        first = np.where(hit.any(axis=1), hit.argmax(axis=1), k)
        first = np.where(votes == votes.max(axis=1, keepdims=True), first, k + 1)
        pred[r0:r1] = first.argmin(axis=1)
    return values[pred]


def _silhouette(x: np.ndarray, lab: np.ndarray, what: str) -> float:
    """Cosine silhouette of the rows of ``x`` (n, D) with ``lab`` (n,) as clusters; NaN (with a warning to
    the caller of :func:`cluster_scores`) unless there are 2 .. n - 1 classes."""
    from sklearn.metrics import silhouette_score

    n_lab = np.unique(lab).shape[0]
    if not 2 <= n_lab <= x.shape[0] - 1:
        warnings.warn(
            f"silhouette_{what} is undefined with {n_lab} label value(s) among {x.shape[0]} points "
            "(needs at least two classes); returning NaN.",
            UserWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(silhouette_score(x, lab, metric="cosine"))


def _modality_gap(img: np.ndarray, txt: np.ndarray) -> tuple[float, float]:
    """``(||mean(img) - mean(txt)||, 1 - cos(mean(img), mean(txt)))`` of unit rows img (N, D), txt (M, D);
    the cosine form is NaN (with a warning to the caller of :func:`cluster_scores`) for a zero centroid."""
    ci, ct = img.mean(axis=0), txt.mean(axis=0)
    gap = float(np.linalg.norm(ci - ct))
    denom = float(np.linalg.norm(ci) * np.linalg.norm(ct))
    if denom == 0.0:
        warnings.warn("a modality centroid is zero; modality_gap_cosine is NaN.", UserWarning, stacklevel=3)
        return gap, float("nan")
    return gap, float(1.0 - np.clip(ci @ ct / denom, -1.0, 1.0))


def _paired_units(image_emb: np.ndarray, text_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows of paired (N, D) image and report embeddings of the same shape."""
    img = unit_rows(image_emb, "image_emb")
    txt = unit_rows(text_emb, "text_emb")
    if img.shape != txt.shape:
        raise ValueError(
            f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape (paired rows)."
        )
    return img, txt


def cluster_scores(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: np.ndarray | Sequence[int],
    k: int = 10,
    seed: int = 0,
    max_silhouette_points: int | None = 5000,
) -> dict[str, float]:
    """How well an embedding space separates the labels, and how far apart its two modalities sit.

    Keys (flat):

    - ``silhouette_image``, ``silhouette_text`` — :func:`sklearn.metrics.silhouette_score` with the cosine
      distance and the labels (normal vs abnormal) as clusters: for each point ``(b - a) / max(a, b)`` with
      ``a`` its mean distance to its own class and ``b`` to the other class, averaged. Range [-1, 1];
      HIGHER = better separated (0: classes overlap, < 0: points sit closer to the other class).
    - ``silhouette_joint`` — the same on images and reports stacked (2N points, each with its row's label):
      do the two modalities of one class form one cluster? A large modality gap pulls it down.
    - ``knn_acc_image``, ``knn_acc_text`` — leave-one-out k-NN label accuracy (:func:`knn_loo_predict`:
      cosine, majority of k, ties to the nearest neighbour's label). Range [0, 1]; HIGHER = better; compare
      with the majority-class rate. Rows with an identical report count as neighbours of each other (only
      the row itself is left out), which favours the text side when many reports are duplicates.
    - ``modality_gap`` — ``||mean(img) - mean(txt)||``, the Euclidean distance between the centroids of the
      L2-normalised image and text embeddings (Liang et al. 2022, "Mind the Gap"). Range [0, 2]; 0 = the two
      clouds share a centre. LOWER = modalities better mixed (CLIP-style training leaves a gap; it is a
      description, not a quality score by itself).
    - ``modality_gap_cosine`` — ``1 - cos(mean(img), mean(txt))``: the angle between the centroids regardless
      of their lengths. Range [0, 2]; LOWER = closer.
    - ``n_points`` — N; ``n_silhouette_points`` — rows used for the silhouettes.

    Silhouettes cost O(n²): above ``max_silhouette_points`` rows they are computed on a :func:`subsample`
    (stratified by label, ``seed``); the same rows serve all three. ``None`` = always all rows. k-NN and gap
    use all rows. A single-class label set gives NaN silhouettes with a warning (k-NN is then trivially 1).

    Args:
        image_emb: (N, D) image embeddings, row i paired with ``text_emb`` row i.
        text_emb: (N, D) report embeddings.
        labels: (N,) labels.
        k: neighbours of the k-NN accuracy.
        seed: seed of the silhouette subsample.
        max_silhouette_points: cap on the silhouette rows.

    Returns:
        The flat dict above (floats).
    """
    img, txt = _paired_units(image_emb, text_emb)
    n = img.shape[0]
    lab = per_row(labels, n)
    sil = np.arange(n) if max_silhouette_points is None else subsample(lab, max_silhouette_points, seed=seed)
    ls = lab[sil]
    out: dict[str, float] = {
        "silhouette_image": _silhouette(img[sil], ls, "image"),
        "silhouette_text": _silhouette(txt[sil], ls, "text"),
        "silhouette_joint": _silhouette(np.vstack([img[sil], txt[sil]]), np.concatenate([ls, ls]), "joint"),
    }
    if n >= 2:
        out["knn_acc_image"] = float(np.mean(knn_loo_predict(img, lab, k) == lab))
        out["knn_acc_text"] = float(np.mean(knn_loo_predict(txt, lab, k) == lab))
    else:
        out["knn_acc_image"] = out["knn_acc_text"] = float("nan")
    out["modality_gap"], out["modality_gap_cosine"] = _modality_gap(img, txt)
    out["n_points"] = float(n)
    out["n_silhouette_points"] = float(sil.shape[0])
    return out


def cluster_row_values(
    image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray | Sequence[int], k: int = 10
) -> dict[str, np.ndarray]:
    """The label-separation scores of :func:`cluster_scores` as one value per row (image-report pair), so that
    two spaces can be compared row by row (:func:`cxrlib.evaluation.paired_cluster_comparison`).

    Keys: ``silhouette_image``, ``silhouette_text`` — each row's cosine silhouette
    (:func:`sklearn.metrics.silhouette_samples`, all rows, no subsample); ``silhouette_joint`` — the mean of
    the row's image and report silhouettes in the stacked 2N-point set; ``knn_acc_image``, ``knn_acc_text`` —
    1.0 where the leave-one-out k-NN label is right. The mean over rows of each is exactly the corresponding
    :func:`cluster_scores` value (computed without a silhouette subsample). A point's value depends on the other
    points, so a bootstrap of these values resamples queries *given* the evaluated set.

    Returns:
        key -> (N,) float64.
    """
    from sklearn.metrics import silhouette_samples

    img, txt = _paired_units(image_emb, text_emb)
    n = img.shape[0]
    lab = per_row(labels, n)
    if not 2 <= np.unique(lab).shape[0] <= n - 1:
        raise ValueError(f"per-row silhouettes need at least two label values among {n} rows")
    joint = silhouette_samples(np.vstack([img, txt]), np.concatenate([lab, lab]), metric="cosine")
    return {
        "silhouette_image": silhouette_samples(img, lab, metric="cosine").astype(np.float64),
        "silhouette_text": silhouette_samples(txt, lab, metric="cosine").astype(np.float64),
        "silhouette_joint": (0.5 * (joint[:n] + joint[n:])).astype(np.float64),
        "knn_acc_image": (knn_loo_predict(img, lab, k) == lab).astype(np.float64),
        "knn_acc_text": (knn_loo_predict(txt, lab, k) == lab).astype(np.float64),
    }


def scores_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Scores of several spaces as a table: one row per space, one column per metric.

    ``{"before (BiomedCLIP)": s0, "after (projector)": s1}`` → rows in the given order; with exactly two
    rows a third row ``"change"`` = second − first is added (for the gap, a negative change = smaller gap).
    Columns are the union of the keys in order of first appearance; a missing key is NaN.

    Args:
        rows: space name → :func:`cluster_scores` output (or any flat dict of numbers).

    Returns:
        (len(rows) [+ 1], n_keys) float DataFrame, index named ``"space"``.
    """
    if not rows:
        raise ValueError("rows is empty; pass {space name: cluster_scores(...)}.")
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols]
    df = pd.DataFrame([{c: r.get(c, np.nan) for c in cols} for r in rows.values()], index=list(rows))
    df = df.astype(float)
    if len(df) == 2:
        df.loc["change"] = df.iloc[1] - df.iloc[0]
    df.index.name = "space"
    return df
