"""The coarse stage at archive scale: memory-mapped embeddings, FAISS IVF shortlist + exact re-scoring, tombstones.

Why ("a million tiles on a 24 GiB, 2-core box"):

* **Memory-mapped embeddings.** The manifest's shards hold the embeddings too, but concatenating them
  puts `N × embed_dim × 4` bytes in RAM (1 GB at 1M × 256). `embeddings.npy` (one C-order float32
  array, written atomically beside the manifest) is opened with `np.load(mmap_mode="r")`: the OS pages in
  what a query touches, the search process's RSS stays small and several processes share the page cache.
* **IVF shortlist + exact re-scoring.** An exact product over 1M rows costs ~256M multiply-adds per
  query; FAISS `IndexIVFFlat` (nlist ≈ √N, nprobe lists) scans ~nprobe·√N rows instead. Its scores
  are float32 sums in another order, and its top list is approximate, so it is used only to pick a
  *shortlist* (`shortlist`, default 4096 rows); those rows are re-scored exactly from the mmap in
  ascending row order and cut with `coarse_topk` (same tie rule: a tie group at the k-th score is kept
  whole, ties in ascending row order). Given the shortlist, ranks and ties are therefore exactly those of
  the exhaustive search; only a relevant row missing from the shortlist can differ (coarse recall).
* **Tombstones.** `delete(ids)` records row numbers in `tombstones.json` (atomic) instead of rewriting
  shards; the rows stay in the shards (so row numbers and token shards stay aligned), are removed from
  the IVF lists (`remove_ids`) and are filtered out of every shortlist and exact search.

Files (beside `manifest.json`): `embeddings.npy`, `tombstones.json`, `coarse_ivf.faiss` +
`coarse_ivf.json` (rows indexed, nlist; new rows are added incrementally, no re-training on `add`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_mtgfe.retrieval import Candidates, coarse_topk
from mtgfe.utils.io import FileFormatError, atomic_path, atomic_write_text, read_json

from .index_storage import IndexCorruptError, tensor_sha256

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
TOMBSTONES_FILE = "tombstones.json"
IVF_FILE = "coarse_ivf.faiss"
IVF_META_FILE = "coarse_ivf.json"
IVF_MIN_ITEMS = 50_000
"""From this many live rows on, the coarse stage is IVF shortlist + exact re-scoring (below: exact torch)."""
DEFAULT_SHORTLIST = 4096
DEFAULT_NPROBE = 32


# ----------------------------------------------------------------------------------------------- embeddings
def write_embeddings(directory: str | os.PathLike, embeds: torch.Tensor | np.ndarray) -> Path:
    """`embeddings.npy` (float32, C order), atomically: a reader never maps half a file."""
    path = Path(directory) / EMBEDDINGS_FILE
    array = embeds.detach().float().contiguous().numpy() if isinstance(embeds, torch.Tensor) else np.asarray(embeds, np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    return path


def open_embeddings(path: str | os.PathLike) -> torch.Tensor:
    """The embeddings as a read-only memory-mapped tensor (no copy; pages are read on demand)."""
    array = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():  # torch warns that the array is not writable: it is never written
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


# ----------------------------------------------------------------------------------------------- tombstones
def read_tombstones(directory: str | os.PathLike | None, size: int | None = None) -> set[int]:
    """The deleted row numbers of an index folder (none without `tombstones.json`).

    A damaged file (not `{"rows": [int, ...]}`, or a row outside `0..size-1`) raises `IndexCorruptError`
    naming it: a wrong tombstone would silently hide or resurrect images.
    """
    if directory is None:
        return set()
    path = Path(directory) / TOMBSTONES_FILE
    if not path.is_file():
        return set()
    try:
        data = read_json(path, what="index tombstones")
    except FileFormatError as error:
        raise IndexCorruptError(f"{error} Delete it to undelete every item, or rebuild the index.") from error
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
        raise IndexCorruptError(f"index tombstones {str(path)!r} must be {{\"rows\": [row numbers]}}, got "
                                f"{json.dumps(data)[:80]}; it was edited or damaged. Delete it to undelete every "
                                "item (then delete them again), or rebuild the index.")
    bad = [r for r in rows if r < 0 or (size is not None and r >= size)]
    if bad:
        raise IndexCorruptError(f"index tombstones {str(path)!r} name row(s) {bad[:5]} outside the index's "
                                f"{size} rows (0..{(size or 0) - 1}); it was edited or belongs to another index. "
                                "Delete it to undelete every item, or rebuild the index.")
    return set(rows)


def write_tombstones(directory: str | os.PathLike, rows: Iterable[int]) -> None:
    atomic_write_text(Path(directory) / TOMBSTONES_FILE, json.dumps({"rows": sorted(int(r) for r in rows)}))


def rows_of_ids(items: list[dict], ids: Iterable[str]) -> list[int]:
    """Row numbers of items whose `id` (or `image`) is in `ids`; an unknown id is a `KeyError` naming it."""
    where: dict[str, int] = {}
    for row, item in enumerate(items):
        where.setdefault(str(item.get("id", item.get("image"))), row)
        where.setdefault(str(item.get("image")), row)
    rows, missing = [], []
    for ident in ids:
        if str(ident) in where:
            rows.append(where[str(ident)])
        else:
            missing.append(str(ident))
    if missing:
        raise KeyError(f"Not in the index: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return rows


# ----------------------------------------------------------------------------------------------- exact
def exact_topk_rows(queries: torch.Tensor, embeds: torch.Tensor, rows: torch.Tensor, k: int | None) -> Candidates:
    """`coarse_topk` restricted to `rows` (ascending), indices mapped back to gallery rows.

    Rows ascending + `coarse_topk`'s stable tie order = the exhaustive search's order on those rows.
    """
    rows = torch.sort(rows.long()).values
    cands = coarse_topk(queries, embeds[rows], k)
    return Candidates([rows[i] for i in cands.indices], cands.scores)


# ----------------------------------------------------------------------------------------------- IVF
def default_nlist(rows: int) -> int:
    """≈ √N lists (FAISS guidance: 4√N–16√N for speed; √N keeps training cheap on 2 cores), at least 1."""
    return max(1, int(math.sqrt(max(rows, 1))))


def default_nprobe(rows: int, nlist: int, shortlist: int) -> int:
    """Probe enough lists to scan ~2× the shortlist (else the shortlist is not even filled), at least
    `DEFAULT_NPROBE`, at most every list. Why 2×: measured on clustered synthetic vectors, scanning only
    `shortlist` rows gave coarse recall@32 of 0.89 at 10k rows (bench_index_scale.py)."""
    per_list = max(rows, 1) / max(nlist, 1)
    return int(min(nlist, max(DEFAULT_NPROBE, math.ceil(2 * shortlist / per_list))))


class ShortlistCoarse:
    """Coarse top-k: FAISS IVF-Flat shortlist of `shortlist` rows, re-scored exactly (see the module docstring)."""

    def __init__(self, embeds: torch.Tensor, dead: set[int] | None = None, shortlist: int = DEFAULT_SHORTLIST,
                 nprobe: int | None = None, nlist: int | None = None, faiss_index=None, indexed_rows: int = 0,
                 train_sample: int = 262_144, seed: int = 0):
        import faiss  # noqa: PLC0415 - faiss-cpu is installed by `make setup`; imported only at archive scale

        self.faiss = faiss
        self.embeds = embeds
        self.dead = set(dead or ())
        self.shortlist = int(shortlist)
        size, dim = int(embeds.shape[0]), int(embeds.shape[1])
        if faiss_index is None:
            nlist = nlist or default_nlist(size)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(size, size=min(size, train_sample, max(nlist * 64, nlist)), replace=False))
            index.train(np.ascontiguousarray(np.asarray(embeds[sample], dtype=np.float32)))
            faiss_index, indexed_rows = index, 0
        self.index = faiss_index
        self.nprobe = int(nprobe) if nprobe else default_nprobe(size, self.index.nlist, self.shortlist)
        self.index.nprobe = min(self.nprobe, self.index.nlist)
        self.quantizer_keepalive = getattr(self.index, "quantizer", None)
        self.indexed_rows = int(indexed_rows)
        self.sync()

    def sync(self, chunk: int = 65_536) -> None:
        """Add rows appended since the IVF was built and drop tombstoned ones (idempotent)."""
        size = int(self.embeds.shape[0])
        for start in range(self.indexed_rows, size, chunk):
            stop = min(size, start + chunk)
            block = np.ascontiguousarray(np.asarray(self.embeds[start:stop], dtype=np.float32))
            self.index.add_with_ids(block, np.arange(start, stop, dtype=np.int64))
        self.indexed_rows = size
        if self.dead:
            self.index.remove_ids(np.array(sorted(self.dead), dtype=np.int64))

    def delete(self, rows: Iterable[int]) -> None:
        rows = [int(r) for r in rows]
        self.dead.update(rows)
        if rows:
            self.index.remove_ids(np.array(sorted(rows), dtype=np.int64))

    def __call__(self, queries: torch.Tensor, k: int | None) -> Candidates:
        alive = int(self.embeds.shape[0]) - len(self.dead)
        if k is None or k >= alive or self.shortlist >= alive:
            return exact_topk_rows(queries, self.embeds, alive_rows(int(self.embeds.shape[0]), self.dead), k)
        probe = max(self.shortlist, k)
        _, ids = self.index.search(np.ascontiguousarray(queries.detach().float().numpy()), probe)
        out_idx, out_scores = [], []
        for q in range(queries.shape[0]):
            rows = ids[q][ids[q] >= 0]
            if self.dead:
                rows = rows[~np.isin(rows, np.fromiter(self.dead, dtype=np.int64))]
            if rows.size == 0:
                rows = alive_rows(int(self.embeds.shape[0]), self.dead).numpy()
            cands = exact_topk_rows(queries[q : q + 1], self.embeds, torch.from_numpy(rows.astype(np.int64)), k)
            out_idx.append(cands.indices[0])
            out_scores.append(cands.scores[0])
        return Candidates(out_idx, out_scores)

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike) -> None:
        """IVF (with the tombstoned rows already removed) + its metadata, each written atomically."""
        directory = Path(directory)
        with atomic_path(directory / IVF_FILE) as tmp:
            self.faiss.write_index(self.index, str(tmp))
        atomic_write_text(directory / IVF_META_FILE, json.dumps(
            {"rows": self.indexed_rows, "nlist": int(self.index.nlist), "kind": "IVFFlat"}))

    @classmethod
    def open(cls, directory: str | os.PathLike, embeds: torch.Tensor, dead: set[int], **kwargs) -> "ShortlistCoarse":
        """Read a saved IVF when it is consistent with `embeds` (≤ rows), else train a new one."""
        import faiss  # noqa: PLC0415

        directory = Path(directory) if directory is not None else None
        if directory is not None and (directory / IVF_FILE).is_file() and (directory / IVF_META_FILE).is_file():
            meta = read_json(directory / IVF_META_FILE, what="coarse IVF metadata")
            if int(meta["rows"]) <= int(embeds.shape[0]):
                index = faiss.read_index(str(directory / IVF_FILE))
                if index.d == int(embeds.shape[1]):
                    return cls(embeds, dead=dead, faiss_index=index, indexed_rows=int(meta["rows"]), **kwargs)
            logger.warning("Ignoring %s: it does not match the index (rebuilding the IVF in memory).", directory / IVF_FILE)
        return cls(embeds, dead=dead, **kwargs)


def alive_rows(size: int, dead: set[int]) -> torch.Tensor:
    if not dead:
        return torch.arange(size)
    mask = torch.ones(size, dtype=torch.bool)
    mask[torch.tensor(sorted(dead), dtype=torch.long)] = False
    return mask.nonzero().squeeze(1)


def make_coarse_fn(embeds: torch.Tensor, dead: set[int], directory=None, min_items: int = IVF_MIN_ITEMS,
                   **kwargs: Any):
    """The coarse function for `search_texts`: `None` (plain exact) when small and nothing deleted,
    exact-on-live-rows when small with tombstones, `ShortlistCoarse` from `min_items` live rows on."""
    size = int(embeds.shape[0])
    if size - len(dead) >= min_items:
        return ShortlistCoarse.open(directory, embeds, dead, **kwargs)
    if dead:
        rows = alive_rows(size, dead)
        return lambda queries, k: exact_topk_rows(queries, embeds, rows, k)
    return None


__all__ = [
    "DEFAULT_NPROBE",
    "DEFAULT_SHORTLIST",
    "EMBEDDINGS_FILE",
    "IVF_FILE",
    "IVF_MIN_ITEMS",
    "TOMBSTONES_FILE",
    "ShortlistCoarse",
    "alive_rows",
    "default_nlist",
    "exact_topk_rows",
    "make_coarse_fn",
    "open_embeddings",
    "open_mapped_embeddings",
    "read_tombstones",
    "rows_of_ids",
    "write_embeddings",
    "write_tombstones",
]


# ----------------------------------------------------------------------------------------------- checks and FAISS top-k
def check_mapped_embeddings(directory: Path, manifest: dict, embeds: torch.Tensor) -> None:
    """The memory-mapped `embeddings.npy` is what search reads: each shard's slice must hash to the embeddings
    the manifest recorded for that shard (a flipped byte or a stale file is named, never searched)."""
    start = 0
    for shard in manifest["shards"]:
        expected = shard.get("embeds_sha256")
        count = shard["count"]
        if expected is not None and tensor_sha256(embeds[start:start + count].to(torch.float32)) != expected:
            raise IndexCorruptError(
                f"{str(directory / EMBEDDINGS_FILE)!r} rows {start}..{start + count - 1} differ from the embeddings the "
                f"manifest recorded for shard {shard['file']!r} (altered or stale). Rebuild the index."
            )
        start += count


def open_mapped_embeddings(directory: Path, manifest: dict) -> torch.Tensor | None:
    """The manifest's rows of `embeddings.npy`, memory-mapped, or None when the index has no such file (older
    indexes, or a record that does not cover the manifest's rows): the caller then reads the shards.

    A file with *more* rows than the manifest records is a writer's newer version, replaced after this
    manifest was read (`mtgfe-index` updates only append rows, and writes the manifest last): its first
    rows are this version's, so a reader searching during an update sees the version it opened. Fewer rows,
    or a file that is not an .npy array, is damage, named. `check_mapped_embeddings` then checks the rows
    against the shards' recorded hashes.
    """
    record = manifest.get("embeddings_file")
    if not record or record.get("count") != manifest.get("count"):
        return None
    path = directory / record["file"]
    try:
        embeds = open_embeddings(path)
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as error:  # truncated or not an .npy file
        raise IndexCorruptError(f"{str(path)!r} (the memory-mapped embeddings) cannot be read ({error}); "
                                "it is truncated or damaged. Rebuild the index.") from error
    if embeds.ndim != 2 or embeds.shape[0] < record["count"]:
        raise IndexCorruptError(f"{str(path)!r} holds {tuple(embeds.shape)} rows, the manifest says {record['count']}: "
                                "it is stale or was replaced. Rebuild the index.")
    return embeds[: record["count"]]


def faiss_topk(faiss_index, queries: torch.Tensor, embeds: torch.Tensor, k: int | None) -> Candidates:
    """Top-k by FAISS inner product, then the tie group at the k-th score completed exactly in torch."""
    size = embeds.shape[0]
    if k is None or k >= size:
        return coarse_topk(queries, embeds, None)
    probe = min(size, 2 * k + 8)
    scores, indices = faiss_index.search(queries.float().numpy(), probe)
    out_idx, out_scores = [], []
    for q in range(queries.shape[0]):
        kth = scores[q, k - 1]
        if probe < size and scores[q, -1] >= kth:  # the tie group may run past the probe: exact fallback
            exact = coarse_topk(queries[q : q + 1], embeds, k)
            out_idx.append(exact.indices[0])
            out_scores.append(exact.scores[0])
            continue
        keep = scores[q] >= kth
        idx = torch.from_numpy(indices[q][keep]).long()
        sc = torch.from_numpy(scores[q][keep]).float()
        order = torch.sort(sc, descending=True, stable=True).indices
        out_idx.append(idx[order])
        out_scores.append(sc[order])
    return Candidates(out_idx, out_scores)


def flat_ip_index(embeds: torch.Tensor):
    """A FAISS `IndexFlatIP` over `embeds`, or None when faiss is not installed (the exact torch path is used)."""
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    index = faiss.IndexFlatIP(embeds.shape[1])
    index.add(embeds.float().numpy())
    return index
