"""cxrlib: companion library for *Multi-task Cross-modal Learning for Chest X-ray Image Retrieval*.

One module per concept (see ``DESIGN`` in the README):

- :mod:`cxrlib.paths` — repo-rooted paths (data/, results/, the cache dir)
- :mod:`cxrlib.profiles` — ``profiles/*.yaml`` parameter sets
- :mod:`cxrlib.data` — manifest schema, the synthetic phantom corpus, dataset loaders, image cache
- :mod:`cxrlib.backbones` — open_clip loading (CLIP, BiomedCLIP, ``local-dir:``, the demo model)
- :mod:`cxrlib.embeddings` — batched, cached embedding extraction
- :mod:`cxrlib.projector`, :mod:`cxrlib.losses`, :mod:`cxrlib.training` — the multi-task head
- :mod:`cxrlib.metrics` — exact chunked retrieval metrics with bootstrap CIs
- :mod:`cxrlib.viz` — t-SNE / UMAP, cluster scores, retrieval galleries
- :mod:`cxrlib.reproduce` — the papermill runner
"""

__version__ = "0.1.0"
