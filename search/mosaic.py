"""A georeferenced mosaic of UCM-Captions test images with known answers, and a place-level metric.

Why: there is no public scene with text-retrieval ground truth at the place level, but UCM images are
256×256 USGS urban orthophoto chips (~0.3 m). Laying *test-split* images (never seen in training) in a
known grid inside a real projected CRS gives a scene where every cell's class and footprint are known,
so the whole "scene in, places out" path — tiling, footprints, GeoJSON, NMS — can be checked exactly
(tile = cell, pixel for pixel) and the ranking scored by whether hits land on cells of the queried class
([`precision_at_k_by_class`]).

The mosaic is written tiled (256×256 blocks, deflate) with internal overviews, i.e. COG-like, so its
windowed reads behave like a real COG's. A JSON sidecar (`<name>.layout.json`, written after the
GeoTIFF, both atomically) lists each cell's class, source image, pixel window and CRS bounds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mtgfe.processing.image_decoding import load_image
from mtgfe.utils.io import atomic_path, atomic_write_json, read_json

from .geo import apply_affine, box_iou, window_to_box

UCM_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
    "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
    "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt",
)
"""The 21 UC Merced classes in alphabetical order: UCM-Captions image `N.jpg` is class `(N-1)//100`."""

UCM_ANNOTATIONS = Path("ucm_captions/annotations/karpathy_json/dataset_ucm_modified.json")
UCM_IMAGES = Path("ucm_captions/images/jpeg_q95")
CELL_SIZE = 256
DEFAULT_ORIGIN = (551000.0, 4182000.0)
"""Upper-left corner (UTM 10N easting, northing) of the default mosaic: San Francisco, where the USGS
urban imagery UC Merced was cut from is plausible; any projected point would do."""


def ucm_class_of(filename: str | os.PathLike) -> str:
    """Class of a UCM-Captions image from its number (`"101.tif"` / `"101.jpg"` → `"airplane"`)."""
    number = int(Path(filename).stem)
    if not 1 <= number <= 100 * len(UCM_CLASSES):
        raise ValueError(f"Not a UCM-Captions image number: {filename!r}.")
    return UCM_CLASSES[(number - 1) // 100]


def load_ucm_cell(path: str | os.PathLike, size: int = CELL_SIZE) -> np.ndarray:
    """A UCM image as the mosaic stores it: decoded by `load_image`, resized (bicubic) only when it is not
    `size`×`size` (44 of 2,100 images are 242–257 px), as `(H, W, 3)` uint8."""
    image = load_image(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _test_images_by_class(data_dir: Path, split: str) -> dict[str, list[dict]]:
    annotations = read_json(data_dir / UCM_ANNOTATIONS, what="UCM-Captions annotations")
    by_class: dict[str, list[dict]] = {c: [] for c in UCM_CLASSES}
    for entry in annotations["images"]:
        if entry.get("split") == split:
            by_class[ucm_class_of(entry["filename"])].append(entry)
    for entries in by_class.values():
        entries.sort(key=lambda e: int(Path(e["filename"]).stem))
    return by_class


def build_ucm_mosaic(
    data_dir: str | os.PathLike,
    out_tif: str | os.PathLike,
    classes: Sequence[str] | None = None,
    grid: tuple[int, int] = (3, 4),
    split: str = "test",
    seed: int = 0,
    crs: str = "EPSG:32610",
    pixel_size: float = 0.3,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    overviews: Sequence[int] = (2, 4, 8),
) -> dict[str, Any]:
    """Write a `rows×cols` mosaic of UCM `split` images as a tiled GeoTIFF and return its layout.

    Cells are filled class by class round-robin (`classes[0], classes[1], ..., classes[0], ...`, so the
    classes are balanced), each class's images drawn without replacement in a `seed`-shuffled order, and
    the cell order is shuffled with the same `seed` so classes do not form stripes. Cell `(r, c)`
    covers pixels `[c*256, (c+1)*256) × [r*256, (r+1)*256)`; the transform is north-up with `pixel_size`
    metres and upper-left corner `origin` in `crs`.

    Returns the layout (also written to `<out_tif stem>.layout.json`): `scene`, `crs`, `transform`,
    `grid`, `cell_size`, `classes`, `split`, `seed` and `cells` — one entry per cell with `row`, `col`,
    `class`, `image` (UCM file name), `imgid`, `window`, `bounds` (CRS) and `resized`.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    data_dir = Path(data_dir)
    rows, cols = (int(v) for v in grid)
    if rows <= 0 or cols <= 0:
        raise ValueError(f"`grid` must be two positive integers (rows, cols), got {grid!r}.")
    classes = list(UCM_CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in UCM_CLASSES]
    if unknown or not classes:
        raise ValueError(f"Unknown UCM classes {unknown!r}; choose from {UCM_CLASSES}.")
    by_class = _test_images_by_class(data_dir, split)
    rng = np.random.default_rng(seed)
    pools = {c: [by_class[c][i] for i in rng.permutation(len(by_class[c]))] for c in classes}
    n_cells = rows * cols
    assignment = []
    for i in range(n_cells):
        cls = classes[i % len(classes)]
        pool = pools[cls]
        if not pool:
            raise ValueError(f"Not enough {split!r} images of class {cls!r} for a {rows}x{cols} mosaic.")
        assignment.append((cls, pool.pop(0)))
    assignment = [assignment[i] for i in rng.permutation(n_cells)]

    transform = from_origin(origin[0], origin[1], pixel_size, pixel_size)
    profile = dict(
        driver="GTiff", width=cols * CELL_SIZE, height=rows * CELL_SIZE, count=3, dtype="uint8", crs=crs,
        transform=transform, tiled=True, blockxsize=CELL_SIZE, blockysize=CELL_SIZE, compress="deflate",
        interleave="pixel", photometric="RGB",
    )
    out_tif = Path(out_tif)
    cells = []
    with atomic_path(out_tif) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, (cls, entry) in enumerate(assignment):
                r, c = divmod(i, cols)
                source = data_dir / UCM_IMAGES / (Path(entry["filename"]).stem + ".jpg")
                with Image.open(source) as probe:
                    original_size = list(probe.size)
                pixels = load_ucm_cell(source)
                window = (c * CELL_SIZE, r * CELL_SIZE, CELL_SIZE, CELL_SIZE)
                dst.write(np.moveaxis(pixels, -1, 0), window=Window(*window))
                x0, y0 = apply_affine(transform, window[0], window[1])
                x1, y1 = apply_affine(transform, window[0] + CELL_SIZE, window[1] + CELL_SIZE)
                cells.append({
                    "row": r, "col": c, "class": cls, "image": source.name, "imgid": entry.get("imgid"),
                    "source": source.relative_to(data_dir).as_posix(), "window": list(window),
                    "bounds": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
                    "original_size": original_size, "resized": original_size != [CELL_SIZE, CELL_SIZE],
                })
            factors = [f for f in overviews if f < max(rows, cols) * CELL_SIZE]
            if factors:
                dst.build_overviews(factors, Resampling.average)
                dst.update_tags(ns="rio_overview", resampling="average")
    layout = {
        "scene": os.fspath(out_tif), "crs": crs, "transform": list(transform)[:6], "pixel_size": pixel_size,
        "grid": [rows, cols], "cell_size": CELL_SIZE, "classes": classes, "split": split, "seed": seed,
        "cells": cells,
    }
    atomic_write_json(layout_path(out_tif), layout)
    return layout


def layout_path(out_tif: str | os.PathLike) -> Path:
    """Sidecar path of a mosaic: `mosaic.tif` → `mosaic.layout.json`."""
    return Path(out_tif).with_suffix(".layout.json")


def read_layout(out_tif_or_json: str | os.PathLike) -> dict:
    """Read a mosaic layout (given the mosaic or its sidecar); a broken file raises naming it."""
    path = Path(out_tif_or_json)
    if path.suffix.lower() != ".json":
        path = layout_path(path)
    return read_json(path, what="mosaic layout")


def _overlaps(hit_box: Sequence[float], layout: Mapping, cls: str, overlap: str) -> float:
    """Coverage of `hit_box` by cells of `cls` (fraction of the hit's area), or the best IoU with one."""
    boxes = [window_to_box(cell["window"]) for cell in layout["cells"] if cell["class"] == cls]
    if overlap == "iou":
        return max((box_iou(hit_box, b) for b in boxes), default=0.0)
    area = (hit_box[2] - hit_box[0]) * (hit_box[3] - hit_box[1])
    if area <= 0:
        return 0.0
    covered = 0.0
    for b in boxes:  # cells never overlap each other, so the intersections add up
        ix = min(hit_box[2], b[2]) - max(hit_box[0], b[0])
        iy = min(hit_box[3], b[3]) - max(hit_box[1], b[1])
        if ix > 0 and iy > 0:
            covered += ix * iy
    return covered / area


def precision_at_k_by_class(
    hits: Mapping[str, Sequence[Mapping]],
    layout: Mapping,
    k: int,
    min_overlap: float = 0.5,
    overlap: str = "coverage",
) -> dict[str, Any]:
    """Place-level precision@k on a mosaic: do the top-k hits of a class query land on that class?

    Args:
        hits: `{queried class: ranked hits}`; each hit carries tile metadata (`scene`, `window`), at the
            top level or under `"tile"`, as produced by [`mtgfe.search.scenes.iter_scene_tiles`].
        layout: the mosaic layout ([`build_ucm_mosaic`] / [`read_layout`]).
        k: cut-off; fewer than `k` hits count the missing ones as wrong (the usual P@k).
        min_overlap: a hit is correct when its overlap with the queried class's cells is ≥ this.
        overlap: `"coverage"` (default: fraction of the hit's box lying on cells of the class — fair to
            stride-128 tiles that straddle two cells of the same class) or `"iou"` (best IoU with one cell
            of the class: demands that the hit *is* a cell).

    Hits on another scene than the layout's (compared by file name, so a moved mosaic still matches)
    are wrong. Returns `{"k", "per_class": {class: P@k}, "mean": macro average, "correct": {class:
    [bool per rank]}}`.
    """
    if k <= 0:
        raise ValueError(f"`k` must be positive, got {k!r}.")
    if overlap not in ("coverage", "iou"):
        raise ValueError(f"`overlap` must be 'coverage' or 'iou', got {overlap!r}.")
    scene_name = Path(layout["scene"]).name
    per_class, correct = {}, {}
    for cls, ranked in hits.items():
        ordered = sorted(ranked, key=lambda h: h.get("rank", 0))[:k]
        flags = []
        for hit in ordered:
            tile = hit.get("tile") if isinstance(hit.get("tile"), Mapping) else hit
            if Path(os.fspath(tile["scene"])).name != scene_name:
                flags.append(False)
                continue
            flags.append(_overlaps(window_to_box(tile["window"]), layout, cls, overlap) >= min_overlap)
        correct[cls] = flags
        per_class[cls] = sum(flags) / k
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"k": k, "per_class": per_class, "mean": mean, "correct": correct}


__all__ = [
    "UCM_CLASSES",
    "build_ucm_mosaic",
    "layout_path",
    "load_ucm_cell",
    "precision_at_k_by_class",
    "read_layout",
    "ucm_class_of",
]
