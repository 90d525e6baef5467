r"""Retrieval examples: queries picked by a stated rule (never by hand), their top-k tables and figures.

- :func:`pick_queries` — query rows per label, by id order or seeded at random.
- :func:`i2t_gallery` / :func:`t2i_gallery` — image → report and report → image top-k as long tables.
- :func:`plot_i2t_gallery` / :func:`plot_t2i_gallery` — the figures of those tables (✓/✗/★ marks and
  green/red colours for "same label" / "other label" / "own report or study").
- :func:`plot_example_grid` — a grid of images, each under its header and report text (notebook 01's
  examples, the phantom's examples per finding), laid out so that no text runs into a neighbouring panel.

Every figure is sized for a slide: text at least 9 pt, no title running into a neighbouring panel.

Inputs are paired embeddings: row ``i`` of ``image_emb`` (N, D) and row ``i`` of ``text_emb`` (N, D) are one
image and the report of its study; ``labels`` (N,). Both are normalised here (float64), so scores are cosine
similarities. Rankings are exact, ties going to the lower index (:func:`cxrlib.metrics.topk_sorted`).
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cxrlib.metrics.clusters import topk_sorted
from cxrlib.metrics.groups import majority_labels, unique_strings
from cxrlib.viz._common import finish, per_row, unit_rows

__all__ = [
    "pick_queries",
    "i2t_gallery",
    "t2i_gallery",
    "plot_i2t_gallery",
    "plot_t2i_gallery",
    "plot_example_grid",
]

_GOOD = "#1B7837"  # green: retrieved item has the query's label
_BAD = "#B2182B"  # red: it has not


def pick_queries(
    labels: np.ndarray | Sequence[int],
    ids: np.ndarray | Sequence[object],
    n_per_label: int,
    rule: str = "first_by_id",
    seed: int = 0,
) -> np.ndarray:
    """Row indices of gallery queries chosen by a stated rule, never by hand.

    Rules:

    - ``"first_by_id"`` — for each label value (ascending), the first ``n_per_label`` rows in ascending ``ids``
      order (ties between equal ids: lower row first). Reproducible and independent of any model.
    - ``"random"`` — for each label value, ``n_per_label`` rows drawn without replacement by
      ``numpy.random.default_rng(seed)`` (label values visited in ascending order).

    Returns:
        int64 row indices grouped by label (ascending), sorted by id inside a label. A label with fewer than
        ``n_per_label`` rows contributes all its rows (with a warning).
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {lab.shape}.")
    idv = per_row(np.asarray(ids), lab.shape[0], "ids")
    if int(n_per_label) != n_per_label or n_per_label < 1:
        raise ValueError(f"n_per_label must be a positive integer; got {n_per_label!r}.")
    if rule not in ("first_by_id", "random"):
        raise ValueError(f"rule must be 'first_by_id' or 'random'; got {rule!r}.")
    by_id = np.argsort(idv, kind="stable")
    rank_of = np.empty_like(by_id)
    rank_of[by_id] = np.arange(by_id.shape[0])
    rng = np.random.default_rng(seed)
    out = []
    for v in np.unique(lab):
        rows = np.flatnonzero(lab == v)
        if rows.shape[0] < n_per_label:
            warnings.warn(
                f"label {v!r} has only {rows.shape[0]} rows (< n_per_label = {n_per_label}); using all.",
                UserWarning,
                stacklevel=2,
            )
        m = min(int(n_per_label), rows.shape[0])
        if rule == "random":
            rows = rng.choice(rows, size=m, replace=False)
        rows = rows[np.argsort(rank_of[rows], kind="stable")]
        out.append(rows[:m])
    return np.concatenate(out).astype(np.int64)


def _query_rows(query_idx: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    """``query_idx`` as (Q,) int64 row indices in ``[0, n)``."""
    q = np.asarray(query_idx)
    if q.ndim != 1 or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"query_idx must be a 1-D integer array of row indices; got {q.dtype} {q.shape}.")
    if q.size and (q.min() < 0 or q.max() >= n):
        raise ValueError(f"query_idx must lie in [0, {n}); got values in [{q.min()}, {q.max()}].")
    return q.astype(np.int64)


def _ranked(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-k of a 1-D score vector: score descending, ties by lower index."""
    return topk_sorted(sims[None, :], k)[0]


def i2t_gallery(
    query_idx: np.ndarray | Sequence[int],
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    texts: Sequence[str],
    labels: np.ndarray | Sequence[int],
    k: int = 5,
    ids: np.ndarray | Sequence[object] | None = None,
) -> pd.DataFrame:
    """Image → report retrieval examples as a long table (one row per query × rank).

    The gallery is the set of DISTINCT report strings (:func:`cxrlib.metrics.unique_strings`: identical
    reports are one item, as in the retrieval metrics, which collapse identical text embeddings; identical
    strings embed identically). Each distinct text uses the embedding of its first row; its label is the
    majority label of its rows (:func:`cxrlib.metrics.majority_labels`: a tie goes to the larger label value,
    as in the metrics). Scores are cosine similarities (float64); the top k are ordered by similarity, ties by
    first appearance of the text.

    Args:
        query_idx: (Q,) query rows (e.g. from :func:`pick_queries`).
        image_emb, text_emb: (N, D) paired embeddings.
        texts: (N,) the report text of each row.
        labels: (N,) labels.
        k: results per query (clamped to the number of distinct texts).
        ids: (N,) optional row ids (e.g. the manifest's image id) for the ``query_id`` column; default = row.

    Returns:
        DataFrame with columns ``query_row``, ``query_id``, ``query_label``, ``rank`` (1..k), ``text_row``
        (first row that has the retrieved text), ``retrieved_text``, ``similarity`` (rounded to 3 decimals),
        ``retrieved_label``, ``same_label`` (bool), ``exact_report`` (bool: the retrieved text is the query's
        own report).
    """
    img = unit_rows(image_emb, "image_emb")
    txt = unit_rows(text_emb, "text_emb")
    n = img.shape[0]
    if txt.shape != img.shape:
        raise ValueError(f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape.")
    if len(texts) != n:
        raise ValueError(f"texts must have one entry per row ({n}); got {len(texts)}.")
    lab = per_row(labels, n)
    idv = np.arange(n) if ids is None else per_row(np.asarray(ids), n, "ids")
    q = _query_rows(query_idx, n)
    uid, rep = unique_strings(texts)  # distinct text of each row (order of first appearance), first rows
    m = rep.shape[0]
    lv, lc = np.unique(lab, return_inverse=True)
    tlab = lv[majority_labels(uid, lc.reshape(-1), m, lv.shape[0])[0]]  # majority; tie → larger value
    U = txt[rep]
    kk = min(int(k), m)
    if kk < 1:
        raise ValueError(f"k must be >= 1; got {k!r}.")
    recs = []
    for r in q:
        s = U @ img[r]
        for rank, u in enumerate(_ranked(s, kk), start=1):
            recs.append(
                {
                    "query_row": int(r),
                    "query_id": idv[r],
                    "query_label": lab[r],
                    "rank": rank,
                    "text_row": int(rep[u]),
                    "retrieved_text": str(texts[rep[u]]),
                    "similarity": round(float(s[u]), 3),
                    "retrieved_label": tlab[u],
                    "same_label": bool(tlab[u] == lab[r]),
                    "exact_report": bool(u == uid[r]),
                }
            )
    return pd.DataFrame.from_records(recs, columns=_I2T_COLUMNS)


_I2T_COLUMNS = [
    "query_row",
    "query_id",
    "query_label",
    "rank",
    "text_row",
    "retrieved_text",
    "similarity",
    "retrieved_label",
    "same_label",
    "exact_report",
]
_T2I_COLUMNS = [
    "query_row",
    "query_id",
    "query_label",
    "rank",
    "image_row",
    "image_id",
    "similarity",
    "label",
    "same_label",
    "exact",
]


def t2i_gallery(
    query_idx: np.ndarray | Sequence[int],
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: np.ndarray | Sequence[int],
    k: int = 5,
    ids: np.ndarray | Sequence[object] | None = None,
    study_ids: np.ndarray | Sequence[object] | None = None,
) -> pd.DataFrame:
    """Report → image retrieval examples as a long table (one row per query × rank).

    The query is the report of row ``r`` (``text_emb[r]``); the gallery is all N images; cosine similarity,
    ties by lower row index.

    Args:
        query_idx: (Q,) query rows.
        image_emb, text_emb: (N, D) paired embeddings.
        labels: (N,) labels.
        k: results per query (clamped to N).
        ids: (N,) optional image ids for ``query_id`` / ``image_id``; default = row.
        study_ids: (N,) optional study of each row: then every image of the query's study counts as
            ``exact`` (several views share one report); without it only the paired row is exact.

    Returns:
        DataFrame with columns ``query_row``, ``query_id``, ``query_label``, ``rank``, ``image_row``,
        ``image_id``, ``similarity`` (3 decimals), ``label``, ``same_label`` (bool), ``exact`` (bool).
    """
    img = unit_rows(image_emb, "image_emb")
    txt = unit_rows(text_emb, "text_emb")
    n = img.shape[0]
    if txt.shape != img.shape:
        raise ValueError(f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape.")
    lab = per_row(labels, n)
    idv = np.arange(n) if ids is None else per_row(np.asarray(ids), n, "ids")
    sid = None if study_ids is None else per_row(np.asarray(study_ids), n, "study_ids")
    q = _query_rows(query_idx, n)
    kk = min(int(k), n)
    if kk < 1:
        raise ValueError(f"k must be >= 1; got {k!r}.")
    recs = []
    for r in q:
        s = img @ txt[r]
        for rank, j in enumerate(_ranked(s, kk), start=1):
            recs.append(
                {
                    "query_row": int(r),
                    "query_id": idv[r],
                    "query_label": lab[r],
                    "rank": rank,
                    "image_row": int(j),
                    "image_id": idv[j],
                    "similarity": round(float(s[j]), 3),
                    "label": lab[j],
                    "same_label": bool(lab[j] == lab[r]),
                    "exact": bool(j == r or (sid is not None and sid[j] == sid[r])),
                }
            )
    return pd.DataFrame.from_records(recs, columns=_T2I_COLUMNS)


def _queries_of(df: pd.DataFrame, needed: Sequence[str]) -> list[pd.DataFrame]:
    """The rows of a gallery table per query (in order of first appearance), each sorted by rank."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"gallery table lacks columns {missing}; pass the output of i2t_gallery/t2i_gallery."
        )
    if len(df) == 0:
        raise ValueError("gallery table is empty.")
    qrows = pd.unique(df["query_row"])
    return [df[df["query_row"] == r].sort_values("rank") for r in qrows]


def _name(label_names: Sequence[str], v: object) -> str:
    """The name of label value ``v`` (``str(v)`` when it has none)."""
    try:
        return str(label_names[int(v)])  # type: ignore[call-overload]
    except (IndexError, TypeError, ValueError):
        return str(v)


def _wrap(text: str, width: int, max_lines: int, indent: str = "") -> list[str]:
    """Whitespace-normalised ``text`` wrapped to ``width`` characters, at most ``max_lines`` lines (then …)."""
    lines = textwrap.wrap(
        " ".join(str(text).split()), width=width, subsequent_indent=indent, break_on_hyphens=False
    ) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - 1)].rstrip() + "…"
    return lines


def _show_image(ax: Axes, im: np.ndarray) -> None:
    """Draw a (H, W) grey or (H, W, 3) colour thumbnail on ``ax`` without ticks."""
    a = np.asarray(im)
    if a.ndim == 2:
        ax.imshow(a, cmap="gray", vmin=0, vmax=255 if a.dtype == np.uint8 else None)
    else:
        ax.imshow(a)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_i2t_gallery(
    df: pd.DataFrame,
    images: np.ndarray,
    out_path: str | os.PathLike[str] | None = None,
    wrap: int = 60,
    max_lines: int = 3,
    label_names: Sequence[str] = ("normal", "abnormal"),
    dpi: int = 150,
    close: bool = False,
) -> Figure:
    """Image → report gallery figure: one row per query, the X-ray on the left, its top-k reports on the right.

    Each report line starts with ✓ (same label as the query) or ✗ (other label), ★ when it is the query's own
    report, then rank, similarity and label; it is coloured green (✓) or red (✗) — the marks keep it readable
    without colour.

    Args:
        df: the output of :func:`i2t_gallery`.
        images: (Q, H, W) uint8 (or (Q, H, W, 3)) thumbnails, one per query in the order the queries first
            appear in ``df``.
        out_path: save the figure there at ``dpi``; folders are created.
        wrap: characters of report text per line (the first line also holds the marks, rank, similarity and
            label, so it carries less report text).
        max_lines: lines kept per report (longer reports end with …).
        label_names: name of each label value.
        dpi: resolution of the saved file.
        close: close the figure after saving.
    """
    groups = _queries_of(df, _I2T_COLUMNS)
    ims = np.asarray(images)
    if ims.ndim not in (3, 4) or ims.shape[0] != len(groups):
        raise ValueError(
            f"images must be (Q, H, W) thumbnails with Q = {len(groups)} (one per query in df order); "
            f"got shape {ims.shape}."
        )
    blocks: list[list[tuple[str, str, bool]]] = []  # (text, colour, bold)
    for g in groups:
        first = g.iloc[0]
        lines = [(f"Query {first['query_id']} · {_name(label_names, first['query_label'])}", "black", True)]
        for _, row in g.iterrows():
            mark = "✓" if row["same_label"] else "✗"
            star = " ★" if row["exact_report"] else ""
            col = _GOOD if row["same_label"] else _BAD
            head = f"{mark}{star} {int(row['rank'])}. [{row['similarity']:.3f} · {_name(label_names, row['retrieved_label'])}] "
            lines += [
                (t, col, False) for t in _wrap(head + row["retrieved_text"], wrap + 6, max_lines, " " * 6)
            ]
        blocks.append(lines)
    line_h = 0.2  # inches per line at 9 pt
    heights = [max(2.0, line_h * (len(b) + 1)) for b in blocks]
    text_w = 0.083 * (wrap + 8)
    fig = plt.figure(figsize=(2.4 + text_w, sum(heights)))
    gs = fig.add_gridspec(len(groups), 2, width_ratios=[2.2, text_w], height_ratios=heights)
    for i, (lines, h) in enumerate(zip(blocks, heights, strict=True)):
        ax_im = fig.add_subplot(gs[i, 0])
        _show_image(ax_im, ims[i])
        ax_t = fig.add_subplot(gs[i, 1])
        ax_t.axis("off")
        step = line_h / h
        for j, (t, col, bold) in enumerate(lines):
            ax_t.text(
                0.0,
                1.0 - (j + 0.5) * step,
                t,
                color=col,
                fontsize=9,
                fontweight="bold" if bold else "normal",
                va="center",
                ha="left",
                transform=ax_t.transAxes,
            )
    fig.subplots_adjust(wspace=0.05, hspace=0.15)
    return finish(fig, out_path, dpi, close)


def plot_t2i_gallery(
    df: pd.DataFrame,
    query_texts: Sequence[str],
    thumbnails_fn: Callable[[np.ndarray], np.ndarray],
    out_path: str | os.PathLike[str] | None = None,
    wrap: int = 40,
    max_lines: int = 12,
    label_names: Sequence[str] = ("normal", "abnormal"),
    dpi: int = 150,
    close: bool = False,
) -> Figure:
    """Report → image gallery figure: one row per query, the wrapped report then its top-k images.

    Each image is titled with its similarity and label (★ = an image of the query's own study) and framed
    green when it has the query's label, red otherwise (the title's ✓/✗ repeats that without colour).

    Args:
        df: the output of :func:`t2i_gallery`.
        query_texts: (Q,) the report text of each query, in the order the queries first appear in ``df``.
        thumbnails_fn: called once per query with the (k,) int64 ``image_row`` values of its results;
            returns (k, H, W) uint8 thumbnails (or (k, H, W, 3)) in that order — e.g. a lookup into the image
            cache of notebook 01.
        out_path: save the figure there at ``dpi``; folders are created.
        wrap: characters per line of the query text; ``max_lines`` lines at most (then …).
        label_names: name of each label value.
        dpi: resolution of the saved file.
        close: close the figure after saving.
    """
    groups = _queries_of(df, _T2I_COLUMNS)
    if len(query_texts) != len(groups):
        raise ValueError(
            f"query_texts must have one text per query in df ({len(groups)}); got {len(query_texts)}."
        )
    k = max(len(g) for g in groups)
    text_w = 0.09 * wrap + 0.5
    thumb = 2.0
    body_h = 0.19 * (min(max_lines, max(len(_wrap(t, wrap, max_lines)) for t in query_texts)) + 1.5)
    fig = plt.figure(figsize=(text_w + thumb * k, (max(thumb, body_h) + 0.5) * len(groups)))
    gs = fig.add_gridspec(len(groups), k + 1, width_ratios=[text_w] + [thumb] * k)
    for i, (g, qt) in enumerate(zip(groups, query_texts, strict=True)):
        rows = g["image_row"].to_numpy(np.int64)
        thumbs = np.asarray(thumbnails_fn(rows))
        if thumbs.ndim not in (3, 4) or thumbs.shape[0] != rows.shape[0]:
            raise ValueError(
                f"thumbnails_fn must return ({rows.shape[0]}, H, W) thumbnails for rows {rows.tolist()}; "
                f"got shape {thumbs.shape}."
            )
        first = g.iloc[0]
        ax_t = fig.add_subplot(gs[i, 0])
        ax_t.axis("off")
        header = f"Query {first['query_id']} · {_name(label_names, first['query_label'])}"
        body = "\n".join(_wrap(qt, wrap, max_lines))
        ax_t.text(0.0, 1.0, header, fontsize=9.5, fontweight="bold", va="top", transform=ax_t.transAxes)
        ax_t.annotate(
            body,
            (0.0, 1.0),
            xycoords="axes fraction",
            xytext=(0, -16),
            textcoords="offset points",
            fontsize=9,
            va="top",
            ha="left",
        )
        for j, (_, row) in enumerate(g.iterrows()):
            ax = fig.add_subplot(gs[i, j + 1])
            _show_image(ax, thumbs[j])
            ok = bool(row["same_label"])
            col = _GOOD if ok else _BAD
            star = "★ " if row["exact"] else ""
            ax.set_title(
                f"{star}{'✓' if ok else '✗'} {row['similarity']:.3f} · {_name(label_names, row['label'])}",
                fontsize=9,
                color=col,
            )
            for sp in ax.spines.values():
                sp.set_visible(True)
                sp.set_edgecolor(col)
                sp.set_linewidth(3)
    fig.subplots_adjust(wspace=0.08, hspace=0.35)
    return finish(fig, out_path, dpi, close)


_LINE_IN = 0.175  # inches per text line at 9 pt (matplotlib's 1.2 line spacing, with a little room)


def plot_example_grid(
    images: Sequence[np.ndarray | None],
    headers: Sequence[str],
    texts: Sequence[str],
    out_path: str | os.PathLike[str] | None = None,
    ncols: int = 3,
    wrap: int | None = None,
    max_lines: int = 6,
    title: str = "",
    panel: float = 3.0,
    fontsize: float = 9.0,
    dpi: int = 120,
    close: bool = False,
) -> Figure:
    """A grid of example images, each under a bold header line and its (wrapped, cut) report text.

    Each panel is a text band above a square image; the band is as tall as the longest text in its grid row,
    so no text overlaps an image or another text, whatever the report lengths (the problem of titles set
    with ``Axes.set_title`` on a tight grid). The figure title sits in a band of its own.

    Args:
        images: (n,) arrays (H, W) uint8 grey or (H, W, 3); ``None`` leaves a panel empty (keeps a row
            aligned when a group has fewer examples).
        headers: (n,) first line of each panel, in bold (e.g. "abnormal (cardiomegaly)").
        texts: (n,) the text under it, wrapped at ``wrap`` characters (``None``: what fits the panel's width
            at ``fontsize``), at most ``max_lines`` lines (then …).
        out_path: save the figure there at ``dpi``; folders are created.
        ncols: panels per row.
        title: figure title ("" = none).
        panel: side of each image in inches.
        fontsize: size of the texts in points (the title is 3 pt larger).
        dpi: resolution of the saved file.
        close: close the figure after saving.
    """
    n = len(images)
    if len(headers) != n or len(texts) != n:
        raise ValueError(
            f"images, headers and texts must have one entry per panel; got {n}, {len(headers)} and {len(texts)}."
        )
    if n == 0:
        raise ValueError("plot_example_grid needs at least one image.")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer; got {ncols!r}.")
    ncols = min(int(ncols), n)
    nrows = -(-n // ncols)
    if wrap is None:  # an average DejaVu Sans character is about 0.55 em wide
        wrap = max(10, int(panel * 72 / (fontsize * 0.6)))
    # bold is wider than regular: the header wraps a little earlier (at most 2 lines)
    heads = [_wrap(h, max(8, int(wrap * 0.85)), 2) if str(h).strip() else [""] for h in headers]
    bodies = [_wrap(t, wrap, max_lines) if str(t).strip() else [] for t in texts]
    line_in = _LINE_IN * fontsize / 9.0
    bands = [
        line_in * max(len(heads[i]) + len(bodies[i]) for i in range(r * ncols, min(n, (r + 1) * ncols)))
        + 0.12
        for r in range(nrows)
    ]
    title_in = 0.45 if title else 0.1
    gap = 0.2
    width = ncols * panel + (ncols - 1) * gap + 0.2
    height = title_in + sum(bands) + nrows * panel + nrows * gap
    fig = plt.figure(figsize=(width, height))
    y = 1.0 - title_in / height
    for r in range(nrows):
        band_h, img_h = bands[r] / height, panel / height
        for c in range(ncols):
            i = r * ncols + c
            if i >= n:
                break
            x = (0.1 + c * (panel + gap)) / width
            w = panel / width
            ax_t = fig.add_axes((x, y - band_h, w, band_h))
            ax_t.axis("off")
            ax_t.text(
                0.0,
                1.0,
                "\n".join(heads[i]),
                fontsize=fontsize,
                fontweight="bold",
                va="top",
                ha="left",
                transform=ax_t.transAxes,
            )
            if bodies[i]:
                ax_t.annotate(
                    "\n".join(bodies[i]),
                    (0.0, 1.0),
                    xycoords="axes fraction",
                    xytext=(0, -line_in * 72 * len(heads[i])),
                    textcoords="offset points",
                    fontsize=fontsize,
                    va="top",
                    ha="left",
                )
            ax_i = fig.add_axes((x, y - band_h - img_h, w, img_h))
            if images[i] is None:
                ax_i.axis("off")
            else:
                _show_image(ax_i, np.asarray(images[i]))
        y -= (bands[r] + panel + gap) / height
    if title:
        fig.text(0.5, 1.0 - 0.5 * title_in / height, title, fontsize=fontsize + 3, ha="center", va="center")
    return finish(fig, out_path, dpi, close)
