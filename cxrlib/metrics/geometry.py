r"""Embedding-geometry diagnostics: is a space spread out, or has it collapsed onto a few directions?

A contrastive loss with only two classes (SupCon on normal vs abnormal) is minimised by mapping every normal
study to one point and every abnormal study to another: label retrieval gets perfect while the space loses
the detail that tells one report from another. These numbers make that visible (all on L2-normalised rows):

- **effective rank** (Roy & Vetterli 2007) of the centred embedding matrix :math:`X`: with singular values
  :math:`\sigma_i` and :math:`p_i = \sigma_i / \sum_j \sigma_j`, :math:`\mathrm{erank} = \exp(-\sum_i p_i \log p_i)`
  — about the number of directions the points really use (1 = a line; D = isotropic);
- **alignment** (Wang & Isola 2020): :math:`\mathbb{E}\,\lVert u_i - v_i \rVert^2` over the image–report
  pairs (lower = matching pairs closer; 0 to 4);
- **uniformity** (Wang & Isola 2020): :math:`\log \mathbb{E}_{i \ne j} \exp(-2 \lVert z_i - z_j \rVert^2)`
  over the points of one modality (lower = more evenly spread; about -4 for points uniform on a
  high-dimensional sphere, 0 when everything coincides);
- **mean cosine of same-label and of different-label pairs** (images and reports together, no self-pairs): a
  collapsed two-class space has both near ±1, a healthy one has same-label clearly above different-label and
  different-label near 0.
"""

from __future__ import annotations

import numpy as np

from cxrlib.metrics._inputs import unit_rows

__all__ = ["effective_rank", "alignment", "uniformity", "label_cosines", "geometry_scores"]


def effective_rank(x: np.ndarray) -> float:
    """Effective rank of the centred rows of ``x`` (N, D), N >= 2 (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    if s.size == 0 or s.max() <= 1e-9:  # all rows (numerically) identical: no direction is used
        return 0.0
    s = s[s > s.max() * 1e-12]
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def alignment(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
    """Mean squared distance of matching image–report pairs (rows i of both, unit-normalised)."""
    u, v = unit_rows(image_emb, "image"), unit_rows(text_emb, "text")
    return float(np.mean(np.sum((u - v) ** 2, axis=1)))


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` of the unit-normalised rows of ``x`` (N >= 2)."""
    z = unit_rows(x, "embeddings").astype(np.float64)
    n = len(z)
    if n < 2:
        raise ValueError("uniformity needs at least 2 rows")
    sq = np.clip(2.0 - 2.0 * (z @ z.T), 0.0, None)
    off = ~np.eye(n, dtype=bool)
    vals = -t * sq[off]
    m = vals.max()
    return float(m + np.log(np.mean(np.exp(vals - m))))


def label_cosines(image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cosine of same-label and of different-label pairs among the 2N image and report rows (no self)."""
    z = np.concatenate([unit_rows(image_emb, "image"), unit_rows(text_emb, "text")]).astype(np.float64)
    y = np.concatenate([np.asarray(labels), np.asarray(labels)])
    sims = z @ z.T
    same = y[:, None] == y[None, :]
    off = ~np.eye(len(z), dtype=bool)
    diff_mask = ~same & off
    same_mask = same & off
    return (
        float(sims[same_mask].mean()) if same_mask.any() else float("nan"),
        float(sims[diff_mask].mean()) if diff_mask.any() else float("nan"),
    )


def geometry_scores(
    image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray, max_points: int = 2000, seed: int = 0
) -> dict[str, float]:
    """All diagnostics of one space; pairwise ones on a seeded subsample of at most ``max_points`` pairs.

    Keys: ``erank_image``, ``erank_text``, ``alignment``, ``uniformity_image``, ``uniformity_text``,
    ``cos_same_label``, ``cos_diff_label``, ``n_points``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    idx = np.arange(n)
    if n > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    img, txt, lab = np.asarray(image_emb)[idx], np.asarray(text_emb)[idx], labels[idx]
    same, diff = label_cosines(img, txt, lab)
    return {
        "erank_image": effective_rank(unit_rows(img, "image")),
        "erank_text": effective_rank(unit_rows(txt, "text")),
        "alignment": alignment(img, txt),
        "uniformity_image": uniformity(img),
        "uniformity_text": uniformity(txt),
        "cos_same_label": same,
        "cos_diff_label": diff,
        "n_points": float(len(idx)),
    }
