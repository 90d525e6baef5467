"""Repo-rooted paths. Every file the project reads or writes is located through this module.

Nothing here depends on the current working directory: the repo root is found from this file's
location, so notebooks, tests and the runner agree wherever they are started from.

Environment overrides (for GPU servers with a scratch disk):

- ``CXR_CACHE_DIR`` — where manifests, image caches, embeddings and checkpoints go
  (default: ``<repo>/.cache``).
- ``CXR_DATA_DIR`` — where raw datasets are looked for (default: ``<repo>/data``).
- ``CXR_RESULTS_DIR`` — where tables, figures and metrics go (default: ``<repo>/results``).

``python -m cxrlib.reproduce --out DIR`` sets ``CXR_RESULTS_DIR=DIR/results`` and ``CXR_CACHE_DIR=DIR/cache``
for its notebooks: an isolated run (a student's exercise) that never touches ``results/`` or the shared caches.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "data_dir",
    "cache_dir",
    "profile_cache_dir",
    "results_dir",
    "notebooks_dir",
    "profiles_dir",
    "resolve",
    "relative_to_repo",
]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent


def _env_dir(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    if not value:
        return default
    p = Path(value).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def data_dir(*parts: str) -> Path:
    """``<repo>/data/...`` (or ``$CXR_DATA_DIR/...``): raw datasets live here, never committed."""
    return _env_dir("CXR_DATA_DIR", REPO_ROOT / "data").joinpath(*parts)


def cache_dir(*parts: str) -> Path:
    """``<repo>/.cache/...`` (or ``$CXR_CACHE_DIR/...``): derived artefacts that can be rebuilt."""
    return _env_dir("CXR_CACHE_DIR", REPO_ROOT / ".cache").joinpath(*parts)


def profile_cache_dir(profile: str, *parts: str) -> Path:
    """Per-profile derived artefacts: manifest, image cache, embeddings, checkpoints."""
    return cache_dir(profile, *parts)


def results_dir(profile: str, *parts: str) -> Path:
    """``<repo>/results/<profile>/...`` (or ``$CXR_RESULTS_DIR/<profile>/...``): what the notebooks write."""
    return _env_dir("CXR_RESULTS_DIR", REPO_ROOT / "results").joinpath(profile, *parts)


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"


def profiles_dir() -> Path:
    return REPO_ROOT / "profiles"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve a path stored in a manifest or profile: relative paths are relative to the repo root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def relative_to_repo(path: str | os.PathLike[str]) -> str:
    """Store ``path`` relative to the repo root when it lies inside the repo, else as an absolute path.

    Manifests keep image paths in this form, so a repo moved to another folder keeps working.
    """
    p = Path(path).expanduser().resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return p.as_posix()
