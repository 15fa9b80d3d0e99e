"""Atomic writes and JSON reads that name the file on failure.

Why one module: every artefact the package writes (checkpoints' JSON, index manifests, evaluation
reports, caches, HTML) must appear whole or not at all, so a killed process never leaves half a file for
the next run to trust. The rule is "write a temporary sibling, then `os.replace`", which is atomic on
POSIX and Windows within one folder. Reading goes through `read_json` so that a truncated or hand-broken
file gives an error naming the file instead of a bare `JSONDecodeError`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


class FileFormatError(ValueError):
    """A file the package wrote (or expects) is missing, truncated or malformed; the message names it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on error it is removed.

    Use it for writers that take a file name (safetensors, parquet, PIL): `with atomic_path(p) as tmp:
    save_file(tensors, tmp)`. The parent folder is created. The temporary name carries the process id,
    so two processes writing the same target never share a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) so that a reader sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int | None = 2, allow_nan: bool = True) -> Path:
    """`json.dumps(obj)` written atomically, with a trailing newline (UTF-8, non-ASCII kept).

    `allow_nan=False` for files other programs read (search results, GeoJSON): `NaN` / `Infinity` are not
    JSON, so a non-finite number raises `ValueError` (naming the file) and nothing is written."""
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=allow_nan)
    except ValueError as err:
        raise ValueError(f"{path}: not written, it would hold a non-finite number (NaN or Infinity), which JSON "
                         f"cannot represent ({err})") from None
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike, *, what: str = "JSON file"):
    """Parse a JSON file; a missing, unreadable or malformed file raises `FileFormatError` naming it.

    `what` says what the file is for ("index manifest", "trainer state"), so the message tells the user
    which artefact is damaged, not only where.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise FileFormatError(f"{what} not found: {path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise FileFormatError(f"{what} {path} cannot be read: {err}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FileFormatError(
            f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "it is truncated or was edited by hand."
        ) from err


# Bounds for YAML a user hands us (training configs, `--set` values, Hub card configs). An alias is a
# pointer in the composed YAML graph, but every consumer (the JSON deep copy, pydantic, yaml.dump) walks it
# as a tree, so nine nested anchors with ten references each ("billion laughs") turn a few hundred bytes
# into 10^9 nodes and fill the machine's memory. The expanded size is counted on the composed graph,
# before anything is built, and refused past the budget. A real config has a few hundred nodes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
_MAX_YAML_DEPTH = 200


def _expanded_yaml_nodes(root, source: str, budget: int) -> int:
    """Nodes of the tree the YAML graph `root` becomes once every alias is expanded; refuses (naming
    `source`) a graph past `budget` nodes, past `_MAX_YAML_DEPTH` levels, or one that holds itself."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise FileFormatError(f"{source}: a YAML anchor refers to itself (a recursive alias); refused")
        if depth > _MAX_YAML_DEPTH:
            raise FileFormatError(f"{source}: YAML nested more than {_MAX_YAML_DEPTH} levels deep; refused")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = ()
        for child in children:
            total += size(child, depth + 1)
            if total > budget:
                raise FileFormatError(
                    f"{source}: YAML expands to more than {budget} values once its aliases (*name) are "
                    "followed (nested anchors multiply: a 'billion laughs' file); refused before expanding it")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


def load_yaml_text(text: str, source: str, *, max_nodes: int = MAX_YAML_NODES):
    """`yaml.safe_load(text)` that refuses, before building anything, a document whose aliases expand past
    `max_nodes` values, nests too deep, or refers to itself. Errors are `FileFormatError` naming `source`."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as err:
            raise FileFormatError(f"{source}: not valid YAML/JSON: {err}") from err
        except RecursionError:
            raise FileFormatError(f"{source}: YAML nested too deeply to read; refused") from None
        if node is None:
            return None
        _expanded_yaml_nodes(node, source, max_nodes)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as err:
            raise FileFormatError(f"{source}: not valid YAML/JSON: {err}") from err
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike, *, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES):
    """Parse a YAML (or JSON) file with `load_yaml_text`'s bounds, refusing files over `max_bytes` unread.
    A missing, unreadable, oversized or malformed file raises `FileFormatError` naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FileFormatError(f"{what} {path} is {size} bytes, over the {max_bytes}-byte limit for a config; refused")
        with path.open("rb") as handle:  # also bounds what a file growing (or a FIFO) can hand us
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError as err:
        raise FileFormatError(f"{what} not found: {path}") from err
    except OSError as err:
        raise FileFormatError(f"{what} {path} cannot be read: {err}") from err
    if len(raw) > max_bytes:
        raise FileFormatError(f"{what} {path} is over the {max_bytes}-byte limit for a config; refused")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{what} {path} is not UTF-8 text: {err}") from err
    return load_yaml_text(text, f"{what} {path}")


class UnsafePickleError(FileFormatError):
    """A file is a pickle that names code or objects other than tensors; it was refused without unpickling."""


def unsafe_pickle_global(error: BaseException) -> str | None:
    """The callable a `torch.load(weights_only=True)` refusal names (`exec`, `os.system`, ...), or None when
    `error` is not such a refusal. torch words it "Unsupported global: GLOBAL <name> was not an allowed global"."""
    import pickle
    import re

    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
    if found:
        return found.group(1)
    return "an object torch's weights-only loader refuses" if "Weights only load failed" in str(error) else None


@contextlib.contextmanager
def pickles_refused(what: str) -> Iterator[None]:
    """Turn torch's weights-only refusal inside the block into a short `UnsafePickleError` naming `what`.

    torch's own text is a dozen lines that end by explaining how to switch the check off; for someone who
    was handed a model folder, the useful facts are which folder, that it was refused unread, and what to
    use instead."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError as error:
        name = unsafe_pickle_global(error)
        if name is None:
            raise
        raise UnsafePickleError(
            f"{what}: its weights are a pickle (pytorch_model.bin / .pth) that names {name}, not only tensors; "
            "refused without unpickling it (it could run code). Use a folder with model.safetensors, or re-save a "
            "copy you trust with save_pretrained()") from None
