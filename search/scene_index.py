"""Index GeoTIFF / COG scenes as tiles, and turn tile hits back into places.

Why a separate module: the gallery index (`gallery_index.py`) knows image files; a scene archive is a
stream of windows cut by [`mtgfe.search.scenes.iter_tiles`]. [`SceneSource`] adapts that stream to the
index's batch protocol (`index_batches` / `check_resume` / `settings`), so scenes get the same shards,
manifest, atomic writes and `--resume` as image folders, and every item carries its tile metadata
(scene, window, footprint in the scene CRS and WGS84) for GeoJSON, NMS and quicklooks at search time.

Item ids are `<scene path relative to the scene root>#<col_off>,<row_off>`: stable across machines
(relative path, integer offsets), unique within a tiling, and readable in a table of hits.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mtgfe.processing.image_decoding import load_image

from .geo import SceneError
from .scenes import (
    TilingReport,
    apply_stretch,
    iter_tiles,
    list_scenes,
    open_scene,
    render_scene_quicklook,
    scene_stretch,
    select_bands,
)

logger = logging.getLogger(__name__)

SCENE_SOURCE_PREFIX = "scenes:"


def tile_id(relative_scene: str, window: Sequence[int]) -> str:
    """`scene.tif#col_off,row_off`: the stable key of a tile item (see the module docstring)."""
    return f"{relative_scene}#{int(window[0])},{int(window[1])}"


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """CLI `--bands 3,2,1` (1-based, the GDAL / rasterio convention) → 0-based indexes for `iter_tiles`.

    Why 1-based on the command line: band numbers in `gdalinfo`, QGIS and rasterio start at 1, so that is
    what users copy; the Python API keeps the package's 0-based `bands` (image_decoding rule 6).
    """
    if text is None or text == "":
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--bands must be comma-separated 1-based band numbers like 3,2,1, got {text!r}.") from err
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(f"--bands needs three 1-based band numbers (e.g. 3,2,1), got {text!r}.")
    return tuple(v - 1 for v in values)


class SceneSource:
    """Tiles of a scene file or folder, as a source for `GalleryIndex.build` (the batch protocol).

    Args mirror `iter_tiles`; `on_error="skip"` (CLI `--skip-bad-scenes`) logs and skips a corrupt scene
    and lists it in the manifest's `skipped`. The tiling is deterministic (sorted scenes, row-major
    windows), which is what makes a resumed build continue at the right tile.
    """

    def __init__(self, path: str | os.PathLike, tile_size: int = 256, stride: int | None = None,
                 bands: Sequence[int] | None = None, nodata_max_fraction: float = 0.5, on_error: str = "raise",
                 recursive: bool = False, edge: str = "shift"):
        self.root = Path(path).resolve()
        self.scenes = list_scenes(self.root, recursive=recursive)  # SceneError naming the path when empty/missing
        self.tile_kwargs = {"tile_size": tile_size, "stride": stride, "bands": None if bands is None else list(bands),
                            "nodata_max_fraction": nodata_max_fraction, "edge": edge}
        self.on_error = on_error
        self.report = TilingReport()
        self._recorded: list[str] | None = None

    @property
    def total(self) -> None:
        """Unknown before tiling (no-data tiles are dropped while reading); progress bars then count up."""
        return None

    def describe(self) -> str:
        return SCENE_SOURCE_PREFIX + str(self.root)

    def settings(self) -> dict[str, Any]:
        """Tiling options recorded in the build state and manifest: a resume with other options is refused."""
        return {"tiling": {**self.tile_kwargs, "on_error": self.on_error}}

    def _relative(self, scene: str | os.PathLike) -> str:
        path = Path(scene)
        if self.root.is_file():
            return path.name
        return path.relative_to(self.root).as_posix()

    def check_resume(self, recorded: list[str]) -> None:
        """Remember the tile ids an interrupted build consumed; `index_batches` verifies them while skipping."""
        self._recorded = list(recorded)

    def _tiles(self):
        kwargs = dict(self.tile_kwargs)
        if kwargs["bands"] is not None:
            kwargs["bands"] = tuple(kwargs["bands"])
        return iter_tiles(self.scenes, on_error=self.on_error, report=self.report, **kwargs)

    def index_batches(self, skipped: list[str]):
        """`gen(start, batch_size)` → `(images, items, consumed_ids)` batches, skipping the first `start` tiles.

        Skipped tiles are still read (tiling decides which windows survive the no-data rule only by
        reading them); the ids of those recorded by the interrupted build must match, else the scenes
        changed and resuming would mix two tilings.
        """

        def gen(start: int, batch_size: int):
            tiles = self._tiles()
            position = 0
            images: list[Image.Image] = []
            items: list[dict] = []
            seen_bad: set[str] = set()
            for tile in tiles:
                ident = tile_id(self._relative(tile.scene), tile.window)
                if position < start:
                    if self._recorded is not None and position < len(self._recorded) \
                            and self._recorded[position] != ident:
                        raise ValueError(
                            f"Cannot resume: tile {position} is {ident!r} now but was {self._recorded[position]!r} "
                            f"when the build started; the scenes under {str(self.root)!r} changed. Delete the output "
                            "folder and build again."
                        )
                    position += 1
                    continue
                position += 1
                meta = tile.metadata()
                meta["scene"] = str(Path(tile.scene).resolve())
                items.append({"image": ident, "id": ident, **meta})
                images.append(tile.image)
                self._note_skipped(skipped, seen_bad)
                if len(images) >= batch_size:
                    yield images, items, [it["id"] for it in items]
                    images, items = [], []
            self._note_skipped(skipped, seen_bad)
            if images:
                yield images, items, [it["id"] for it in items]
            if position < start:
                raise ValueError(f"Cannot resume: the scenes under {str(self.root)!r} now give {position} tiles, fewer "
                                 f"than the {start} already indexed. Delete the output folder and build again.")

        return gen

    def _note_skipped(self, skipped: list[str], seen: set[str]) -> None:
        for record in self.report.skipped_scenes:
            if record["scene"] not in seen:
                seen.add(record["scene"])
                entry = f"{record['scene']}: {record['error_type']}: {record['error']}"
                if entry not in skipped:
                    skipped.append(entry)


# ----------------------------------------------------------------------------------------------- search side
def is_tile_hit(hit: Mapping) -> bool:
    return "scene" in hit and "window" in hit


def read_tile_image(hit: Mapping, bands: Sequence[int] | None = None) -> Image.Image:
    """Re-read one hit's window from its scene (thumbnails in the HTML report; same stretch rules as indexing)."""
    from rasterio.windows import Window  # noqa: PLC0415 - rasterio is the optional `geo` extra

    col, row, width, height = (int(v) for v in hit["window"])
    src = open_scene(hit["scene"])
    with src:
        indexes, _ = select_bands(src, bands, repr(hit["scene"]))
        data = src.read(list(indexes), window=Window(col, row, width, height))
        scale = None if data.dtype == np.uint8 else scene_stretch(src, indexes)
    pixels = apply_stretch(data, scale)
    if pixels.shape[0] == 1:  # grey → RGB, as tiles are decoded (scenes.py)
        pixels = np.repeat(pixels, 3, axis=0)
    return Image.fromarray(np.ascontiguousarray(np.moveaxis(pixels, 0, -1)), mode="RGB")


def tile_image_loader(hits_by_id: Mapping[str, Mapping]):
    """An `image_loader` for `report_html`: tile ids → their window read from the scene; anything else as a file."""
    def load(source):
        if isinstance(source, Image.Image):
            return source
        hit = hits_by_id.get(str(source))
        if hit is not None:
            return read_tile_image(hit)
        return load_image(source)

    return load


def scene_quicklooks_html(results: Sequence[Mapping], out_dir: str | os.PathLike, max_size: int = 1024,
                          unreadable: list[str] | None = None) -> str:
    """HTML `<section>`s, one per query and scene hit, with the quicklook (hits drawn as ranked boxes) embedded.

    Why embedded PNG (base64): the report must stay one self-contained file like the rest of
    `report_html`; the PNGs are also left in `out_dir` for GIS users.

    A scene that cannot be read any more (moved or deleted since it was indexed; search itself needs only
    the index) gets a section saying so instead of its quicklook, and one line per scene is appended to
    `unreadable` (when given) for the caller to report: the rest of the page is still worth having.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for q, result in enumerate(results):
        hits = [h for h in result["hits"] if is_tile_hit(h)]
        scenes = list(dict.fromkeys(str(h["scene"]) for h in hits))
        for s, scene in enumerate(scenes):
            n = sum(1 for h in hits if str(h["scene"]) == scene)
            try:
                png = render_scene_quicklook(scene, hits, out_dir / f"quicklook_q{q}_s{s}.png", max_size=max_size)
            except (SceneError, OSError) as error:  # SceneReadError: missing / unreadable scene, named
                if unreadable is not None and not any(line.startswith(f"{scene}: ") for line in unreadable):
                    unreadable.append(f"{scene}: {error}")
                parts.append(
                    f"<section class='quicklook'><h2>{html.escape(str(result['query']))} — "
                    f"{html.escape(Path(scene).name)} ({n} hit(s))</h2><p class='missing'>No quicklook: the scene "
                    f"cannot be read ({html.escape(str(error))}). Was it moved after indexing?</p></section>")
                continue
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(
                f"<section class='quicklook'><h2>{html.escape(str(result['query']))} — {html.escape(Path(scene).name)}"
                f" ({n} hit(s))</h2><img class='quicklook' data-scene='{html.escape(scene)}' "
                f"src='data:image/png;base64,{data}' alt='quicklook of {html.escape(Path(scene).name)}'></section>"
            )
    return "\n".join(parts)


def insert_before_body_end(page: str, fragment: str) -> str:
    """Add `fragment` at the end of an HTML page's body (the report renderer is not changed)."""
    marker = "</body>"
    where = page.rfind(marker)
    return page + fragment if where < 0 else page[:where] + fragment + page[where:]


__all__ = [
    "SCENE_SOURCE_PREFIX",
    "SceneSource",
    "insert_before_body_end",
    "is_tile_hit",
    "parse_bands",
    "read_tile_image",
    "scene_quicklooks_html",
    "tile_id",
    "tile_image_loader",
]
