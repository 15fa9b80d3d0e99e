"""Storage side of the gallery index: model identity, atomic writes, lazily read token shards.

Split from `gallery_index.py` so that file holds the index logic (build / add / search) and this one the
on-disk format: which model built an index (config hash + weights fingerprint), how files are written
atomically, and how fusion tokens are read back a few rows at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mtgfe.utils.io import FileFormatError, atomic_path, atomic_write_text, read_json

logger = logging.getLogger(__name__)

INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
BUILD_STATE_NAME = "build_state.json"


# Config entries that do not change what the model computes (paths, versions, dtype, remote-code maps).
_HASH_IGNORED_KEYS = {
    "_name_or_path", "name_or_path", "transformers_version", "architectures", "auto_map", "custom_pipelines",
    "torch_dtype", "dtype", "_attn_implementation", "_attn_implementation_internal", "_commit_hash",
    "attn_implementation", "output_attentions", "output_hidden_states", "return_dict", "use_cache",
}


class IndexMismatchError(ValueError):
    """The index was built by another model than the one it is used with."""


class IndexCorruptError(FileFormatError):
    """A file of an index (manifest, build state, shard, text file) is missing, truncated, altered or swapped.

    The message names the file and what is wrong with it; `FileFormatError` (a `ValueError`) is the base
    of every "damaged artefact" error of the package.
    """


VERIFY_MODES = ("header", "full", "none")
"""How `GalleryIndex.load(verify=...)` checks shards against the manifest's checksums:
"header" (default): size, sha256 of the safetensors header and of the embeddings (which are read anyway);
"full": also sha256 of every byte (tokens included; reads the whole index once); "none": no checks."""

_REBUILD_HINT = "The index is damaged: rebuild it (mtgfe-index into an empty folder) or restore it from a backup."
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


# ----------------------------------------------------------------------------------------------- identity
def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in sorted(value.items()) if k not in _HASH_IGNORED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def config_hash(config) -> str:
    """sha256 of the config JSON without entries that do not change the computation (see `_HASH_IGNORED_KEYS`)."""
    data = _strip(config.to_dict())
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def weights_fingerprint(model, samples_per_tensor: int = 64) -> str:
    """A cheap hash of the weights: every tensor's name, shape and a strided sample of its values.

    Why not the config alone: two checkpoints trained from the same preset share a config but not
    their embeddings. Hashing every byte of a base-size model costs seconds per CLI call; a strided
    sample of every tensor changes whenever training touched it.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def model_identity(model) -> dict[str, str]:
    base = getattr(model, "mtgfe", model)
    return {
        "model": str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "<in-memory>"),
        "model_config_hash": config_hash(model.config),
        "model_weights_hash": weights_fingerprint(base),
    }


def mtgfe_version() -> str:
    """The installed package version, recorded in manifests (informative only: "unknown" from a source tree)."""
    try:
        from importlib.metadata import version

        return version("mtgfe")
    except Exception:  # noqa: BLE001 - metadata lookups raise PackageNotFoundError or worse; version is informative only
        return "unknown"


# ----------------------------------------------------------------------------------------------- io helpers
def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file through `mtgfe.utils.io.atomic_path`: readers never see half a shard.

    `metadata` (strings) lands in the header, e.g. the rows a shard holds, so its header hash differs
    from any other shard's even when shapes agree (a swapped shard is then caught by the cheap check).
    """
    # One metadata key only: safetensors writes metadata in hash-map order, so two keys would make the
    # bytes of the same shard differ between processes (and a resumed build no longer bit-identical).
    with atomic_path(path) as tmp:
        tmp.touch()  # the mode any file of the index gets (umask applied); safetensors itself writes 0600
        mode = tmp.stat().st_mode & 0o777
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata or {"format": "pt"})
        os.chmod(tmp, mode)


# ----------------------------------------------------------------------------------------------- integrity
def _safetensors_header(path: Path) -> bytes:
    """The 8-byte length prefix plus the JSON header of a safetensors file (nothing else is read)."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise IndexCorruptError(f"Index file {str(path)!r} is truncated ({len(prefix)} bytes). {_REBUILD_HINT}")
            length = int.from_bytes(prefix, "little")
            if length > _MAX_HEADER_BYTES:
                raise IndexCorruptError(f"Index file {str(path)!r} has no valid safetensors header. {_REBUILD_HINT}")
            header = handle.read(length)
    except FileNotFoundError as error:
        raise IndexCorruptError(f"Index file {str(path)!r} is missing. {_REBUILD_HINT}") from error
    except OSError as error:
        raise IndexCorruptError(f"Index file {str(path)!r} cannot be read: {error}") from error
    if len(header) < length:
        raise IndexCorruptError(f"Index file {str(path)!r} is truncated inside its header. {_REBUILD_HINT}")
    return prefix + header


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (any dtype), as stored in a shard."""
    return hashlib.sha256(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def file_checksums(path: Path) -> dict[str, Any]:
    """What the manifest records per file: byte size, sha256 of the safetensors header, sha256 of every byte."""
    return {"size": path.stat().st_size, "header_sha256": hashlib.sha256(_safetensors_header(path)).hexdigest(),
            "sha256": _sha256_file(path)}


def check_verify_mode(verify: str) -> str:
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}.")
    return verify


def verify_file(path: Path, record: dict, verify: str, what: str = "index shard") -> bool:
    """Check `path` against its manifest `record` (see `file_checksums`); `IndexCorruptError` names the file.

    Returns False when the record holds no checksums (an index written before they existed).
    """
    if verify == "none":
        return True
    if not path.is_file():
        raise IndexCorruptError(f"{what} {str(path)!r} is missing. {_REBUILD_HINT}")
    if "size" not in record:
        return False
    size = path.stat().st_size
    if size != record["size"]:
        raise IndexCorruptError(
            f"{what} {str(path)!r} has {size} bytes but the manifest recorded {record['size']}: it was truncated or "
            f"replaced. {_REBUILD_HINT}"
        )
    if hashlib.sha256(_safetensors_header(path)).hexdigest() != record.get("header_sha256"):
        raise IndexCorruptError(
            f"{what} {str(path)!r} does not match the manifest (header checksum): it was altered or swapped with "
            f"another file. {_REBUILD_HINT}"
        )
    if verify == "full" and record.get("sha256") and _sha256_file(path) != record["sha256"]:
        raise IndexCorruptError(
            f"{what} {str(path)!r} does not match the manifest (sha256 of its bytes): it was altered. {_REBUILD_HINT}"
        )
    return True


def open_safetensors(path: Path, what: str = "index shard"):
    """`safe_open` whose failures (truncated file, bad header) are `IndexCorruptError` naming the file."""
    if not path.is_file():
        raise IndexCorruptError(f"{what} {str(path)!r} is missing. {_REBUILD_HINT}")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as error:  # noqa: BLE001 - SafetensorError and friends: all mean "damaged file"
        raise IndexCorruptError(f"{what} {str(path)!r} cannot be read ({error}). {_REBUILD_HINT}") from error


# Manifest schema: key -> accepted types. Unknown keys are logged (a newer writer), missing ones are errors.
_MANIFEST_COMMON = {"format_version": int, "kind": str, "count": int, "items": list, "model_config_hash": str,
                    "model_weights_hash": str}
_MANIFEST_IMAGES = {"shards": list, "has_tokens": bool}
_MANIFEST_OPTIONAL = {"model": str, "embed_dim": int, "image_size": int, "hidden_size": int, "model_type": str,
                      "source": (str, type(None)), "skipped": list, "created": str, "updated": str,
                      "mtgfe_version": str, "token_shape": list, "tokens_dtype": str, "distinct_texts": list,
                      "texts_file": dict, "embeddings_file": dict, "tiling": dict}
_SHARD_KEYS = {"file": str, "count": int}


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def check_confined(name: str, entry: str, path: Path) -> None:
    """Refuse a file name from an index's JSON (`path`: the manifest or build state) that points outside its
    folder: an absolute path, `..`, a subfolder, or a link that resolves elsewhere. Every file an index owns
    (shards, `embeddings.npy`, texts) sits directly in its folder; a hand-edited or hostile manifest must not
    make a load read (or an update overwrite) `/etc/passwd`. Gallery *image* paths are not checked here:
    they point outside by design and are only ever read."""
    folder = path.parent
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or Path(name).is_absolute():
        inside = False
    else:
        try:
            (folder / name).resolve().relative_to(folder.resolve())
            inside = True
        except ValueError:
            inside = False
    if not inside:
        raise IndexCorruptError(f"{str(path)!r}: {entry} names the file {name!r}, which is not a file of the index "
                                f"folder {str(folder)!r}; refused (an index reads and writes only its own files). "
                                f"{_REBUILD_HINT}")


def validate_manifest(manifest: Any, path: Path) -> dict:
    """Raise `IndexCorruptError` naming `path` and the missing / mistyped keys; log unknown keys."""
    if not isinstance(manifest, dict):
        raise IndexCorruptError(f"Index manifest {str(path)!r} is not a JSON object. {_REBUILD_HINT}")
    required = dict(_MANIFEST_COMMON)
    if manifest.get("kind") == "images":
        required.update(_MANIFEST_IMAGES)
    missing = sorted(k for k in required if k not in manifest)
    if missing:
        raise IndexCorruptError(f"Index manifest {str(path)!r} lacks the key(s) {missing}. {_REBUILD_HINT}")
    known = {**_MANIFEST_COMMON, **_MANIFEST_IMAGES, **_MANIFEST_OPTIONAL}
    wrong = [f"{k} (expected {_type_name(known[k])})" for k, v in manifest.items()
             if k in known and not (isinstance(v, known[k]) and not (isinstance(v, bool) and known[k] is int))]
    if wrong:
        raise IndexCorruptError(f"Index manifest {str(path)!r} has key(s) of the wrong type: {', '.join(wrong)}. {_REBUILD_HINT}")
    extra = sorted(set(manifest) - set(known))
    if extra:
        logger.warning("Index manifest %s has unknown key(s) %s (written by a newer mtgfe?); ignored.", path, extra)
    if manifest["kind"] not in ("images", "texts"):
        raise IndexCorruptError(f"Index manifest {str(path)!r}: kind must be 'images' or 'texts', got {manifest['kind']!r}.")
    bad_items = [n for n, item in enumerate(manifest["items"]) if not isinstance(item, dict)
                 or not all(isinstance(item.get(k), (str, type(None))) for k in ("id", "image", "text", "scene"))]
    if bad_items:
        raise IndexCorruptError(f"Index manifest {str(path)!r}: items must be JSON objects whose id / image / text / "
                                f"scene are strings; item(s) {bad_items[:5]} are not (e.g. "
                                f"{json.dumps(manifest['items'][bad_items[0]])[:80]}). {_REBUILD_HINT}")
    if manifest["count"] != len(manifest["items"]):
        raise IndexCorruptError(f"Index manifest {str(path)!r}: count is {manifest['count']} but it lists "
                                f"{len(manifest['items'])} items. {_REBUILD_HINT}")
    if manifest["kind"] == "images":
        total = 0
        for number, shard in enumerate(manifest["shards"]):
            bad = [k for k, t in _SHARD_KEYS.items() if not isinstance(shard, dict) or not isinstance(shard.get(k), t)]
            if bad:
                raise IndexCorruptError(f"Index manifest {str(path)!r}: shard entry {number} lacks valid {bad}. {_REBUILD_HINT}")
            check_confined(shard["file"], f"shard entry {number}", path)
            if "start" in shard and shard["start"] != total:
                raise IndexCorruptError(f"Index manifest {str(path)!r}: shard {shard['file']!r} starts at row "
                                        f"{shard['start']}, expected {total}. {_REBUILD_HINT}")
            total += shard["count"]
        if total != manifest["count"]:
            raise IndexCorruptError(f"Index manifest {str(path)!r}: its shards hold {total} rows but count is "
                                    f"{manifest['count']}. {_REBUILD_HINT}")
        record = manifest.get("embeddings_file")
        if record is not None:
            if not (isinstance(record.get("file"), str) and isinstance(record.get("count"), int)
                    and not isinstance(record.get("count"), bool)):
                raise IndexCorruptError(f"Index manifest {str(path)!r}: embeddings_file must hold a file name and a "
                                        f"row count, got {record!r}. {_REBUILD_HINT}")
            check_confined(record["file"], "embeddings_file", path)
    return manifest


def read_index_json(path: Path, what: str):
    """`read_json` whose failures (missing, truncated, not JSON) are `IndexCorruptError` naming the file."""
    try:
        return read_json(path, what=what)
    except FileFormatError as error:
        raise IndexCorruptError(f"{error} {_REBUILD_HINT}") from error


_STATE_KEYS = {"shards": list, "skipped": list}
_STATE_SHARD_KEYS = {"count": int, "items": list, "consumed": list}


def validate_build_state(state: Any, path: Path) -> dict:
    """Raise `IndexCorruptError` naming `path` when `build_state.json` lacks keys or has wrong types."""
    hint = "Delete the folder and build again."
    if not isinstance(state, dict):
        raise IndexCorruptError(f"Index build state {str(path)!r} is not a JSON object. {hint}")
    bad = [k for k, t in _STATE_KEYS.items() if not isinstance(state.get(k), t)]
    for number, shard in enumerate(state.get("shards") or []):
        if not isinstance(shard, dict) or not ("file" in shard and isinstance(shard["file"], (str, type(None)))):
            bad.append(f"shards[{number}].file")
            continue
        bad += [f"shards[{number}].{k}" for k, t in _STATE_SHARD_KEYS.items() if not isinstance(shard.get(k), t)]
    if bad:
        raise IndexCorruptError(f"Index build state {str(path)!r} lacks valid key(s) {bad}. {hint}")
    for number, shard in enumerate(state["shards"]):
        if shard["file"] is not None:
            check_confined(shard["file"], f"shards[{number}].file", path)
    return state


class TokenStore:
    """Fusion tokens of a gallery as a list of segments: safetensors shards (read lazily) or tensors.

    Why: tokens of a large archive do not fit in memory (small preset: 96 KiB per image); a query needs
    only its k candidates' rows. `store[rows]` gathers those rows from whatever segment holds them.
    """

    def __init__(self):
        self._segments: list[Any] = []  # each: torch.Tensor or (Path, count)
        self._offsets: list[int] = [0]
        self._handles: dict[Path, Any] = {}
        self.token_shape: tuple[int, int] | None = None
        self.dtype: torch.dtype | None = None

    def __len__(self) -> int:
        return self._offsets[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *(self.token_shape or (0, 0)))

    def append_tensor(self, tokens: torch.Tensor) -> None:
        self._check(tuple(tokens.shape[1:]), tokens.dtype)
        self._segments.append(tokens)
        self._offsets.append(self._offsets[-1] + int(tokens.shape[0]))

    def append_file(self, path: Path, count: int) -> None:
        handle = open_safetensors(path)
        try:
            sl = handle.get_slice("image_tokens")
            shape = tuple(sl.get_shape())
            dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[sl.get_dtype()]
        except Exception as error:  # noqa: BLE001 - a damaged or foreign shard
            raise IndexCorruptError(f"index shard {str(path)!r} has no usable image_tokens ({error}). {_REBUILD_HINT}") from error
        if shape[0] != count:
            raise IndexCorruptError(f"Shard {str(path)!r} holds {shape[0]} token rows, the manifest says {count}.")
        self._handles[path] = handle
        self._check(shape[1:], dtype)
        self._segments.append((path, count))
        self._offsets.append(self._offsets[-1] + count)

    def _check(self, token_shape, dtype) -> None:
        if self.token_shape is None:
            self.token_shape, self.dtype = tuple(token_shape), dtype
        elif tuple(token_shape) != self.token_shape:
            raise ValueError(f"Token shape {tuple(token_shape)} does not match the store's {self.token_shape}.")

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, slice):
            rows = torch.arange(len(self))[rows]
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        out = torch.empty((rows.numel(), *self.token_shape), dtype=self.dtype)
        offsets = torch.tensor(self._offsets)
        seg_of = torch.searchsorted(offsets, rows, right=True) - 1
        for seg in seg_of.unique().tolist():
            where = (seg_of == seg).nonzero().squeeze(1)
            local = rows[where] - self._offsets[seg]
            segment = self._segments[seg]
            if isinstance(segment, torch.Tensor):
                out[where] = segment[local].to(self.dtype)
            else:
                sl = self._handles[segment[0]].get_slice("image_tokens")
                lo, hi = int(local.min()), int(local.max()) + 1
                if hi - lo <= 4 * local.numel():  # dense enough: one contiguous read
                    out[where] = sl[lo:hi][local - lo].to(self.dtype)
                else:  # sparse candidates: read only their rows
                    for w, r in zip(where.tolist(), local.tolist()):
                        out[w] = sl[r : r + 1][0].to(self.dtype)
        return out

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self[torch.arange(start, stop)]


# ----------------------------------------------------------------------------------------------- index


def check_model(manifest: dict, model, where: str) -> None:
    """Raise `IndexMismatchError` naming both models when `model` did not build the index."""
    identity = model_identity(model)
    for key in ("model_config_hash", "model_weights_hash"):
        if manifest.get(key) and manifest[key] != identity[key]:
            what = "config" if key == "model_config_hash" else "weights"
            raise IndexMismatchError(
                f"Index {where} was built with model {manifest.get('model')!r} ({what} {manifest[key][:12]}), but "
                f"it is being used with model {identity['model']!r} ({what} {identity[key][:12]}). Embeddings of "
                "different models are not comparable: rebuild the index with this model (mtgfe-index) or load the "
                "model that built it."
            )


class ShardWriter:
    """Writes shards of an in-progress build and a `build_state.json` that records them (the resume point)."""

    def __init__(self, directory: Path, identity: dict, settings: dict, resume: bool):
        self.directory = directory
        self.created = False
        state_path = directory / BUILD_STATE_NAME
        if (directory / MANIFEST_NAME).is_file():
            raise FileExistsError(
                f"{str(directory)!r} already holds a finished index. Load it and add() new images (mtgfe-index "
                "does this when run again on the same output), or choose an empty output folder."
            )
        if state_path.is_file():
            if not resume:
                raise FileExistsError(
                    f"{str(directory)!r} holds an interrupted build ({BUILD_STATE_NAME}). Pass resume=True "
                    "(mtgfe-index --resume) to continue it, or delete the folder to start over."
                )
            self.state = validate_build_state(read_index_json(state_path, "index build state"), state_path)
            for key, value in {**identity, **settings}.items():
                if key != "model" and self.state.get(key) != value:
                    raise ValueError(
                        f"Cannot resume {str(directory)!r}: {key} was {self.state.get(key)!r} when the build started and "
                        f"is {value!r} now. Use the same model and options, or start over in an empty folder."
                    )
        else:
            self.created = not directory.exists()
            directory.mkdir(parents=True, exist_ok=True)
            self.state = {**identity, **settings, "shards": [], "skipped": []}
        self.consumed = sum(len(s["consumed"]) for s in self.state["shards"])

    def write_shard(self, embeds, tokens, items, consumed, skipped) -> Path:
        number = len(self.state["shards"])
        name = f"shard_{number:05d}.safetensors"
        path = self.directory / name
        start = sum(s["count"] for s in self.state["shards"])
        record = {"file": name if items else None, "count": len(items), "start": start}
        if items:
            tensors = {"image_embeds": embeds}
            if tokens is not None:
                tensors["image_tokens"] = tokens
            atomic_save_tensors(path, tensors, metadata=shard_metadata(start, len(items)))
            record.update(file_checksums(path), embeds_sha256=tensor_sha256(embeds))
        self.state["shards"].append({**record, "items": items, "consumed": consumed})
        self.state["skipped"] = list(skipped)
        # The state is the commit point: written after the shard, so a crash in between only leaves an
        # orphan file that the next write replaces.
        atomic_write_text(self.directory / BUILD_STATE_NAME, json.dumps(self.state, ensure_ascii=False))
        return path

    def finish(self) -> None:
        self.state["shards"] = [s for s in self.state["shards"] if s["file"]]
        (self.directory / BUILD_STATE_NAME).unlink()

    def abandon(self, created: bool) -> None:
        """Remove the build state of a build that indexed nothing (and the folder when this build created it)."""
        (self.directory / BUILD_STATE_NAME).unlink(missing_ok=True)
        if created and self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()


# ----------------------------------------------------------------------------------------------- write lock
WRITE_LOCK_NAME = ".mtgfe-write.lock"
WRITE_LOCK_OWNER = ".mtgfe-write.lock.json"  # who holds the lock (PID, host, since): for the waiting writer's message


class IndexBusyError(RuntimeError):
    """Another writer holds an index folder's write lock (and the caller would not, or no longer, wait)."""


def _lock_holder(directory: Path) -> str:
    """`PID 123 on host, since 2026-...` from the owner file, or a plain phrase when it is unreadable (the
    holder may be between taking the lock and writing it)."""
    try:
        owner = json.loads((directory / WRITE_LOCK_OWNER).read_text(encoding="utf-8"))
        return f"PID {int(owner['pid'])} on {owner.get('host', '?')}, since {owner.get('since', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextlib.contextmanager
def index_write_lock(directory: str | os.PathLike, timeout: float | None = None,
                     on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold `directory`'s exclusive write lock for a whole build, update (load, add, save) or delete.

    Why: an update reads the manifest, encodes for minutes and writes a new manifest; two writers that
    overlap would each write a manifest holding only their own additions, and one's work would be lost
    without an error. Writers therefore queue on an OS file lock in the folder (`filelock`; released by
    the OS when the holder dies, so a killed writer never leaves the index locked). Readers take no lock:
    the manifest is replaced atomically and written last.

    `timeout`: seconds to wait for another writer (None: as long as it takes; 0: not at all). When the lock
    is held, `on_wait` is called once with a description of the holder (PID, host, since when) before
    waiting; past `timeout`, `IndexBusyError` names the holder. The folder is created if missing.
    """
    import datetime as _dt
    import socket

    from filelock import FileLock, Timeout

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / WRITE_LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _lock_holder(directory)
        if timeout == 0:
            raise IndexBusyError(f"another writer ({holder}) is writing the index {directory} "
                                 f"(it holds {directory / WRITE_LOCK_NAME}); try again when it has finished") from None
        if on_wait is not None:
            on_wait(holder)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise IndexBusyError(f"another writer ({_lock_holder(directory)}) still holds the write lock of the index "
                                 f"{directory} after {timeout:g} s; nothing was written, try again later") from None
    try:
        since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(directory / WRITE_LOCK_OWNER,
                          json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        yield directory
    finally:
        (directory / WRITE_LOCK_OWNER).unlink(missing_ok=True)
        lock.release()


def missing_folders(directory: str | os.PathLike) -> list[Path]:
    """The folders on the way to `directory` that do not exist yet, deepest first: what a build would create."""
    missing = []
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_created_folder(directory: str | os.PathLike, created: Sequence[Path]) -> bool:
    """Remove an index folder that this run created (`created`, from `missing_folders`) after a build that
    failed before committing anything; return whether it was removed.

    Why: a failed first build used to leave an empty folder that looked like an index. Only a folder that
    holds nothing but the write lock file goes, and only when the lock can be taken at once: a folder that
    holds anything else (a resumable build state, a file someone put there) or whose lock another writer
    holds or waits on is left as it is. The lock file is unlinked while held, so no writer can hold it
    afterwards through that file; a writer that opened it in the instant before gets the unlinked lock and
    finds its folder gone (a write error, nothing written) unless a third writer recreated the folder in
    between, a three-writer race on a brand-new folder that this does not cover. Parent folders this run
    created go too when they are left empty.
    """
    from filelock import FileLock, Timeout

    directory = Path(directory)
    if not created or directory.absolute() != Path(created[0]):
        return False
    lock_path = directory / WRITE_LOCK_NAME
    try:
        if any(entry.name != WRITE_LOCK_NAME for entry in directory.iterdir()):
            return False
        lock = FileLock(str(lock_path))
        lock.acquire(timeout=0)
    except (OSError, Timeout):
        return False
    try:
        if any(entry.name != WRITE_LOCK_NAME for entry in directory.iterdir()):
            return False
        lock_path.unlink(missing_ok=True)
        directory.rmdir()
    except OSError:
        return False
    finally:
        lock.release()
    for parent in created[1:]:
        try:
            parent.rmdir()
        except OSError:  # not empty (something else landed there) or gone: keep going no further
            break
    return True


def shard_metadata(start: int, count: int) -> dict[str, str]:
    """Header metadata of a shard: the manifest rows it holds (makes every shard's header hash distinct)."""
    return {"mtgfe_rows": f"{start}:{start + count}"}


def shard_record(name: str, path: Path, start: int, count: int, embeds: torch.Tensor) -> dict[str, Any]:
    """A manifest shard entry: file, row range and checksums (see `verify_file`)."""
    return {"file": name, "count": count, "start": start, **file_checksums(path), "embeds_sha256": tensor_sha256(embeds)}


__all__ = [
    "BUILD_STATE_NAME",
    "INDEX_FORMAT_VERSION",
    "MANIFEST_NAME",
    "WRITE_LOCK_NAME",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexMismatchError",
    "VERIFY_MODES",
    "ShardWriter",
    "TokenStore",
    "atomic_save_tensors",
    "check_confined",
    "check_model",
    "config_hash",
    "file_checksums",
    "index_write_lock",
    "missing_folders",
    "open_safetensors",
    "read_index_json",
    "remove_created_folder",
    "shard_metadata",
    "shard_record",
    "tensor_sha256",
    "validate_build_state",
    "validate_manifest",
    "verify_file",
    "model_identity",
    "mtgfe_version",
    "weights_fingerprint",
]


def warn_unchecked(directory) -> None:
    logger.warning("Index %s was written before mtgfe recorded checksums: its files cannot be verified. "
                   "Rebuild it (mtgfe-index into an empty folder) to get integrity checks.", directory)


def model_sizes(model) -> dict:
    """The widths an index records beside the model identity (embed dim, image size, text width, type)."""
    config = model.config
    return {"embed_dim": int(config.embed_dim), "image_size": int(getattr(config, "image_size", 0) or 0),
            "hidden_size": int(config.text_config.hidden_size), "model_type": getattr(config, "model_type", "")}
