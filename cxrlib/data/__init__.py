"""Data layer: the manifest schema, the synthetic phantom corpus, dataset loaders and the image cache.

Import the submodules directly (``from cxrlib.data.manifest import validate_manifest``); this package
does not import them eagerly, so importing one loader never pulls in the others.
"""
