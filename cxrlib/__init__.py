"""cxrlib: companion library for *Multi-task Cross-modal Learning for Chest X-ray Image Retrieval*.

The library, one module or package per concept:

- :mod:`cxrlib.config` — every setting, declared once (default, why, source); :mod:`cxrlib.profiles` reads
  ``profiles/*.yaml`` and ``--param``
- :mod:`cxrlib.paths` — repo-rooted paths (data/, results/, the cache dir)
- :mod:`cxrlib.cache` — atomic writes under per-process names, checksums, stamps, inter-process locks
- :mod:`cxrlib.data` — manifest schema, the SYNTHETIC phantom corpus (:mod:`cxrlib.data.phantom`), dataset
  loaders, image cache
- :mod:`cxrlib.backbones` — open_clip loading (CLIP, BiomedCLIP, ``local-dir:``, the demo bundles)
- :mod:`cxrlib.embeddings` — batched, cached embedding extraction
- :mod:`cxrlib.projector`, :mod:`cxrlib.losses`, :mod:`cxrlib.training` — the multi-task head
- :mod:`cxrlib.metrics` — exact chunked retrieval metrics, bootstrap CIs, chance levels, cluster scores
- :mod:`cxrlib.evaluation` — comparing spaces: tables, verdicts, the loss ablation
- :mod:`cxrlib.viz` — t-SNE / UMAP panels, retrieval galleries, bar charts, training figures

Application code on top of it (the library never imports these): :mod:`cxrlib.reproduce` (the papermill
runner), :mod:`cxrlib.notebook` (the notebooks' set-up), :mod:`cxrlib.demo_backbone` (pretraining the demo's
stand-in backbone) and :mod:`cxrlib.methodcard` (the README's method card).
"""

__version__ = "0.1.0"
