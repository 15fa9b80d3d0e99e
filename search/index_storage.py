"""Storage side of the gallery index: model identity, atomic writes, lazily read token shards.

Split from `gallery_index.py` so that file holds the index logic (build / add / search) and this one the
on-disk format: which model built an index (config hash + weights fingerprint), how files are written
atomically, and how fusion tokens are read back a few rows at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mtgfe.utils.io import atomic_path, atomic_write_text, read_json

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
def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a safetensors file through `mtgfe.utils.io.atomic_path`: readers never see half a shard."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})


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
        handle = safe_open(str(path), framework="pt")
        self._handles[path] = handle
        sl = handle.get_slice("image_tokens")
        shape = tuple(sl.get_shape())
        if shape[0] != count:
            raise ValueError(f"Shard {str(path)!r} holds {shape[0]} token rows, the manifest says {count}.")
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[sl.get_dtype()]
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
            self.state = read_json(state_path, what="index build state")
            for key, value in {**identity, **settings}.items():
                if key != "model" and self.state.get(key) != value:
                    raise ValueError(
                        f"Cannot resume {str(directory)!r}: {key} was {self.state.get(key)!r} when the build started and "
                        f"is {value!r} now. Use the same model and options, or start over in an empty folder."
                    )
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self.state = {**identity, **settings, "shards": [], "skipped": []}
        self.consumed = sum(len(s["consumed"]) for s in self.state["shards"])

    def write_shard(self, embeds, tokens, items, consumed, skipped) -> Path:
        number = len(self.state["shards"])
        name = f"shard_{number:05d}.safetensors"
        path = self.directory / name
        if items:
            tensors = {"image_embeds": embeds}
            if tokens is not None:
                tensors["image_tokens"] = tokens
            atomic_save_tensors(path, tensors)
        self.state["shards"].append({"file": name if items else None, "count": len(items), "items": items,
                                     "consumed": consumed})
        self.state["skipped"] = list(skipped)
        # The state is the commit point: written after the shard, so a crash in between only leaves an
        # orphan file that the next write replaces.
        atomic_write_text(self.directory / BUILD_STATE_NAME, json.dumps(self.state, ensure_ascii=False))
        return path

    def finish(self) -> None:
        self.state["shards"] = [s for s in self.state["shards"] if s["file"]]
        (self.directory / BUILD_STATE_NAME).unlink()


__all__ = [
    "BUILD_STATE_NAME",
    "INDEX_FORMAT_VERSION",
    "MANIFEST_NAME",
    "IndexMismatchError",
    "ShardWriter",
    "TokenStore",
    "atomic_save_tensors",
    "check_model",
    "config_hash",
    "model_identity",
    "mtgfe_version",
    "weights_fingerprint",
]
