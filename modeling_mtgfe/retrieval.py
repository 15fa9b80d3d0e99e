"""Two-stage MTGFE retrieval: cheap filter embeddings pick candidates, the fusion ITM head re-ranks them.

docs/METHOD.md §5 (ALBEF `Retrieval.py::evaluation`, made cheaper and tie-exact):

1. `encode_images` / `encode_texts` (in `retrieval_features.py`, re-exported here) run every image /
   *distinct* caption once. Image fusion tokens are
   kept (`keep_tokens=True`) so re-ranking never re-runs the vision backbone.
2. `coarse_topk`: cosine of the L2-normalised filter embeddings by one matrix product (chunked so a
   100k gallery never materialises more than `chunk_elements` scores), top-k per query **with the
   whole tie group at the k-th score kept** (docs/METHOD.md §6b).
3. `score_candidates` / `rerank`: every distinct (image, caption) pair among the candidates of both
   directions is fused exactly once (a shared pair cache), in batches grouped by image so each
   image's cross-attention K/V are projected once per call.

Conventions:

* `scores_i2t` is `(N_img, N_txt)`; `scores_t2i` is `(N_txt, N_img)`, the shape
  `mtgfe.evaluation.metrics.retrieval_metrics(scores_t2i=...)` and ALBEF use. Entries outside a query's
  candidates hold `fill_value`, default `-inf`: ALBEF writes `-100`, which is only "low" because ITM
  probabilities are in [0, 1]; `-inf` stays below any `itm+itc` mixture and ties all filtered-out
  entries together, which the tie-aware metrics treat as the unordered tail they are.
* Identical captions (equal token ids after the processor, which pads to a fixed length) are encoded
  and fused once and their scores are copied, so they are bit-identical; a tie is a real tie.
* `k >= gallery size` (or `k=None`) is the exhaustive ranking: every pair is scored once and both
  directions read the same numbers.

Cost accounting (`RerankResult.stats`): `fusion_passes` is the number of distinct pairs fused. With
`keep_ties=True` a query can get more than k candidates (its tie group at the cut), but a tie group of
identical captions maps to a single distinct pair, so duplicated captions add *no* passes; only ties
between different captions/images (rare with float scores, common with -inf/0 from a degenerate
filter) add passes. The bound `k·(N_img + N_txt)` of docs/METHOD.md §5 is then met or beaten because pairs
selected by both directions are scored once.

This file travels as Hub remote code: third-party imports and single-dot siblings only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import features

from .configuration_mtgfe import RETRIEVAL_SCORES
from .retrieval_features import (  # re-exported: step 1 lives there
    ImageFeatures,
    TextFeatures,
    device_and_dtype,
    encode_images,
    encode_texts,
    pixel_values_of,
    progress_bar,
    retrieval_base,
)

logger = logging.getLogger(__name__)

# File endings read as images: the package's one list (folder galleries, the pipeline, the search index and
# the benchmark loaders in `mtgfe.data.annotations` all use it). Every entry is one `load_image` decodes: PIL
# reads PNG/JPEG/BMP/GIF/WebP/JPEG 2000 (its wheels bundle libwebp and OpenJPEG), TIFFs PIL cannot open go
# through tifffile. The order is the benchmark loaders' preference when an annotation's stem exists with
# several endings (TIFF originals first); matching by ending does not depend on it. `.avif` is on the list
# only when this Pillow build decodes AVIF (its wheels bundle libavif since 11.2; the package allows
# Pillow 10), so a folder never lists a file the decoder then refuses, nor skips one it reads.
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".jp2") + (
    (".avif",) if features.check("avif") else ()
)

# Scores per chunk of the chunked torch similarity product (coarse top-k, exhaustive re-rank): 16M float32 =
# 64 MiB. 2**24 is measurably faster for the coarse top-k than 2**22 (2,000 x 50,000 queries x gallery,
# 2 threads: 2.6 s against 3.0-3.4 s) and a few 64 MiB chunks are negligible beside a loaded model.
# `mtgfe.evaluation.metrics.DEFAULT_CHUNK_ELEMENTS` (2**22) is a separate knob on purpose, not a copy: the
# metrics are numpy-only and import no torch (the `rs_recall` evaluate metric and the cards load them), while
# this file is Hub remote code that can import nothing first-party, so no module both can import exists.
DEFAULT_CHUNK_ELEMENTS = 1 << 24
DIRECTIONS = ("i2t", "t2i", "both")
# Fusion scores, from the model config's RETRIEVAL_SCORES (the one definition): scoring candidates
# (`rerank`, `score_candidates`) needs a fusion pass, so "filter" is not one here; query-level search
# (`pipeline_mtgfe.search_texts`) accepts all of RETRIEVAL_SCORES as SEARCH_SCORES.
SCORES = tuple(score for score in RETRIEVAL_SCORES if score != "filter")


@dataclass
class Candidates:
    """Coarse candidates of each query, best filter score first (ties by ascending index).

    indices[q] (`(k_q,)` int64) and scores[q] (`(k_q,)` float32); `k_q >= k` only when a tie group at the
    k-th score was kept, `k_q = min(k, gallery)` otherwise.
    """

    indices: list[torch.Tensor]
    scores: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_pairs(self) -> int:
        return sum(int(ix.numel()) for ix in self.indices)


@dataclass
class RerankResult:
    """Output of `rerank` / `score_candidates`.

    scores_i2t (`(N_img, N_txt)`) / scores_t2i (`(N_txt, N_img)`): final scores at candidates, `fill_value`
        elsewhere; `None` for a direction that was not asked for.
    pair_image, pair_text (`(P,)` int64): the distinct pairs fused (`pair_text` indexes distinct captions).
    pair_itm, pair_filter, pair_score (`(P,)` float32): ITM probability, filter cosine and final score.
    num_distinct: distinct captions; pairs are sorted by the key `image * num_distinct + text`.
    candidates_i2t / candidates_t2i: the coarse candidates (t2i per *distinct* caption).
    stats: counters, see the module docstring.
    """

    scores_i2t: torch.Tensor | None
    scores_t2i: torch.Tensor | None
    pair_image: torch.Tensor
    pair_text: torch.Tensor
    pair_itm: torch.Tensor
    pair_filter: torch.Tensor
    pair_score: torch.Tensor
    num_distinct: int
    candidates_i2t: Candidates | None = None
    candidates_t2i: Candidates | None = None
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- coarse
def coarse_topk(
    query_embeds: torch.Tensor,
    gallery_embeds: torch.Tensor,
    k: int | None,
    keep_ties: bool = True,
    gallery_inverse: torch.Tensor | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Candidates:
    """Top-k gallery rows per query by cosine (embeddings are already L2-normalised).

    Args:
        query_embeds: `(Q, E)`.
        gallery_embeds: `(G, E)`; with `gallery_inverse` `(N,)` the gallery is `gallery_embeds[gallery_inverse]`
            (distinct captions expanded to every input caption) and returned indices are in that space.
            The scores are gathered from the distinct product, so duplicated rows tie bit-exactly.
        k: candidates per query; `None` or `>= N` keeps the whole gallery.
        keep_ties: keep every row whose score equals the k-th score (a tie group is never cut in
            two, so the kept set does not depend on the order of equal scores). Costs extra fusion
            passes only for ties between *different* items (see the module docstring).
        chunk_elements: the scores of at most this many (query, gallery) pairs exist at once.
    """
    if query_embeds.dim() != 2 or gallery_embeds.dim() != 2:
        raise ValueError(
            f"coarse_topk expects 2-d embeddings; got query {tuple(query_embeds.shape)} and gallery "
            f"{tuple(gallery_embeds.shape)}."
        )
    if query_embeds.shape[1] != gallery_embeds.shape[1]:
        raise ValueError(
            f"Query embeddings have width {query_embeds.shape[1]} but the gallery has {gallery_embeds.shape[1]}: "
            "were they made by the same model?"
        )
    size = int(gallery_inverse.shape[0]) if gallery_inverse is not None else int(gallery_embeds.shape[0])
    if size == 0:
        raise ValueError("coarse_topk: the gallery is empty.")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 (or None for all), got {k}.")
    k = size if k is None else min(k, size)
    query_embeds = query_embeds.float()
    gallery_embeds = gallery_embeds.float()
    rows_per_chunk = max(1, chunk_elements // max(size, 1))
    all_indices: list[torch.Tensor] = []
    all_scores: list[torch.Tensor] = []
    for start in range(0, query_embeds.shape[0], rows_per_chunk):
        sims = query_embeds[start : start + rows_per_chunk] @ gallery_embeds.t()
        if gallery_inverse is not None:
            sims = sims[:, gallery_inverse]
        if k == size:
            order = _sort_desc(sims)
            for row in range(sims.shape[0]):
                all_indices.append(order[row])
                all_scores.append(sims[row, order[row]])
            continue
        top = torch.topk(sims, k, dim=1, sorted=True)
        keep = sims >= top.values[:, -1:] if keep_ties else None
        for row in range(sims.shape[0]):
            if keep_ties:
                idx = keep[row].nonzero().squeeze(1)
            else:
                idx = torch.sort(top.indices[row]).values  # ascending index, then a stable sort by score
            scores = sims[row, idx]
            order = torch.sort(scores, descending=True, stable=True).indices
            all_indices.append(idx[order])
            all_scores.append(scores[order])
    return Candidates(indices=all_indices, scores=all_scores)


def _sort_desc(sims: torch.Tensor) -> torch.Tensor:
    """Indices by descending score, ascending index among equal scores (deterministic)."""
    return torch.sort(sims, dim=1, descending=True, stable=True).indices


# ----------------------------------------------------------------------------------------------- fine
def _pair_keys(image: torch.Tensor, text: torch.Tensor, num_texts: int) -> torch.Tensor:
    return image * num_texts + text


@torch.no_grad()
def score_pairs(
    model,
    pair_image: torch.Tensor,
    pair_text: torch.Tensor,
    text_feats: TextFeatures,
    image_tokens: Any = None,
    encode_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    stats: dict | None = None,
    trim_batches: bool = True,
) -> torch.Tensor:
    """ITM match probabilities of distinct pairs `(pair_image[p], pair_text[p])` (text = distinct row).

    Pairs are processed grouped by image: a group of whole images holding about `batch_size` pairs gets
    its cross-attention K/V projected once, then its pairs are fused in chunks of `batch_size`. A group
    of a single image (i2t, or any image with many candidates) broadcasts its K/V without copying.

    `image_tokens[rows]` gives tokens of the group (cached), or `encode_fn(rows)` re-encodes them.

    `trim_batches`: within a group, pairs are ordered by caption length and each fuse batch is cut to its
    longest caption. Fusion cost is linear in the text length and RS captions are mostly far shorter
    than the longest one of a test set, so this is the largest single saving in evaluation. The price is
    float noise (~1e-7) between a pair scored in batches of different widths. Such noise exists anyway:
    MKL may round one product differently for other batch shapes or memory alignment, so the same pair
    scored in two calls can differ in the last bits. What is exact by construction is that every
    distinct pair is scored once per call, so equal captions get bit-identical scores.
    """
    if image_tokens is None and encode_fn is None:
        raise ValueError("score_pairs needs cached image tokens or an encode_fn to re-encode candidate images.")
    if text_feats.states is None:
        raise ValueError("These TextFeatures were encoded with keep_states=False: no text states to fuse.")
    base = retrieval_base(model)
    device, dtype = device_and_dtype(base)
    stats = {} if stats is None else stats
    num_pairs = int(pair_image.numel())
    out = torch.empty(num_pairs, dtype=torch.float32)
    if num_pairs == 0:
        return out
    order = torch.sort(_pair_keys(pair_image, pair_text, text_feats.num_distinct), stable=True).indices
    images, texts = pair_image[order], pair_text[order]
    group_images, counts = torch.unique_consecutive(images, return_counts=True)
    ends = torch.cumsum(counts, 0).tolist()
    groups, first, pair_start = [], 0, 0
    for g, end in enumerate(ends):  # close a group once it holds >= batch_size pairs
        if end - pair_start >= batch_size or g == len(ends) - 1:
            groups.append((first, g + 1, pair_start, end))
            first, pair_start = g + 1, end
    states, masks = text_feats.states, text_feats.attention_mask
    lengths = masks.sum(1)
    positions = torch.arange(masks.shape[1])
    right_padded = bool(((positions[None] < lengths[:, None]).to(masks.dtype) == masks).all())
    trim = trim_batches and right_padded
    if trim:  # inside each image group, order pairs by caption length so each fuse batch is cut short
        for _, _, p0, p1 in groups:
            perm = torch.sort(lengths[texts[p0:p1]], stable=True).indices + p0
            images[p0:p1], texts[p0:p1], order[p0:p1] = images[perm], texts[perm], order[perm]
    bar = progress_bar(groups, progress, desc="re-ranking", unit="group")
    for g0, g1, p0, p1 in bar:
        rows = group_images[g0:g1]
        if image_tokens is not None:
            tokens = image_tokens[rows]
        else:
            tokens = encode_fn(rows)
            stats["images_encoded"] = stats.get("images_encoded", 0) + int(rows.numel())
        key_values = base.image_key_values(torch.as_tensor(tokens).to(device=device, dtype=dtype))
        stats["kv_computed"] = stats.get("kv_computed", 0) + int(rows.numel())
        local = torch.searchsorted(rows, images[p0:p1])
        for s in range(p0, p1, batch_size):
            e = min(s + batch_size, p1)
            text_rows = texts[s:e]
            image_index = None if rows.numel() == 1 else local[s - p0 : e - p0].to(device)
            width = int(lengths[text_rows].max()) if trim else states.shape[1]
            scores = base.compute_itm_scores(
                None,
                states[text_rows, :width].to(device=device, dtype=dtype),
                masks[text_rows, :width].to(device),
                image_index=image_index,
                image_key_values=key_values,
            )
            out[order[s:e]] = scores.cpu()
    stats["fusion_passes"] = stats.get("fusion_passes", 0) + num_pairs
    return out


def _check_direction(direction: str, score: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}.")


@torch.no_grad()
def score_candidates(
    model,
    image_feats: ImageFeatures,
    text_feats: TextFeatures,
    candidates_i2t: Candidates | None = None,
    candidates_t2i: Candidates | None = None,
    score: str = "itm",
    alpha: float = 0.0,
    batch_size: int = 256,
    fill_value: float = float("-inf"),
    cache_tokens: bool = True,
    images: Sequence[Any] | None = None,
    processor=None,
    progress: bool = False,
    build_matrices: bool = True,
    trim_batches: bool = True,
) -> RerankResult:
    """Fuse the union of the given candidates once per distinct pair and fill the score matrices.

    `candidates_i2t` has one entry per image with indices into the *input* captions;
    `candidates_t2i` one entry per *distinct* caption with image indices. Callers with their own
    coarse stage (e.g. FAISS in `GalleryIndex`) come in here. Final score: ITM probability, plus
    `alpha * filter cosine` for `score="itm+itc"` (BLIP-style mixture; `alpha` tuned on val).
    """
    _check_direction("both", score)
    num_images, num_inputs, num_distinct = len(image_feats), len(text_feats), text_feats.num_distinct
    inverse = text_feats.inverse
    parts_image, parts_text = [], []
    requested = 0
    if candidates_i2t is not None:
        if len(candidates_i2t) != num_images:
            raise ValueError(f"candidates_i2t has {len(candidates_i2t)} rows for {num_images} images.")
        for i, idx in enumerate(candidates_i2t.indices):
            parts_image.append(torch.full((idx.numel(),), i, dtype=torch.long))
            parts_text.append(inverse[idx])
            requested += idx.numel()
    if candidates_t2i is not None:
        if len(candidates_t2i) != num_distinct:
            raise ValueError(f"candidates_t2i has {len(candidates_t2i)} rows for {num_distinct} distinct captions.")
        for t, idx in enumerate(candidates_t2i.indices):
            parts_image.append(idx.long())
            parts_text.append(torch.full((idx.numel(),), t, dtype=torch.long))
            requested += idx.numel()
    if not parts_image:
        raise ValueError("score_candidates needs candidates_i2t and/or candidates_t2i.")
    keys = torch.unique(_pair_keys(torch.cat(parts_image), torch.cat(parts_text), num_distinct))
    pair_image, pair_text = keys // num_distinct, keys % num_distinct

    stats: dict[str, Any] = {"pairs_requested": int(requested), "images": num_images, "texts": num_inputs,
                             "distinct_texts": num_distinct, "kv_computed": 0, "images_encoded": 0}
    tokens = image_feats.tokens if cache_tokens else None
    encode_fn = None
    if tokens is None:
        if images is None or processor is None:
            raise ValueError(
                "Re-ranking without cached image tokens needs `images` (the gallery sources) and `processor` "
                "to re-encode the candidate images; or encode the gallery with keep_tokens=True."
            )
        base = retrieval_base(model)
        device, dtype = device_and_dtype(base)

        def encode_fn(rows: torch.Tensor) -> torch.Tensor:
            pixel_values = pixel_values_of(processor, [images[int(r)] for r in rows]).to(device=device, dtype=dtype)
            return base.get_image_retrieval_features(pixel_values).image_tokens

    pair_itm = score_pairs(model, pair_image, pair_text, text_feats, image_tokens=tokens, encode_fn=encode_fn,
                           batch_size=batch_size, progress=progress, stats=stats, trim_batches=trim_batches)
    pair_filter = (image_feats.embeds[pair_image].float() * text_feats.embeds[pair_text].float()).sum(-1)
    final = pair_itm + alpha * pair_filter if score == "itm+itc" else pair_itm
    stats["pairs_scored"] = int(keys.numel())

    scores_i2t = scores_t2i = None
    if build_matrices and candidates_i2t is not None:
        scores_i2t = torch.full((num_images, num_inputs), fill_value, dtype=torch.float32)
        for i, idx in enumerate(candidates_i2t.indices):
            pos = torch.searchsorted(keys, _pair_keys(torch.full_like(idx, i), inverse[idx], num_distinct))
            scores_i2t[i, idx] = final[pos]
    if build_matrices and candidates_t2i is not None:
        distinct = torch.full((num_distinct, num_images), fill_value, dtype=torch.float32)
        for t, idx in enumerate(candidates_t2i.indices):
            pos = torch.searchsorted(keys, _pair_keys(idx.long(), torch.full_like(idx, t), num_distinct))
            distinct[t, idx] = final[pos]
        scores_t2i = distinct[inverse]
    return RerankResult(scores_i2t, scores_t2i, pair_image, pair_text, pair_itm, pair_filter, final,
                        num_distinct, candidates_i2t, candidates_t2i, stats)


@torch.no_grad()
def rerank(
    model,
    image_feats: ImageFeatures,
    text_feats: TextFeatures,
    k: int | None = 32,
    direction: str = "both",
    score: str = "itm",
    alpha: float = 0.0,
    batch_size: int = 256,
    keep_ties: bool = True,
    fill_value: float = float("-inf"),
    cache_tokens: bool = True,
    images: Sequence[Any] | None = None,
    processor=None,
    progress: bool = False,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    trim_batches: bool = True,
) -> RerankResult:
    """Coarse top-k by filter cosine, then ITM re-ranking of the candidates (docs/METHOD.md §5).

    Args:
        k: candidates per query; `None` or `>=` the other side's size scores every pair (exhaustive).
        direction: `"i2t"` (each image ranks captions), `"t2i"` (each caption ranks images) or `"both"`;
            both directions share one pair cache.
        score: `"itm"` (ALBEF: ITM probability alone) or `"itm+itc"` (`itm + alpha * cosine`).
        cache_tokens: use `image_feats.tokens` (fast: only K/V projection per candidate image); with
            `False`, candidate images are re-encoded from `images` with `processor` (memory-lean, slow).
        fill_value: score outside the candidates (ALBEF uses -100; see the module docstring).
        trim_batches: cut each fusion batch to its longest caption (see `score_pairs`); `False` keeps the full
            (set-wide) caption width, as `compute_itm_scores` on the same features would, at up to ~2× the cost.

    Returns:
        `RerankResult`; `stats["fusion_passes"]` counts distinct pairs fused.
    """
    _check_direction(direction, score)
    if len(image_feats) == 0 or len(text_feats) == 0:
        raise ValueError(f"rerank needs images and texts; got {len(image_feats)} images and {len(text_feats)} texts.")
    cand_i2t = cand_t2i = None
    if direction in ("i2t", "both"):
        cand_i2t = coarse_topk(image_feats.embeds, text_feats.embeds, k, keep_ties=keep_ties,
                               gallery_inverse=text_feats.inverse, chunk_elements=chunk_elements)
    if direction in ("t2i", "both"):
        cand_t2i = coarse_topk(text_feats.embeds, image_feats.embeds, k, keep_ties=keep_ties,
                               chunk_elements=chunk_elements)
    result = score_candidates(model, image_feats, text_feats, cand_i2t, cand_t2i, score=score, alpha=alpha,
                              batch_size=batch_size, fill_value=fill_value, cache_tokens=cache_tokens,
                              images=images, processor=processor, progress=progress, trim_batches=trim_batches)
    result.stats["k"] = k
    full = len(image_feats) * text_feats.num_distinct
    result.stats["exhaustive_pairs"] = full
    result.stats["speedup_in_passes"] = full / max(1, result.stats["fusion_passes"])
    logger.info("rerank k=%s %s: %d distinct pairs fused (exhaustive: %d)", k, direction,
                result.stats["fusion_passes"], full)
    return result


def exhaustive_itm(model, image_feats: ImageFeatures, text_feats: TextFeatures, **kwargs) -> RerankResult:
    """Every (image, distinct caption) pair scored once: the "no filter" baseline (docs/METHOD.md §5 step 5)."""
    return rerank(model, image_feats, text_feats, k=None, **kwargs)


def rank_candidates(
    result: RerankResult, query: int, direction: str = "t2i", text_feats: TextFeatures | None = None,
    with_itm: bool = False,
) -> list[tuple]:
    """`[(gallery index, final score, filter score), ...]` of one query's candidates, best first; with
    `with_itm=True` each tuple ends with the pair's ITM score too (a mixed final score hides it).

    Order: final score, then filter score, then ascending index, so equal ITM scores (common with an
    untrained head) fall back to the filter instead of to file order. For t2i, `query` is an input
    caption index when `text_feats` is given (mapped to its distinct row), else a distinct row; i2t
    returns input-caption indices.
    """
    if direction == "t2i":
        if result.candidates_t2i is None:
            raise ValueError("This RerankResult has no t2i candidates.")
        row = int(text_feats.inverse[query]) if text_feats is not None else int(query)
        gallery = result.candidates_t2i.indices[row]
        keys = _pair_keys(gallery.long(), torch.full_like(gallery, row), result.num_distinct)
    elif direction == "i2t":
        if result.candidates_i2t is None:
            raise ValueError("This RerankResult has no i2t candidates.")
        if text_feats is None:
            raise ValueError("i2t ranking needs text_feats to map captions to distinct rows.")
        gallery = result.candidates_i2t.indices[query]
        keys = _pair_keys(torch.full_like(gallery, int(query)), text_feats.inverse[gallery], result.num_distinct)
    else:
        raise ValueError(f"direction must be 'i2t' or 't2i', got {direction!r}.")
    all_keys = _pair_keys(result.pair_image, result.pair_text, result.num_distinct)
    pos = torch.searchsorted(all_keys, keys)
    columns = [gallery.tolist(), result.pair_score[pos].tolist(), result.pair_filter[pos].tolist()]
    if with_itm:
        columns.append(result.pair_itm[pos].tolist())
    items = list(zip(*columns))
    items.sort(key=lambda x: (-x[1], -x[2], x[0]))
    return items




__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "IMAGE_EXTENSIONS",
    "SCORES",
    "Candidates",
    "ImageFeatures",
    "RerankResult",
    "TextFeatures",
    "coarse_topk",
    "encode_images",
    "encode_texts",
    "exhaustive_itm",
    "progress_bar",
    "rank_candidates",
    "rerank",
    "score_candidates",
    "score_pairs",
]
