"""`mtgfe-index` / `mtgfe-search` in-process: build, update, search with HTML and PNG reports, errors."""

from __future__ import annotations

import json
import textwrap

import pytest
from PIL import Image
from tests.helpers.retrieval import tiny_model, tiny_processor, write_images

from mtgfe.search.cli import index_main, search_main
from tests.helpers.paths import REPO_ROOT

ROOT = REPO_ROOT

# Child-process prelude: `seen` records OMP_WAIT_POLICY at the moment torch is first imported.
SPY = textwrap.dedent("""
    import os, sys
    seen = []
    class Spy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                seen.append(os.environ.get("OMP_WAIT_POLICY"))
    sys.meta_path.insert(0, Spy())
    """)

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


# ------------------------------------------------------------------------------------ config defaults
def test_model_config_retrieval_defaults_reach_pipeline_index_and_cli(tmp_path, capsys):
    """One saved model with retrieval_k=5 / retrieval_score="itm": the pipeline, GalleryIndex.search and
    mtgfe-search all rank with those values when the caller names none."""
    from transformers import AutoModel, pipeline

    from mtgfe.search.gallery_index import GalleryIndex

    model = tiny_model(seed=5)
    model.config.retrieval_k, model.config.retrieval_score, model.config.retrieval_alpha = 5, "itm", 2.0
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    paths = write_images(tmp_path / "images", 7, seed=11, nested=False)
    loaded = AutoModel.from_pretrained(folder).eval()
    assert (loaded.config.retrieval_k, loaded.config.retrieval_score) == (5, "itm")
    processor = tiny_processor()

    index = GalleryIndex.build(loaded, processor, str(tmp_path / "images"), output_dir=tmp_path / "index", progress=False)
    explicit = index.search(QUERY, k=5, top_k=5, score="itm")
    assert index.search(QUERY, top_k=5) == explicit
    assert index.search(QUERY, top_k=5, score="itm+itc") != explicit  # the default is not itm+itc
    with pytest.raises(ValueError, match="k=5 is smaller than top_k=6"):
        index.search(QUERY, top_k=6)

    pipe = pipeline("rs-retrieval", model=loaded, processor=processor)
    gallery = [str(p) for p in paths]
    assert pipe(QUERY, gallery=gallery, top_k=5) == pipe(QUERY, gallery=gallery, top_k=5, k=5, score="itm")
    with pytest.raises(ValueError, match="k=5 is smaller than top_k=6"):
        pipe(QUERY, gallery=gallery, top_k=6)

    out_json = tmp_path / "hits.json"
    code = search_main(["--index", str(tmp_path / "index"), "--model", str(folder), QUERY, "--top-k", "5",
                        "--json", str(out_json)])
    assert code == 0
    hits = json.loads(out_json.read_text(encoding="utf-8"))[0]["hits"]
    assert [(h["image"], h["score"]) for h in hits] == [(h["image"], h["score"]) for h in explicit]
    capsys.readouterr()
    assert search_main(["--index", str(tmp_path / "index"), "--model", str(folder), QUERY, "--top-k", "6"]) == 2
    assert "k=5 is smaller than top_k=6" in capsys.readouterr().err


def test_importing_the_library_leaves_the_environment_alone():
    """The package no longer sets OMP_WAIT_POLICY on import; the console scripts do, before torch is imported."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, modeling_mtgfe, mtgfe.search, mtgfe.search.cli, mtgfe.processing, mtgfe.training.demo\n"
            "assert 'OMP_WAIT_POLICY' not in os.environ, os.environ['OMP_WAIT_POLICY']\n"
            "import sys; assert 'torch' in sys.modules\n"
            "print('CLEAN')")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "CLEAN" in result.stdout, result.stderr[-2000:]
    # every console script goes through the torch-free launcher, which sets the policy before torch is imported;
    # `python -m mtgfe.training.demo` sets it under its `__main__` guard. A meta-path spy records the value at
    # the moment torch is first imported.
    code = SPY + textwrap.dedent(f"""
        import tomllib
        from mtgfe.utils import entrypoints
        assert "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ
        with open({str(ROOT / "pyproject.toml")!r}, "rb") as f:
            scripts = tomllib.load(f)["project"]["scripts"]
        assert set(scripts) == set(entrypoints.TARGETS), scripts
        for name, target in sorted(scripts.items()):
            module, _, function = target.partition(":")
            assert module == "mtgfe.utils.entrypoints", (name, target)
            os.environ.pop("OMP_WAIT_POLICY", None)
            try:
                getattr(entrypoints, function)(["--help"])
            except SystemExit as exit_:
                assert exit_.code in (0, None), (name, exit_.code)
            assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE", name
            print(name, "PASSIVE")
        assert seen[:1] == ["PASSIVE"], seen  # the first lookup of torch (later ones: availability checks)
        """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.count("PASSIVE") == 6, result.stdout + result.stderr[-2000:]
    code = SPY + textwrap.dedent("""
        import runpy
        sys.argv = ["demo", "--help"]
        try:
            runpy.run_module("mtgfe.training.demo", run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            assert exit_.code in (0, None), exit_.code
        assert seen[:1] == ["PASSIVE"], seen
        print("DEMO PASSIVE")
        """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "DEMO PASSIVE" in result.stdout, result.stdout + result.stderr[-2000:]


def test_search_explain_adds_maps_to_json_html_and_table(setup, tmp_path, capsys):
    """`--explain`: every hit gets the grounding map of its stored tokens (the same numbers as
    `grounding_maps` on the index's tokens), drawn over its thumbnail, with the words behind it."""
    import torch

    from modeling_mtgfe.pipeline_mtgfe import grounding_maps
    from mtgfe.search.gallery_index import GalleryIndex

    root, _ = setup
    index_dir = tmp_path / "index"
    assert index_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output",
                       str(index_dir), "--quiet"]) == 0
    html_path, json_path = tmp_path / "explained.html", tmp_path / "explained.json"
    code = search_main(["--index", str(index_dir), "--model", str(root / "model"), QUERY, "--k", "6", "--top-k",
                        "3", "--explain", "--html", str(html_path), "--json", str(json_path)])
    assert code == 0
    assert capsys.readouterr().out.count("where (fusion layer 0): ") == 3
    hits = json.loads(json_path.read_text())[0]["hits"]
    model, processor = tiny_model(), tiny_processor()
    index = GalleryIndex.load(str(index_dir), model=model, processor=processor)
    rows = torch.tensor([hit["index"] for hit in hits])
    expected = grounding_maps(model, processor, [QUERY], index.image_tokens[rows])
    for hit, want in zip(hits, expected):
        assert set(hit) >= {"map", "map_words", "map_layer", "itm_score", "filter_score", "score"}
        torch.testing.assert_close(torch.tensor(hit["map"]), want["map"], rtol=1e-4, atol=1e-6)
        assert [w for w, _ in hit["map_words"]] == [w for w, _ in want["map_words"]]
    page = html_path.read_text(encoding="utf-8")
    assert page.count("class='heat'") == 3 and page.count("data:image/png;base64,") == 3
    assert page.count("where: ") == 3 and page.count("<div>ITM ") == 3
    # without --explain nothing of it appears
    assert search_main(["--index", str(index_dir), "--model", str(root / "model"), QUERY, "--k", "6", "--top-k",
                        "3", "--html", str(html_path)]) == 0
    assert "class='heat'" not in html_path.read_text(encoding="utf-8")


def test_heat_overlay_puts_the_colour_where_the_map_is_high():
    from mtgfe.search.report_html import heat_overlay

    grid = [[0.0, 2.0], [0.0, 0.0]]  # hot top-right cell
    overlay = heat_overlay(grid, (40, 20))
    assert overlay.size == (40, 20) and overlay.mode == "RGBA"
    alpha = overlay.getchannel("A")
    assert alpha.getpixel((39, 0)) == 170 and alpha.getpixel((0, 19)) == 0
    assert heat_overlay([[0.0, 0.0]], (8, 8)).getchannel("A").getextrema() == (0, 0)  # nothing matched: clear
    with pytest.raises(ValueError, match="grounding map"):
        heat_overlay([1.0, 2.0], (8, 8))
