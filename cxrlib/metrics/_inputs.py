"""Input checks and conversions shared by :mod:`cxrlib.metrics` and :mod:`cxrlib.viz` (internal).

Two families, deliberately different:

- the retrieval metrics work on float32 copies and REJECT un-normalised rows (:func:`checked_embeddings`,
  with :func:`label_codes` and :func:`normalise_ks`);
- the cluster scores and the viz helpers work on float64 copies and normalise themselves
  (:func:`finite_matrix`, :func:`unit_rows`, :func:`per_row`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "NORM_TOLERANCE",
    "to_numpy",
    "row_norms",
    "checked_embeddings",
    "label_codes",
    "normalise_ks",
    "finite_matrix",
    "unit_rows",
    "per_row",
]

NORM_TOLERANCE: float = 1e-2
"""Rows whose L2 norm differs from 1 by more than this are rejected."""


def to_numpy(x: object) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and moved to the CPU; float16 / bfloat16 become
    float32, which is exact)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # float16 / bfloat16 → float32 is exact
        return t.numpy()
    return np.asarray(x)


def row_norms(x: np.ndarray) -> np.ndarray:
    """(N,) float64 L2 norms of the rows of a float32 (N, D) array (products and sums in float64)."""
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def checked_embeddings(x: object, modality: str) -> np.ndarray:
    """(N, D) C-contiguous float32 copy of ``x`` (numpy or torch) for the retrieval metrics.

    Raises ``ValueError`` naming ``{modality}_emb`` for a wrong rank, N = 0, D = 0, a non-numeric dtype,
    NaN/inf (the first bad row) and rows whose L2 norm is off by more than :data:`NORM_TOLERANCE`."""
    a = to_numpy(x)
    if a.ndim != 2:
        raise ValueError(f"{modality}_emb must be 2-D (N, D); got shape {a.shape}.")
    if a.shape[0] == 0:
        raise ValueError(f"{modality}_emb has N = 0 rows: there is nothing to evaluate (empty split?).")
    if a.shape[1] == 0:
        raise ValueError(f"{modality}_emb has D = 0 columns.")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{modality}_emb must be numeric; got dtype {a.dtype}.")
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(a32).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{modality}_emb has NaN/inf values in {bad.size} row(s), the first at row {int(bad[0])} "
            f"(after float32 conversion). Fix or drop those rows (and the matching rows of the other "
            "modality, labels and patient_ids) before computing metrics."
        )
    norms = row_norms(a32)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        bad = np.flatnonzero(off)
        raise ValueError(
            f"{modality}_emb is not L2-normalised: {bad.size} row(s) have |norm - 1| > {NORM_TOLERANCE}, "
            f"the first at row {int(bad[0])} (norm {norms[bad[0]]:.6g}). Normalise first, e.g. "
            "x = x / x.norm(dim=-1, keepdim=True) (torch) or x / np.linalg.norm(x, axis=1, keepdims=True)."
        )
    return a32


def label_codes(labels: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels (N,) → ``(values (L,), codes (N,) int64)`` with ``values[codes] == labels``.

    ``values`` are the sorted distinct labels, so codes are ``0 .. L - 1`` and every code occurs. Booleans
    and integer-valued floats are accepted; anything else raises ``ValueError``."""
    lab = to_numpy(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) (one per row of the embeddings); got {lab.shape}.")
    if lab.dtype == np.bool_:
        lab = lab.astype(np.int64)
    elif np.issubdtype(lab.dtype, np.floating):
        bad = ~np.isfinite(lab) | (lab != np.round(lab))
        if bad.any():
            raise ValueError(
                f"labels must be integers; row {int(np.flatnonzero(bad)[0])} holds {lab[bad][0]!r}."
            )
        lab = lab.astype(np.int64)
    elif not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers (e.g. 0 normal / 1 abnormal); got dtype {lab.dtype}.")
    values, codes = np.unique(lab, return_inverse=True)
    return values, codes.astype(np.int64)


def normalise_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """The cut-offs ``ks`` as a sorted tuple of distinct positive ints (``ValueError`` otherwise)."""
    try:
        kl = [int(k) for k in ks]
    except TypeError as exc:
        raise ValueError(f"ks must be a sequence of positive integers; got {ks!r}.") from exc
    if not kl or any(k < 1 or k != kk for k, kk in zip(kl, ks, strict=True)):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks!r}.")
    return tuple(sorted(set(kl)))


def finite_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """(n, D) finite float64 copy of ``x``; errors name the first bad row."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, D); got shape {a.shape}.")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows).")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name} row {int(np.flatnonzero(bad)[0])} contains NaN or inf ({int(bad.sum())} bad rows); "
            "recompute the embeddings of those rows or drop them (with the same rows of the other arrays)."
        )
    return a


def unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Row-wise L2-normalised float64 copy of ``x`` (n, D); a zero row is an error."""
    a = finite_matrix(x, name)
    norms = np.linalg.norm(a, axis=1)
    if (norms == 0).any():
        raise ValueError(
            f"{name} row {int(np.flatnonzero(norms == 0)[0])} is all zeros and has no direction; "
            "cosine similarity is undefined for it. Recompute or drop that row."
        )
    return a / norms[:, None]


def per_row(labels: np.ndarray | Sequence[int], n: int, name: str = "labels") -> np.ndarray:
    """``labels`` as a 1-D array of length ``n`` (one value per embedding row), unconverted."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one per embedding row); got {lab.shape}.")
    return lab


def checked_pair(
    image_emb: object, text_emb: object, ks: Sequence[int], chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The common input checks of the chunked retrieval kernels: paired ``(N, D)`` image and report
    embeddings of the same shape (:func:`checked_embeddings` each), the cut-offs (:func:`normalise_ks`) and
    ``chunk_size`` (a positive integer or ``None``). Returns ``(img, txt, ks)``."""
    img = checked_embeddings(image_emb, "image")
    txt = checked_embeddings(text_emb, "text")
    if img.shape != txt.shape:
        raise ValueError(
            f"image_emb {img.shape} and text_emb {txt.shape} must have the same shape (N, D): row i of each "
            "is one image–report pair."
        )
    ks_t = normalise_ks(ks)
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")
    return img, txt, ks_t


def check_bootstrap_args(n_boot: object, patient_ids: object, n_rows: int) -> None:
    """``n_boot`` a non-negative integer; with ``n_boot > 0`` the (N,) ``patient_ids`` the bootstrap resamples."""
    if int(n_boot) != n_boot or n_boot < 0:  # type: ignore[call-overload, operator]
        raise ValueError(f"n_boot must be a non-negative integer; got {n_boot!r}.")
    if n_boot > 0 and patient_ids is None:  # type: ignore[operator]
        raise ValueError(
            "n_boot > 0 needs patient_ids: the bootstrap resamples patients. Pass the manifest's patient_id "
            "column (or np.arange(N) to resample rows, which ignores within-patient correlation)."
        )
    if patient_ids is not None:
        pid = to_numpy(patient_ids)
        if pid.ndim != 1 or pid.shape[0] != n_rows:
            raise ValueError(
                f"patient_ids must have shape ({n_rows},) (one per row of the embeddings); got {pid.shape}."
            )
