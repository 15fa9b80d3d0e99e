"""Scene tiling, footprints, GeoJSON, footprint NMS, quicklooks and the UCM mosaic.

Real pixels come from UCM-Captions test images (the shared data folder); the odd cases (16-bit 4-band,
no-data, un-georeferenced, corrupt, huge) are GeoTIFFs written here with rasterio.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np
import pytest
from PIL import Image

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from mtgfe.processing.image_decoding import percentile_stretch  # noqa: E402
from mtgfe.search.geo import (  # noqa: E402
    SceneCRSError,
    SceneError,
    box_iou,
    hits_to_geojson,
    signed_area,
    suppress_overlapping,
    write_geojson,
)
from mtgfe.search.mosaic import (  # noqa: E402
    build_ucm_mosaic,
    load_ucm_cell,
    precision_at_k_by_class,
    read_layout,
    ucm_class_of,
)
from mtgfe.search.scenes import (  # noqa: E402
    SceneReadError,
    TilingReport,
    iter_scene_tiles,
    iter_tiles,
    list_scenes,
    render_scene_quicklook,
    scene_windows,
    tile_offsets,
)

# rasterio's own `from_origin` uses the affine `*` operator that affine 3 marks as pending deprecation.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CLASSES = ["airplane", "beach", "forest", "river"]
ORIGIN = (551000.0, 4182000.0)


def _write(path, array, **kwargs):
    """Write a `(bands, H, W)` array as a GeoTIFF (UTM 10N, 0.3 m) unless kwargs override."""
    count, height, width = array.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name,
                   crs="EPSG:32610", transform=from_origin(*ORIGIN, 0.3, 0.3))
    profile.update(kwargs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


@pytest.fixture(scope="module")
def mosaic(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mosaic") / "ucm_mosaic.tif"
    layout = build_ucm_mosaic(data_dir, out, classes=CLASSES, grid=(3, 4), seed=0)
    return out, layout


# ------------------------------------------------------------------------------------------ mosaic


def test_mosaic_is_a_tiled_georeferenced_cog_like_file_with_a_layout(mosaic, data_dir):
    path, layout = mosaic
    assert read_layout(path) == json.loads(json.dumps(layout))
    assert sorted({c["class"] for c in layout["cells"]}) == CLASSES
    assert [sum(c["class"] == k for c in layout["cells"]) for k in CLASSES] == [3, 3, 3, 3]
    for cell in layout["cells"]:
        assert ucm_class_of(cell["image"]) == cell["class"]
    # Only test-split images: a mosaic for evaluation must not contain training images.
    annotations = json.loads((data_dir / "ucm_captions/annotations/karpathy_json/dataset_ucm_modified.json").read_text())
    split = {e["filename"].replace(".tif", ".jpg"): e["split"] for e in annotations["images"]}
    assert {split[c["image"]] for c in layout["cells"]} == {"test"}
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (1024, 768, 3)
        assert src.crs.to_epsg() == 32610
        assert src.block_shapes == [(256, 256)] * 3
        assert src.compression.name == "deflate"
        assert src.overviews(1) == [2, 4, 8]
        assert src.transform == from_origin(*ORIGIN, 0.3, 0.3)


def test_mosaic_tiles_map_back_exactly_to_their_cells(mosaic, data_dir):
    path, layout = mosaic
    report = TilingReport()
    tiles = list(iter_scene_tiles(path, tile_size=256, stride=256, report=report))
    assert len(tiles) == 12 and report.skipped_tiles == []
    cells = {tuple(c["window"]): c for c in layout["cells"]}
    for tile in tiles:
        cell = cells[tile.window]
        expected = load_ucm_cell(data_dir / cell["source"])
        assert np.array_equal(np.asarray(tile.image), expected), cell["image"]
        assert tile.crs == "EPSG:32610" and tile.georeferenced
        assert tile.bounds == pytest.approx(cell["bounds"], abs=1e-6)
        x0, y0, x1, y1 = cell["bounds"]
        ring = tile.footprint["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5 and signed_area(ring) > 0
        corners = sorted([(x0, y0), (x0, y1), (x1, y0), (x1, y1)])
        assert np.allclose(sorted(map(tuple, ring[:-1])), corners, rtol=0, atol=1e-6)
        assert x1 - x0 == pytest.approx(256 * 0.3) and y1 - y0 == pytest.approx(256 * 0.3)
    # A resized cell (off-size source) is still the same pixels as `load_ucm_cell`, checked above.


def test_stride_128_overlapping_tiles_footprints(mosaic, data_dir):
    path, layout = mosaic
    tiles = list(iter_scene_tiles(path, tile_size=256, stride=128))
    assert len(tiles) == 7 * 5
    by_window = {t.window: t for t in tiles}
    for (col, row, w, h), tile in by_window.items():
        x0, y1 = ORIGIN[0] + col * 0.3, ORIGIN[1] - row * 0.3
        assert tile.bounds == pytest.approx([x0, y1 - 256 * 0.3, x0 + 256 * 0.3, y1], abs=1e-6)
    # The tile between cells (0,0) and (0,1) is the right half of one and the left half of the other.
    cells = {tuple(c["window"][:2]): c for c in layout["cells"]}
    left = load_ucm_cell(data_dir / cells[(0, 0)]["source"])
    right = load_ucm_cell(data_dir / cells[(256, 0)]["source"])
    middle = np.asarray(by_window[(128, 0, 256, 256)].image)
    assert np.array_equal(middle, np.concatenate([left[:, 128:], right[:, :128]], axis=1))
    a, b = by_window[(0, 0, 256, 256)], by_window[(128, 0, 256, 256)]
    assert b.bounds[0] - a.bounds[0] == pytest.approx(128 * 0.3)
    assert box_iou(a.bounds, b.bounds) == pytest.approx(1 / 3)


def test_off_size_ucm_image_is_resized_into_its_cell(data_dir, tmp_path):
    # 497.jpg (buildings, test split) is 247x247: the mosaic resizes it, the layout says so, and the tile
    # is exactly `load_ucm_cell` of it. Taking all test images of the class guarantees it is in.
    annotations = json.loads((data_dir / "ucm_captions/annotations/karpathy_json/dataset_ucm_modified.json").read_text())
    n = sum(e["split"] == "test" and ucm_class_of(e["filename"]) == "buildings" for e in annotations["images"])
    layout = build_ucm_mosaic(data_dir, tmp_path / "b.tif", classes=["buildings"], grid=(1, n), seed=3)
    cell = next(c for c in layout["cells"] if c["image"] == "497.jpg")
    assert cell["resized"] and cell["original_size"] == [247, 247]
    tile = next(t for t in iter_scene_tiles(tmp_path / "b.tif") if list(t.window) == cell["window"])
    assert np.array_equal(np.asarray(tile.image), load_ucm_cell(data_dir / cell["source"]))
    assert np.asarray(tile.image).shape == (256, 256, 3)


# ------------------------------------------------------------------------------------------ windows


def test_edge_windows_shift_and_pad(tmp_path):
    assert tile_offsets(600, 256, 256, "shift") == [0, 256, 344]
    assert tile_offsets(512, 256, 256, "shift") == [0, 256]
    assert tile_offsets(600, 256, 256, "pad") == [0, 256, 512]
    assert tile_offsets(600, 256, 200, "pad") == [0, 200, 400]
    rng = np.random.default_rng(0)
    path = _write(tmp_path / "s.tif", rng.integers(1, 255, (3, 500, 600), dtype=np.uint8))
    shifted = list(iter_scene_tiles(path, tile_size=256))
    assert [t.window for t in shifted] == [(c, r, 256, 256) for r in (0, 244) for c in (0, 256, 344)]
    padded = list(iter_scene_tiles(path, tile_size=256, edge="pad", nodata_max_fraction=1.0))
    assert padded[-1].window == (512, 256, 88, 244)
    pixels = np.asarray(padded[-1].image)
    assert pixels.shape == (256, 256, 3) and pixels[:244, :88].any()
    assert (pixels[244:] == 0).all() and (pixels[:, 88:] == 0).all()
    assert padded[-1].nodata_fraction == pytest.approx(1 - 88 * 244 / 256**2)


def test_tile_larger_than_scene_and_bad_stride_are_named_errors(tmp_path, data_dir):
    odd = data_dir / "decoder_test_files" / "ucm_497_247x247_rgb.tif"
    with pytest.raises(SceneError, match=r"ucm_497_247x247_rgb\.tif.*247x247|larger than scene .*ucm_497"):
        next(iter_scene_tiles(odd, tile_size=256))
    for kwargs in ({"stride": 0}, {"stride": -5}, {"tile_size": 0}, {"tile_size": 1.5}):
        with pytest.raises(SceneError, match="ucm_497_247x247_rgb"):
            next(iter_scene_tiles(odd, **kwargs))
    with pytest.raises(SceneError, match="stride"):
        scene_windows(100, 100, 64, 0)


def test_real_odd_rgb_tiff_is_tiled_with_its_real_pixels(data_dir):
    odd = data_dir / "decoder_test_files" / "ucm_497_247x247_rgb.tif"
    tiles = list(iter_scene_tiles(odd, tile_size=128, stride=119))
    assert [t.window[:2] for t in tiles] == [(0, 0), (119, 0), (0, 119), (119, 119)]
    with Image.open(odd) as img:
        full = np.asarray(img.convert("RGB"))
    assert np.array_equal(np.asarray(tiles[3].image), full[119:247, 119:247])
    assert not tiles[0].georeferenced and tiles[0].footprint_wgs84 is None


# ------------------------------------------------------------------------------------------ bands, stretch


def test_16bit_4band_band_selection_and_per_scene_stretch(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(200, 1200, (4, 256, 512)).astype(np.uint16)
    data[:, :, 256:] += 2500  # the right half is much brighter: a per-tile stretch would hide that
    data[3] = 9000 - data[3]  # NIR differs from the visible bands
    path = _write(tmp_path / "ms.tif", data, tiled=True, blockxsize=256, blockysize=256)
    report = TilingReport()
    left, right = list(iter_scene_tiles(path, report=report))
    assert left.bands == (1, 2, 3) and report.scenes[0]["dtype"] == "uint16"
    # Per scene: equal to the package stretch of the whole scene (overview_size >= scene, so no decimation).
    whole = np.moveaxis(percentile_stretch(data[:3]), 0, -1)
    assert np.array_equal(np.asarray(left.image), whole[:, :256])
    assert np.array_equal(np.asarray(right.image), whole[:, 256:])
    assert np.asarray(left.image).mean() < 100 < np.asarray(right.image).mean()
    low, high = report.scenes[0]["stretch"]
    assert (low, high) == pytest.approx(tuple(np.percentile(data[:3].astype(float), (2, 98))))
    # False colour NIR-R-G, as load_image's bands=(3, 2, 1).
    nir = next(iter_scene_tiles(path, bands=(3, 2, 1)))
    assert nir.bands == (4, 3, 2)
    assert np.array_equal(np.asarray(nir.image), np.moveaxis(percentile_stretch(data[[3, 2, 1]]), 0, -1)[:, :256])
    with pytest.raises(SceneError, match=r"Band 8 .*ms\.tif.*0\.\.3"):
        next(iter_scene_tiles(path, bands=(7, 1, 2)))
    # A fixed stretch (shared by a campaign) gives the same pixels; None clips instead of wrapping.
    fixed = next(iter_scene_tiles(path, stretch=(low, high)))
    assert np.array_equal(np.asarray(fixed.image), np.asarray(left.image))
    clipped = np.moveaxis(np.clip(data[:3, :, :256], 0, 255).astype(np.uint8), 0, -1)
    assert np.array_equal(np.asarray(next(iter_scene_tiles(path, stretch=None)).image), clipped)
    with pytest.raises(SceneError, match="stretch"):
        next(iter_scene_tiles(path, stretch="tile"))
    # Decimated overview read for big scenes: the stretch barely moves.
    small = list(iter_scene_tiles(path, overview_size=64, report=(r2 := TilingReport())))
    assert r2.scenes[0]["stretch"] == pytest.approx([low, high], rel=0.05)
    assert len(small) == 2


def test_real_uint16_gray_tiff_uses_the_scene_stretch(data_dir):
    path = data_dir / "decoder_test_files" / "uint16_gray_101x100.tif"
    with Image.open(path) as img:
        raw = np.asarray(img)
    tiles = list(iter_scene_tiles(path, tile_size=50, stride=50))
    expected = percentile_stretch(raw)
    for tile in tiles:
        c, r, w, h = tile.window
        pixels = np.asarray(tile.image)
        assert np.array_equal(pixels[..., 0], expected[r:r + h, c:c + w])
        assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey replicated


# ------------------------------------------------------------------------------------------ no-data


def test_nodata_tiles_are_skipped_and_reported(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(1, 255, (3, 512, 768), dtype=np.uint8)
    data[:, :, :256] = 0  # first tile column is outside the swath
    data[:, :64, 256:512] = 0  # a quarter of the middle-top tile is no-data: kept (25% < 50%)
    path = _write(tmp_path / "nd.tif", data, nodata=0, tiled=True, blockxsize=256, blockysize=256)
    report = TilingReport()
    tiles = list(iter_scene_tiles(path, report=report))
    assert [t.window[:2] for t in tiles] == [(256, 0), (512, 0), (256, 256), (512, 256)]
    assert [s["window"][:2] for s in report.skipped_tiles] == [[0, 0], [0, 256]]
    assert {s["reason"] for s in report.skipped_tiles} == {"nodata"}
    assert report.skipped_tiles[0]["nodata_fraction"] == 1.0 and "nd.tif" in report.skipped_tiles[0]["scene"]
    assert tiles[0].nodata_fraction == pytest.approx(0.25)
    assert (np.asarray(tiles[0].image)[:64] == 0).all()
    assert report.scenes[0]["tiles_skipped"] == 2 and report.tiles_yielded == 4
    json.dumps(report.to_dict())
    strict = list(iter_scene_tiles(path, nodata_max_fraction=0.0))
    assert [t.window[:2] for t in strict] == [(512, 0), (256, 256), (512, 256)]


def test_float_nan_fill_counts_as_nodata(tmp_path):
    data = np.random.default_rng(6).normal(0.2, 0.05, (3, 256, 512)).astype(np.float32)
    data[:, :, 256:] = np.nan
    data[:, :32, :256] = np.nan  # 12.5 % of the left tile
    report = TilingReport()
    tiles = list(iter_scene_tiles(_write(tmp_path / "f.tif", data), report=report))
    assert [t.window[:2] for t in tiles] == [(0, 0)] and tiles[0].nodata_fraction == pytest.approx(0.125)
    assert report.skipped_tiles[0]["window"] == [256, 0, 256, 256]
    assert (np.asarray(tiles[0].image)[:32] == 0).all() and np.asarray(tiles[0].image)[32:].mean() > 50


def test_alpha_band_is_a_mask_not_a_colour_band(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (4, 256, 512), dtype=np.uint8)
    data[3] = 255
    data[3, :, 256:] = 0  # right tile transparent
    path = _write(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with rasterio.open(path) as src:
        assert src.colorinterp[3].name == "alpha"
    report = TilingReport()
    tiles = list(iter_scene_tiles(path, report=report))
    assert [t.window[:2] for t in tiles] == [(0, 0)] and tiles[0].bands == (1, 2, 3)
    assert report.scenes[0]["alpha_band"] == 4
    assert np.array_equal(np.asarray(tiles[0].image), np.moveaxis(data[:3, :, :256], 0, -1))


# ------------------------------------------------------------------------------------------ georeferencing


def _utm_latitude_on_central_meridian(northing: float) -> float:
    """Latitude whose WGS84 meridian arc × 0.9996 equals `northing` (bisection on a numeric integral).

    Independent of PROJ: on the central meridian UTM northing is k0 times the meridian arc length.
    """
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)

    def arc(phi):
        t = np.linspace(0.0, phi, 20001)
        integrand = a * (1 - e2) / (1 - e2 * np.sin(t) ** 2) ** 1.5
        return float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t)))

    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.9996 * arc(mid) < northing else (lo, mid)
    return math.degrees((lo + hi) / 2)


def test_wgs84_footprint_against_a_known_point(tmp_path):
    # Upper-left corner on the central meridian of UTM zone 10N (-123°), 4,000 km north of the equator.
    path = _write(tmp_path / "cm.tif", np.full((3, 256, 256), 7, np.uint8),
                  transform=from_origin(500000.0, 4000000.0, 1.0, 1.0))
    tile = next(iter_scene_tiles(path))
    ring = tile.footprint_wgs84["coordinates"][0]
    assert ring[0] == ring[-1] and signed_area(ring) > 0
    upper_left = min(ring, key=lambda p: (p[0], -p[1]))
    assert upper_left[0] == pytest.approx(-123.0, abs=1e-9)
    assert upper_left[1] == pytest.approx(_utm_latitude_on_central_meridian(4000000.0), abs=1e-6)
    assert upper_left[1] == pytest.approx(36.1447, abs=1e-4)
    for lon, lat in ring:  # lon/lat order (RFC 7946), a 256 m tile
        assert -123.0 - 1e-9 <= lon < -122.99 and 36.14 < lat < 36.15


def test_wgs84_scene_footprint_is_its_own_lon_lat(tmp_path):
    path = _write(tmp_path / "ll.tif", np.full((3, 256, 256), 9, np.uint8), crs="EPSG:4326",
                  transform=from_origin(-122.5, 37.8, 1e-5, 1e-5))
    tile = next(iter_scene_tiles(path))
    assert tile.crs == "EPSG:4326"
    assert np.allclose(tile.footprint_wgs84["coordinates"], tile.footprint["coordinates"], atol=1e-12)
    assert tile.bounds == pytest.approx([-122.5, 37.8 - 256e-5, -122.5 + 256e-5, 37.8])


def test_untransformable_crs_is_a_named_error(tmp_path):
    path = _write(tmp_path / "local.tif", np.ones((3, 256, 256), np.uint8),
                  crs='LOCAL_CS["arbitrary",UNIT["metre",1]]')
    with pytest.raises(SceneCRSError, match=r"local\.tif.*WGS84"):
        next(iter_scene_tiles(path))


def test_ungeoreferenced_tiff_gets_pixel_footprints(tmp_path, caplog):
    path = tmp_path / "plain.tif"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (300, 512, 3), dtype=np.uint8)).save(path)
    with caplog.at_level(logging.WARNING, logger="mtgfe.search.scenes"):
        tiles = list(iter_scene_tiles(path))
    assert "no georeferencing" in caplog.text and "plain.tif" in caplog.text
    assert [t.window for t in tiles] == [(0, 0, 256, 256), (256, 0, 256, 256), (0, 44, 256, 256), (256, 44, 256, 256)]
    tile = tiles[3]
    assert tile.crs is None and not tile.georeferenced and tile.footprint_wgs84 is None
    assert tile.bounds == [256, 44, 512, 300]
    feature = hits_to_geojson([{**tile.metadata(), "rank": 1, "score": 0.9}])["features"][0]
    assert feature["geometry"] is None and feature["properties"]["pixel_bbox"] == [256, 44, 512, 300]
    assert feature["properties"]["georeferenced"] is False and feature["properties"]["bbox_crs"] is None


# ------------------------------------------------------------------------------------------ bad input


def test_corrupt_and_truncated_scenes_are_named_errors(tmp_path):
    good = _write(tmp_path / "good.tif", np.random.default_rng(5).integers(0, 255, (3, 512, 512), dtype=np.uint8),
                  tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    data = good.read_bytes()
    (tmp_path / "header_only.tif").write_bytes(data[:100])
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    for name in ("header_only.tif", "truncated.tif"):
        with pytest.raises(SceneReadError, match=name.replace(".", r"\.")):
            list(iter_scene_tiles(tmp_path / name))
    with pytest.raises(SceneReadError, match="missing.tif"):
        next(iter_scene_tiles(tmp_path / "missing.tif"))
    assert [p.name for p in list_scenes(tmp_path)] == ["good.tif", "header_only.tif", "truncated.tif"]
    with pytest.raises(SceneReadError, match="header_only"):
        list(iter_tiles(tmp_path))
    report = TilingReport()
    tiles = list(iter_tiles(tmp_path, on_error="skip", report=report))
    assert [t.scene for t in tiles].count(os.fspath(good)) == 4
    assert [os.path.basename(s["scene"]) for s in report.skipped_scenes] == ["header_only.tif", "truncated.tif"]
    # A scene failing half-way keeps the tiles read before the bad block; the record says how many.
    partial = report.skipped_scenes[1]["tiles_yielded"]
    assert partial < 4 and len(tiles) == 4 + partial and "col_off=" in report.skipped_scenes[1]["error"]
    assert all(s["error_type"] == "SceneReadError" for s in report.skipped_scenes)
    for bad in ({"stride": 0}, {"edge": "wrap"}, {"nodata_max_fraction": 2}):  # argument errors are never skipped
        with pytest.raises(SceneError, match=next(iter(bad))):
            list(iter_tiles(tmp_path, on_error="skip", **bad))


def test_list_scenes_is_sorted_and_names_bad_paths(tmp_path):
    for name in ("b.TIF", "a.tif", "c.tiff", "notes.txt", "x.jpg", ".a.tif.tmp-1.tif", "._a.tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.tif").write_bytes(b"")
    assert [p.name for p in list_scenes(tmp_path)] == ["a.tif", "b.TIF", "c.tiff"]
    assert [p.name for p in list_scenes(tmp_path, recursive=True)] == ["a.tif", "b.TIF", "c.tiff", "d.tif"]
    assert list_scenes(tmp_path / "x.jpg") == [tmp_path / "x.jpg"]
    with pytest.raises(SceneError, match="nowhere"):
        list_scenes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SceneError, match="empty"):
        list_scenes(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_large_scene_is_read_window_by_window(tmp_path):
    size = 8000  # 64 MB of uint8 per band: loaded whole and replicated to RGB it would be 256 MB
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                       crs="EPSG:32610", transform=from_origin(*ORIGIN, 0.3, 0.3), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        strip = (np.arange(size, dtype=np.uint32)[None, :] + np.arange(512, dtype=np.uint32)[:, None]) % 251
        for row in range(0, size, 512):
            h = min(512, size - row)
            dst.write(strip[:h].astype(np.uint8)[None], window=Window(0, row, size, h))
    # GDAL keeps decoded blocks in a process-wide cache (default 5 % of RAM): windowed reads alone would
    # still let RSS grow with the scene until that cap. `gdal_cache_mb` bounds it; after warm-up RSS is flat.
    start = time.perf_counter()
    base = _rss_bytes()
    samples, count = [], 0
    for tile in iter_scene_tiles(path, tile_size=256, stride=256, overview_size=512, gdal_cache_mb=8):
        count += 1
        if count % 64 == 0:
            samples.append(_rss_bytes() - base)
        del tile
    assert count == 32 * 32  # 31 regular columns + one shifted edge column, same for rows
    mib = [round(s / 2**20) for s in samples]
    assert max(samples) < 40 * 2**20, f"RSS grew by {mib} MiB (whole scene: 64 MiB, as RGB 192 MiB)"
    assert max(samples[3:]) - samples[3] < 12 * 2**20, f"RSS kept growing after warm-up: {mib} MiB"
    assert time.perf_counter() - start < 30
    with rasterio.Env():  # the cap is scoped to the iteration, not left behind
        assert int(rasterio.env.get_gdal_config("GDAL_CACHEMAX")) != 8 * 2**20


# ------------------------------------------------------------------------------------------ hits


def _hits(tiles, scores):
    return [{**t.metadata(), "rank": i + 1, "score": s, "filter_score": s / 2}
            for i, (t, s) in enumerate(zip(tiles, scores))]


def test_geojson_follows_rfc7946_and_is_written_atomically(mosaic, tmp_path):
    path, _ = mosaic
    tiles = list(iter_scene_tiles(path, stride=128))[:3]
    hits = _hits(tiles, [0.9, 0.8, 0.7])
    nested = [{"rank": h["rank"], "score": h["score"], "filter_score": h["filter_score"],
               "tile": tiles[i].metadata()} for i, h in enumerate(hits)]
    collection = hits_to_geojson(hits, query="an airport")
    assert hits_to_geojson(nested, query="an airport") == collection
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    for feature, tile in zip(collection["features"], tiles):
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and signed_area(ring) > 0
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
        assert ring[0][0] < -122 and 37 < ring[0][1] < 38  # lon first: San Francisco, not the Antarctic
        props = feature["properties"]
        assert props["bbox_crs"] == tile.bounds and props["crs"] == "EPSG:32610"
        assert props["window"] == dict(zip(("col_off", "row_off", "width", "height"), tile.window))
        assert set(props) >= {"rank", "score", "filter_score", "scene", "query"}
        assert feature["bbox"][0] <= ring[0][0] <= feature["bbox"][2]
    out = write_geojson(tmp_path / "out" / "hits.geojson", hits)
    assert json.loads(out.read_text()) == json.loads(json.dumps(hits_to_geojson(hits)))
    assert [p.name for p in out.parent.iterdir()] == ["hits.geojson"]  # no temporary left behind


def test_suppress_and_merge_overlapping_hits(mosaic):
    path, _ = mosaic
    by_window = {t.window[:2]: t for t in iter_scene_tiles(path, stride=128)}
    picked = [by_window[(0, 0)], by_window[(128, 0)], by_window[(512, 256)], by_window[(128, 128)]]
    hits = _hits(picked, [0.5, 0.9, 0.8, 0.7])
    other_scene = {**hits[1], "scene": "elsewhere.tif", "score": 0.85, "rank": 5}
    hits.append(other_scene)
    kept = suppress_overlapping(hits, iou_threshold=0.3)
    # (0,0) vs (128,0): IoU 1/3 > 0.3, suppressed by the higher score; (128,128) vs (128,0): IoU 1/3 too.
    assert [(h["scene"] == "elsewhere.tif", h["window"][:2], h["rank"]) for h in kept] == [
        (False, [128, 0], 1), (True, [128, 0], 2), (False, [512, 256], 3)]
    assert kept[0]["nms"] == {"mode": "suppress", "rank_before": 2, "suppressed_ranks": [4, 1]}
    assert hits[0]["rank"] == 1 and "nms" not in hits[0]  # input untouched
    assert len(suppress_overlapping(hits, iou_threshold=0.5)) == 5
    merged = suppress_overlapping(hits, iou_threshold=0.3, mode="merge")
    top = merged[0]
    assert top["window"] == [0, 0, 384, 384] and top["score"] == 0.9
    assert top["bounds"] == pytest.approx([ORIGIN[0], ORIGIN[1] - 384 * 0.3, ORIGIN[0] + 384 * 0.3, ORIGIN[1]])
    assert top["footprint_wgs84"]["coordinates"][0][0] != picked[1].footprint_wgs84["coordinates"][0][0]
    assert top["nms"]["merged_ranks"] == [4, 1]
    with pytest.raises(ValueError, match="mode"):
        suppress_overlapping(hits, mode="union")


def test_quicklook_draws_ranked_boxes(mosaic, tmp_path):
    path, _ = mosaic
    tiles = list(iter_scene_tiles(path))
    hits = _hits([tiles[5]], [0.9]) + [{**_hits([tiles[0]], [0.1])[0], "scene": "other.tif", "rank": 2}]
    out = render_scene_quicklook(path, hits, tmp_path / "ql.png", max_size=512)
    with Image.open(out) as img:
        assert img.size == (512, 384)
        pixels = np.asarray(img.convert("RGB"))
    col, row = tiles[5].window[0] // 2, tiles[5].window[1] // 2  # decimated by 2
    edge = pixels[row + 60, col:col + 3]
    assert (edge == (255, 64, 64)).all()  # rank 1 box outline
    assert not (pixels[60, 0:3] == (255, 215, 0)).all()  # the other scene's hit is not drawn


def test_precision_at_k_by_class_with_synthetic_hits(mosaic):
    _, layout = mosaic
    scene = layout["scene"]
    cells = {cls: [c for c in layout["cells"] if c["class"] == cls] for cls in CLASSES}

    def hit(window, rank, scene_path=scene):
        return {"scene": scene_path, "window": list(window), "rank": rank, "score": 1.0 / rank}

    forest = cells["forest"]
    airplane = cells["airplane"]
    hits = {
        "forest": [hit(forest[0]["window"], 1), hit(airplane[0]["window"], 2), hit(forest[1]["window"], 3),
                   hit(forest[2]["window"], 4, "/elsewhere/other.tif")],
        "airplane": [hit(airplane[i]["window"], i + 1) for i in range(3)],
    }
    result = precision_at_k_by_class(hits, layout, k=3)
    assert result["per_class"] == {"forest": pytest.approx(2 / 3), "airplane": 1.0}
    assert result["correct"]["forest"] == [True, False, True]
    assert result["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert precision_at_k_by_class(hits, layout, k=4)["per_class"]["airplane"] == 0.75  # missing = wrong
    # A half-shifted hit: 50 % coverage counts by default, its IoU with the cell (1/3) does not.
    by_pos = {tuple(x["window"][:2]): x for x in layout["cells"]}
    cell = next(x for x in layout["cells"]
                if (x["window"][0] + 256, x["window"][1]) in by_pos
                and by_pos[(x["window"][0] + 256, x["window"][1])]["class"] != x["class"])
    c, r, w, h = cell["window"]
    shifted = {cell["class"]: [hit((c + 128, r, w, h), 1)]}
    assert precision_at_k_by_class(shifted, layout, k=1)["per_class"][cell["class"]] == 1.0
    assert precision_at_k_by_class(shifted, layout, k=1, overlap="iou")["per_class"][cell["class"]] == 0.0
    assert precision_at_k_by_class(shifted, layout, k=1, min_overlap=0.6)["per_class"][cell["class"]] == 0.0
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (1, 1, 2, 2)) == 0.0
