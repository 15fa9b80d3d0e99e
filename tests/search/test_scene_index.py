"""Scenes in, places out, end to end: `mtgfe-index --scenes` → `mtgfe-search --geojson --html`.

The UCM mosaic (real test images in a known grid, shared data folder) checks that footprints equal the
layout cells; synthetic GeoTIFFs written here check errors, NMS and resume without the shared data.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.helpers.retrieval import tiny_model, tiny_processor

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from mtgfe.search.cli import index_main, search_main  # noqa: E402
from mtgfe.search.gallery_index import GalleryIndex  # noqa: E402
from mtgfe.search.geo import box_iou, signed_area, window_to_box  # noqa: E402
from mtgfe.search.index_storage import ShardWriter  # noqa: E402
from mtgfe.search.mosaic import build_ucm_mosaic  # noqa: E402
from mtgfe.search.scene_index import SceneSource, parse_bands, tile_id  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CLASSES = ["airplane", "beach", "forest", "river"]


def _write(path, array, **kwargs):
    count, height, width = array.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name,
                   crs="EPSG:32610", transform=from_origin(551000.0, 4182000.0, 0.3, 0.3))
    profile.update(kwargs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def _random_scene(path, height=512, width=768, seed=0):
    rng = np.random.default_rng(seed)
    return _write(path, rng.integers(0, 256, (3, height, width), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene_model")
    tiny_model().save_pretrained(root)
    tiny_processor().save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def mosaic(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene_mosaic") / "ucm_mosaic.tif"
    layout = build_ucm_mosaic(data_dir, out, classes=CLASSES, grid=(3, 4), seed=0)
    return out, layout


def _ring_is_valid_rfc7946(ring):
    assert ring[0] == ring[-1] and len(ring) >= 4
    assert signed_area(ring) > 0  # exterior ring counter-clockwise (RFC 7946 §3.1.6)
    for lon, lat in ring:
        assert -180 <= lon <= 180 and -90 <= lat <= 90


def test_index_mosaic_by_tiling_then_search_geojson_and_html(model_dir, mosaic, tmp_path, capsys):
    scene, layout = mosaic
    index_dir = tmp_path / "idx"
    code = index_main(["--model", str(model_dir), "--scenes", str(scene), "--output", str(index_dir),
                       "--tile-size", "256", "--stride", "256", "--batch-size", "5", "--shard-size", "4", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "Indexed 12 tile(s) of 1 scene(s)" in capsys.readouterr().out
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["source"].startswith("scenes:") and manifest["tiling"]["tile_size"] == 256
    assert (index_dir / "tiling_report.json").is_file()
    items = {item["id"]: item for item in manifest["items"]}
    assert len(items) == 12
    for cell in layout["cells"]:  # every layout cell is one item whose footprint is that cell
        item = items[tile_id(scene.name, cell["window"])]
        assert item["window"] == cell["window"]
        assert item["bounds"] == pytest.approx(cell["bounds"], abs=1e-6)
        assert item["crs"] == "EPSG:32610" and item["footprint_wgs84"]["type"] == "Polygon"

    geojson, page = tmp_path / "hits.geojson", tmp_path / "hits.html"
    code = search_main(["--index", str(index_dir), "--model", str(model_dir), "an airplane", "--k", "12",
                        "--top-k", "5", "--geojson", str(geojson), "--html", str(page)])
    assert code == 0, capsys.readouterr().err
    collection = json.loads(geojson.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 5
    by_window = {tuple(c["window"]): c for c in layout["cells"]}
    for rank, feature in enumerate(collection["features"], start=1):
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        _ring_is_valid_rfc7946(feature["geometry"]["coordinates"][0])
        west, south, east, north = feature["bbox"]
        assert west < east and south < north
        props = feature["properties"]
        assert props["rank"] == rank and props["query"] == "an airplane"
        assert math.isfinite(props["score"]) and math.isfinite(props["filter_score"])
        window = tuple(props["window"][k] for k in ("col_off", "row_off", "width", "height"))
        assert props["bbox_crs"] == pytest.approx(by_window[window]["bounds"], abs=1e-6)
    html = page.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 1  # one quicklook: one query, one scene
    assert "class='quicklook'" in html and html.count("data:image/jpeg;base64,") == 5  # tile thumbnails
    pngs = list((tmp_path / "hits_quicklooks").glob("*.png"))
    assert len(pngs) == 1
    from PIL import Image

    with Image.open(pngs[0]) as quicklook:  # boxes drawn: the rank-1 colour is present
        pixels = np.asarray(quicklook.convert("RGB")).reshape(-1, 3)
        assert ((pixels == (255, 64, 64)).all(axis=1)).sum() > 100


def test_nms_and_merge_on_overlapping_tiles(model_dir, tmp_path, capsys):
    _random_scene(tmp_path / "scenes" / "a.tif")
    index_dir = tmp_path / "idx"
    assert index_main(["--model", str(model_dir), "--scenes", str(tmp_path / "scenes"), "--output", str(index_dir),
                       "--tile-size", "256", "--stride", "128", "--quiet"]) == 0
    index = GalleryIndex.load(index_dir)
    assert len(index) == 3 * 5  # rows 0,128,256 × cols 0..512 step 128
    for flag in ("--nms", "--merge"):
        out = tmp_path / f"{flag[2:]}.geojson"
        assert search_main(["--index", str(index_dir), "--model", str(model_dir), "a field", "--k", "15",
                            "--top-k", "15", flag, "0.1", "--geojson", str(out)]) == 0
        features = json.loads(out.read_text())["features"]
        assert 1 <= len(features) < 15
        assert [f["properties"]["rank"] for f in features] == list(range(1, len(features) + 1))
        if flag == "--nms":
            boxes = [f["properties"]["pixel_bbox"] for f in features]
            assert all(box_iou(a, b) <= 0.1 for i, a in enumerate(boxes) for b in boxes[i + 1:])
        assert all("nms" in f["properties"] for f in features)
    capsys.readouterr()


def test_scene_errors_name_the_file_and_return_2(model_dir, tmp_path, capsys):
    small = _random_scene(tmp_path / "small.tif", height=200, width=200)
    base = ["--model", str(model_dir), "--quiet"]
    assert index_main([*base, "--scenes", str(small), "--output", str(tmp_path / "i1")]) == 2
    assert "small.tif" in capsys.readouterr().err
    assert index_main([*base, "--scenes", str(small), "--output", str(tmp_path / "i2"), "--tile-size", "100",
                       "--stride", "0"]) == 2
    assert "stride" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    _random_scene(tmp_path / "bad" / "good.tif", height=256, width=256)
    (tmp_path / "bad" / "corrupt.tif").write_bytes(b"II*\x00garbage")
    assert index_main([*base, "--scenes", str(tmp_path / "bad"), "--output", str(tmp_path / "i3")]) == 2
    assert "corrupt.tif" in capsys.readouterr().err
    assert index_main([*base, "--scenes", str(tmp_path / "bad"), "--output", str(tmp_path / "i4"),
                       "--skip-bad-scenes"]) == 0
    captured = capsys.readouterr()
    assert "Indexed 1 tile(s)" in captured.out and "SKIPPED" in captured.err and "corrupt.tif" in captured.err
    local = _write(tmp_path / "local.tif", np.ones((3, 256, 256), np.uint8), crs='LOCAL_CS["arbitrary",UNIT["metre",1]]')
    assert index_main([*base, "--scenes", str(local), "--output", str(tmp_path / "i5")]) == 2
    err = capsys.readouterr().err
    assert "local.tif" in err and "WGS84" in err
    assert index_main([*base, "--scenes", str(tmp_path / "missing"), "--output", str(tmp_path / "i6")]) == 2
    assert "missing" in capsys.readouterr().err
    assert index_main([*base, "--scenes", str(small), "--output", str(tmp_path / "i7"), "--tile-size", "100",
                       "--bands", "1,2"]) == 2
    assert "--bands" in capsys.readouterr().err
    assert search_main(["--index", str(tmp_path / "i4"), "--model", str(model_dir), "q", "--k", "1", "--top-k", "1",
                        "--nms", "0.5"]) == 0  # the index of the good scene searches fine
    capsys.readouterr()


def test_parse_bands_is_one_based():
    assert parse_bands("3,2,1") == (2, 1, 0)
    assert parse_bands(None) is None
    with pytest.raises(ValueError, match="1-based"):
        parse_bands("0,1,2")


def test_interrupted_scene_build_resumes_to_the_same_index(model_dir, tmp_path, monkeypatch):
    scenes = tmp_path / "scenes"
    _random_scene(scenes / "a.tif", seed=1)
    _random_scene(scenes / "b.tif", height=256, width=512, seed=2)
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    kwargs = dict(output_dir=None, batch_size=2, shard_size=2, progress=False)
    full = GalleryIndex.build(model, processor, SceneSource(scenes, tile_size=256), **kwargs)
    assert len(full) == 6 + 2

    original = ShardWriter.write_shard
    calls = {"n": 0}

    def crash_after_two(self, *args, **kw):
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        calls["n"] += 1
        return original(self, *args, **kw)

    monkeypatch.setattr(ShardWriter, "write_shard", crash_after_two)
    out = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        GalleryIndex.build(model, processor, SceneSource(scenes, tile_size=256), **{**kwargs, "output_dir": out})
    monkeypatch.setattr(ShardWriter, "write_shard", original)
    with pytest.raises(ValueError, match="tiling"):  # other tiling options: refused
        GalleryIndex.build(model, processor, SceneSource(scenes, tile_size=128), resume=True,
                           **{**kwargs, "output_dir": out})
    resumed = GalleryIndex.build(model, processor, SceneSource(scenes, tile_size=256), resume=True,
                                 **{**kwargs, "output_dir": out})
    assert [i["id"] for i in resumed.items] == [i["id"] for i in full.items]
    assert torch.equal(resumed.image_embeds, full.image_embeds)
    loaded = GalleryIndex.load(out)
    assert [i["window"] for i in loaded.items] == [i["window"] for i in full.items]
    assert loaded.items[0]["id"] == "a.tif#0,0" and loaded.items[-1]["id"] == "b.tif#256,0"
    assert window_to_box(loaded.items[-1]["window"]) == (256, 0, 512, 256)


def test_delete_tiles_from_the_cli_without_a_rebuild(model_dir, tmp_path, capsys):
    _random_scene(tmp_path / "s.tif", height=256, width=768)
    index_dir = tmp_path / "idx"
    assert index_main(["--model", str(model_dir), "--scenes", str(tmp_path / "s.tif"), "--output", str(index_dir),
                       "--quiet"]) == 0
    assert index_main(["--model", str(model_dir), "--output", str(index_dir), "--delete", "s.tif#256,0"]) == 0
    assert "Deleted 1 item(s)" in capsys.readouterr().out
    out = tmp_path / "hits.geojson"
    assert search_main(["--index", str(index_dir), "--model", str(model_dir), "q", "--k", "3", "--top-k", "3",
                        "--geojson", str(out)]) == 0
    windows = [f["properties"]["window"]["col_off"] for f in json.loads(out.read_text())["features"]]
    assert sorted(windows) == [0, 512]
    assert index_main(["--model", str(model_dir), "--output", str(index_dir), "--delete", "nope#0,0"]) == 2
    assert "nope#0,0" in capsys.readouterr().err


def test_a_scene_moved_after_indexing_still_gives_the_page_and_names_the_scene(model_dir, tmp_path, capsys):
    """Search needs only the index; the report's quicklook needs the scene. A moved scene gets a note in the
    page instead of its quicklook, and a warning naming it, not a traceback."""
    import shutil

    _random_scene(tmp_path / "scenes" / "a.tif", height=256, width=512)
    assert index_main(["--model", str(model_dir), "--scenes", str(tmp_path / "scenes"), "--output",
                       str(tmp_path / "idx"), "--tile-size", "256", "--quiet"]) == 0
    shutil.move(tmp_path / "scenes", tmp_path / "moved")
    capsys.readouterr()
    page = tmp_path / "page.html"
    rc = search_main(["--index", str(tmp_path / "idx"), "--model", str(model_dir), "a forest", "--k", "2",
                      "--top-k", "1", "--html", str(page)])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    assert "1 scene(s) could not be read" in err and str(tmp_path / "scenes" / "a.tif") in err
    text = page.read_text()
    assert "No quicklook: the scene cannot be read" in text and "a.tif" in text


def test_an_all_nodata_scene_says_so_instead_of_zero_unreadable_files(model_dir, tmp_path, capsys):
    _write(tmp_path / "blank.tif", np.zeros((3, 256, 256), dtype=np.uint8), nodata=0)
    rc = index_main(["--model", str(model_dir), "--scenes", str(tmp_path / "blank.tif"), "--output",
                     str(tmp_path / "idx"), "--tile-size", "256", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "yielded no images" in err and "no-data" in err and "all 0 file(s)" not in err, err


def test_out_of_range_bands_are_reported_one_based_as_typed(model_dir, tmp_path, capsys):
    scene = _write(tmp_path / "ms.tif", np.ones((4, 64, 64), np.uint16))
    assert index_main(["--model", str(model_dir), "--quiet", "--scenes", str(scene), "--output", str(tmp_path / "i"),
                       "--tile-size", "64", "--bands", "1,2,9"]) == 2
    err = capsys.readouterr().err
    assert "ms.tif" in err and "Band 9" in err and "1..4" in err and "(1, 2, 9)" in err
    assert "index 8" not in err and "(0, 1, 8)" not in err.split("Python")[0]
