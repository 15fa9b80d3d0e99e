"""Footprints of scene tiles and GeoJSON output of scene hits.

Why a separate module: the footprint rules (which corner is which, ring orientation, CRS → WGS84) are
needed by the tiler, by overlap suppression (a merged box needs a new footprint without reopening the
scene) and by the GeoJSON writer, and they must agree. Everything here is pure: it works from the
affine transform and CRS string that each tile records, never from an open file.

Conventions:

* A *window* is `(col_off, row_off, width, height)` in pixels of the full-resolution scene; a *pixel
  box* is `(col0, row0, col1, row1)` with exclusive ends (`col1 = col_off + width`).
* A *footprint* is a GeoJSON Polygon `{"type": "Polygon", "coordinates": [ring]}` whose ring is closed
  (first point repeated last) and counter-clockwise in the (x, y) plane of its CRS, as RFC 7946
  asks of exterior rings. In the scene CRS the ring holds the four window corners mapped through the
  scene's affine transform (so rotated / sheared transforms are honoured). In WGS84 it is
  `[lon, lat]` (RFC 7946 order), optionally densified along the edges.
* Un-georeferenced scenes (no CRS): the footprint is in *pixel* coordinates (x = column, y = row,
  y pointing down), `crs` is `None` and there is no WGS84 footprint; GeoJSON features get
  `geometry: null` and the pixel box in their properties (RFC 7946 allows a null geometry for an
  unlocated feature), so nobody mistakes pixel numbers for degrees.
* WGS84 longitudes are always in [-180, 180]. A footprint that crosses the antimeridian is cut there
  into a MultiPolygon of two parts (RFC 7946 §3.1.9), and its Feature `bbox` then has west > east
  (§5.2), instead of a ring with a 360° jump and a world-wide box.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mtgfe.utils.io import atomic_write_json

WGS84 = "EPSG:4326"


class SceneError(ValueError):
    """A scene (GeoTIFF / COG) cannot be tiled as asked; the message names the file."""


class SceneCRSError(SceneError):
    """A scene's CRS cannot be transformed to WGS84 (EPSG:4326); the message names the scene."""


def window_to_box(window: Sequence[float]) -> tuple[float, float, float, float]:
    """`(col_off, row_off, width, height)` → `(col0, row0, col1, row1)` (exclusive ends)."""
    col, row, width, height = window
    return (col, row, col + width, row + height)


def box_to_window(box: Sequence[float]) -> tuple[float, float, float, float]:
    """`(col0, row0, col1, row1)` → `(col_off, row_off, width, height)`."""
    c0, r0, c1, r1 = box
    return (c0, r0, c1 - c0, r1 - r0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two axis-aligned boxes `(x0, y0, x1, y1)`; 0.0 when either is empty."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def signed_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace area of a closed ring: positive when counter-clockwise in a y-up plane."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]):
        total += x0 * y1 - x1 * y0
    return total / 2.0


def _ccw_closed(points: Sequence[Sequence[float]]) -> list[list[float]]:
    """Close the ring and orient it counter-clockwise (RFC 7946 exterior rings)."""
    ring = [[float(x), float(y)] for x, y in points]
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    if signed_area(ring) < 0:
        ring.reverse()
    return ring


def apply_affine(transform: Sequence[float], col: float, row: float) -> tuple[float, float]:
    """Map pixel `(col, row)` through a GDAL/rasterio affine `(a, b, c, d, e, f)`: x = a·col + b·row + c.

    Written out rather than `Affine * (col, row)`: that operator is deprecated in affine 3 and `@` is
    missing in affine 2, and both are allowed by rasterio>=1.3.
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    return a * col + b * row + c, d * col + e * row + f


def window_corners(transform: Sequence[float], window: Sequence[float]) -> list[tuple[float, float]]:
    """The four corners of `window` in the coordinates of `transform` (upper-left, upper-right,
    lower-right, lower-left of the pixel grid)."""
    c0, r0, c1, r1 = window_to_box(window)
    return [apply_affine(transform, c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]


def _densify(corners: Sequence[tuple[float, float]], densify_pts: int) -> list[tuple[float, float]]:
    """Insert `densify_pts` evenly spaced points on each edge of the (open) corner list."""
    if densify_pts <= 0:
        return list(corners)
    out = []
    n = len(corners)
    for i in range(n):
        (x0, y0), (x1, y1) = corners[i], corners[(i + 1) % n]
        for j in range(densify_pts + 1):
            t = j / (densify_pts + 1)
            out.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    return out


def footprint_polygon(transform: Sequence[float], window: Sequence[float]) -> dict:
    """GeoJSON Polygon of `window` in the scene CRS (pixel coordinates when `transform` is identity)."""
    return {"type": "Polygon", "coordinates": [_ccw_closed(window_corners(transform, window))]}


def bounds_of(polygon: Mapping) -> list[float]:
    """`[minx, miny, maxx, maxy]` of a GeoJSON Polygon's exterior ring."""
    xs = [p[0] for p in polygon["coordinates"][0]]
    ys = [p[1] for p in polygon["coordinates"][0]]
    return [min(xs), min(ys), max(xs), max(ys)]


def transform_points_to_wgs84(crs: str, xs: Sequence[float], ys: Sequence[float], where: str):
    """`rasterio.warp.transform` to EPSG:4326 as `(lons, lats)`; failure → [`SceneCRSError`] naming `where`.

    Why the finiteness check: PROJ returns `inf` instead of raising for some impossible transforms
    (e.g. between celestial bodies or from a local engineering CRS), and an `inf` in a GeoJSON file
    would only surface much later, in someone's GIS.
    """
    from rasterio.warp import transform as warp_transform

    try:
        lons, lats = warp_transform(crs, WGS84, list(xs), list(ys))
    except rasterio_errors() + (ValueError,) as err:
        raise SceneCRSError(
            f"Cannot transform the CRS of scene {where} ({_short_crs(crs)}) to WGS84: {_short_crs(str(err), 300)}"
        ) from err
    if not all(math.isfinite(v) for v in list(lons) + list(lats)):
        raise SceneCRSError(
            f"Cannot transform the CRS of scene {where} ({_short_crs(crs)}) to WGS84: PROJ returned "
            "non-finite coordinates (incompatible datum, other celestial body or a local CRS)."
        )
    return list(lons), list(lats)


def _short_crs(crs: str, limit: int = 80) -> str:
    """Shorten a WKT / PROJJSON blob for an error message (PROJ quotes whole CRS definitions)."""
    text = " ".join(str(crs).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rasterio_errors() -> tuple[type[BaseException], ...]:
    """Exceptions rasterio raises for unreadable files and failed PROJ/GDAL calls.

    Why a tuple: `RasterioError` covers I/O, but GDAL/PROJ failures surface as `rasterio._err.CPLE_*`
    classes that share no public base with it.
    """
    from rasterio.errors import RasterioError

    errors: list[type[BaseException]] = [RasterioError, OSError]
    try:
        from rasterio._err import CPLE_BaseError

        errors.append(CPLE_BaseError)
    except ImportError:  # pragma: no cover - private module layout differs across rasterio versions
        pass
    return tuple(errors)


def footprint_wgs84(crs: str, transform: Sequence[float], window: Sequence[float], where: str,
                    densify_pts: int = 0) -> dict:
    """GeoJSON Polygon of `window` in WGS84 (`[lon, lat]`), CCW and closed.

    `densify_pts` points are added on each edge before projecting. The default 0 keeps the four corners:
    a straight 256-px edge of metre-resolution UTM imagery bends by far less than a pixel in lon/lat, so
    extra vertices would only bloat the output; raise it for coarse, wide tiles.
    """
    pts = _densify(window_corners(transform, window), densify_pts)
    lons, lats = transform_points_to_wgs84(crs, [p[0] for p in pts], [p[1] for p in pts], where)
    return lonlat_polygon(list(zip(lons, lats)))


def _wrap_lon(lon: float) -> float:
    """`lon` in [-180, 180] (180 itself stays 180: an edge on the antimeridian is not moved across)."""
    return lon if -180.0 <= lon <= 180.0 else (lon + 180.0) % 360.0 - 180.0


def _clip_at(ring: Sequence[Sequence[float]], line: float, keep_west: bool) -> list[list[float]]:
    """Sutherland–Hodgman: the part of a closed ring west (or east) of the meridian `line`."""
    def inside(p):
        return p[0] <= line if keep_west else p[0] >= line

    out: list[list[float]] = []
    for p, q in zip(ring[:-1], ring[1:]):
        if inside(p):
            out.append([p[0], p[1]])
        if inside(p) != inside(q):
            t = (line - p[0]) / (q[0] - p[0])
            out.append([line, p[1] + t * (q[1] - p[1])])
    return out


def lonlat_polygon(points: Sequence[Sequence[float]]) -> dict:
    """GeoJSON geometry of a small lon/lat ring: a Polygon with longitudes in [-180, 180], or, when the ring
    crosses the antimeridian, a MultiPolygon of its two parts cut at ±180 (RFC 7946 §3.1.9).

    Why: PROJ returns 180.0028 for a point just east of the line, and a UTM tile straddling it comes back
    as a ring jumping 360°; strict GeoJSON readers refuse the first and draw the second across the world.
    The ring is unwrapped to continuous longitudes first (tiles are far smaller than 180°), then cut.
    """
    lons = [_wrap_lon(float(points[0][0]))]
    for lon, _ in points[1:]:
        value = _wrap_lon(float(lon))
        while value - lons[-1] > 180.0:
            value -= 360.0
        while value - lons[-1] < -180.0:
            value += 360.0
        lons.append(value)
    ring = _ccw_closed([(lon, float(lat)) for lon, (_, lat) in zip(lons, points)])
    low, high = min(p[0] for p in ring), max(p[0] for p in ring)
    if low >= -180.0 and high <= 180.0:
        return {"type": "Polygon", "coordinates": [ring]}
    if high > 180.0 and low < -180.0:  # wider than the globe: not a tile footprint
        raise SceneError("a footprint spans more than 360 degrees of longitude; its CRS transform is not usable")
    shift = 0.0 if high > 180.0 else 360.0  # put the crossing at +180
    ring = [[x + shift, y] for x, y in ring]
    parts = []
    for keep_west, offset in ((True, 0.0), (False, -360.0)):
        part = [[x + offset, y] for x, y in _clip_at(ring, 180.0, keep_west)]
        if len(part) >= 3:
            closed = _ccw_closed(part)
            if abs(signed_area(closed)) > 0.0:
                parts.append([closed])
    if len(parts) == 1:
        return {"type": "Polygon", "coordinates": parts[0]}
    return {"type": "MultiPolygon", "coordinates": parts}


def lonlat_bbox(geometry: Mapping) -> list[float]:
    """RFC 7946 `bbox` of a `lonlat_polygon` geometry: `[west, south, east, north]`, with west > east for
    one cut at the antimeridian (§5.2)."""
    if geometry["type"] != "MultiPolygon":
        return bounds_of(geometry)
    boxes = [bounds_of({"coordinates": polygon}) for polygon in geometry["coordinates"]]
    east_side = [b for b in boxes if b[0] >= 0.0] or boxes  # the part that ends at +180
    west_side = [b for b in boxes if b[0] < 0.0] or boxes  # the part that starts at -180
    return [min(b[0] for b in east_side), min(b[1] for b in boxes), max(b[2] for b in west_side),
            max(b[3] for b in boxes)]


def tile_geometry(crs: str | None, transform: Sequence[float], window: Sequence[float], where: str,
                  densify_pts: int = 0) -> dict[str, Any]:
    """The geometry fields a tile (or a merged hit) records: footprint, bounds, WGS84 footprint."""
    footprint = footprint_polygon(transform, window)
    return {
        "footprint": footprint,
        "bounds": bounds_of(footprint),
        "footprint_wgs84": None if crs is None else footprint_wgs84(crs, transform, window, where, densify_pts),
    }


# ----------------------------------------------------------------------------------------------- GeoJSON


def tile_of(hit: Mapping) -> Mapping:
    """Tile metadata of a hit: under `hit["tile"]`, or merged into the hit itself (`{**tile, **hit}`)."""
    tile = hit.get("tile")
    return tile if isinstance(tile, Mapping) else hit


def suppress_overlapping(hits: Sequence[Mapping], iou_threshold: float = 0.5, mode: str = "suppress") -> list[dict]:
    """Collapse hits on overlapping tiles of the same scene (greedy NMS on pixel boxes, by score).

    Why: with `stride < tile_size` one field or airport shows up in 2–4 overlapping tiles, which then
    fill the top of the ranking with the same place. Hits are visited by descending score; a hit whose
    pixel box has IoU > `iou_threshold` with an already kept hit *of the same scene* is

    * `mode="suppress"`: dropped (the kept hit lists its rank under `nms.suppressed_ranks`);
    * `mode="merge"`: folded into the kept hit, whose window becomes the union box of the group and whose
      score stays the group maximum (footprints are recomputed from the recorded transform / CRS;
      IoU is always tested against the kept hit's *original* box, so a chain of tiles does not grow
      without bound). The ranks folded in are under `nms.merged_ranks`.

    Boxes are compared in pixels, so hits from different scenes never interact. The input is not
    modified; the result is sorted by score with `rank` renumbered from 1 (`nms.rank_before` keeps the
    old rank).
    """
    if mode not in ("suppress", "merge"):
        raise ValueError(f"`mode` must be 'suppress' or 'merge', got {mode!r}.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"`iou_threshold` must be in [0, 1], got {iou_threshold!r}.")
    order = sorted(range(len(hits)), key=lambda i: (-float(hits[i]["score"]), i))
    kept: list[dict] = []  # {"hit", "box", "union", "scene", "members"}
    for i in order:
        hit = hits[i]
        tile = tile_of(hit)
        box = window_to_box(tile["window"])
        scene = os.fspath(tile["scene"])
        target = next((k for k in kept if k["scene"] == scene and box_iou(k["box"], box) > iou_threshold), None)
        if target is None:
            kept.append({"hit": hit, "box": box, "union": list(box), "scene": scene, "members": []})
            continue
        target["members"].append(hit.get("rank", i + 1))
        if mode == "merge":
            u = target["union"]
            target["union"] = [min(u[0], box[0]), min(u[1], box[1]), max(u[2], box[2]), max(u[3], box[3])]
    out = []
    key = "suppressed_ranks" if mode == "suppress" else "merged_ranks"
    for new_rank, k in enumerate(kept, start=1):
        hit = dict(k["hit"])
        if mode == "merge" and k["members"]:
            tile = dict(tile_of(hit))
            window = [int(v) for v in box_to_window(k["union"])]
            transform = tile.get("transform") or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
            tile.update(window=window, **tile_geometry(tile.get("crs"), transform, window, repr(os.fspath(tile["scene"]))))
            if isinstance(hit.get("tile"), Mapping):
                hit["tile"] = tile
            else:
                hit.update(tile)
        hit["nms"] = {"mode": mode, "rank_before": hit.get("rank"), key: k["members"]}
        hit["rank"] = new_rank
        out.append(hit)
    return out


def hits_to_geojson(hits: Sequence[Mapping], query: str | None = None) -> dict:
    """A GeoJSON FeatureCollection (RFC 7946) of scene-tile hits, one Feature per hit in rank order.

    Geometry: the tile's WGS84 footprint (`[lon, lat]`, closed, counter-clockwise). Properties:
    `rank`, `score`, `filter_score`, `scene`, `window` (`{col_off, row_off, width, height}`),
    `pixel_bbox` (`[col0, row0, col1, row1]`), `crs` (the scene CRS, e.g. `"EPSG:32610"`, or `None`),
    `bbox_crs` (`[minx, miny, maxx, maxy]` in the scene CRS), `georeferenced`, plus `query` when given
    and `nms` when the hit went through [`suppress_overlapping`]. Un-georeferenced scenes get
    `geometry: null` and `bbox_crs: null`: their pixel box is all there is, and putting pixel numbers in
    a geometry would place them off the coast of Africa in every GIS.
    """
    features = []
    for hit in hits:
        tile = tile_of(hit)
        window = [int(v) for v in tile["window"]]
        crs = tile.get("crs")
        georef = bool(tile.get("georeferenced", crs is not None)) and tile.get("footprint_wgs84") is not None
        props: dict[str, Any] = {
            "rank": hit.get("rank"),
            "score": _num(hit.get("score")),
            "filter_score": _num(hit.get("filter_score")),
            "scene": str(tile["scene"]),
            "window": dict(zip(("col_off", "row_off", "width", "height"), window)),
            "pixel_bbox": list(window_to_box(window)),
            "crs": crs,
            "bbox_crs": list(tile["bounds"]) if georef and tile.get("bounds") is not None else None,
            "georeferenced": georef,
        }
        if query is not None:
            props["query"] = query
        if "nms" in hit:
            props["nms"] = hit["nms"]
        feature: dict[str, Any] = {"type": "Feature", "geometry": tile["footprint_wgs84"] if georef else None,
                                   "properties": props}
        if georef:
            feature["bbox"] = lonlat_bbox(tile["footprint_wgs84"])
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def _num(value):
    if value is None:
        return None
    return float(value)


def write_geojson(path: str | os.PathLike, hits: Sequence[Mapping], query: str | None = None):
    """Write [`hits_to_geojson`] atomically (a killed run never leaves half a FeatureCollection)."""
    return atomic_write_json(path, hits_to_geojson(hits, query=query))


__all__ = [
    "WGS84",
    "SceneCRSError",
    "SceneError",
    "box_iou",
    "box_to_window",
    "footprint_polygon",
    "footprint_wgs84",
    "hits_to_geojson",
    "lonlat_bbox",
    "lonlat_polygon",
    "suppress_overlapping",
    "tile_geometry",
    "tile_of",
    "window_to_box",
    "write_geojson",
]
