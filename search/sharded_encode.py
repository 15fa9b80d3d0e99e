"""Encode a gallery with several processes (torch.distributed / `accelerate launch` + `datasets` sharding), then merge.

Why no job system of our own: `accelerate launch --num_processes N` (or any torch.distributed launcher)
already starts the workers and gives each its rank; `datasets.Dataset.shard(num_shards=N, index=rank,
contiguous=True)` gives each a contiguous slice, so concatenating the parts in rank order is the dataset
order, and the merged index equals a one-process build row for row.

Crash safety: each worker writes its slice in chunks of `chunk_size` rows, `part-RRRRR-of-WWWWW-cCCCCC`
(`.items.json` first, then the `.safetensors`, both atomic; the tensors file is the commit point). A
rerun skips every chunk whose tensors file exists, so killing one worker loses at most the chunk it was
encoding, and because chunk boundaries and batch composition do not depend on where the crash was,
the rerun's output is bit-identical. `merge_parts` (main process, after `wait_for_everyone`) checks that
every chunk of every rank is there and writes a normal index (`GalleryIndex.save`).

    accelerate launch --cpu --num_processes 2 -m mtgfe.search.cli sharded-encode --model M --dataset-dir D --output OUT
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open

from modeling_mtgfe.retrieval import encode_images
from mtgfe.utils.io import atomic_write_text, read_json

from .gallery_index import GalleryIndex, dataset_items
from .index_storage import atomic_save_tensors, model_identity, model_sizes

logger = logging.getLogger(__name__)

PARTS_DIR = "parts"


def chunk_name(rank: int, world: int, chunk: int) -> str:
    return f"part-{rank:05d}-of-{world:05d}-c{chunk:06d}"


def encode_shard(model, processor, dataset, rank: int, world: int, output_dir: str | os.PathLike,
                 chunk_size: int = 256, batch_size: int = 32, keep_tokens: bool = True,
                 tokens_dtype: torch.dtype | None = None, stop_after_chunks: int | None = None) -> int:
    """Encode this rank's contiguous `datasets` shard into chunk files; returns how many chunks were written now.

    `stop_after_chunks` simulates a worker killed after that many chunks (tests).
    """
    parts = Path(output_dir) / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    shard = dataset.shard(num_shards=world, index=rank, contiguous=True)
    # Global offset of this shard: datasets gives the first (len % world) shards one extra row.
    base, extra = divmod(len(dataset), world)
    offset = rank * base + min(rank, extra)
    written = 0
    for chunk in range(math.ceil(len(shard) / chunk_size)):
        name = chunk_name(rank, world, chunk)
        if (parts / f"{name}.safetensors").is_file():
            continue  # committed by an earlier run
        if stop_after_chunks is not None and written >= stop_after_chunks:
            return written
        start, stop = chunk * chunk_size, min(len(shard), (chunk + 1) * chunk_size)
        rows = shard[start:stop]
        feats = encode_images(model, processor, list(rows["image"]), batch_size=batch_size, keep_tokens=keep_tokens,
                              progress=False, tokens_dtype=tokens_dtype)
        atomic_write_text(parts / f"{name}.items.json",
                          json.dumps(dataset_items(rows, offset + start, stop - start), ensure_ascii=False))
        tensors = {"image_embeds": feats.embeds}
        if keep_tokens:
            tensors["image_tokens"] = feats.tokens
        atomic_save_tensors(parts / f"{name}.safetensors", tensors)
        written += 1
    return written


def merge_parts(model, processor, dataset_len: int, world: int, output_dir: str | os.PathLike,
                chunk_size: int = 256, index_dir: str | os.PathLike | None = None):
    """Concatenate every rank's chunks in order into a `GalleryIndex` and save it (default `output_dir`).

    A missing chunk is an error naming it (rerun the workers: they only redo what is missing).
    """
    parts = Path(output_dir) / PARTS_DIR
    base, extra = divmod(dataset_len, world)
    embeds, tokens, items = [], [], []
    for rank in range(world):
        length = base + (1 if rank < extra else 0)
        for chunk in range(math.ceil(length / chunk_size)):
            name = chunk_name(rank, world, chunk)
            path = parts / f"{name}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"Chunk {str(path)!r} is missing: rerun the encoding workers (they skip "
                                        "finished chunks), then merge again.")
            with safe_open(str(path), framework="pt") as handle:
                embeds.append(handle.get_tensor("image_embeds"))
                if "image_tokens" in handle.keys():
                    tokens.append(handle.get_tensor("image_tokens"))
            items.extend(read_json(parts / f"{name}.items.json", what="chunk items"))
    manifest = {**model_identity(model), **model_sizes(model), "source": "datasets:sharded",
                "skipped": [], "sharded": {"world": world, "chunk_size": chunk_size}}
    index = GalleryIndex(kind="images", image_embeds=torch.cat(embeds), image_tokens=torch.cat(tokens) if tokens else None,
                         items=items, manifest=manifest, model=model, processor=processor)
    index.save(index_dir or output_dir)
    return index


def run(model, processor, dataset, output_dir, chunk_size: int = 256, batch_size: int = 32, keep_tokens: bool = True,
        tokens_dtype=None, backend: str | None = None):
    """Every process of an `accelerate launch` / torchrun launch calls this; the main one merges and returns the index.

    Rank and world size come from the launcher's `RANK` / `WORLD_SIZE`; the process group is joined here
    (gloo on CPU by default) only for the two barriers. Why not `accelerate.PartialState.wait_for_everyone`:
    on a CPU-only torchrun launch it did not always block (rank 0 merged while rank 1 was still encoding,
    seen once in a full test run), and an explicit `torch.distributed.barrier` is what it should do anyway.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    encode_shard(model, processor, dataset, rank, world, output_dir,
                 chunk_size=chunk_size, batch_size=batch_size, keep_tokens=keep_tokens, tokens_dtype=tokens_dtype)
    if dist.is_initialized():
        dist.barrier()
    index = None
    if rank == 0:
        index = merge_parts(model, processor, len(dataset), world, output_dir, chunk_size=chunk_size)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return index


__all__ = ["chunk_name", "encode_shard", "merge_parts", "run"]
