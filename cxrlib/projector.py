"""The lightweight MLP projector head trained on top of frozen backbone embeddings.

The paper's abstract says only "a lightweight MLP projector"; everything else here is **our documented
choice** and lives in :class:`ProjectorConfig` (every field has its default and a one-line why).

Architecture of one head, for an input embedding ``x`` of shape ``(B, in_dim)``::

    x̂    = x / ‖x‖                                  (normalize_input; the backbone space is cosine)
    h    = Dropout(GELU(LN(Linear(·))))  × depth     (hidden blocks; LN only when layernorm=True)
    m    = Linear(h)                                 (to out_dim; depth=0 → this single Linear on x̂)
    y    = P x̂ + m      if residual else m           (P = identity when in_dim == out_dim, else a
                                                       semi-orthogonal Linear without bias)
    z    = y / ‖y‖                                   (the retrieval embedding, shape (B, out_dim))

With ``residual=True`` the last Linear of the MLP is zero-initialised, so at step 0 the head is exactly
``z = normalize(x)`` (in_dim == out_dim): training starts from the pretrained space and its image–report
alignment. The normal/abnormal classifier is a ``Linear(out_dim, 1)`` on the normalised ``z`` — the decision
boundary is a hyperplane in the very space used for retrieval, so BCE shapes that space.

The head's settings are :class:`cxrlib.config.ProjectorConfig` (with every other setting in :mod:`cxrlib.config`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.config import MODALITIES, ProjectorConfig
from cxrlib.embeddings import Embeddings

__all__ = ["MultiTaskProjector"]


class _Head(nn.Module):
    """One projection head: ``(B, in_dim) -> (B, out_dim)`` L2-normalised (see the module docstring)."""

    def __init__(self, cfg: ProjectorConfig) -> None:
        super().__init__()
        self.normalize_input = cfg.normalize_input
        layers: list[nn.Module] = []
        width = cfg.in_dim
        for _ in range(cfg.depth):
            layers.append(nn.Linear(width, cfg.hidden_dim))
            if cfg.layernorm:
                layers.append(nn.LayerNorm(cfg.hidden_dim))
            layers.append(nn.GELU())
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = cfg.hidden_dim
        last = nn.Linear(width, cfg.out_dim)
        layers.append(last)
        self.mlp = nn.Sequential(*layers)
        self.skip: nn.Module | None = None
        if cfg.residual:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            if cfg.in_dim == cfg.out_dim:
                self.skip = nn.Identity()
            else:
                # semi-orthogonal: preserves inner products when out_dim >= in_dim (a shared skip then keeps
                # the image–report alignment at step 0); a random subspace projection otherwise.
                self.skip = nn.Linear(cfg.in_dim, cfg.out_dim, bias=False)
                nn.init.orthogonal_(self.skip.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            x = F.normalize(x, dim=-1)
        y = self.mlp(x)
        if self.skip is not None:
            y = self.skip(x) + y
        return F.normalize(y, dim=-1)


class MultiTaskProjector(nn.Module):
    """Image and text heads (shared or separate) plus the normal/abnormal classifier(s).

    Parameters (state-dict prefixes): ``heads.shared.*`` or ``heads.image.*`` / ``heads.text.*``;
    ``classifiers.shared.*`` (shared projector and ``cls_on="both"``: one classifier for both modalities,
    as they live in the same coordinates) or ``classifiers.image.*`` / ``classifiers.text.*``.
    """

    def __init__(self, cfg: ProjectorConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ProjectorConfig):
            raise TypeError(f"MultiTaskProjector needs a ProjectorConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        if cfg.shared:
            self.heads = nn.ModuleDict({"shared": _Head(cfg)})
        else:
            self.heads = nn.ModuleDict({m: _Head(cfg) for m in MODALITIES})
        if cfg.shared and cfg.cls_on == "both":
            self.classifiers = nn.ModuleDict({"shared": nn.Linear(cfg.out_dim, 1)})
        else:
            self.classifiers = nn.ModuleDict({m: nn.Linear(cfg.out_dim, 1) for m in cfg.cls_modalities})

    def _head(self, modality: str) -> nn.Module:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        return self.heads["shared" if self.cfg.shared else modality]

    def _classifier(self, modality: str) -> nn.Module:
        return self.classifiers["shared" if "shared" in self.classifiers else modality]

    def _check_input(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.cfg.in_dim:
            raise ValueError(
                f"{name} must have shape (B, {self.cfg.in_dim}) (ProjectorConfig.in_dim), got {tuple(x.shape)}; "
                "set in_dim to the backbone's embedding dim."
            )

    def project(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``, L2-normalised, through the ``modality`` head (with autograd)."""
        self._check_input(x, f"{modality} embeddings")
        return self._head(modality)(x)

    def project_image(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, in_dim) -> (B, out_dim)``, L2-normalised."""
        return self.project(x, "image")

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``(B, in_dim) -> (B, out_dim)``, L2-normalised."""
        return self.project(x, "text")

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``image_emb``, ``text_emb``: ``(B, in_dim)`` paired rows.

        Returns ``{"image": (B, out_dim), "text": (B, out_dim)}`` (unit rows) plus ``"image_logit"`` and/or
        ``"text_logit"`` ``(B,)`` for the modalities in ``cfg.cls_on`` (logit of *abnormal*).
        """
        self._check_input(image_emb, "image_emb")
        self._check_input(text_emb, "text_emb")
        if image_emb.shape[0] != text_emb.shape[0]:
            raise ValueError(f"image_emb has {image_emb.shape[0]} rows but text_emb has {text_emb.shape[0]}")
        out = {"image": self._head("image")(image_emb), "text": self._head("text")(text_emb)}
        for m in self.cfg.cls_modalities:
            out[f"{m}_logit"] = self._classifier(m)(out[m]).squeeze(-1)
        return out

    def _chunked(self, x: np.ndarray, modality: str, batch_size: int, logits: bool) -> np.ndarray:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if logits and modality not in self.cfg.cls_modalities:
            raise ValueError(f"this projector has no {modality} classifier (cls_on={self.cfg.cls_on!r})")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.cfg.in_dim:
            raise ValueError(f"{modality} array must have shape (N, {self.cfg.in_dim}), got {x.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        p = next(self.parameters())
        out = np.empty((x.shape[0],) if logits else (x.shape[0], self.cfg.out_dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for s in range(0, x.shape[0], batch_size):
                    xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size], dtype=np.float32))
                    z = self._head(modality)(xb.to(device=p.device, dtype=p.dtype))
                    if logits:
                        z = self._classifier(modality)(z).squeeze(-1)
                    out[s : s + batch_size] = z.float().cpu().numpy()
        finally:
            self.train(was_training)
        return out

    def project_array(self, x: np.ndarray, modality: str, batch_size: int = 4096) -> np.ndarray:
        """Project a large ``(N, in_dim)`` array in chunks, eval mode, no autograd → ``(N, out_dim)`` float32."""
        return self._chunked(x, modality, batch_size, logits=False)

    def project_embeddings(self, emb: Embeddings, **meta: object) -> Embeddings:
        """Both modalities of ``emb`` through the head: a new :class:`~cxrlib.embeddings.Embeddings` with the same
        image ids and ``emb.meta`` plus ``meta`` (its cache ``key`` cleared: projected spaces are registered,
        not extracted)."""
        return Embeddings(
            self.project_array(emb.image, "image"),
            self.project_array(emb.text, "text"),
            emb.image_ids,
            {**emb.meta, **meta, "key": None},
        )

    def logits_array(self, x: np.ndarray, modality: str, batch_size: int = 4096) -> np.ndarray:
        """Abnormal-vs-normal logits ``(N,)`` float32 for a ``(N, in_dim)`` array (eval mode, chunked)."""
        return self._chunked(x, modality, batch_size, logits=True)
