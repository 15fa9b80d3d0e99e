"""`mtgfe-index` / `mtgfe-search` in-process: build, update, search with HTML and PNG reports, errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from retrieval_helpers import tiny_model, tiny_processor, write_images

from mtgfe.search.cli import index_main, search_main

QUERY = "Two white planes parked near the terminal."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    paths = write_images(root / "images", 6, seed=7)
    captions = {paths[0].name: ["two white planes parked near the terminal", "an airport"],
                paths[1].name: ["a harbor with several boats"]}
    (root / "captions.json").write_text(json.dumps(captions))
    return root, paths


def test_index_then_search_with_reports(setup, capsys):
    root, paths = setup
    code = index_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output",
                       str(root / "index"), "--captions", str(root / "captions.json"), "--batch-size", "4", "--quiet"])
    assert code == 0
    assert "Indexed 6 image(s)" in capsys.readouterr().out
    html_path, png_path = root / "out.html", root / "sheet.png"
    code = search_main(["--index", str(root / "index"), "--model", str(root / "model"), QUERY, "a river",
                        "--k", "6", "--top-k", "6", "--html", str(html_path), "--png", str(png_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "query: " + QUERY in out and str(paths[0]) in out and "✓" in out
    page = html_path.read_text(encoding="utf-8")
    assert QUERY in page and "a river" in page
    assert page.count("data:image/jpeg;base64,") == 12  # 2 queries × 6 embedded thumbnails
    assert page.count("data-rank=") == 12 and str(paths[0]) in page
    assert "✓" in page  # the ground-truth image is marked (all 6 images are shown)
    with Image.open(png_path) as sheet:
        assert sheet.size[0] > 0 and sheet.size[1] > 0


def test_running_again_updates_with_new_files_only(setup, tmp_path, capsys):
    root, _ = setup
    images = tmp_path / "imgs"
    write_images(images, 3, seed=1, nested=False)
    args = ["--model", str(root / "model"), "--images", str(images), "--output", str(tmp_path / "idx"), "--quiet"]
    assert index_main(args) == 0
    assert index_main(args) == 0
    assert "0 new image(s), 3 in total" in capsys.readouterr().out
    Image.new("RGB", (40, 40), "red").save(images / "new.png")
    assert index_main(args) == 0
    assert "1 new image(s), 4 in total" in capsys.readouterr().out


def test_cli_errors(setup, tmp_path, capsys):
    root, _ = setup
    other = tmp_path / "other_model"
    tiny_model(seed=3).save_pretrained(other)
    tiny_processor().save_pretrained(other)
    code = search_main(["--index", str(root / "index"), "--model", str(other), "query"])
    assert code == 2 and "was built with model" in capsys.readouterr().err
    code = search_main(["--index", str(root / "index"), "--model", str(root / "model"), "q", "--k", "2", "--top-k", "3"])
    assert code == 2 and "smaller than top_k" in capsys.readouterr().err
    write_images(tmp_path / "bad", 2, nested=False)
    (tmp_path / "bad" / "corrupt.tif").write_bytes(b"II*\x00garbage")
    args = ["--model", str(root / "model"), "--images", str(tmp_path / "bad"), "--output", str(tmp_path / "bad_idx"), "--quiet"]
    assert index_main(args) == 2
    assert "corrupt.tif" in capsys.readouterr().err
    assert index_main([*args[:-1], "--skip-unreadable", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "SKIPPED" in err and "corrupt.tif" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "build_state.json").write_text("{}")
    args = ["--model", str(root / "model"), "--images", str(tmp_path / "bad"), "--output", str(tmp_path / "half")]
    assert index_main(args) == 2 and "--resume" in capsys.readouterr().err
