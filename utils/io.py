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


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> Path:
    """`json.dumps(obj)` written atomically, with a trailing newline (UTF-8, non-ASCII kept)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


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
