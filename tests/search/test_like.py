""""More like this" (`mtgfe.search.like`, `mtgfe-search --like/--not`): an exact copy of the start image is
the known answer (image-image filter cosine 1); exclusion, item names and errors."""

from __future__ import annotations

import json
import shutil

import pytest
from tests.helpers.retrieval import tiny_model, tiny_processor, write_images

from mtgfe.search.cli import index_main, search_main
from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.search.like import resolve_item, search_like


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("like")
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    paths = write_images(root / "images", 6, seed=4, nested=False)
    shutil.copy(paths[2], root / "images" / "copy_of_two.png")
    assert index_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output",
                       str(root / "index"), "--quiet"]) == 0
    index = GalleryIndex.load(str(root / "index"), model=model, processor=processor)
    return root, paths, index


def _row(index, name):
    return next(i for i, item in enumerate(index.items) if str(item["image"]).endswith(name))


def test_the_copy_of_the_start_image_comes_first_and_can_be_excluded(setup):
    _, paths, index = setup
    start, copy = _row(index, paths[2].name), _row(index, "copy_of_two.png")
    hits = search_like(index, [start], top_k=3)
    assert hits[0]["index"] == copy and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert start not in [hit["index"] for hit in hits]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    without = search_like(index, [paths[2].name], exclude=["copy_of_two.png"], top_k=3)
    assert copy not in [hit["index"] for hit in without] and len(without) == 3
    assert [h["index"] for h in without] == [h["index"] for h in hits[1:]] + [without[-1]["index"]]


def test_items_are_named_by_row_or_unique_file_name(setup):
    _, paths, index = setup
    assert resolve_item(index, "3") == 3 and resolve_item(index, 0) == 0
    assert resolve_item(index, paths[1].name) == _row(index, paths[1].name)
    with pytest.raises(ValueError, match="not a row"):
        resolve_item(index, 99)
    with pytest.raises(ValueError, match="no item"):
        resolve_item(index, "missing.png")
    with pytest.raises(ValueError, match="at least one"):
        search_like(index, [])


def test_cli_like_and_not(setup, tmp_path, capsys):
    root, paths, index = setup
    out = tmp_path / "like.json"
    args = ["--index", str(root / "index"), "--model", str(root / "model"), "--top-k", "2"]
    assert search_main(args + ["--like", paths[2].name, "--json", str(out)]) == 0
    hits = json.loads(out.read_text())[0]["hits"]
    assert str(hits[0]["image"]).endswith("copy_of_two.png")
    assert search_main(args + ["--like", paths[2].name, "--not", "copy_of_two.png", "--json", str(out)]) == 0
    assert all(not str(h["image"]).endswith("copy_of_two.png") for h in json.loads(out.read_text())[0]["hits"])
    capsys.readouterr()
    for bad in (["a query", "--like", "1"], ["--not", "1", "a query"], [], ["--like", "1", "--explain"]):
        with pytest.raises(SystemExit) as stop:
            search_main(args + bad)
        assert stop.value.code == 2
    assert search_main(args + ["--like", "nothing.png"]) == 2
    assert "nothing.png" in capsys.readouterr().err
