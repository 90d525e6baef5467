"""Worked solutions of the notebooks' exercises, run through the library (no notebook is re-executed).

One module per notebook:

- :mod:`solutions.ex01_data` — notebook 01 (splits, a row-level split, ``aspect``, missed findings);
- :mod:`solutions.ex02_metrics` — notebook 02 (R@1 by hand, bootstrap replicates, a shorter-trained
  backbone, K = 50);
- :mod:`solutions.ex03_finetuning` — notebook 03 (loss weights, SupCon temperature, residual head,
  imbalance and ``pos_weight``, the early-stopping monitor);
- :mod:`solutions.ex03_supcon` — notebook 03, "write SupCon yourself" (pure torch, random inputs);
- :mod:`solutions.ex04_maps` — notebook 04 (loss terms and cluster scores, t-SNE perplexity, PCA, the
  modality gap, the gallery query rule).

Each exercise is a function ``exercise_N(lab) -> dict`` that measures what the exercise asks, prints it and
asserts that it lands in the range stated in the notebook (:func:`solutions._lab.expect`). Two sizes:

- ``small`` (the default, what ``tests/test_solutions.py`` runs): a reduced SYNTHETIC phantom corpus built in a
  temporary folder, with a *constructed* embedding space from the phantom's ground truth in place of the
  pretrained demo backbone (:func:`solutions._lab.constructed_spaces`: pretraining would cost minutes of CPU);
  its numbers are not the demo's, so its ranges are wide and mostly about directions; exercise 02.3, which
  pretrains a backbone, runs only at full size;
- ``full``: the caches of an isolated demo run, e.g. after
  ``python -m cxrlib.reproduce --profile demo --out scratch/me``, read with ``--run scratch/me``; the ranges
  are the ones quoted in the notebooks (measured on the full demo, SYNTHETIC data).

Run one notebook's solutions from the repository root::

    python -m solutions.ex03_finetuning                  # small, in a temporary folder
    python -m solutions.ex03_finetuning --run scratch/me # full size, on an isolated run's caches

Nothing here writes under ``results/`` or the shared ``.cache/``: the small lab lives in a temporary folder,
and a full run's caches are only read (exercise 02.3 pretrains its extra backbone in a temporary folder).
"""

from __future__ import annotations

__all__: list[str] = []
