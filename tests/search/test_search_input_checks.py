"""Search side: model identity in the pipeline, argument ranges, up-front gallery checks,
output paths, skipped-file retries, all-unreadable folders, Ctrl-C, explicit query kinds, decode memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image
from tests.helpers.retrieval import InterruptingProcessor, tiny_model, tiny_processor, write_images

from mtgfe.search.cli import index_main, search_main
from mtgfe.search.gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, GalleryIndex, IndexMismatchError

QUERY = "two white planes parked near the terminal"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue11")
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    paths = write_images(root / "images", 6, seed=3, nested=False)
    index = GalleryIndex.build(model, processor, root / "images", output_dir=root / "index", progress=False)
    return model, processor, root, paths, index


def _pipe(model, processor):
    from transformers import pipeline

    from modeling_mtgfe.pipeline_mtgfe import register_pipeline

    register_pipeline()
    return pipeline("rs-retrieval", model=model, processor=processor)


# ------------------------------------------------------------------------------------ defect 2
def test_pipeline_refuses_an_index_built_by_another_model(parts):
    model, processor, root, _, _ = parts
    other = tiny_model(seed=11)
    unchecked = GalleryIndex.load(root / "index")  # loaded without a model: the pipeline must check
    with pytest.raises(IndexMismatchError, match="was built with model"):
        _pipe(other, processor)(QUERY, gallery=unchecked, top_k=2, k=3)
    checked_for_a = GalleryIndex.load(root / "index", model=model, processor=processor)
    with pytest.raises(IndexMismatchError):
        _pipe(other, processor)(QUERY, gallery=checked_for_a, top_k=2, k=3)
    assert len(_pipe(model, processor)(QUERY, gallery=unchecked, top_k=2, k=3)) == 2  # the right model works


# ------------------------------------------------------------------------------------ defect 5
@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -5.0])
def test_index_search_refuses_non_finite_or_negative_alpha(parts, alpha):
    model, processor, _, _, index = parts
    with pytest.raises(ValueError, match="alpha"):
        index.search(QUERY, k=3, top_k=2, score="itm+itc", alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        _pipe(model, processor)(QUERY, gallery=index, top_k=2, k=3, score="itm+itc", alpha=alpha)


@pytest.mark.parametrize("flag, value", [("--alpha", "nan"), ("--alpha", "-1"), ("--alpha", "inf"), ("--k", "0"),
                                         ("--top-k", "-2")])
def test_search_cli_refuses_bad_numbers_before_any_work(parts, capsys, flag, value):
    _, _, root, _, _ = parts
    with pytest.raises(SystemExit) as stop:
        search_main(["--index", str(root / "index"), "--model", str(root / "model"), QUERY, flag, value])
    assert stop.value.code == 2 and flag in capsys.readouterr().err


def test_pipeline_refuses_bad_batch_sizes(parts):
    model, processor, _, _, index = parts
    with pytest.raises(ValueError, match="fusion_batch_size"):
        _pipe(model, processor)(QUERY, gallery=index, top_k=2, k=3, fusion_batch_size=0)


# ------------------------------------------------------------------------------------ defect 7
def test_pipeline_checks_every_gallery_file_before_encoding(parts, tmp_path, monkeypatch):
    import modeling_mtgfe.pipeline_mtgfe as pipeline_module

    model, processor, _, _, _ = parts
    good = write_images(tmp_path / "g", 40, seed=2, nested=False)
    (tmp_path / "g" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "g" / "zz_truncated.jpg").write_bytes(b"\xff\xd8\xff")
    calls = []
    real = pipeline_module.encode_images
    monkeypatch.setattr(pipeline_module, "encode_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    gallery = [str(p) for p in good[:20]] + [str(tmp_path / "g" / "broken.png")] + [str(p) for p in good[20:]]
    gallery += [str(tmp_path / "g" / "zz_truncated.jpg"), str(tmp_path / "g" / "missing.png")]
    with pytest.raises(ValueError) as error:
        _pipe(model, processor)(QUERY, gallery=gallery, top_k=2, k=3, image_batch_size=8)
    message = str(error.value)
    assert "broken.png" in message and "zz_truncated.jpg" in message and "missing.png" in message
    assert "3 gallery image(s)" in message
    assert calls == []  # nothing was encoded


# ------------------------------------------------------------------------------------ defect 9
def test_search_cli_checks_output_paths_before_searching(parts, tmp_path, capsys, monkeypatch):
    _, _, root, _, _ = parts
    searched = []
    monkeypatch.setattr(GalleryIndex, "search", lambda self, *a, **k: searched.append(1) or [[]])
    (tmp_path / "a_file").write_text("x")
    code = search_main(["--index", str(root / "index"), "--model", str(root / "model"), QUERY,
                        "--html", str(tmp_path / "a_file" / "x.html")])
    assert code == 2 and "--html" in capsys.readouterr().err and searched == []
    code = search_main(["--index", str(root / "index"), "--model", str(root / "model"), QUERY,
                        "--png", str(tmp_path)])
    assert code == 2 and "is a folder" in capsys.readouterr().err and searched == []


def test_a_repaired_file_that_was_skipped_is_indexed_on_the_next_run(parts, tmp_path, capsys):
    _, _, root, _, _ = parts
    images = tmp_path / "imgs"
    write_images(images, 3, seed=4, nested=False)
    (images / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    args = ["--model", str(root / "model"), "--images", str(images), "--output", str(tmp_path / "idx"), "--quiet",
            "--skip-unreadable"]
    assert index_main(args) == 0
    assert "zz_broken.png" in capsys.readouterr().err
    Image.new("RGB", (40, 40), "blue").save(images / "zz_broken.png")  # repaired
    assert index_main(args) == 0
    assert "1 new image(s), 4 in total" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "idx" / MANIFEST_NAME).read_text())
    assert manifest["skipped"] == [] and any(i["id"] == "zz_broken.png" for i in manifest["items"])




def test_a_resumed_build_retries_files_skipped_before_the_interruption(parts, tmp_path):
    model, processor, _, _, _ = parts
    images = tmp_path / "imgs"
    write_images(images, 6, seed=4, nested=False)
    (images / "img_000.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(KeyboardInterrupt):
        GalleryIndex.build(model, InterruptingProcessor(processor, 2), images, output_dir=tmp_path / "idx", batch_size=2,
                           shard_size=1, skip_unreadable=True, progress=False)
    assert json.loads((tmp_path / "idx" / BUILD_STATE_NAME).read_text())["skipped"]
    Image.new("RGB", (40, 40), "blue").save(images / "img_000.png")  # repaired while the build was down
    index = GalleryIndex.build(model, processor, images, output_dir=tmp_path / "idx", batch_size=2, shard_size=1,
                               skip_unreadable=True, resume=True, progress=False)
    assert len(index) == 6 and index.manifest["skipped"] == []
    assert len(GalleryIndex.load(tmp_path / "idx", model=model)) == 6


def test_a_folder_of_only_unreadable_files_leaves_no_interrupted_build(parts, tmp_path, capsys):
    _, _, root, _, _ = parts
    images = tmp_path / "bad"
    images.mkdir()
    (images / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    args = ["--model", str(root / "model"), "--images", str(images), "--output", str(tmp_path / "idx"), "--quiet",
            "--skip-unreadable"]
    assert index_main(args) == 2
    assert "all 2 file(s) were unreadable" in capsys.readouterr().err
    assert not (tmp_path / "idx" / BUILD_STATE_NAME).exists()
    assert index_main(args) == 2
    assert "interrupted" not in capsys.readouterr().err


def test_ctrl_c_prints_one_line_and_exits_130(parts, tmp_path, capsys, monkeypatch):
    _, _, root, _, _ = parts

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(GalleryIndex, "build", interrupt)
    code = index_main(["--model", str(root / "model"), "--images", str(root / "images"), "--output",
                       str(tmp_path / "idx"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "same command" in err and "Traceback" not in err
    monkeypatch.setattr(GalleryIndex, "search", interrupt)
    code = search_main(["--index", str(root / "index"), "--model", str(root / "model"), QUERY])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_a_text_query_that_looks_like_a_file_name_stays_text(parts, tmp_path, monkeypatch, capsys):
    model, processor, root, paths, index = parts
    pipe = _pipe(model, processor)
    hits = pipe("runway next to a hangar.png", gallery=index, top_k=2, k=3)  # no such file: text
    assert len(hits) == 2 and "image" in hits[0]
    existing = str(paths[0])
    as_text = pipe(existing, gallery=index, top_k=2, k=3, query_type="text")  # an existing file, forced text
    assert len(as_text) == 2
    with pytest.raises(ValueError, match="query_type"):
        pipe(QUERY, gallery=index, query_type="audio")
    base = ["--index", str(root / "index"), "--model", str(root / "model")]
    assert search_main([*base, "runway.png", "--top-k", "2", "--k", "3"]) == 0
    assert "query: runway.png" in capsys.readouterr().out
    assert search_main([*base, existing]) == 2
    assert "--text" in capsys.readouterr().err
    assert search_main([*base, "--text", existing, "--top-k", "2", "--k", "3"]) == 0


_MEMORY_CHILD = textwrap.dedent(
    """
    import sys, shutil
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from PIL import Image
    from tests.helpers.retrieval import tiny_model, tiny_processor
    from mtgfe.search.gallery_index import GalleryIndex

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    folder = Path(sys.argv[1])
    model, processor = tiny_model(), tiny_processor()
    small = folder / "warm"
    small.mkdir()
    Image.new("RGB", (64, 64), "red").save(small / "a.jpg")
    GalleryIndex.build(model, processor, small, batch_size=4, progress=False)  # warm up every code path
    big = folder / "big"
    big.mkdir()
    scene = Image.radial_gradient("L").resize((4000, 4000))
    Image.merge("RGB", (scene, scene.transpose(Image.Transpose.ROTATE_90), scene)).save(big / "s0.jpg", quality=85)
    del scene
    for i in (1, 2, 3):
        shutil.copy(big / "s0.jpg", big / f"s{i}.jpg")
    before = hwm()
    index = GalleryIndex.build(model, processor, big, batch_size=4, progress=False)
    assert len(index) == 4
    print(f"GROWTH_MIB {hwm() - before:.1f}")
    """
)


def test_indexing_large_jpegs_decodes_them_reduced(tmp_path):
    """4 JPEGs of 4000² at batch 4 would take 4 × 46 MiB decoded in full; reduced decoding needs a few MiB."""
    from tests.helpers.paths import REPO_ROOT

    child = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path), str(REPO_ROOT / "tests")],
                           capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == 0, child.stderr[-2000:]
    growth = float(child.stdout.split("GROWTH_MIB")[1])
    assert growth < 60, f"peak memory grew by {growth:.0f} MiB while indexing 4 large JPEGs"
