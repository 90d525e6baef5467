"""The notebooks' shared set-up: settings, seeds, threads, folders and how tables and figures are written.

Every notebook starts with ``nb = start_notebook("03", profile, overrides)``. That one call

- builds the :class:`~cxrlib.config.Settings` from ``profiles/<profile>.yaml`` and ``overrides``
  (checked: a bad value fails here, naming the setting and what is accepted);
- seeds python, numpy and torch with ``run.seed`` and fixes the thread count (``run.num_threads``);
- creates ``results/<profile>/{tables,figures,metrics}/`` and knows ``.cache/<profile>/``;
- prints the settings that differ from the defaults, so an executed notebook records what it ran.

Tables and figures are written through :meth:`NotebookRun.write_table` and :meth:`NotebookRun.save_figure`, which
prefix the notebook's number and add "(SYNTHETIC data)" to every caption of a phantom run.

This is application code for the notebooks: the library (data, backbones, metrics, ...) never imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrlib import paths
from cxrlib.backbones import display_name, display_names, slug
from cxrlib.config import Settings, diff_from_defaults, load_settings
from cxrlib.runtime import seed_everything, set_threads

__all__ = ["NotebookRun", "start_notebook"]


@dataclass(frozen=True)
class NotebookRun:
    """What a notebook needs besides its own steps: settings, folders, and the writers of its outputs."""

    number: str  # "01" .. "04": the prefix of every file the notebook writes
    settings: Settings
    work_dir: Path  # .cache/<profile>/: manifest, image cache, embeddings, checkpoints
    tables: Path
    figures: Path
    metrics: Path

    @property
    def synthetic(self) -> str:
        """``" (SYNTHETIC data)"`` for the phantom corpus, else ``""``: said on every figure and table."""
        return " (SYNTHETIC data)" if self.settings.synthetic else ""

    @property
    def emb_dir(self) -> Path:
        return self.work_dir / "embeddings"

    def write_table(
        self, name: str, df: pd.DataFrame, caption: str, index: bool = True, csv: pd.DataFrame | None = None
    ) -> Path:
        """``tables/<NN>_<name>.md`` (the caption, with the SYNTHETIC note, above ``df``) and ``.csv`` (``csv``,
        e.g. the unrounded numbers behind a formatted table; default ``df``)."""
        stem = f"{self.number}_{name}"
        (df if csv is None else csv).to_csv(self.tables / f"{stem}.csv", index=index)
        md = self.tables / f"{stem}.md"
        md.write_text(f"{caption}{self.synthetic}\n\n" + df.to_markdown(index=index))
        return md

    def write_csv(self, name: str, df: pd.DataFrame, index: bool = False) -> Path:
        """``tables/<NN>_<name>.csv`` only (long tables the summary need not show)."""
        path = self.tables / f"{self.number}_{name}.csv"
        df.to_csv(path, index=index)
        return path

    def write_metrics(self, name: str, record: Mapping[str, Any], sort_keys: bool = False) -> Path:
        """``metrics/<NN>_<slug>.json`` with :func:`cxrlib.backbones.slug` of ``name`` (the rule of every path
        built from a name: ``demo`` -> ``02_demo.json``, ``local-dir:/x/y`` -> ``02_y-<8 hex>.json``); the
        record itself should carry the full name."""
        path = self.metrics / f"{self.number}_{slug(name)}.json"
        path.write_text(json.dumps(record, indent=2, sort_keys=sort_keys))
        return path

    @property
    def labels(self) -> dict[str, str]:
        """``{name: short label}`` for the run's spaces (``eval.backbones``, ``eval.finetune``, the tuned space):
        :func:`cxrlib.backbones.display_names`, unique within the run (``local-dir:/x/y`` -> ``y``)."""
        s = self.settings
        return display_names([*s.eval.backbones, s.eval.finetune, s.tuned_name])

    def label(self, name: str) -> str:
        """The label of table rows and figures for the space ``name`` (its full name stays in the metadata)."""
        return self.labels.get(name) or display_name(name)

    def relabel(self, data: Any) -> Any:
        """``data`` keyed by space names -> keyed by :meth:`label`: a dict's keys, or every level of a
        DataFrame's / Series' index. Only the keys change (exact names; other keys are kept as they are)."""
        if isinstance(data, pd.DataFrame | pd.Series):
            return data.rename(index=lambda k: self.label(k) if isinstance(k, str) else k)
        if isinstance(data, Mapping):
            out = {self.label(k) if isinstance(k, str) else k: v for k, v in data.items()}
            if len(out) != len(data):
                raise ValueError(f"two names share a label: {sorted(map(str, data))}")
            return out
        raise TypeError(f"relabel takes a dict, DataFrame or Series, got {type(data).__name__}")

    def checkpoint_dir(self, backbone: str, head: str = "multitask") -> Path:
        """Where notebook 03 saves the projector trained on ``backbone``'s embeddings:
        ``<work_dir>/checkpoints/<slug>-<head>`` (``demo`` -> ``checkpoints/demo-multitask``; ``local-dir:/x/y``
        -> ``checkpoints/y-<8 hex>-multitask``, never a path with the bundle's folders or a ``:`` in it)."""
        return self.work_dir / "checkpoints" / f"{slug(backbone)}-{slug(head)}"

    def warn(self, lines: list[str]) -> None:
        """Print warning lines loudly and record them in ``results/<profile>/warnings/<NN>.txt`` (rewritten by
        every run of the notebook, removed when there are none), which the runner puts at the top of
        SUMMARY.md."""
        path = self.tables.parent / "warnings" / f"{self.number}.txt"
        if not lines:
            path.unlink(missing_ok=True)
            return
        for line in lines:
            print(line if line.startswith("WARNING") else f"WARNING: {line}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")

    def save_figure(self, fig: Any, name: str, dpi: int = 120) -> None:
        """Save ``fig`` as ``figures/<NN>_<name>.png`` (returns nothing, so a notebook cell that ends with it
        shows the figure and no file path)."""
        fig.savefig(self.figures / f"{self.number}_{name}.png", dpi=dpi)


def start_notebook(
    number: str, profile: str = "demo", overrides: Mapping[str, Any] | None = None
) -> NotebookRun:
    """Settings + seeds + threads + output folders for notebook ``number`` (see the module docstring)."""
    settings = load_settings(profile, overrides)
    seed_everything(settings.run.seed)
    set_threads(settings.run.num_threads)
    tables, figures, metrics = (paths.results_dir(profile, sub) for sub in ("tables", "figures", "metrics"))
    for d in (tables, figures, metrics):
        d.mkdir(parents=True, exist_ok=True)
    run = NotebookRun(number, settings, paths.profile_cache_dir(profile), tables, figures, metrics)
    changed = diff_from_defaults(settings)
    where = f"cache {paths.relative_to_repo(run.work_dir)}, results {paths.relative_to_repo(paths.results_dir(profile))}"
    print(f"profile {profile!r} ({settings.data.dataset}{run.synthetic}); {where}")
    print(
        "settings that differ from the defaults (cxrlib/config.py): "
        + ("; ".join(f"{s}: {json.dumps(v)}" for s, v in changed.items()) if changed else "none")
    )
    return run
