""""More like this": search an image index with one of its own items as the query.

Why the filter alone: the query is an image, and MTGFE's fusion encoder scores image–*text* pairs only (its
ITM head was trained on captions against images); no image-to-image fusion score exists. The image-to-image
score the model supports is the cosine of the two images' filter embeddings (the same `vision_proj` space in
which text queries are matched), so both the coarse stage and the ranking use it: the query is the mean of
the `like` items' filter embeddings, re-normalised. Items named with `exclude` (a person's "not this") and
the `like` items themselves are left out of the results.

Items are named by their row in the index (the `"index"` of a search hit, as `mtgfe-search --json` writes it)
or by their image path or file name when that names exactly one item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from modeling_mtgfe.retrieval import coarse_topk

from .gallery_index import GalleryIndex


def resolve_item(index: GalleryIndex, item_id: Any) -> int:
    """Row of `item_id` in an image index: an int (or digit string) row, or an image path / file name that
    names exactly one item. Errors name the id and say why."""
    size = len(index.items)
    text = str(item_id).strip()
    if isinstance(item_id, int) or text.isdigit():
        row = int(text)
        if not 0 <= row < size:
            raise ValueError(f"Item {item_id!r} is not a row of this index (it has {size} items: 0..{size - 1}).")
        return row
    matches = [row for row, item in enumerate(index.items)
               if str(item.get("image")) == text or str(item.get("image")).replace("\\", "/").rsplit("/", 1)[-1] == text]
    if len(matches) != 1:
        why = "no item has that image path or file name" if not matches else f"{len(matches)} items have that name"
        raise ValueError(f"Item {item_id!r} is ambiguous or unknown: {why}; give its row (a hit's \"index\").")
    return matches[0]


def search_like(index: GalleryIndex, like: Sequence[Any], exclude: Sequence[Any] = (), top_k: int = 10) -> list[dict]:
    """Items most like the `like` items (filter-embedding cosine), without `exclude` and the `like` items.

    Returns hits `{"index", "score", "filter_score", "rank", **item}`; `score` is the image–image cosine.
    """
    if index.kind != "images":
        raise ValueError("More like this needs an image index; this index holds captions.")
    if not like:
        raise ValueError("More like this needs at least one item to start from (like=[...]).")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    like_rows = [resolve_item(index, item) for item in like]
    left_out = set(like_rows) | {resolve_item(index, item) for item in exclude}
    embeds = index.image_embeds.float()
    query = F.normalize(embeds[torch.tensor(like_rows)].mean(0, keepdim=True), dim=-1)
    want = min(len(index.items), top_k + len(left_out))
    candidates = coarse_topk(query, embeds, want)
    hits = []
    for row, score in zip(candidates.indices[0].tolist(), candidates.scores[0].tolist()):
        if row in left_out:
            continue
        hits.append({**index.items[row], "index": row, "score": float(score), "filter_score": float(score),
                     "rank": len(hits) + 1})
        if len(hits) == top_k:
            break
    return hits


__all__ = ["resolve_item", "search_like"]
