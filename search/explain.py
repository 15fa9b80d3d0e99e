"""Explained search results: each hit's grounding map (where the query matched) beside its scores.

`explain_results` adds to every hit of `[{"query", "hits"}]` (what `mtgfe-search` prints and writes) the
fusion encoder's grounding map (`modeling_mtgfe.pipeline_mtgfe.grounding_maps`, ALBEF-style Grad-CAM of one
fusion layer) and the query words that carry it. The maps come from the fusion tokens the index stores, so
explaining costs one fusion forward and backward per hit and no image decoding; an index built without
tokens re-encodes just the hits' images. On a caption index (image queries) the map lies on the query image.

Maps are stored as nested lists (JSON-ready) under `"map"`, words as `[[word, share], ...]` under
`"map_words"`, the fusion layer under `"map_layer"`; `report_html` draws `"map"` over the thumbnail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from modeling_mtgfe.pipeline_mtgfe import grounding_maps
from modeling_mtgfe.retrieval import encode_images

from .gallery_index import GalleryIndex


def _jsonable(maps: dict[str, Any]) -> dict[str, Any]:
    return {"map": [[round(float(v), 6) for v in row] for row in maps["map"].tolist()],
            "map_words": [[word, round(float(share), 4)] for word, share in maps["map_words"]],
            "map_layer": int(maps["map_layer"])}


def _hit_tokens(index: GalleryIndex, model, processor, rows: list[int]) -> torch.Tensor:
    if index.image_tokens is not None:
        return index.image_tokens[torch.tensor(rows, dtype=torch.long)]
    images = [index.items[row]["image"] for row in rows]  # an index without tokens: encode just these hits
    return encode_images(model, processor, images, progress=False).tokens


def explain_results(index: GalleryIndex, model, processor, results: Sequence[dict], layer: int | None = None,
                    top_words: int = 3) -> list[dict]:
    """Add `"map"`, `"map_words"` and `"map_layer"` to every hit of `results` (in place; also returned)."""
    for result in results:
        hits = result["hits"]
        if not hits:
            continue
        query = result["query"]
        if index.kind == "texts":  # an image query ranked captions: the map lies on the query image
            tokens = encode_images(model, processor, [query], progress=False).tokens
            maps = grounding_maps(model, processor, [hit["text"] for hit in hits], tokens, layer=layer,
                                  top_words=top_words)
        else:
            tokens = _hit_tokens(index, model, processor, [hit["index"] for hit in hits])
            maps = grounding_maps(model, processor, [query], tokens, layer=layer, top_words=top_words)
        for hit, hit_maps in zip(hits, maps):
            hit.update(_jsonable(hit_maps))
    return list(results)


__all__ = ["explain_results"]
