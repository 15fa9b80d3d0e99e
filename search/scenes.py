"""Scenes in, places out: tile large GeoTIFF / COG scenes for retrieval and turn hits back into places.

Why: the retrieval model sees 256×256 RS images (UCM-Captions); a satellite or aerial *scene* is tens
of thousands of pixels wide. [`iter_scene_tiles`] cuts a scene into model-sized tiles with `rasterio`
windowed reads — only one window is in memory at a time, so memory does not grow with scene size — and
records each tile's footprint (pixel window, polygon in the scene CRS and in WGS84), so a text query's
hits can be written as GeoJSON ([`mtgfe.search.geo.hits_to_geojson`]), de-duplicated across overlapping
tiles ([`geo.suppress_overlapping`]) and drawn on a quicklook ([`render_scene_quicklook`]).

Decisions (each documented where it is implemented):

* **Edges** (`edge="shift"`, the default): the last window of a row / column is shifted back to end at
  the scene edge, so every tile is full-size real imagery; it overlaps its neighbour more than
  `stride`. Why not padding: the model never saw zero-padded strips in training, and a padded edge tile
  is partly no-data. `edge="pad"` is available: it reads the part inside the scene and zero-pads to
  `tile_size` (the window records the part read; padding counts as no-data).
* **Bands** follow the package decoding rules ([`mtgfe.processing.image_decoding`]): 1 band → grey
  replicated, 3 bands → RGB, otherwise `bands` (0-based, default [`DEFAULT_BANDS`] `(0, 1, 2)`) over
  the non-alpha bands; an alpha band is never a colour band, it is a mask.
* **Stretch**: non-`uint8` data gets the same 2–98 % joint linear stretch as `load_image`, but computed
  **once per scene** from a decimated read (`out_shape=`, at most `overview_size` px on the long side)
  of the valid pixels, not per tile. Why: a per-tile stretch makes adjacent tiles of one field look
  different (a dark tile is brightened, a bright one darkened), which changes what the model sees
  depending on where the grid happens to fall. `uint8` data is passed through unchanged (rule 1).
* **No-data** comes from the dataset mask (nodata value, internal mask or alpha band) and, for float
  data, non-finite values (NaN / inf fills are common in float products). Tiles whose
  no-data fraction exceeds `nodata_max_fraction` are skipped and recorded in a [`TilingReport`];
  no-data pixels of kept tiles are black (rule 4: "nothing here" is 0).
* **Un-georeferenced scenes** (no CRS): footprints are in pixel coordinates, `crs` is `None`,
  `georeferenced` is `False`, there is no WGS84 footprint, and a warning is logged once per scene.
* **Errors** name the scene: [`SceneError`] for bad input (missing / corrupt / truncated file, tile
  larger than the scene, zero stride), [`geo.SceneCRSError`] for a CRS that cannot reach WGS84 (checked
  once when the scene is opened, not at some random tile).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mtgfe.processing.image_decoding import DEFAULT_BANDS, STRETCH_PERCENTILES, ImageDecodeError, validate_bands
from mtgfe.utils.io import atomic_path

from .geo import (
    SceneError,
    box_to_window,
    rasterio_errors,
    tile_geometry,
    tile_of,
    transform_points_to_wgs84,
    window_to_box,
)

logger = logging.getLogger(__name__)

SCENE_EXTENSIONS = (".tif", ".tiff")
"""Suffixes (case-insensitive) that [`list_scenes`] picks up in a folder: GeoTIFF and COG."""

EDGE_MODES = ("shift", "pad")
ON_ERROR_MODES = ("raise", "skip")


class SceneReadError(SceneError, OSError):
    """A scene file is missing, corrupt or truncated; wraps the rasterio error with the path."""


def _where(path) -> str:
    return repr(os.fspath(path))


# -------------------------------------------------------------------------------------------- listing


def list_scenes(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The scenes to tile: `[path]` for a file, or the `.tif` / `.tiff` files of a folder.

    Sorted by their path relative to the folder (POSIX form), so two runs on two machines tile, index and
    rank the same scenes in the same order. A file given explicitly is taken whatever its suffix (the
    user chose it; rasterio decides whether it can read it). Hidden files and folders (a leading dot:
    the package's own atomic-write temporaries `.name.tmp-PID`, macOS `._name` forks) are not scenes.
    A missing path or a folder with no scene raises [`SceneError`] naming it.
    """
    root = Path(path)
    if not root.exists():
        raise SceneReadError(f"Scene path not found: {_where(root)}.")
    if root.is_file():
        return [root]
    pattern = "**/*" if recursive else "*"
    scenes = [p for p in root.glob(pattern)
              if p.is_file() and p.suffix.lower() in SCENE_EXTENSIONS and not _hidden(p.relative_to(root))]
    scenes.sort(key=lambda p: p.relative_to(root).as_posix())
    if not scenes:
        raise SceneError(f"No scenes ({'/'.join(SCENE_EXTENSIONS)}) found in folder {_where(root)}.")
    return scenes


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


# -------------------------------------------------------------------------------------------- windows


def _check_sizes(tile_size: int, stride: int, where: str) -> None:
    for name, value in (("tile_size", tile_size), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise SceneError(f"`{name}` must be a positive integer, got {value!r} (scene {where}).")


def _check_args(tile_size, stride, nodata_max_fraction=0.5, edge="shift", stretch="scene", where="<all scenes>"):
    """Argument checks that do not depend on the scene (so `on_error="skip"` never skips them)."""
    _check_sizes(tile_size, stride, where)
    if isinstance(nodata_max_fraction, bool) or not isinstance(nodata_max_fraction, (int, float)) \
            or not 0.0 <= float(nodata_max_fraction) <= 1.0:
        raise SceneError(f"`nodata_max_fraction` must be in [0, 1], got {nodata_max_fraction!r} (scene {where}).")
    if edge not in EDGE_MODES:
        raise SceneError(f"`edge` must be one of {EDGE_MODES}, got {edge!r} (scene {where}).")
    if isinstance(stretch, str) and stretch != "scene":
        raise SceneError(f"`stretch` must be 'scene', (low, high) or None, got {stretch!r} (scene {where}).")


def tile_offsets(length: int, tile_size: int, stride: int, edge: str = "shift") -> list[int]:
    """Start offsets of tiles along one axis of `length` pixels.

    `shift`: `0, stride, 2*stride, ...` while a full tile fits, plus one last offset `length - tile_size`
    when the regular grid misses the end (that tile overlaps its neighbour more). `pad`: every offset
    `k*stride` up to and including the first tile that reaches the end (it is padded).
    """
    if edge == "shift":
        offsets = list(range(0, length - tile_size + 1, stride))
        if offsets[-1] + tile_size < length:
            offsets.append(length - tile_size)
        return offsets
    offsets = []
    for off in range(0, length, stride):
        offsets.append(off)
        if off + tile_size >= length:
            break
    return offsets


def scene_windows(width: int, height: int, tile_size: int = 256, stride: int | None = None,
                  edge: str = "shift", where: str = "<scene>") -> list[tuple[int, int, int, int]]:
    """All tile windows `(col_off, row_off, width, height)` of a `width`×`height` scene, row-major."""
    stride = tile_size if stride is None else stride
    _check_sizes(tile_size, stride, where)
    if edge not in EDGE_MODES:
        raise SceneError(f"`edge` must be one of {EDGE_MODES}, got {edge!r} (scene {where}).")
    if tile_size > width or tile_size > height:
        raise SceneError(
            f"Tile size {tile_size} is larger than scene {where} ({width}x{height} px); use a smaller "
            "`tile_size` (the scene would be a single padded tile)."
        )
    cols = tile_offsets(width, tile_size, stride, edge)
    rows = tile_offsets(height, tile_size, stride, edge)
    return [(c, r, min(tile_size, width - c), min(tile_size, height - r)) for r in rows for c in cols]


# -------------------------------------------------------------------------------------------- report


@dataclass
class TilingReport:
    """What tiling did: scenes read, tiles skipped (and why), scenes skipped on error.

    A generator cannot both yield tiles and return a report, so callers pass one in and read it when
    the iteration is over. Everything in it is JSON-serialisable ([`to_dict`]).
    """

    scenes: list[dict] = field(default_factory=list)
    skipped_tiles: list[dict] = field(default_factory=list)
    skipped_scenes: list[dict] = field(default_factory=list)

    @property
    def tiles_yielded(self) -> int:
        return sum(s.get("tiles_yielded", 0) for s in self.scenes)

    def to_dict(self) -> dict:
        return {"scenes": self.scenes, "skipped_tiles": self.skipped_tiles, "skipped_scenes": self.skipped_scenes,
                "tiles_yielded": self.tiles_yielded}


@dataclass
class SceneTile:
    """One tile: the decoded 8-bit RGB image plus where it came from.

    [`metadata`] is everything but the pixels, JSON-ready, meant to be stored as a gallery item so a hit
    can be turned back into a place without reopening the scene.
    """

    image: Image.Image
    scene: str
    window: tuple[int, int, int, int]
    crs: str | None
    transform: tuple[float, ...]
    footprint: dict
    bounds: list[float]
    footprint_wgs84: dict | None
    nodata_fraction: float
    bands: tuple[int, ...]

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    def metadata(self) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "window": list(self.window),
            "crs": self.crs,
            "transform": list(self.transform),
            "georeferenced": self.georeferenced,
            "footprint": self.footprint,
            "bounds": self.bounds,
            "footprint_wgs84": self.footprint_wgs84,
            "nodata_fraction": self.nodata_fraction,
            "bands": list(self.bands),
        }


# -------------------------------------------------------------------------------------------- reading


def _rasterio():
    try:
        import rasterio
    except ImportError as err:  # pragma: no cover - rasterio is in the test/geo extras
        raise ImportError("Scene tiling needs rasterio: `pip install 'mtgfe[geo]'`.") from err
    return rasterio


def _read_errors() -> tuple[type[BaseException], ...]:
    return rasterio_errors()


def open_scene(path: str | os.PathLike):
    """`rasterio.open(path)` with errors wrapped in [`SceneReadError`] naming the file."""
    rasterio = _rasterio()
    path = Path(path)
    if not path.exists():
        raise SceneReadError(f"Scene file not found: {_where(path)}.")
    if path.is_dir():
        raise SceneReadError(f"Expected a scene file but got a folder: {_where(path)}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except _read_errors() as err:
        raise SceneReadError(f"Cannot open scene {_where(path)} (corrupt, truncated or not a raster): {err}") from err


def _is_georeferenced(src) -> bool:
    from affine import Affine

    return src.crs is not None and src.transform != Affine.identity()


def _crs_string(crs) -> str | None:
    """`"EPSG:32610"` when the CRS has an authority code, else its WKT (always reusable by rasterio)."""
    if crs is None:
        return None
    return crs.to_string()


def select_bands(src, bands: Sequence[int] | None, where: str) -> tuple[tuple[int, ...], int | None]:
    """1-based band indexes to read (1 or 3 of them) and the alpha band index (or None).

    Rules of [`mtgfe.processing.image_decoding`] rule 6, over the non-alpha bands: 1 band → grey,
    3 bands → RGB (`bands` ignored), 2 or >3 bands → `bands` (0-based) or `DEFAULT_BANDS`.
    """
    from rasterio.enums import ColorInterp

    interps = list(src.colorinterp)
    alpha = next((i + 1 for i, ci in enumerate(interps) if ci == ColorInterp.alpha), None)
    colour = [i + 1 for i in range(src.count) if i + 1 != alpha]
    if len(colour) == 1:
        return (colour[0],), alpha
    if len(colour) == 3:
        return tuple(colour), alpha
    try:
        chosen = validate_bands(DEFAULT_BANDS if bands is None else bands, None, where)
    except ImageDecodeError as err:
        raise SceneError(str(err)) from err
    if max(chosen) >= len(colour):
        # Scene bands are chosen both from the CLI (`--bands`, 1-based as in gdalinfo / QGIS, converted by
        # `parse_bands`) and from Python (0-based); the message leads with the 1-based numbers the CLI user
        # typed, so "--bands 1,2,9" does not come back as "index 8".
        typed = tuple(b + 1 for b in chosen)
        raise SceneError(
            f"Band {max(typed)} in bands {typed} (numbered from 1, as `--bands` takes them) is out of range for "
            f"{where}, which has {len(colour)} colour band(s): use 1..{len(colour)} with `--bands`, or "
            f"0..{len(colour) - 1} in the Python API's 0-based `bands` (given {chosen})."
        )
    return tuple(colour[b] for b in chosen), alpha


def _has_mask(src) -> bool:
    from rasterio.enums import MaskFlags

    return any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)


def overview_shape(width: int, height: int, max_size: int) -> tuple[int, int]:
    """`(height, width)` of a decimated read whose long side is at most `max_size` (never upsampled)."""
    scale = max(width, height) / max_size
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def scene_stretch(src, indexes: Sequence[int], overview_size: int = 1024,
                  percentiles: Sequence[float] = STRETCH_PERCENTILES) -> tuple[float, float] | None:
    """`(low, high)` of the per-scene linear stretch, or `None` for `uint8` data (passed through).

    Computed like `image_decoding.percentile_stretch` — joint over the selected bands, 2nd/98th
    percentiles of the finite values, min–max fallback — but over the *valid* pixels of a decimated
    read (`out_shape`, nearest neighbour: GDAL uses internal overviews when the file has them, so a COG
    costs a few blocks). No-data values are excluded, so a -9999 fill never sets the scale.
    """
    if all(np.dtype(src.dtypes[i - 1]) == np.uint8 for i in indexes):
        return None
    out_h, out_w = overview_shape(src.width, src.height, overview_size)
    data = src.read(list(indexes), out_shape=(len(indexes), out_h, out_w), masked=True)
    values = np.ma.compressed(data).astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 0.0)
    low, high = np.percentile(values, percentiles)
    if high <= low:
        low, high = values.min(), values.max()
    return float(low), float(high)


def apply_stretch(array: np.ndarray, stretch: tuple[float, float] | None) -> np.ndarray:
    """Map raw values to `uint8` with a fixed `(low, high)`; `None` means "already 8-bit" (others are clipped).

    The same arithmetic as `percentile_stretch` (so one image gives the same pixels either way); a
    degenerate `high <= low` maps everything to 0, as a constant image does there.
    """
    if stretch is None:
        if array.dtype == np.uint8:
            return array
        # Clip, never wrap: uint16 300 must not become 44. Non-finite values become 0.
        return np.clip(np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0, 255).astype(np.uint8)
    low, high = stretch
    data = array.astype(np.float64)
    if not high > low:
        return np.zeros(array.shape, dtype=np.uint8)
    finite = np.isfinite(data)
    scaled = (np.where(finite, data, low) - low) / (high - low)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _nodata_fraction(valid: np.ndarray | None, padding: int, tile_size: int) -> float:
    """Share of a `tile_size`² tile that is no-data: invalid mask pixels plus edge padding."""
    invalid = 0 if valid is None else int(valid.size - np.count_nonzero(valid))
    return (invalid + padding) / float(tile_size * tile_size)


def _to_rgb_image(array: np.ndarray) -> Image.Image:
    """`(bands, H, W)` uint8 with 1 or 3 bands → RGB PIL image."""
    if array.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(array[0]), mode="L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(np.moveaxis(array, 0, -1)), mode="RGB")


def iter_scene_tiles(
    path: str | os.PathLike,
    tile_size: int = 256,
    stride: int | None = None,
    bands: Sequence[int] | None = None,
    nodata_max_fraction: float = 0.5,
    edge: str = "shift",
    report: TilingReport | None = None,
    stretch: tuple[float, float] | None | str = "scene",
    overview_size: int = 1024,
    densify_pts: int = 0,
    gdal_cache_mb: int | None = 64,
) -> Iterator[SceneTile]:
    """Yield the tiles of one scene, read window by window (a scene is never loaded whole).

    Args:
        path: a GeoTIFF / COG (anything rasterio opens).
        tile_size: tile width and height in pixels (the model's input size, 256 for UCM-trained models).
        stride: step between tiles; defaults to `tile_size` (no overlap). `stride < tile_size` overlaps.
        bands: three 0-based band indices over the non-alpha bands, for 2- or >3-band scenes.
        nodata_max_fraction: tiles with a larger no-data fraction are skipped (recorded in `report`).
        edge: `"shift"` (last window ends at the scene edge) or `"pad"` (zero-pad the last window).
        report: a [`TilingReport`] to fill in (scene summary, skipped tiles).
        stretch: `"scene"` (default: per-scene stretch, see the module docstring), or a fixed
            `(low, high)` — e.g. one stretch shared by all scenes of a campaign — or `None` to cast to
            uint8 unchanged.
        overview_size: long side of the decimated read used for the per-scene stretch.
        densify_pts: extra points per edge of the WGS84 footprint (see `geo.footprint_wgs84`).
        gdal_cache_mb: cap on GDAL's block cache while this scene is read (`rasterio.Env(GDAL_CACHEMAX=)`),
            `None` to leave GDAL's setting. Why: windowed reads alone do not bound memory — GDAL keeps
            every decoded block in a process-wide cache whose default is 5 % of RAM, so RSS grows with
            the scene until that (GB-sized) cap. Tiles are visited row-major and each block is needed
            by at most a few neighbouring windows, so a small cache costs almost no re-decoding. The
            cap is global to the process while the generator is live (GDAL has one cache), and is
            restored when it finishes or is closed.

    Raises:
        [`SceneReadError`]: missing / corrupt / truncated file (also while reading a window).
        [`SceneError`]: tile larger than the scene, non-positive tile size or stride, bad `bands`.
        [`geo.SceneCRSError`]: the scene CRS cannot be transformed to WGS84.
    """
    where = _where(path)
    stride = tile_size if stride is None else stride
    _check_args(tile_size, stride, nodata_max_fraction, edge, stretch, where)
    rasterio = _rasterio()
    env = rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb) * 2**20) if gdal_cache_mb else contextlib.nullcontext()
    with env:
        yield from _scene_tiles(path, where, tile_size, stride, bands, nodata_max_fraction, edge, report, stretch,
                                overview_size, densify_pts)


def _scene_tiles(path, where, tile_size, stride, bands, nodata_max_fraction, edge, report, stretch, overview_size,
                 densify_pts) -> Iterator[SceneTile]:
    """The body of [`iter_scene_tiles`], run inside its GDAL environment."""
    from rasterio.windows import Window

    src = open_scene(path)
    read_errors = _read_errors()
    with src:
        windows = scene_windows(src.width, src.height, tile_size, stride, edge, where)
        indexes, alpha = select_bands(src, bands, where)
        georef = _is_georeferenced(src)
        crs = _crs_string(src.crs) if georef else None
        transform = tuple(src.transform)[:6] if georef else (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        if georef:
            # Fail on an untransformable CRS now, naming the scene, not at tile 3,817.
            cx, cy = src.xy(src.height // 2, src.width // 2)
            transform_points_to_wgs84(crs, [cx], [cy], where)
        else:
            logger.warning("Scene %s has no georeferencing: tile footprints are in pixel coordinates.", where)
        masked = _has_mask(src)
        try:
            scale = scene_stretch(src, indexes, overview_size) if stretch == "scene" else stretch
        except read_errors as err:
            raise SceneReadError(f"Cannot read scene {where} (corrupt or truncated): {err}") from err
        summary = {
            "scene": os.fspath(path), "width": src.width, "height": src.height, "count": src.count,
            "dtype": src.dtypes[indexes[0] - 1], "bands": list(indexes), "alpha_band": alpha, "crs": crs,
            "georeferenced": georef, "stretch": None if scale is None else list(scale), "edge": edge,
            "tile_size": tile_size, "stride": stride, "windows": len(windows), "tiles_yielded": 0,
            "tiles_skipped": 0,
        }
        if report is not None:
            report.scenes.append(summary)
        for col, row, width, height in windows:
            window = Window(col, row, width, height)
            padding = tile_size * tile_size - width * height
            try:
                valid = src.dataset_mask(window=window) > 0 if masked else None
                # Mask first: a tile that is mostly outside the swath is skipped without reading its bands.
                nodata_fraction = _nodata_fraction(valid, padding, tile_size)
                data = None
                if nodata_fraction <= nodata_max_fraction:
                    data = src.read(list(indexes), window=window, boundless=False)
            except read_errors as err:
                raise SceneReadError(
                    f"Cannot read window (col_off={col}, row_off={row}, width={width}, height={height}) of "
                    f"scene {where} (corrupt or truncated): {err}"
                ) from err
            if data is not None and np.issubdtype(data.dtype, np.floating):
                # Undeclared float no-data (NaN / inf fill) is no-data too, not a black patch of "data".
                finite = np.isfinite(data).all(axis=0)
                if not finite.all():
                    valid = finite if valid is None else valid & finite
                    nodata_fraction = _nodata_fraction(valid, padding, tile_size)
            if nodata_fraction > nodata_max_fraction:
                summary["tiles_skipped"] += 1
                if report is not None:
                    report.skipped_tiles.append({
                        "scene": os.fspath(path), "window": [col, row, width, height], "reason": "nodata",
                        "nodata_fraction": nodata_fraction, "threshold": float(nodata_max_fraction),
                    })
                continue
            pixels = apply_stretch(data, scale)
            if valid is not None:
                pixels[:, ~valid] = 0
            if width < tile_size or height < tile_size:
                padded = np.zeros((pixels.shape[0], tile_size, tile_size), dtype=np.uint8)
                padded[:, :height, :width] = pixels
                pixels = padded
            geometry = tile_geometry(crs, transform, (col, row, width, height), where, densify_pts)
            summary["tiles_yielded"] += 1
            yield SceneTile(
                image=_to_rgb_image(pixels), scene=os.fspath(path), window=(col, row, width, height), crs=crs,
                transform=transform, footprint=geometry["footprint"], bounds=geometry["bounds"],
                footprint_wgs84=geometry["footprint_wgs84"], nodata_fraction=nodata_fraction, bands=indexes,
            )


def iter_tiles(
    path: str | os.PathLike | Iterable[str | os.PathLike],
    on_error: str = "raise",
    report: TilingReport | None = None,
    recursive: bool = False,
    **tile_kwargs,
) -> Iterator[SceneTile]:
    """Tiles of every scene of a file, a folder ([`list_scenes`]) or a list of scene paths, in order.

    `on_error="raise"` (default) stops at the first bad scene with its named error. `"skip"` records
    `{"scene", "error", "tiles_yielded"}` in `report.skipped_scenes`, logs a warning and goes on; a
    scene that fails half-way keeps the tiles already yielded (they were read correctly) — the record
    says how many. Argument errors (`tile_size`, `stride`, `edge`, ...) are raised before any scene is
    read and never skipped: they would fail every scene.
    """
    if on_error not in ON_ERROR_MODES:
        raise ValueError(f"`on_error` must be one of {ON_ERROR_MODES}, got {on_error!r}.")
    if isinstance(path, (str, os.PathLike)):
        scenes = list_scenes(path, recursive=recursive)
    else:
        scenes = [Path(p) for p in path]
    tile_size = tile_kwargs.get("tile_size", 256)
    stride = tile_kwargs.get("stride")
    _check_args(tile_size, tile_size if stride is None else stride, tile_kwargs.get("nodata_max_fraction", 0.5),
                tile_kwargs.get("edge", "shift"), tile_kwargs.get("stretch", "scene"))
    for scene in scenes:
        yielded = 0
        try:
            for tile in iter_scene_tiles(scene, report=report, **tile_kwargs):
                yielded += 1
                yield tile
        except SceneError as err:
            if on_error == "raise":
                raise
            logger.warning("Skipping scene %s: %s", _where(scene), err)
            if report is not None:
                report.skipped_scenes.append({"scene": os.fspath(scene), "error": str(err),
                                              "error_type": type(err).__name__, "tiles_yielded": yielded})


# -------------------------------------------------------------------------------------------- quicklook


def _same_scene(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def render_scene_quicklook(
    scene_path: str | os.PathLike,
    hits: Sequence[Mapping],
    out_png: str | os.PathLike,
    max_size: int = 1024,
    bands: Sequence[int] | None = None,
    line_width: int = 3,
) -> Path:
    """A PNG of the whole scene (decimated read, long side ≤ `max_size`) with the hits' boxes and ranks.

    Only hits of this scene are drawn (others are ignored, so one call per scene works on a mixed hit
    list). Same band and stretch rules as the tiles, computed from this overview. No basemap: the scene
    is its own context, and nothing is fetched from the network. Written atomically.
    """
    where = _where(scene_path)
    src = open_scene(scene_path)
    with src:
        indexes, _ = select_bands(src, bands, where)
        out_h, out_w = overview_shape(src.width, src.height, max_size)
        try:
            data = src.read(list(indexes), out_shape=(len(indexes), out_h, out_w))
            valid = src.dataset_mask(out_shape=(out_h, out_w)) > 0 if _has_mask(src) else None
            scale = scene_stretch(src, indexes, max_size)
        except _read_errors() as err:
            raise SceneReadError(f"Cannot read scene {where} (corrupt or truncated): {err}") from err
        sx, sy = out_w / src.width, out_h / src.height
    pixels = apply_stretch(data, scale)
    if valid is not None:
        pixels[:, ~valid] = 0
    image = _to_rgb_image(pixels)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    mine = [h for h in hits if _same_scene(tile_of(h)["scene"], scene_path)]
    for hit in sorted(mine, key=lambda h: h.get("rank", 0), reverse=True):  # rank 1 drawn last, on top
        c0, r0, c1, r1 = window_to_box(tile_of(hit)["window"])
        box = [c0 * sx, r0 * sy, max(c0 * sx + 1, c1 * sx - 1), max(r0 * sy + 1, r1 * sy - 1)]
        colour = (255, 64, 64) if hit.get("rank") == 1 else (255, 215, 0)
        draw.rectangle(box, outline=colour, width=line_width)
        label = f"#{hit.get('rank', '?')}"
        tx, ty = box[0] + line_width + 1, box[1] + line_width + 1
        text_box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle(text_box, fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour, font=font)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        image.save(tmp, format="PNG")
    return out_png


__all__ = [
    "EDGE_MODES",
    "SCENE_EXTENSIONS",
    "SceneReadError",
    "SceneTile",
    "TilingReport",
    "apply_stretch",
    "iter_scene_tiles",
    "iter_tiles",
    "list_scenes",
    "open_scene",
    "overview_shape",
    "render_scene_quicklook",
    "scene_stretch",
    "scene_windows",
    "select_bands",
    "tile_offsets",
]
