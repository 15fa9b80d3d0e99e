"""`mtgfe.search`: the search application built on the MTGFE model.

A persistent gallery index (`gallery_index`, on-disk format in `index_storage`), the `mtgfe-index` /
`mtgfe-search` console scripts (`cli`), HTML / PNG result reports (`report_html`), and the scene side:
windowed tiling of GeoTIFF / COG scenes (`scenes`), GeoJSON hits and footprint boxes (`geo`), and a
georeferenced mosaic of UCM tiles with known answers (`mosaic`).

Why a package of its own: `modeling_mtgfe/` is the model and its Hub remote-code set; an index with
resumable builds, manifests and reports is an application of that model, installed with the package and
never shipped inside checkpoints. The scoring core it uses stays in `modeling_mtgfe.retrieval` because the
`rs-retrieval` pipeline (remote code) needs it too.

Names are loaded lazily, so `import mtgfe.search` alone stays cheap (no torch); the console scripts set
their thread policy in `mtgfe.utils.entrypoints` before importing `cli`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "GalleryIndex": "gallery_index",
    "IndexCorruptError": "index_storage",
    "IndexMismatchError": "index_storage",
    "TokenStore": "index_storage",
    "faiss_topk": "gallery_index",
    "list_image_files": "gallery_index",
    "write_contact_sheet": "report_html",
    "write_html": "report_html",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
