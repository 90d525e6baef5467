"""Constructed embedding spaces shared by the metrics and viz tests (two label clusters, paired modalities)."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clusters(n: int, d: int, sep: float, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two label clusters around ±sep·e0 plus isotropic noise; returns (unit rows (n, d), labels (n,))."""
    rng = np.random.default_rng(seed)
    lab = (np.arange(n) % 2).astype(np.int64)
    x = rng.normal(scale=noise, size=(n, d))
    x[:, 0] += np.where(lab == 1, sep, -sep)
    x[:, 1] += 3.0  # keep away from the origin so that the cosine geometry follows the clusters
    return unit(x), lab


def paired(n: int = 60, d: int = 16, sep: float = 3.0, seed: int = 0):
    img, lab = clusters(n, d, sep, seed)
    rng = np.random.default_rng(seed + 1)
    txt = unit(img + rng.normal(scale=0.2, size=img.shape))
    return img, txt, lab
