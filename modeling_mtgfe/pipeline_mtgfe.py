"""`rs-retrieval` pipeline: type a description, get the matching aerial images (or the reverse).

    pipe = pipeline("rs-retrieval", model=model, processor=processor)
    pipe("two white planes parked near the terminal", gallery="archive/", top_k=5, k=32)
    → [{"image": "archive/airport_03.tif", "score": 0.91, "filter_score": 0.42, "itm_score": 0.49, "rank": 1,
        "index": 17}, ...]
    pipe(query, gallery="archive/", return_maps=True)  # + "map" (rows, cols), "map_words", "map_layer" per hit

`score` ranks (ITM, or ITM + alpha * filter cosine); `filter_score` is the filter cosine and `itm_score` the ITM
head's softmax for "match" (uncalibrated: a ranking score in [0, 1], not a probability of relevance).

A gallery is a folder (recursive), a list of image paths / PIL images, or a prebuilt index (anything
with `.image_embeds`, `.image_tokens`, `.items`, e.g. `mtgfe.search.gallery_index.GalleryIndex`).
Folders and lists are encoded on first use and cached for the next call with the same gallery; build
a `GalleryIndex` for archives that should not be re-encoded per process.

Image queries (a path or PIL image) rank `candidates=[captions]` or a text index (`.text_features`).

The query-level search the pipeline runs, `search_texts` / `search_images` (encode the queries, coarse
top-k, re-rank with the ITM head, hits as dicts; `k` / `score` / `alpha` from the model config unless
given), lives here too, and `mtgfe.search.GalleryIndex` calls the same functions: `retrieval.py` is the
scoring core (features, coarse top-k, pair scoring, `rerank` for evaluation), this file the search built
on it. (They were one 790-line file; both travel as remote code, so the split adds no shipped file.)

This file travels as Hub remote code (a folder saved with `save_for_pipeline` loads with
`pipeline(model=folder, trust_remote_code=True)`), so it imports only third-party packages and
single-dot siblings; the gallery index module is not shipped and is only duck-typed here.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, PngImagePlugin
from transformers import AutoProcessor, Pipeline

from .configuration_mtgfe import RETRIEVAL_SCORES, resolve_retrieval_settings
from .grounding import word_token_mask
from .retrieval import (
    IMAGE_EXTENSIONS,
    Candidates,
    ImageFeatures,
    TextFeatures,
    coarse_topk,
    device_and_dtype,
    encode_images,
    encode_texts,
    rank_candidates,
    retrieval_base,
    score_candidates,
)

logger = logging.getLogger(__name__)

TASK = "rs-retrieval"
SEARCH_SCORES = RETRIEVAL_SCORES  # every way the model config names to rank a shortlist, "filter" included


# ----------------------------------------------------------------------------------------------- query-level search
def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def resolve_search_args(model, k: int | None, top_k: int, score: str | None, alpha: float | None,
                        batch_size: int | None = None) -> tuple[int, str, float]:
    """`(k, score, alpha)` resolved from the model config (`resolve_retrieval_settings`, which also checks
    them) and the rest of a search's arguments checked: before any model work, once per entry point.

    `top_k` must be a positive integer no larger than `k`; `batch_size` (when given) a positive integer.
    """
    k, score, alpha = resolve_retrieval_settings(getattr(model, "config", None), k, score, alpha)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    _check_positive_int("top_k", top_k)
    if k < top_k:
        raise ValueError(
            f"k={k} is smaller than top_k={top_k}: the re-ranker can only return the k filter candidates it "
            "scores. Raise k (or lower top_k)."
        )
    return k, score, alpha


def _hits(ranked: list[tuple], top_k: int) -> list[dict[str, Any]]:
    """Hit dicts from `rank_candidates` tuples; a 4th entry (fused hits) becomes `"itm_score"`: the ITM head's
    softmax for class 1, an uncalibrated score in [0, 1], shown apart from the filter cosine because the
    ranking score may mix the two."""
    hits = []
    for rank, entry in enumerate(ranked[:top_k], start=1):
        hit = {"index": entry[0], "score": float(entry[1]), "filter_score": float(entry[2]), "rank": rank}
        if len(entry) > 3:
            hit["itm_score"] = float(entry[3])
        hits.append(hit)
    return hits


def _filter_only(cands: Candidates, top_k: int) -> list[list[dict[str, Any]]]:
    return [
        _hits(list(zip(ix.tolist(), sc.tolist(), sc.tolist())), top_k) for ix, sc in zip(cands.indices, cands.scores)
    ]


@torch.no_grad()
def search_texts(
    model,
    processor,
    queries: Sequence[str],
    image_feats: ImageFeatures,
    k: int | None = None,
    top_k: int = 10,
    score: str | None = None,
    alpha: float | None = None,
    batch_size: int = 256,
    coarse_fn: Callable[[torch.Tensor, int], Candidates] | None = None,
    cache_tokens: bool = True,
    images: Sequence[Any] | None = None,
) -> list[list[dict[str, Any]]]:
    """Text→image search: per query, the `top_k` best gallery rows as `{"index", "score", "filter_score", "rank"}`.

    `score="filter"` ranks by the filter cosine alone (no fusion); `"itm"` / `"itm+itc"` re-rank the `k`
    filter candidates (whole tie groups) with the ITM head (`k >=` gallery size: every image). `k`, `score`
    and `alpha` left `None` come from the model config (`resolve_retrieval_settings`). `coarse_fn(query_embeds,
    k)` replaces the exact torch coarse stage (e.g. FAISS). Identical queries are encoded and scored once.
    """
    k, score, alpha = resolve_search_args(model, k, top_k, score, alpha, batch_size)
    if len(image_feats) == 0:
        raise ValueError("The gallery is empty: nothing to search.")
    text_feats = encode_texts(model, processor, queries, keep_states=score != "filter")
    want = k if score != "filter" else top_k
    coarse = coarse_fn or (lambda q, kk: coarse_topk(q, image_feats.embeds, kk))
    cands = coarse(text_feats.embeds, want)
    if score == "filter":
        per_distinct = _filter_only(cands, top_k)
        return [per_distinct[int(row)] for row in text_feats.inverse]
    result = score_candidates(model, image_feats, text_feats, candidates_t2i=cands, score="itm+itc" if score == "itm+itc" else "itm",
                              alpha=alpha, batch_size=batch_size, cache_tokens=cache_tokens,
                              images=images, processor=processor, build_matrices=False)
    per_distinct = [_hits(rank_candidates(result, row, "t2i", with_itm=True), top_k)
                    for row in range(text_feats.num_distinct)]
    return [per_distinct[int(row)] for row in text_feats.inverse]


@torch.no_grad()
def search_images(
    model,
    processor,
    query_images: Sequence[Any],
    text_feats: TextFeatures,
    k: int | None = None,
    top_k: int = 10,
    score: str | None = None,
    alpha: float | None = None,
    batch_size: int = 256,
) -> list[list[dict[str, Any]]]:
    """Image→text search against encoded candidate captions; `"index"` is an input-caption index.

    `k`, `score` and `alpha` left `None` come from the model config, as in `search_texts`.
    """
    k, score, alpha = resolve_search_args(model, k, top_k, score, alpha, batch_size)
    if len(text_feats) == 0:
        raise ValueError("There are no candidate texts to search.")
    image_feats = encode_images(model, processor, query_images, keep_tokens=score != "filter", progress=False)
    want = k if score != "filter" else top_k
    cands = coarse_topk(image_feats.embeds, text_feats.embeds, want, gallery_inverse=text_feats.inverse)
    if score == "filter":
        return _filter_only(cands, top_k)
    result = score_candidates(model, image_feats, text_feats, candidates_i2t=cands, score="itm+itc" if score == "itm+itc" else "itm",
                              alpha=alpha, batch_size=batch_size, build_matrices=False)
    return [_hits(rank_candidates(result, i, "i2t", text_feats, with_itm=True), top_k) for i in range(len(image_feats))]


# ----------------------------------------------------------------------------------------------- grounding maps
def _words_of(tokenizer, input_ids: torch.Tensor, word_mask: torch.Tensor) -> list[tuple[str, list[int]]]:
    """`[(word, token positions), ...]` of the word tokens, WordPiece continuations ("##ing") joined to the word
    before them, so a map can be named by the words a person typed rather than by sub-word pieces."""
    pieces = tokenizer.convert_ids_to_tokens(input_ids.tolist())
    words: list[tuple[str, list[int]]] = []
    for position, piece in enumerate(pieces):
        if not bool(word_mask[position]):
            continue
        if piece.startswith("##") and words:
            words[-1] = (words[-1][0] + piece[2:], words[-1][1] + [position])
        else:
            words.append((piece, [position]))
    return words


@torch.no_grad()
def grounding_maps(model, processor, texts: Sequence[str], image_tokens: torch.Tensor, layer: int | None = None,
                   top_words: int = 3) -> list[dict[str, Any]]:
    """Grounding map of each (text, image) pair (`MTGFEModel.ground`): one text against every row of
    `image_tokens` (a text query's hits), one image against every text (an image query's hits), or pairs.

    Returns per pair `{"map": (rows, cols) float32 tensor (Grad-CAM of the whole query, >= 0, unnormalised),
    "map_words": [(word, share), ...] (the `top_words` words carrying most of the map's mass, share in [0, 1]),
    "map_layer": int}`. `image_tokens` are stored fusion tokens (a gallery index's): no image is re-encoded.
    """
    if isinstance(texts, str):
        raise TypeError("grounding_maps expects a list of strings; wrap a single query in a list.")
    texts = list(texts)
    base = retrieval_base(model)
    device, dtype = device_and_dtype(base)
    encoded = processor(text=texts, return_tensors="pt")
    ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    out = base.ground(image_tokens.to(device=device, dtype=dtype), ids, mask, layer=layer, per_token=True)
    num_pairs = out.query_maps.shape[0]
    text_rows = [0] * num_pairs if len(texts) == 1 else list(range(num_pairs))
    word_rows = word_token_mask(mask.cpu())  # the words, also where the query map is the [CLS] row
    words_of: dict[int, list[tuple[str, list[int]]]] = {}
    results = []
    for pair in range(num_pairs):
        row = text_rows[pair]
        if row not in words_of:
            words_of[row] = _words_of(processor.tokenizer, ids[row].cpu(), word_rows[row])
        mass = out.token_maps[pair].flatten(1).sum(1).cpu()
        shares = [(word, float(mass[positions].sum())) for word, positions in words_of[row]]
        total = sum(share for _, share in shares)
        ranked = sorted(((word, share / total if total > 0 else 0.0) for word, share in shares), key=lambda x: -x[1])
        results.append({"map": out.query_maps[pair].cpu(), "map_words": ranked[:top_words], "map_layer": out.layer})
    return results


# ----------------------------------------------------------------------------------------------- pipeline


@dataclass
class EncodedGallery:
    """An in-memory gallery (duck-compatible with `GalleryIndex`): embeddings, tokens and the original items."""

    image_embeds: torch.Tensor
    image_tokens: Any
    items: list[dict] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)  # what the user passed, returned as "image"

    def __len__(self) -> int:
        return len(self.items)


def _list_images(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
            os.path.join(dirpath, n) for n in filenames if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found, key=lambda p: os.path.relpath(p, folder).replace(os.sep, "/"))


QUERY_TYPES = ("text", "image")

# Pixel budget of the header pre-check, the same rule as `image_decoding.MAX_IMAGE_PIXELS` (64 Mi pixels,
# overridable with $MTGFE_MAX_IMAGE_PIXELS); repeated here because remote code cannot import `mtgfe`.
_MAX_IMAGE_PIXELS = 8192 * 8192
_MAX_BAD_FILES_LISTED = 10


def _is_image_path(value: Any, query_type: str | None = None) -> bool:
    """Whether a query is an image path. A `str` is one only when it names an existing file with an image
    ending and `query_type` is not "text" (a caption such as "a photo.png" stays text); `query_type="image"`
    forces it; an `os.PathLike` is a path."""
    if query_type == "text":
        return False
    if isinstance(value, os.PathLike) or query_type == "image":
        return True
    return isinstance(value, str) and value.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(value)


def _pixel_budget() -> int:
    env = os.environ.get("MTGFE_MAX_IMAGE_PIXELS", "").replace("_", "")
    return int(env) if env.isdigit() and int(env) > 0 else _MAX_IMAGE_PIXELS


def _png_text_problem(path: str) -> str | None:
    """Why a PNG's text chunks would make decoding fail, from a walk over every chunk, or None.

    PIL reads text chunks before IDAT in `Image.open` but those after IDAT only in `load()`, so a
    compressed iTXt / zTXt "bomb" placed after the pixels passed the header check and failed later, while
    encoding. The walk reads each chunk's 8-byte head and seeks past its data; only compressed text
    chunks are inflated, and never beyond PIL's own per-chunk limit (`PngImagePlugin.MAX_TEXT_CHUNK`) + 1
    byte, so the check costs at most that much memory. Total text is held to PIL's `MAX_TEXT_MEMORY`.
    """
    limit, total_limit, total = PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY, 0
    with open(path, "rb") as handle:
        if handle.read(8) != b"\x89PNG\r\n\x1a\n":
            return None  # not a PNG (or a PNG with another ending): PIL's own checks apply
        while True:
            head = handle.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"zTXt", b"iTXt", b"tEXt"):
                if length > total_limit:
                    return f"a {length:,}-byte {kind.decode()} text chunk, over PIL's text limit"
                data = handle.read(length)
                size = length
                if kind != b"tEXt":
                    key_end = data.find(b"\x00")
                    compressed = kind == b"zTXt" or (key_end >= 0 and data[key_end + 1 : key_end + 2] == b"\x01")
                    if compressed:
                        if kind == b"zTXt":  # keyword \0, method, stream
                            start = key_end + 2
                        else:  # keyword \0, flag, method, language \0, translated keyword \0, stream
                            start = data.find(b"\x00", data.find(b"\x00", key_end + 3) + 1) + 1
                        try:
                            inflated = zlib.decompressobj().decompress(data[start:], limit + 1)
                        except zlib.error:
                            inflated = b""  # a corrupt stream is PIL's to report (it skips or refuses it)
                        size = len(inflated)
                        if size > limit:
                            return (f"a compressed {kind.decode()} text chunk inflating past PIL's "
                                    f"{limit:,}-byte limit (a decompression bomb)")
                total += size
                if total > total_limit:
                    return f"text chunks over PIL's {total_limit:,}-byte text memory limit"
                handle.seek(4, os.SEEK_CUR)  # CRC
            else:
                if kind == b"IEND":
                    return None
                handle.seek(length + 4, os.SEEK_CUR)


def _header_problem(path: str, budget: int) -> str | None:
    """Why `path` cannot be decoded, from its header alone (nothing decoded), or None when it looks fine."""
    if not os.path.isfile(path):
        return "not found"
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return f"over the pixel budget of {budget:,} pixels"
    except (OSError, ValueError, SyntaxError) as error:
        if path.lower().endswith((".tif", ".tiff")):  # multi-band / 16-bit TIFFs PIL refuses: tifffile reads them
            try:
                import tifffile

                with tifffile.TiffFile(path) as tif:
                    shape = tif.pages[0].shape
                width, height = int(shape[1]), int(shape[0])
            except Exception as tiff_error:  # noqa: BLE001 - any failure means "not decodable"
                return f"not a readable image ({tiff_error})"
        else:
            return f"not a readable image ({error})"
    if width * height > budget:
        return f"{width}x{height} pixels, over the pixel budget of {budget:,} pixels"
    try:
        return _png_text_problem(path)
    except OSError as error:
        return f"not a readable image ({error})"


def is_blank_query(text: str) -> bool:
    """Whether a text query holds nothing to read: empty, spaces, or only control characters ("\x00"),
    which the tokenizer would turn into an empty sequence scored like any other."""
    return not "".join(ch for ch in text if ch.isprintable()).strip()


def check_gallery_files(paths: Sequence[Any], what: str = "gallery image(s)", outcome: str = "Nothing was encoded.") -> None:
    """Header-check every gallery path before any encoding; one `ValueError` names all bad files (first 10).

    Existence, a readable image header and the pixel budget: the cheap part of decoding, so a bad file at
    position 40 fails before 5 batches were encoded for nothing. `what` / `outcome` word the message for
    other callers (the trainer checks its training images the same way before building the model).
    """
    budget = _pixel_budget()
    bad = []
    for i, source in enumerate(paths):
        if isinstance(source, (str, os.PathLike)):
            problem = _header_problem(os.fspath(source), budget)
            if problem:
                bad.append(f"{i}: {os.fspath(source)!r} ({problem})")
    if bad:
        listed = "; ".join(bad[:_MAX_BAD_FILES_LISTED])
        more = f" and {len(bad) - _MAX_BAD_FILES_LISTED} more" if len(bad) > _MAX_BAD_FILES_LISTED else ""
        raise ValueError(f"{len(bad)} {what} cannot be used: {listed}{more}. {outcome}")


def _file_key(path: str) -> tuple:
    try:
        stat = os.stat(path)
        return (path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (path, None, None)


class MTGFERetrievalPipeline(Pipeline):
    """Two-stage remote-sensing retrieval: filter top-k by cosine, re-rank with the ITM head.

    Call arguments (per call or at construction):
        gallery: folder / list of images / index, for text queries.
        candidates: list of captions (or a text index via `gallery=`), for image queries.
        top_k (`int`, 5): results per query. k (`int`, `model.config.retrieval_k`): filter candidates
            re-ranked (`k >= top_k`).
        score (`str`, `model.config.retrieval_score`): "itm+itc", "itm" or "filter" (no fusion).
        alpha (`float`, `model.config.retrieval_alpha`, else 1.0): weight of the filter cosine in "itm+itc".
        fusion_batch_size (`int`, 256): pairs per fusion forward. image_batch_size (`int`, 32): gallery encoding.
        query_type (`str`, None): "text" or "image" makes the query kind explicit; by default a string is an
            image only when it is an existing file with an image ending ("a photo.png" stays text).
        return_maps (`bool`, False): add each hit's grounding map (`grounding_maps`: `"map"` (rows, cols) tensor
            over the image grid, `"map_words"`, `"map_layer"`), from the stored tokens; for image queries the
            map lies on the query image. map_layer (`int`, None): the fusion layer (default: the model's rule).

    Errors come before any work: bad arguments (NaN / negative alpha, k < 1, ...), a persisted index built
    by another model (`IndexMismatchError`), and gallery files that are missing, unreadable or over the
    pixel budget (one error naming every bad file, from the headers alone).

    A list of queries is one batched call and returns one result list per query.
    """

    _load_processor = None  # optional at load time; __init__ falls back to the model folder
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            self.processor = self._fallback_processor()
            self.tokenizer = getattr(self.processor, "tokenizer", None)
            self.image_processor = getattr(self.processor, "image_processor", None)
        self._gallery_cache: tuple[Any, EncodedGallery] | None = None

    def _fallback_processor(self):
        """Load the processor saved beside the model (local folder or Hub repo id); a pipeline cannot run without one.

        transformers' pipeline factory swallows the processor's load error, so it is retried here to name the cause.
        """
        name = str(getattr(self.model, "name_or_path", "") or "")
        is_dir = bool(name) and os.path.isdir(name)
        has_files = is_dir and any(
            os.path.isfile(os.path.join(name, f)) for f in ("processor_config.json", "tokenizer_config.json")
        )
        is_repo_id = bool(name) and not os.path.exists(name)  # a Hub repo id (or a cache-only snapshot)
        if has_files or is_repo_id:
            # A model class from remote code means the user already trusted this repo's code.
            kwargs: dict[str, Any] = {"trust_remote_code": type(self.model).__module__.startswith("transformers_modules")}
            revision = getattr(self.model.config, "_commit_hash", None) if is_repo_id else None
            if revision:
                kwargs["revision"] = revision  # the snapshot the model came from, not whatever `main` is now
            where = f"{name!r}" + (f" (revision {revision})" if revision else "")
            try:
                return AutoProcessor.from_pretrained(name, **kwargs)
            except (OSError, ValueError, TypeError, KeyError, ImportError) as error:
                raise ValueError(
                    f"The rs-retrieval pipeline could not load the processor saved with the model at {where}: {error}. "
                    "Pass processor=MTGFEProcessor(...) explicitly."
                ) from error
        raise ValueError(
            "The rs-retrieval pipeline needs an MTGFEProcessor (image processor + tokenizer): pass "
            "pipeline('rs-retrieval', model=model, processor=processor), or load the model from a folder that holds "
            f"the processor files (save_for_pipeline writes them). The model's name_or_path is {name or '<empty>'!r}."
        )

    # ------------------------------------------------------------------ parameters
    def _sanitize_parameters(
        self,
        gallery=None,
        candidates=None,
        top_k=None,
        k=None,
        score=None,
        alpha=None,
        fusion_batch_size=None,
        image_batch_size=None,
        query_type=None,
        return_maps=None,
        map_layer=None,
        **unused,
    ):
        if unused:
            raise TypeError(f"Unknown rs-retrieval argument(s): {sorted(unused)}.")
        if return_maps is not None and not isinstance(return_maps, bool):
            raise ValueError(f"return_maps must be True or False, got {return_maps!r}.")
        if map_layer is not None and (isinstance(map_layer, bool) or not isinstance(map_layer, int)):
            raise ValueError(f"map_layer must be a fusion layer index (int), got {map_layer!r}.")
        if query_type is not None and query_type not in QUERY_TYPES:
            raise ValueError(f"query_type must be 'text', 'image' or None (guess), got {query_type!r}.")
        for name, value in (("fusion_batch_size", fusion_batch_size), ("image_batch_size", image_batch_size)):
            if value is not None:
                _check_positive_int(name, value)
        pre, fwd, post = {}, {}, {}
        for name, value, target in (
            ("gallery", gallery, pre), ("candidates", candidates, pre), ("image_batch_size", image_batch_size, pre),
            ("query_type", query_type, pre),
            ("top_k", top_k, fwd), ("k", k, fwd), ("score", score, fwd), ("alpha", alpha, fwd),
            ("fusion_batch_size", fusion_batch_size, fwd), ("return_maps", return_maps, fwd), ("map_layer", map_layer, fwd),
        ):
            if value is not None:
                target[name] = value
        return pre, fwd, post

    def __call__(self, inputs=None, **kwargs):
        """Search; a single query gives a list of hits, a list of queries a list of lists."""
        pre, fwd, post = self._sanitize_parameters(**kwargs)
        pre = {**self._preprocess_params, **pre}
        fwd = {**self._forward_params, **fwd}
        post = {**self._postprocess_params, **post}
        single = not isinstance(inputs, (list, tuple))
        queries = [inputs] if single else list(inputs)
        # Defaults from the model config, resolved and checked once here so invalid values fail before any encoding.
        fwd["k"], fwd["score"], fwd["alpha"] = resolve_search_args(
            self.model, fwd.get("k"), fwd.get("top_k", 5), fwd.get("score"), fwd.get("alpha")
        )
        model_inputs = self.preprocess(queries, **pre)
        with torch.no_grad():
            outputs = self._forward(model_inputs, **fwd)
        results = self.postprocess(outputs, **post)
        return results[0] if single else results

    # ------------------------------------------------------------------ stages
    def _classify(self, queries: list, query_type: str | None = None) -> tuple[str, list]:
        """Decide text vs image queries; reject empty or mixed batches before any model work.

        `query_type="text"` keeps every string a text (even "harbor.png" or an existing file name);
        `"image"` makes every string a path; None: a string is an image only when it is an existing file
        with an image ending.
        """
        if not queries:
            raise ValueError("No query given: pass a string, an image (path or PIL) or a non-empty list of them.")
        kinds, values = [], []
        for i, query in enumerate(queries):
            where = f"query {i}" if len(queries) > 1 else "the query"
            forced = None
            if isinstance(query, dict):  # {"text": ...} / {"image": ...} make the modality explicit
                forced = "text" if "text" in query else "image" if "image" in query else None
                if forced is None:
                    raise ValueError(f"{where} is a dict without a 'text' or 'image' key: {sorted(query)}.")
                query = query[forced]
            if forced == "image" or (
                forced is None and (isinstance(query, Image.Image) or _is_image_path(query, query_type))
            ):
                kinds.append("image")
            elif isinstance(query, str):
                if is_blank_query(query):
                    raise ValueError(f"{where} is an empty or blank string (or only control characters): type a "
                                     "description of the images to find.")
                kinds.append("text")
            else:
                raise ValueError(
                    f"{where} is a {type(query).__name__}; expected a text string, an image path or a PIL image."
                )
            values.append(query)
        if len(set(kinds)) > 1:
            raise ValueError("A batch mixes text and image queries: call the pipeline once per kind.")
        return kinds[0], values

    def preprocess(self, queries: list, gallery=None, candidates=None, image_batch_size: int = 32,
                   query_type: str | None = None):
        mode, values = self._classify(queries, query_type)
        if mode == "text":
            if candidates is not None and gallery is None:
                named = [v for v in values if query_type is None and v.lower().endswith(IMAGE_EXTENSIONS)]
                if named:  # an image query whose file is missing: say so rather than "text needs a gallery"
                    raise ValueError(f"Image query file not found: {named[0]!r} (a string is an image query only when "
                                     "the file exists; pass query_type='image' to force it).")
                raise ValueError("Text queries search images: pass gallery=(folder, list of images or index), not candidates=.")
            if gallery is None:
                raise ValueError("Text queries need gallery=: a folder of images, a list of images/paths, or an index.")
            if hasattr(gallery, "text_features") and not hasattr(gallery, "image_embeds"):
                raise ValueError("This gallery is a text index; text queries need an image gallery.")
            return {"mode": "text", "queries": values, "gallery": self._prepare_gallery(gallery, image_batch_size)}
        # image queries: decode now so an unreadable file fails before any encoding (the error names it)
        images = [self.image_processor.fetch_images(v) if hasattr(self.image_processor, "fetch_images") else v
                  for v in values]
        if candidates is None and gallery is not None and hasattr(gallery, "text_features"):
            self._check_index_model(gallery)
            return {"mode": "image", "queries": images, "texts": gallery.text_features,
                    "labels": [item.get("text") for item in gallery.items]}
        if candidates is None:
            raise ValueError("Image queries rank captions: pass candidates=[...] (a list of strings) or a text index as gallery=.")
        if isinstance(candidates, str) or not isinstance(candidates, Sequence) or len(candidates) == 0:
            raise ValueError("candidates must be a non-empty list of caption strings.")
        texts = encode_texts(self.model, self.processor, list(candidates))
        return {"mode": "image", "queries": images, "texts": texts, "labels": list(candidates)}

    def _prepare_gallery(self, gallery, image_batch_size: int) -> Any:
        if hasattr(gallery, "image_embeds"):
            if gallery.image_embeds is None or len(gallery.items) == 0:
                raise ValueError("The gallery index is empty: nothing to search.")
            self._check_index_model(gallery)
            return gallery
        if isinstance(gallery, (str, os.PathLike)):
            folder = os.fspath(gallery)
            if not os.path.isdir(folder):
                raise ValueError(f"Gallery folder not found: {folder!r}.")
            sources: list = _list_images(folder)
            if not sources:
                raise ValueError(f"The gallery folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        elif isinstance(gallery, (list, tuple)):
            sources = list(gallery)
            if not sources:
                raise ValueError("The gallery is empty: pass at least one image.")
        else:
            raise ValueError(
                f"gallery must be a folder, a list of images/paths or an index; got {type(gallery).__name__}."
            )
        for i, source in enumerate(sources):
            if not isinstance(source, (str, os.PathLike, Image.Image)):
                raise ValueError(f"Gallery item {i} is a {type(source).__name__}; expected an image path or a PIL image.")
        key = tuple(_file_key(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else ("pil", id(s)) for s in sources)
        if self._gallery_cache is not None and self._gallery_cache[0] == key:
            return self._gallery_cache[1]
        check_gallery_files(sources)  # every file's header before any encoding (one error naming all bad ones)
        feats = encode_images(self.model, self.processor, sources, batch_size=image_batch_size,
                              progress=len(sources) > 4 * image_batch_size)
        items = [{"image": os.fspath(s) if isinstance(s, (str, os.PathLike)) else
                  (getattr(s, "filename", "") or f"image_{i}")} for i, s in enumerate(sources)]
        encoded = EncodedGallery(feats.embeds, feats.tokens, items, sources)
        self._gallery_cache = (key, encoded)
        return encoded

    def _check_index_model(self, gallery) -> None:
        """A persisted index (duck-typed: `check_model(model)`, e.g. `GalleryIndex`) must belong to this model.

        Same check and error (`IndexMismatchError`) as `GalleryIndex.search(model=...)`: embeddings of
        another model would rank confidently and wrongly.
        """
        check = getattr(gallery, "check_model", None)
        if callable(check):
            check(self.model)

    def _forward(self, model_inputs, *, k: int, score: str, alpha: float, top_k: int = 5,
                 fusion_batch_size: int = 256, return_maps: bool = False, map_layer: int | None = None):
        # k / score / alpha arrive resolved from the model config by `__call__` (the entry point).
        if model_inputs["mode"] == "text":
            gallery = model_inputs["gallery"]
            tokens = gallery.image_tokens
            images = None
            if tokens is None and score != "filter":
                images = [item.get("image") for item in gallery.items]  # re-encode candidates from their paths
                images = getattr(gallery, "sources", None) or images
            feats = ImageFeatures(embeds=gallery.image_embeds, tokens=tokens)
            hits = search_texts(self.model, self.processor, model_inputs["queries"], feats, k=k, top_k=top_k,
                                score=score, alpha=alpha, batch_size=fusion_batch_size,
                                cache_tokens=tokens is not None, images=images)
            if return_maps:
                sources = getattr(gallery, "sources", None) or [item.get("image") for item in gallery.items]
                for query, per_query in zip(model_inputs["queries"], hits):
                    rows = torch.tensor([hit["index"] for hit in per_query], dtype=torch.long)
                    hit_tokens = (tokens[rows] if tokens is not None else
                                  encode_images(self.model, self.processor, [sources[i] for i in rows.tolist()],
                                                progress=False).tokens)
                    for hit, maps in zip(per_query, grounding_maps(self.model, self.processor, [query], hit_tokens,
                                                                   layer=map_layer)):
                        hit.update(maps)
            return {"mode": "text", "hits": hits, "gallery": gallery}
        texts: TextFeatures = model_inputs["texts"]
        hits = search_images(self.model, self.processor, model_inputs["queries"], texts, k=k, top_k=top_k,
                             score=score, alpha=alpha, batch_size=fusion_batch_size)
        if return_maps:  # the map lies on the query image, one per caption hit
            labels = model_inputs["labels"]
            for image, per_query in zip(model_inputs["queries"], hits):
                query_tokens = encode_images(self.model, self.processor, [image], progress=False).tokens
                captions = [labels[hit["index"]] for hit in per_query]
                for hit, maps in zip(per_query, grounding_maps(self.model, self.processor, captions, query_tokens,
                                                               layer=map_layer)):
                    hit.update(maps)
        return {"mode": "image", "hits": hits, "labels": model_inputs["labels"]}

    def postprocess(self, model_outputs):
        out = []
        if model_outputs["mode"] == "text":
            gallery = model_outputs["gallery"]
            sources = getattr(gallery, "sources", None)
            for per_query in model_outputs["hits"]:
                rows = []
                for hit in per_query:
                    item = gallery.items[hit["index"]]
                    image = sources[hit["index"]] if sources else item.get("image")
                    row = {"image": image, **hit}
                    if "captions" in item:
                        row["captions"] = item["captions"]
                    rows.append(row)
                out.append(rows)
            return out
        labels = model_outputs["labels"]
        return [[{"text": labels[hit["index"]], **hit} for hit in per_query] for per_query in model_outputs["hits"]]


def register_pipeline() -> None:
    """Register `rs-retrieval` with transformers (idempotent), so `pipeline("rs-retrieval", ...)` finds it."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    current = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if current is not None and current.get("impl") is MTGFERetrievalPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MTGFERetrievalPipeline, pt_model=AutoModel, type="multimodal")


def save_for_pipeline(model, processor, save_directory: str | os.PathLike) -> str:
    """Save model + processor + pipeline code so `pipeline(model=dir, trust_remote_code=True)` works anywhere.

    `Pipeline.save_pretrained` writes the model, its remote code and `custom_pipelines` into config.json but
    not `processor_config.json` (docs/HF_PITFALLS.md §3), hence the explicit `processor.save_pretrained`.
    """
    register_pipeline()
    pipe = MTGFERetrievalPipeline(model=model, processor=processor, task=TASK, device=model.device)
    pipe.save_pretrained(save_directory)
    processor.save_pretrained(save_directory)
    return os.fspath(save_directory)


__all__ = [
    "SEARCH_SCORES",
    "TASK",
    "EncodedGallery",
    "MTGFERetrievalPipeline",
    "grounding_maps",
    "register_pipeline",
    "resolve_search_args",
    "save_for_pipeline",
    "search_images",
    "search_texts",
]
