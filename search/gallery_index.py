"""A persistent gallery for two-stage search: filter embeddings (+ fusion tokens) of an image archive.

Why an index: encoding the archive is the expensive, one-off part; a query then costs one text
encoding, one matrix product (or FAISS) over the embeddings and k fusion passes.

Memory per indexed image (float32):

| preset | embedding (`embed_dim`×4) | fusion tokens (`T×H×4`) |
|---|---|---|
| tiny (32 px ViT, 17×32) | 64 B | 2.1 KiB |
| small (EfficientNet-Lite0 @256, 64×384) | 1 KiB | 96 KiB (48 KiB with `tokens_dtype=float16`) |
| base (ViT-B/16 @256, 257×768) | 1 KiB | 771 KiB |

So 100k images take ~100 MB as embeddings only (`keep_tokens=False`), but ~9.8 GB of tokens with the
small preset. Tokens are therefore kept on disk in safetensors shards and read lazily (memory-mapped,
only the k candidate rows per query); without tokens, re-ranking re-encodes the k candidates from their
files: 1.5–2.8 s per query at k = 32 with Lite0 on 2 CPU cores, against ~60–100 ms with cached tokens
(experiments/speed/README.md, section c).

On-disk layout (`save`): `manifest.json` (model identity, sizes, items, shard list) and
`shard_XXXXX.safetensors` files (`image_embeds`, optional `image_tokens`). Every file is written to a
temporary name and `os.replace`d, and the manifest is written last, so a crash never leaves a manifest
pointing at half-written data. A folder build with `output_dir` writes shards as it goes plus
`build_state.json`; `resume=True` continues after the last complete shard.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_mtgfe.retrieval import (
    IMAGE_EXTENSIONS,
    Candidates,
    ImageFeatures,
    TextFeatures,
    coarse_topk,
    encode_images,
    encode_texts,
    progress_bar,
)
from modeling_mtgfe.pipeline_mtgfe import is_blank_query, resolve_search_args, search_images, search_texts
from mtgfe.processing.image_decoding import ImageDecodeError, load_image
from mtgfe.utils.io import atomic_write_text, read_json

from .coarse_index import (
    EMBEDDINGS_FILE,
    IVF_MIN_ITEMS,
    ShortlistCoarse,
    make_coarse_fn,
    read_tombstones,
    rows_of_ids,
    write_embeddings,
    check_mapped_embeddings,
    open_mapped_embeddings,
    faiss_topk,
    flat_ip_index,
    write_tombstones,
)
from .gallery_sources import (  # noqa: F401  (list_image_files, dataset_items, decode_options: re-exported)
    ItemPaths,
    dataset_batches,
    dataset_items,
    decode_checked,
    decode_options,
    folder_batches,
    is_dataset,
    list_batches,
    list_image_files,
    looks_like_texts,
    resolve_source,
    retry_paths,
)
from .index_storage import (  # noqa: F401  (re-exported: the index's public names)
    BUILD_STATE_NAME,
    INDEX_FORMAT_VERSION,
    MANIFEST_NAME,
    VERIFY_MODES,
    IndexCorruptError,
    IndexMismatchError,
    ShardWriter,
    TokenStore,
    atomic_save_tensors,
    check_model,
    config_hash,
    model_identity,
    model_sizes,
    mtgfe_version,
    weights_fingerprint,
)
from .index_storage import (
    check_verify_mode,
    file_checksums,
    open_safetensors,
    read_index_json,
    shard_metadata,
    shard_record,
    tensor_sha256,
    validate_manifest,
    verify_file,
    warn_unchecked,
)

logger = logging.getLogger(__name__)

TEXTS_FILE = "texts.safetensors"
FAISS_MIN_GALLERY = 50_000  # below this the exact torch product is as fast and tie-exact
class GalleryIndex:
    """Encoded gallery of images (for text queries) or of captions (for image queries).

    Duck-typed by the pipeline through `.image_embeds`, `.image_tokens` and `.items` (image kind), or
    `.text_features` and `.items` (text kind). `items[i]` is a dict with `"image"` (path or id) and
    optionally `"captions"` (ground truth, used for ✓ marks), or `"text"` for a text index.
    """

    def __init__(
        self,
        kind: str = "images",
        image_embeds: torch.Tensor | None = None,
        image_tokens: TokenStore | torch.Tensor | None = None,
        text_features: TextFeatures | None = None,
        items: list[dict] | None = None,
        manifest: dict | None = None,
        model=None,
        processor=None,
        directory: str | os.PathLike | None = None,
    ):
        if kind not in ("images", "texts"):
            raise ValueError(f"kind must be 'images' or 'texts', got {kind!r}.")
        self.kind = kind
        self.image_embeds = image_embeds
        if isinstance(image_tokens, torch.Tensor):
            store = TokenStore()
            store.append_tensor(image_tokens)
            image_tokens = store
        self.image_tokens = image_tokens
        self.text_features = text_features
        self.items = list(items or [])
        self.manifest = dict(manifest or {})
        self.model = model
        self.processor = processor
        self.directory = Path(directory) if directory is not None else None
        self._saved_shards: list[dict] = list(self.manifest.get("shards", [])) if self.directory else []
        self._faiss = None
        self._checked_models: list = [model] if model is not None else []  # load(model=) checked it already

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        if self.kind == "texts":
            tokens = f"{self.text_features.num_distinct} distinct captions"
        else:
            tokens = "with tokens" if self.image_tokens is not None else "embeddings only"
        return f"GalleryIndex(kind={self.kind!r}, count={len(self)}, {tokens}, model={self.manifest.get('model')!r})"

    @property
    def image_features(self) -> ImageFeatures:
        return ImageFeatures(embeds=self.image_embeds, tokens=self.image_tokens)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        model,
        processor,
        source,
        *,
        output_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        keep_tokens: bool = True,
        tokens_dtype: torch.dtype | None = None,
        shard_size: int = 1024,
        resume: bool = False,
        skip_unreadable: bool = False,
        captions: dict[str, list[str]] | None = None,
        progress: bool = True,
        kind: str | None = None,
    ) -> "GalleryIndex":
        """Encode `source` into an index.

        Args:
            source: a folder of images (recursive; see `IMAGE_EXTENSIONS`), a `datasets.Dataset` in the
                images view (`image`, optional `captions`, `image_id`, `filename`), a list of image paths /
                PIL images, or a list of strings (a text index for image→text search).
            output_dir: write shards while encoding (and the manifest at the end), which makes a folder
                build resumable with `resume=True`. Without it the index stays in memory until `save`.
            keep_tokens: store fusion tokens (fast re-ranking) or only embeddings (lean, re-encodes candidates).
            tokens_dtype: e.g. `torch.float16` halves token memory; scores then differ slightly.
            skip_unreadable: log and skip files that cannot be decoded; by default the first one raises,
                naming the file.
            captions: ground-truth captions by file name or relative path (folder sources), for ✓ marks.
            kind: `"images"` or `"texts"`; by default a list of strings none of which names an image file or
                an existing path is a text index.
        """
        if kind is None:
            kind = "texts" if looks_like_texts(source) else "images"
        if kind == "texts":
            return cls._build_texts(model, processor, list(source), output_dir=output_dir)
        if kind != "images":
            raise ValueError(f"kind must be 'images', 'texts' or None (guess), got {kind!r}.")
        identity = model_identity(model)
        settings = {"keep_tokens": keep_tokens, "tokens_dtype": str(tokens_dtype) if tokens_dtype else None,
                    "shard_size": shard_size}
        index = cls(kind="images", model=model, processor=processor)
        index.manifest = {**identity, **model_sizes(model), "source": None, "skipped": []}
        src = resolve_source(source, processor, captions, skip_unreadable, index.manifest["skipped"])
        index.manifest["source"] = src.description
        index.manifest.update(src.settings)
        settings.update(src.settings)
        batches, total, listing, root, batch_source = src.batches, src.total, src.listing, src.root, src.batch_source
        writer = ShardWriter(Path(output_dir), identity, settings, resume) if output_dir is not None else None
        done = writer.consumed if writer else 0
        if writer is not None:
            recorded = [c for shard in writer.state["shards"] for c in shard["consumed"]]
            if batch_source:
                source.check_resume(recorded)
                listing = None
            if listing is not None and listing[: len(recorded)] != recorded:
                raise ValueError(
                    f"Cannot resume {str(output_dir)!r}: the files under {str(source)!r} changed since the interrupted "
                    "build (the already indexed files are no longer the first ones in sorted order). Delete the output "
                    "folder and build again."
                )
            index.manifest["skipped"][:] = writer.state.get("skipped", [])  # in place: the batch closures hold it
            for shard in writer.state["shards"]:
                if not shard["file"]:
                    continue
                index._load_shard(Path(output_dir) / shard["file"], shard["count"], keep_tokens, record=shard)
                index.items.extend(shard["items"])
            if done:
                logger.info("Resuming %s after %d of %d source entries", output_dir, done, total)
        # A resumed folder build retries the files an earlier session skipped (they may have been repaired);
        # they are appended after the listing, in their own shard(s).
        retry = [] if batch_source or listing is None else retry_paths(writer, listing, root)
        embeds, tokens, items, consumed = [], [], [], []
        pending = 0
        bar = progress_bar(None, progress, total=total, initial=done, desc="indexing images", unit="img") if progress else None
        passes = [(batches, done, True)]
        if retry:
            index.manifest["skipped"][:] = [s for s in index.manifest["skipped"] if s not in {str(p) for p in retry}]
            passes.append((folder_batches(retry, root, captions or {}, skip_unreadable, index.manifest["skipped"],
                                               decode_options(processor)), 0, False))
        for gen, start, record_consumed in passes:
            for images, batch_items, batch_consumed in gen(start, batch_size):
                if images:
                    feats = encode_images(model, processor, images, batch_size=batch_size, keep_tokens=keep_tokens,
                                          progress=False, tokens_dtype=tokens_dtype)
                    embeds.append(feats.embeds)
                    if keep_tokens:
                        tokens.append(feats.tokens)
                    items.extend(batch_items)
                    pending += len(images)
                if record_consumed:
                    consumed.extend(batch_consumed)
                    if bar is not None:
                        bar.update(len(batch_consumed))
                if pending >= shard_size:
                    index._flush(writer, embeds, tokens, items, consumed, keep_tokens)
                    embeds, tokens, items, consumed, pending = [], [], [], [], 0
        if pending or consumed:
            index._flush(writer, embeds, tokens, items, consumed, keep_tokens)
        if bar is not None:
            bar.close()
        if index.image_embeds is None or len(index.items) == 0:
            unreadable = len(index.manifest["skipped"])
            if writer is not None:  # no build_state.json that a later run would call "an interrupted build"
                writer.abandon(created=writer.created)
            if not unreadable:  # e.g. a scene whose every tile is no-data: nothing was skipped, nothing came
                raise ValueError(
                    "No image could be indexed: the source yielded no images (for scenes: every tile was over "
                    "--nodata-max-fraction no-data, or the scenes are smaller than one tile). Nothing was written."
                )
            raise ValueError(
                f"No image could be indexed: all {unreadable} file(s) were unreadable and skipped "
                f"(first: {index.manifest['skipped'][0]}). Nothing was written."
            )
        index.manifest["skipped"] = writer.state["skipped"] if writer else index.manifest["skipped"]
        if index.manifest["skipped"]:
            logger.warning("%d unreadable file(s) were skipped: %s", len(index.manifest["skipped"]),
                           ", ".join(index.manifest["skipped"]))
        if writer is not None:
            index.directory = Path(output_dir)
            index._saved_shards = [{k: v for k, v in s.items() if k not in ("items", "consumed")}
                                   for s in writer.state["shards"] if s["file"]]
            index._write_manifest(index.directory)
            writer.finish()
        return index

    def _load_shard(self, path: Path, count: int, keep_tokens: bool, record: dict | None = None,
                    verify: str = "header", load_embeds: bool = True) -> None:
        """Read a shard's embeddings (and open its tokens lazily), checked against its manifest `record`.

        `load_embeds=False` (the embeddings are memory-mapped from `embeddings.npy`): only the row count of
        the shard's embeddings is checked, from the safetensors header."""
        if record is not None:
            verify_file(path, record, verify)
        handle = open_safetensors(path)
        try:
            has_tokens = "image_tokens" in handle.keys()
            if load_embeds:
                embeds = handle.get_tensor("image_embeds")
                shape = tuple(embeds.shape)
            elif record is not None and verify != "none" and record.get("embeds_sha256") is not None:
                embeds = handle.get_tensor("image_embeds")  # hashed below, then dropped (the mmap is searched)
                shape = tuple(embeds.shape)
            else:
                embeds, shape = None, tuple(handle.get_slice("image_embeds").get_shape())
        except Exception as error:  # noqa: BLE001 - a damaged or foreign shard
            raise IndexCorruptError(f"index shard {str(path)!r} has no readable image_embeds ({error}).") from error
        if len(shape) != 2 or shape[0] != count:
            raise IndexCorruptError(f"index shard {str(path)!r} holds {shape} embeddings, the manifest "
                                    f"says {count} rows: it was replaced. Rebuild the index.")
        if embeds is not None and record is not None and verify != "none" \
                and record.get("embeds_sha256") not in (None, tensor_sha256(embeds)):
            raise IndexCorruptError(f"index shard {str(path)!r} does not hold the embeddings the manifest recorded "
                                    "(altered, or swapped with another shard). Rebuild the index.")
        if load_embeds:
            self.image_embeds = embeds if self.image_embeds is None else torch.cat([self.image_embeds, embeds])
        if keep_tokens and has_tokens:
            if self.image_tokens is None:
                self.image_tokens = TokenStore()
            self.image_tokens.append_file(path, count)

    def _flush(self, writer, embeds, tokens, items, consumed, keep_tokens) -> None:
        new_embeds = torch.cat(embeds) if embeds else torch.zeros(0, self.manifest["embed_dim"])
        new_tokens = torch.cat(tokens) if (keep_tokens and tokens) else None
        if writer is not None:
            path = writer.write_shard(new_embeds, new_tokens, items, consumed, self.manifest["skipped"])
            if items:
                self._load_shard(path, len(items), keep_tokens)
        elif items:
            self.image_embeds = new_embeds if self.image_embeds is None else torch.cat([self.image_embeds, new_embeds])
            if new_tokens is not None:
                if self.image_tokens is None:
                    self.image_tokens = TokenStore()
                self.image_tokens.append_tensor(new_tokens)
        self.items.extend(items)

    @classmethod
    def _build_texts(cls, model, processor, texts: list[str], output_dir=None) -> "GalleryIndex":
        feats = encode_texts(model, processor, texts, progress=True)
        manifest = {**model_identity(model), **model_sizes(model), "source": "texts"}
        index = cls(kind="texts", text_features=feats, items=[{"text": t} for t in texts], manifest=manifest,
                    model=model, processor=processor)
        if output_dir is not None:
            index.save(output_dir)
        return index

    # ------------------------------------------------------------------ updating
    def add(self, images: Sequence[Any] | str | os.PathLike, batch_size: int = 32, skip_unreadable: bool = False,
            captions: dict[str, list[str]] | None = None, progress: bool = True) -> int:
        """Append images (a list of paths / PIL images, or a folder: only files not indexed yet). Returns the count added.

        Kept in memory until `save`; saving to the index's own folder writes only the new shard.
        """
        if self.kind != "images":
            raise ValueError("add() appends images; this is a text index (rebuild it from the new caption list).")
        if self.model is None or self.processor is None:
            raise ValueError("add() needs the model and processor: GalleryIndex.load(dir, model=..., processor=...).")
        keep_tokens = self.image_tokens is not None
        skipped = self.manifest.setdefault("skipped", [])
        options = decode_options(self.processor)
        if isinstance(images, (str, os.PathLike)):
            root = Path(images).resolve()
            known = {item.get("image") for item in self.items}
            # Files skipped before are not "known": they are retried every time (they may have been repaired);
            # one still unreadable is skipped again (skip_unreadable) or named in the error.
            paths = [p for p in list_image_files(root) if str(p) not in known]
            retried = {str(p) for p in paths}
            skipped[:] = [s for s in skipped if s not in retried]
            gen = folder_batches(paths, root, captions or {}, skip_unreadable, skipped, options)
        else:
            retried = {str(p) for p in images if isinstance(p, (str, os.PathLike))}
            skipped[:] = [s for s in skipped if s not in retried]
            gen = list_batches(list(images), skip_unreadable, skipped, options)
        added = 0
        for batch, items, _ in progress_bar(gen(0, batch_size), progress, desc="adding images", unit="batch"):
            if not batch:
                continue
            dtype = self.image_tokens.dtype if keep_tokens else None
            feats = encode_images(self.model, self.processor, batch, batch_size=batch_size, keep_tokens=keep_tokens,
                                  progress=False, tokens_dtype=dtype)
            self._flush(None, [feats.embeds], [feats.tokens] if keep_tokens else [], items, [], keep_tokens)
            added += len(items)
        return added

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, shard_size: int = 1024) -> Path:
        """Write shards and then the manifest (atomically). Saving into the index's own folder appends only new rows."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "texts":
            f = self.text_features
            atomic_save_tensors(directory / TEXTS_FILE, {
                "text_embeds": f.embeds, "text_states": f.states, "text_attention_mask": f.attention_mask,
                "text_inverse": f.inverse})
            self.manifest["distinct_texts"] = f.texts
            self.manifest["texts_file"] = file_checksums(directory / TEXTS_FILE)
            self.directory = directory
            self._write_manifest(directory)
            return directory
        same = self.directory is not None and self.directory.resolve() == directory.resolve()
        shards = list(self._saved_shards) if same else []
        start = sum(s["count"] for s in shards)
        existing = {s["file"] for s in shards}
        number = len(shards)
        for s in range(start, len(self.items), shard_size):
            e = min(s + shard_size, len(self.items))
            while f"shard_{number:05d}.safetensors" in existing:
                number += 1
            name = f"shard_{number:05d}.safetensors"
            tensors = {"image_embeds": self.image_embeds[s:e].contiguous()}
            if self.image_tokens is not None:
                tensors["image_tokens"] = self.image_tokens.rows(s, e)
            atomic_save_tensors(directory / name, tensors, metadata=shard_metadata(s, e - s))
            shards.append(shard_record(name, directory / name, s, e - s, tensors["image_embeds"]))
            number += 1
        self._saved_shards = shards
        self._write_manifest(directory)
        self.directory = directory
        return directory

    def _write_manifest(self, directory: Path) -> None:
        manifest = dict(self.manifest)
        manifest.update(
            format_version=INDEX_FORMAT_VERSION,
            kind=self.kind,
            count=len(self.items),
            items=self.items,
            created=manifest.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            updated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            mtgfe_version=mtgfe_version(),
        )
        if self.kind == "images":
            manifest.update(self._write_scale_files(directory))
            manifest["shards"] = self._saved_shards
            manifest["has_tokens"] = self.image_tokens is not None
            if self.image_tokens is not None:
                manifest["token_shape"] = list(self.image_tokens.token_shape)
                manifest["tokens_dtype"] = str(self.image_tokens.dtype).replace("torch.", "")
        self.manifest = manifest
        atomic_write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | os.PathLike, model=None, processor=None, load_tokens: bool = True,
             verify: str = "header", mmap_embeddings: bool = True) -> "GalleryIndex":
        """Open an index; with `model`, check it is the model that built the index (else `IndexMismatchError`).

        `verify` checks every file against the manifest's checksums: "header" (default: sizes, safetensors
        headers and the embeddings, which are read anyway), "full" (sha256 of every byte, tokens included)
        or "none". A damaged, truncated, swapped or missing file, or a manifest with missing / mistyped
        keys, raises `IndexCorruptError` (a `FileFormatError`) naming the file. Indexes written before
        checksums existed load with a warning.

        `mmap_embeddings`: map `embeddings.npy` read-only instead of reading every shard's embeddings into RAM
        (`coarse_index` module docstring); indexes written before it existed load the shards as before.
        """
        check_verify_mode(verify)
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            hint = " An interrupted build is there: rerun with --resume." if (directory / BUILD_STATE_NAME).is_file() else ""
            raise FileNotFoundError(f"No index manifest at {str(path)!r}.{hint}")
        manifest = read_index_json(path, "index manifest")
        if isinstance(manifest, dict) and manifest.get("format_version") != INDEX_FORMAT_VERSION:
            raise ValueError(f"{str(path)!r} has index format {manifest.get('format_version')}, expected {INDEX_FORMAT_VERSION}.")
        validate_manifest(manifest, path)
        if model is not None:
            check_model(manifest, model, where=str(directory))
        if manifest["kind"] == "texts":
            texts_path = directory / TEXTS_FILE
            if not verify_file(texts_path, manifest.get("texts_file") or {}, "full" if verify != "none" else "none",
                               what="index text file"):
                warn_unchecked(directory)
            handle = open_safetensors(texts_path, what="index text file")
            try:
                t = {k: handle.get_tensor(k) for k in handle.keys()}
                feats = TextFeatures(t["text_embeds"], t["text_states"], t["text_attention_mask"], t["text_inverse"],
                                     list(manifest.get("distinct_texts", [])))
            except Exception as error:  # noqa: BLE001 - a damaged or foreign file
                raise IndexCorruptError(f"index text file {str(texts_path)!r} cannot be read ({error}).") from error
            return cls(kind="texts", text_features=feats, items=manifest["items"], manifest=manifest, model=model,
                       processor=processor, directory=directory)
        index = cls(kind="images", items=[], manifest=manifest, model=model, processor=processor, directory=directory)
        if verify != "none" and any("size" not in shard for shard in manifest["shards"]):
            warn_unchecked(directory)
        mapped = open_mapped_embeddings(directory, manifest) if mmap_embeddings else None
        for shard in manifest["shards"]:
            index._load_shard(directory / shard["file"], shard["count"], load_tokens, record=shard, verify=verify,
                              load_embeds=mapped is None)
        if mapped is not None:
            index.image_embeds = mapped
            if verify != "none":
                check_mapped_embeddings(directory, manifest, index.image_embeds)
        index.items = list(manifest["items"])
        if index.image_embeds is None or index.image_embeds.shape[0] != len(index.items):
            raise ValueError(f"Index {str(directory)!r} is inconsistent: {len(index.items)} items but "
                             f"{0 if index.image_embeds is None else index.image_embeds.shape[0]} embeddings.")
        index._dead()  # read the tombstones now: a damaged file is named at load, not at the first search
        return index

    # ------------------------------------------------------------------ search
    def check_model(self, model) -> None:
        """Raise `IndexMismatchError` when `model` did not build this index (the pipeline calls this too).

        The weights fingerprint costs a pass over the state dict, so a model once checked is remembered.
        """
        if model is None or any(m is model for m in self._checked_models):
            return
        check_model(self.manifest, model, where=str(self.directory or "this index"))
        self._checked_models.append(model)

    def _require_model(self, model, processor):
        model = model or self.model
        processor = processor or self.processor
        if model is None or processor is None:
            raise ValueError("search needs the model and processor: pass them, or GalleryIndex.load(dir, model=, processor=).")
        if model is not self.model:
            self.check_model(model)
        return model, processor

    def _coarse_fn(self):
        """Archive-scale coarse stage (IVF shortlist + exact re-scoring, tombstones), else the FAISS flat path."""
        scaled = self._scale_coarse_fn()
        if scaled is not None:
            return scaled
        if len(self) < FAISS_MIN_GALLERY:
            return None
        if self._faiss is None:
            self._faiss = flat_ip_index(self.image_embeds)
        return None if self._faiss is None else (lambda queries, k: faiss_topk(self._faiss, queries, self.image_embeds, k))

    # ------------------------------------------------------------------ archive scale
    # Kept together, apart from the build/search code above: see `coarse_index` for the why.
    coarse_min_items: int = IVF_MIN_ITEMS
    coarse_options: dict = {}

    def _dead(self) -> set[int]:
        if not hasattr(self, "_tombstones"):
            self._tombstones = read_tombstones(self.directory, size=len(self))
        return self._tombstones

    def _scale_coarse_fn(self):
        """`ShortlistCoarse` from `coarse_min_items` live rows on; exact-on-live-rows when rows are deleted."""
        dead = self._dead()
        key = (len(self), len(dead), self.coarse_min_items)
        cached = getattr(self, "_scale_coarse", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        fn = make_coarse_fn(self.image_embeds, dead, self.directory, min_items=self.coarse_min_items,
                            **self.coarse_options)
        self._scale_coarse = (key, fn)
        return fn

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items by `id` (or `image`) without a rebuild; returns how many were newly deleted.

        The rows stay in the shards (row numbers and token shards stay aligned); their numbers go to
        `tombstones.json`, written atomically at once when the index has a folder, and every coarse path
        (exact, IVF lists via `remove_ids`, shortlists) skips them. Unknown ids raise `KeyError` naming them.
        """
        if self.kind != "images":
            raise ValueError("delete() removes images from an image index; rebuild a text index instead.")
        rows = set(rows_of_ids(self.items, ids)) - self._dead()
        if not rows:
            return 0
        self._tombstones = self._dead() | rows
        if self.directory is not None:
            write_tombstones(self.directory, self._tombstones)
        cached = getattr(self, "_scale_coarse", None)
        if cached is not None and isinstance(cached[1], ShortlistCoarse):
            cached[1].delete(rows)
            self._scale_coarse = ((len(self), len(self._tombstones), self.coarse_min_items), cached[1])
            if self.directory is not None:
                cached[1].save(self.directory)
        return len(rows)

    @property
    def live_count(self) -> int:
        return len(self) - len(self._dead()) if self.kind == "images" else len(self)

    def _write_scale_files(self, directory: Path) -> dict:
        """`embeddings.npy` (mmap at load) and, from `coarse_min_items` rows on, the IVF; returns manifest fields."""
        count = 0 if self.image_embeds is None else int(self.image_embeds.shape[0])
        fields = {"embeddings_file": {"file": EMBEDDINGS_FILE, "count": count}}
        path = directory / EMBEDDINGS_FILE
        if count and not (path.is_file() and self.manifest.get("embeddings_file", {}).get("count") == count
                          and self.directory is not None and self.directory.resolve() == directory.resolve()):
            write_embeddings(directory, self.image_embeds)
        if count - len(self._dead()) >= self.coarse_min_items:
            coarse = self._scale_coarse_fn()
            if isinstance(coarse, ShortlistCoarse):
                coarse.save(directory)
        return fields

    def search(
        self,
        query_texts: str | Sequence[str],
        k: int | None = None,
        top_k: int = 10,
        score: str | None = None,
        alpha: float | None = None,
        batch_size: int = 256,
        model=None,
        processor=None,
    ) -> list[dict] | list[list[dict]]:
        """Text→image search (image index): per query `[{"image", "score", "filter_score", "rank", ...}]`.

        A single string gives one list; a list of strings a list of lists. On a text index, pass images
        (paths / PIL) instead to get `[{"text", ...}]`. `k`, `score` and `alpha` left `None` come from the
        model config (`retrieval_k`, `retrieval_score`, `retrieval_alpha`), like the pipeline's.
        """
        model, processor = self._require_model(model, processor)
        k, score, alpha = resolve_search_args(model, k, top_k, score, alpha, batch_size)  # NaN alpha, k < 1, ... before any work
        single = isinstance(query_texts, str) or not isinstance(query_texts, (list, tuple))
        queries = [query_texts] if single else list(query_texts)
        blank = [i for i, q in enumerate(queries) if isinstance(q, str) and self.kind == "images" and is_blank_query(q)]
        if blank:
            raise ValueError(f"query {blank[0]} ({queries[blank[0]]!r}) is empty, blank or only control characters: "
                             "type a description of the images to find.")
        if len(self) == 0:
            raise ValueError("The index is empty: nothing to search.")
        if self.kind == "texts":
            hits = search_images(model, processor, queries, self.text_features, k=k, top_k=top_k, score=score,
                                 alpha=alpha, batch_size=batch_size)
        else:
            images = None
            if score != "filter" and self.image_tokens is None:
                source = self.manifest.get("source")
                if not (source and os.path.isdir(str(source))):
                    raise ValueError(
                        "This index has no fusion tokens (built with keep_tokens=False / --no-tokens) and its images "
                        f"are not available here for re-encoding (source {source!r}): use score='filter' or rebuild "
                        "with tokens."
                    )
                images = ItemPaths(self.items)  # re-encode the k candidates from their files (slow, lean)
            hits = search_texts(model, processor, queries, self.image_features, k=k, top_k=top_k, score=score,
                                alpha=alpha, batch_size=batch_size, coarse_fn=self._coarse_fn(),
                                cache_tokens=images is None, images=images)
        out = [[{**self._describe(hit["index"]), **hit} for hit in per_query] for per_query in hits]
        return out[0] if single else out

    def _describe(self, index: int) -> dict:
        item = self.items[index]
        if self.kind == "texts":
            return {"text": item["text"]}
        described = {"image": item["image"]}
        if "captions" in item:
            described["captions"] = item["captions"]
        if "scene" in item:  # a scene tile (scene_index.SceneSource): where it is, for GeoJSON / NMS / quicklooks
            described.update({k: v for k, v in item.items() if k != "image"})
        return described
