"""Search output that strict JSON / GeoJSON readers accept: finite scores, longitudes in [-180, 180], and
footprints cut at the antimeridian (RFC 7946 §3.1.9, bbox per §5.2)."""

from __future__ import annotations

import json
import math

import pytest

from mtgfe.search.cli import search_main
from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.search.geo import hits_to_geojson, lonlat_bbox, lonlat_polygon, signed_area
from tests.helpers.retrieval import tiny_model, tiny_processor, write_images

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rasterio's own


def _all_lons(geometry):
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    return [p[0] for polygon in polygons for ring in polygon for p in ring]


# ------------------------------------------------------------------------------------------------ alpha / scores
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("finite")
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    write_images(root / "images", 4, nested=False)
    GalleryIndex.build(model, processor, root / "images", output_dir=root / "idx", progress=False)
    return model, processor, root


def test_a_huge_alpha_is_refused_before_the_search(world, tmp_path, capsys):
    model, processor, root = world
    with pytest.raises(SystemExit) as stop:
        search_main(["--index", str(root / "idx"), "--model", str(root / "model"), "a road", "--k", "2",
                     "--top-k", "1", "--alpha", "1e308", "--json", str(tmp_path / "hits.json")])
    assert stop.value.code == 2 and "--score filter" in capsys.readouterr().err
    index = GalleryIndex.load(root / "idx", model=model, processor=processor)
    with pytest.raises(ValueError, match=r"alpha=1e\+308 is over 10000"):
        index.search(["a road"], k=2, top_k=1, score="itm+itc", alpha=1e308)
    hits = index.search(["a road"], k=2, top_k=1, score="itm+itc", alpha=1e4)  # the ceiling itself: finite
    assert all(math.isfinite(h["score"]) for h in hits[0])
    assert not (tmp_path / "hits.json").exists()


def test_non_finite_scores_are_never_written(world, tmp_path, capsys, monkeypatch):
    _, _, root = world
    real = GalleryIndex.search

    def broken(self, *args, **kwargs):  # as from damaged weights: the model outputs NaN
        results = real(self, *args, **kwargs)
        for hits in results:
            for hit in hits:
                hit["score"] = float("nan")
        return results

    monkeypatch.setattr(GalleryIndex, "search", broken)
    out = tmp_path / "hits.json"
    rc = search_main(["--index", str(root / "idx"), "--model", str(root / "model"), "a road", "--k", "2",
                      "--top-k", "1", "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "not finite" in err and "Traceback" not in err and not out.exists()


# ------------------------------------------------------------------------------------------------ antimeridian
def test_a_ring_a_little_past_180_is_cut_into_two_parts_within_range():
    geometry = lonlat_polygon([(179.99, 10.0), (180.0028, 10.0), (180.0028, 9.99), (179.99, 9.99)])
    assert geometry["type"] == "MultiPolygon" and len(geometry["coordinates"]) == 2
    assert all(-180.0 <= lon <= 180.0 for lon in _all_lons(geometry))
    for polygon in geometry["coordinates"]:
        assert polygon[0][0] == polygon[0][-1] and signed_area(polygon[0]) > 0  # closed, counter-clockwise
    assert lonlat_bbox(geometry) == pytest.approx([179.99, 9.99, -179.9972, 10.0])


def test_a_ring_with_a_360_degree_jump_is_cut_not_drawn_across_the_world():
    geometry = lonlat_polygon([(179.999, 0.01), (-179.999, 0.01), (-179.999, 0.0), (179.999, 0.0)])
    assert geometry["type"] == "MultiPolygon"
    west, _, east, _ = lonlat_bbox(geometry)
    assert west == pytest.approx(179.999) and east == pytest.approx(-179.999)  # west > east (RFC 7946 §5.2)
    assert max(_all_lons(geometry)) - min(_all_lons(geometry)) == pytest.approx(360.0)  # both sides of the line
    plain = lonlat_polygon([(10.0, 1.0), (10.1, 1.0), (10.1, 1.1), (10.0, 1.1)])
    assert plain["type"] == "Polygon" and lonlat_bbox(plain) == pytest.approx([10.0, 1.0, 10.1, 1.1])


@pytest.mark.parametrize("crs, origin, pixel", [
    ("EPSG:4326", (179.99, 10.0), 0.0001),  # a geographic scene whose east edge is at 180.0156
    ("EPSG:32660", (833_900.0, 100_000.0), 1.0),  # UTM 60N, a tile straddling 180° near latitude 0.9
])
def test_scene_tiles_crossing_the_antimeridian_give_valid_geojson(crs, origin, pixel):
    pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from mtgfe.search.geo import tile_geometry

    transform = tuple(from_origin(origin[0], origin[1], pixel, pixel))[:6]
    geometry = tile_geometry(crs, transform, (0, 0, 256, 256), where="test scene")
    footprint = geometry["footprint_wgs84"]
    assert footprint["type"] == "MultiPolygon"
    assert all(-180.0 <= lon <= 180.0 for lon in _all_lons(footprint))
    hit = {"rank": 1, "score": 0.5, "filter_score": 0.1, "scene": "s.tif", "window": [0, 0, 256, 256], "crs": crs,
           **geometry}
    collection = hits_to_geojson([hit])
    text = json.dumps(collection, allow_nan=False)  # strict JSON
    feature = json.loads(text)["features"][0]
    assert feature["bbox"][0] > feature["bbox"][2]  # crosses: west > east
