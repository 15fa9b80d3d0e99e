"""`rs-retrieval` pipeline: type a description, get the matching aerial images (or the reverse).

    pipe = pipeline("rs-retrieval", model=model, processor=processor)
    pipe("two white planes parked near the terminal", gallery="archive/", top_k=5, k=32)
    → [{"image": "archive/airport_03.tif", "score": 0.91, "filter_score": 0.42, "rank": 1, "index": 17}, ...]

A gallery is a folder (recursive), a list of image paths / PIL images, or a prebuilt index (anything
with `.image_embeds`, `.image_tokens`, `.items`, e.g. `mtgfe.search.gallery_index.GalleryIndex`).
Folders and lists are encoded on first use and cached for the next call with the same gallery; build
a `GalleryIndex` for archives that should not be re-encoded per process.

Image queries (a path or PIL image) rank `candidates=[captions]` or a text index (`.text_features`).

This file travels as Hub remote code (a folder saved with `save_for_pipeline` loads with
`pipeline(model=folder, trust_remote_code=True)`), so it imports only third-party packages and
`.retrieval`; the gallery index module is not shipped and is only duck-typed here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from transformers import Pipeline

from .retrieval import (
    IMAGE_EXTENSIONS,
    ImageFeatures,
    TextFeatures,
    check_search_args,
    encode_images,
    encode_texts,
    resolve_search_defaults,
    search_images,
    search_texts,
)

logger = logging.getLogger(__name__)

TASK = "rs-retrieval"


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


def _is_image_path(value: Any) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and (value.lower().endswith(IMAGE_EXTENSIONS) or os.path.isfile(value))


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
        """Load the processor saved beside the model; a pipeline cannot run without one."""
        name = str(getattr(self.model, "name_or_path", "") or "")
        if name and os.path.isdir(name) and any(
            os.path.isfile(os.path.join(name, f)) for f in ("processor_config.json", "tokenizer_config.json")
        ):
            from transformers import AutoProcessor

            # A model class from remote code means the user already trusted this folder's code.
            trusted = type(self.model).__module__.startswith("transformers_modules")
            try:
                return AutoProcessor.from_pretrained(name, trust_remote_code=trusted)
            except (OSError, ValueError, TypeError, KeyError) as error:
                raise ValueError(
                    f"The rs-retrieval pipeline could not load the processor saved with the model at {name!r}: {error}. "
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
        **unused,
    ):
        if unused:
            raise TypeError(f"Unknown rs-retrieval argument(s): {sorted(unused)}.")
        pre, fwd, post = {}, {}, {}
        for name, value, target in (
            ("gallery", gallery, pre), ("candidates", candidates, pre), ("image_batch_size", image_batch_size, pre),
            ("top_k", top_k, fwd), ("k", k, fwd), ("score", score, fwd), ("alpha", alpha, fwd),
            ("fusion_batch_size", fusion_batch_size, fwd),
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
        # Defaults from the model config, resolved once here so invalid values fail before any encoding.
        fwd["k"], fwd["score"], fwd["alpha"] = resolve_search_defaults(
            self.model, fwd.get("k"), fwd.get("score"), fwd.get("alpha")
        )
        check_search_args(fwd["k"], fwd.get("top_k", 5), fwd["score"])
        model_inputs = self.preprocess(queries, **pre)
        with torch.no_grad():
            outputs = self._forward(model_inputs, **fwd)
        results = self.postprocess(outputs, **post)
        return results[0] if single else results

    # ------------------------------------------------------------------ stages
    def _classify(self, queries: list) -> tuple[str, list]:
        """Decide text vs image queries; reject empty or mixed batches before any model work."""
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
            if forced == "image" or (forced is None and (isinstance(query, Image.Image) or _is_image_path(query))):
                kinds.append("image")
            elif isinstance(query, str):
                if not query.strip():
                    raise ValueError(f"{where} is an empty or blank string: type a description of the images to find.")
                kinds.append("text")
            else:
                raise ValueError(
                    f"{where} is a {type(query).__name__}; expected a text string, an image path or a PIL image."
                )
            values.append(query)
        if len(set(kinds)) > 1:
            raise ValueError("A batch mixes text and image queries: call the pipeline once per kind.")
        return kinds[0], values

    def preprocess(self, queries: list, gallery=None, candidates=None, image_batch_size: int = 32):
        mode, values = self._classify(queries)
        if mode == "text":
            if candidates is not None and gallery is None:
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
            if isinstance(source, (str, os.PathLike)):
                if not os.path.isfile(source):
                    raise ValueError(f"Gallery image {i} not found: {os.fspath(source)!r}.")
            elif not isinstance(source, Image.Image):
                raise ValueError(f"Gallery item {i} is a {type(source).__name__}; expected an image path or a PIL image.")
        key = tuple(_file_key(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else ("pil", id(s)) for s in sources)
        if self._gallery_cache is not None and self._gallery_cache[0] == key:
            return self._gallery_cache[1]
        feats = encode_images(self.model, self.processor, sources, batch_size=image_batch_size,
                              progress=len(sources) > 4 * image_batch_size)
        items = [{"image": os.fspath(s) if isinstance(s, (str, os.PathLike)) else
                  (getattr(s, "filename", "") or f"image_{i}")} for i, s in enumerate(sources)]
        encoded = EncodedGallery(feats.embeds, feats.tokens, items, sources)
        self._gallery_cache = (key, encoded)
        return encoded

    def _forward(self, model_inputs, top_k: int = 5, k: int | None = None, score: str | None = None, alpha=None,
                 fusion_batch_size: int = 256):
        # k / score / alpha left None fall back to the model config inside search_texts / search_images.
        k, score, alpha = resolve_search_defaults(self.model, k, score, alpha)
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
            return {"mode": "text", "hits": hits, "gallery": gallery}
        texts: TextFeatures = model_inputs["texts"]
        hits = search_images(self.model, self.processor, model_inputs["queries"], texts, k=k, top_k=top_k,
                             score=score, alpha=alpha, batch_size=fusion_batch_size)
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
    not `processor_config.json` (hf-v5-notes §3), hence the explicit `processor.save_pretrained`.
    """
    register_pipeline()
    pipe = MTGFERetrievalPipeline(model=model, processor=processor, task=TASK, device=model.device)
    pipe.save_pretrained(save_directory)
    processor.save_pretrained(save_directory)
    return os.fspath(save_directory)


__all__ = ["EncodedGallery", "MTGFERetrievalPipeline", "TASK", "register_pipeline", "save_for_pipeline"]
