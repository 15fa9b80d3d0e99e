"""Where the images of an index build come from: a folder, a `datasets` split or a list.

`GalleryIndex.build` consumes *batch generators* `gen(start, batch_size)` that yield `(images, items,
consumed)`: decoded images, their index items, and the source entries the batch used up (what a resumed
build skips). Decoding goes through `load_image` one file at a time so a bad file is named (and, when
asked, skipped) alone, and reduced towards the processor's input size (`decode_options`) so memory does not
grow with the files' full resolution.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from modeling_mtgfe.retrieval import IMAGE_EXTENSIONS
from mtgfe.processing.image_decoding import ImageDecodeError, load_image

logger = logging.getLogger("mtgfe.search.gallery_index")  # the messages users already filter on


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursively, sorted by relative path (hidden files and folders skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {str(root)!r}.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def dataset_items(rows: dict, start: int, count: int) -> list[dict]:
    """Index items of a `datasets` batch (`rows[column][j]`): the id is the file name, else the image id, else
    the row number, so the same dataset always gives the same ids (sharded encoding relies on it)."""
    items = []
    for j in range(count):
        if "filename" in rows:
            ident = str(rows["filename"][j])
        elif "image_id" in rows:
            ident = str(rows["image_id"][j])
        else:
            ident = f"row_{start + j}"
        item = {"image": ident, "id": ident}
        if "image_id" in rows:
            item["image_id"] = int(rows["image_id"][j])
        if "captions" in rows:
            item["captions"] = list(rows["captions"][j])
        items.append(item)
    return items


def decode_options(processor) -> dict[str, Any]:
    """`load_image` options matching what `processor` would do: decode reduced towards its resize target
    (JPEG draft / reduce: a 6000² scene costs a few MB instead of ~100 MB) with its band selection."""
    image_processor = getattr(processor, "image_processor", None)
    target = getattr(image_processor, "decode_target", None)
    options: dict[str, Any] = {}
    if callable(target):
        options["target_size"] = target(getattr(image_processor, "do_resize", None), getattr(image_processor, "size", None))
    if getattr(image_processor, "bands", None) is not None:
        options["bands"] = image_processor.bands
    return options


def decode_checked(paths: Sequence[Path], skip_unreadable: bool, skipped: list[str],
                    options: dict[str, Any] | None = None) -> tuple[list, list[Path]]:
    """Decode each file once with `load_image` (`options`: see `decode_options`), so a bad file is named
    (and optionally skipped) alone."""
    images, kept = [], []
    for path in paths:
        try:
            images.append(load_image(path, **(options or {})))
            kept.append(path)
        except (ImageDecodeError, OSError) as error:
            if not skip_unreadable:
                raise ImageDecodeError(
                    f"Cannot index {str(path)!r}: {error}. Remove the file or pass skip_unreadable=True "
                    "(mtgfe-index --skip-unreadable) to skip unreadable files."
                ) from error
            logger.warning("SKIPPED unreadable image %s: %s", path, error)
            skipped.append(str(path))
    return images, kept


# ----------------------------------------------------------------------------------------------- token store
def folder_batches(paths, root, captions, skip_unreadable, skipped, options=None):
    def gen(start, batch_size):
        for s in range(start, len(paths), batch_size):
            chunk = paths[s : s + batch_size]
            images, kept = decode_checked(chunk, skip_unreadable, skipped, options)
            items = []
            for path in kept:
                rel = path.relative_to(root).as_posix()
                item = {"image": str(path), "id": rel}
                gt = captions.get(rel, captions.get(path.name))
                if gt:
                    item["captions"] = list(gt)
                items.append(item)
            yield images, items, [p.relative_to(root).as_posix() for p in chunk]
    return gen

def dataset_batches(dataset):
    def gen(start, batch_size):
        for s in range(start, len(dataset), batch_size):
            rows = dataset[s : s + batch_size]
            items = dataset_items(rows, s, len(rows["image"]))
            yield list(rows["image"]), items, [it["id"] for it in items]
    return gen

def list_batches(sources, skip_unreadable, skipped, options=None):
    def gen(start, batch_size):
        for s in range(start, len(sources), batch_size):
            chunk = sources[s : s + batch_size]
            paths = [c for c in chunk if isinstance(c, (str, os.PathLike))]
            ok_paths: set = set()
            if paths:
                _, kept = decode_checked([Path(p) for p in paths], skip_unreadable, skipped, options)
                ok_paths = {str(p) for p in kept}
            images, items = [], []
            for j, c in enumerate(chunk):
                if isinstance(c, (str, os.PathLike)):
                    if str(Path(c)) in ok_paths:
                        images.append(str(c))
                        items.append({"image": str(c), "id": str(c)})
                else:
                    images.append(c)
                    name = getattr(c, "filename", "") or f"image_{s + j}"
                    items.append({"image": name, "id": name})
            yield images, items, [str(c) if isinstance(c, (str, os.PathLike)) else f"#{s + j}" for c in chunk]
    return gen

class ItemPaths:
    """`items[i]["image"]` as a sequence of paths, for re-encoding candidates of a token-less index."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]["image"]


def retry_paths(writer, listing, root) -> list[Path]:
    """Files an interrupted folder build skipped as unreadable, to try again when it is resumed."""
    if writer is None or listing is None or not writer.consumed:
        return []
    return [Path(s) for s in writer.state.get("skipped", []) if Path(s).is_file() and Path(s).is_relative_to(root)]


def looks_like_texts(source) -> bool:
    """A list of strings none of which is an existing path or ends with an image extension."""
    if not isinstance(source, (list, tuple)) or not source or not all(isinstance(s, str) for s in source):
        return False
    return not any(s.lower().endswith(IMAGE_EXTENSIONS) or os.path.exists(s) for s in source)


def is_dataset(source) -> bool:
    return isinstance(source, Dataset)


@dataclass
class BuildSource:
    """What `GalleryIndex.build` needs to know about its source, whatever kind it is."""

    batches: Callable  # gen(start, batch_size) -> (images, items, consumed)
    total: int  # source entries (the progress total and the resume position)
    description: str | None  # the manifest's "source"
    listing: list[str] | None = None  # a folder's sorted relative paths (resume checks the prefix)
    root: Path | None = None  # a folder's root
    batch_source: bool = False  # an object with `index_batches` (e.g. scene tiles) that checks resumes itself
    settings: dict = field(default_factory=dict)  # options recorded in the manifest and build state


def resolve_source(source, processor, captions, skip_unreadable: bool, skipped: list[str]) -> BuildSource:
    """Turn a build's `source` (folder, batch source, `datasets` split, list) into a `BuildSource`.

    `skipped` is the manifest's list, filled in place by the generators as they skip unreadable files."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(source).resolve()
        paths = list_image_files(root)
        if not paths:
            raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}.")
        return BuildSource(folder_batches(paths, root, captions or {}, skip_unreadable, skipped, decode_options(processor)),
                           len(paths), str(root), [p.relative_to(root).as_posix() for p in paths], root)
    if hasattr(source, "index_batches"):  # e.g. mtgfe.search.scene_index.SceneSource
        return BuildSource(source.index_batches(skipped), source.total, source.describe(), [], None, True,
                           source.settings())
    if is_dataset(source):
        description = f"datasets:{getattr(source, 'info', None) and source.info.description or 'dataset'}"
        return BuildSource(dataset_batches(source), len(source), description)
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("The image list is empty: nothing to index.")
        return BuildSource(list_batches(list(source), skip_unreadable, skipped, decode_options(processor)),
                           len(source), "list")
    raise TypeError(
        f"Cannot index a {type(source).__name__}: pass a folder, a datasets split (images view), a list of "
        "images/paths, or a list of captions."
    )


__all__ = [
    "BuildSource",
    "ItemPaths",
    "dataset_batches",
    "dataset_items",
    "decode_checked",
    "decode_options",
    "folder_batches",
    "is_dataset",
    "list_batches",
    "list_image_files",
    "looks_like_texts",
    "resolve_source",
    "retry_paths",
]
