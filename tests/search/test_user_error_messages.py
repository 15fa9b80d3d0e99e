"""User and environment errors around an index end in one line naming the thing (exit status 2), never a
traceback: a damaged tombstones.json, manifest items of the wrong type, a model folder whose weights are a
pickle that names code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtgfe.evaluation.cli import main as eval_main
from mtgfe.search.cli import index_main, search_main
from mtgfe.search.gallery_index import MANIFEST_NAME, GalleryIndex, IndexCorruptError
from tests.helpers.retrieval import tiny_model, tiny_processor, write_images


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("usererrors")
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    write_images(root / "images", 5, nested=False)
    GalleryIndex.build(model, processor, root / "images", output_dir=root / "idx", batch_size=5, progress=False)
    return root


def _copy_index(root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "idx"
    folder.mkdir()
    for path in (root / "idx").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", r"must be \{\"rows\": \[row numbers\]\}"),
    ('{"rows": "abc"}', r"must be \{\"rows\": \[row numbers\]\}"),
    ('{"rows": [1, "x"]}', r"must be \{\"rows\": \[row numbers\]\}"),
    ('{"rows": [99, -1]}', r"name row\(s\) \[99, -1\] outside the index's 5 rows"),
    ('{"rows": [1', r"not valid JSON"),
])
def test_a_damaged_tombstones_file_is_named(world, tmp_path, capsys, text, match):
    folder = _copy_index(world, tmp_path)
    (folder / "tombstones.json").write_text(text)
    with pytest.raises(IndexCorruptError, match=match) as caught:
        GalleryIndex.load(folder)
    assert "tombstones.json" in str(caught.value)
    rc = search_main(["--index", str(folder), "--model", str(world / "model"), "a runway", "--k", "2", "--top-k", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "tombstones.json" in err and "Traceback" not in err


@pytest.mark.parametrize("items", [[1, 2, 3, 4, 5], ["a"] * 5, [{"id": 3, "image": "x.png"}] * 5])
def test_manifest_items_of_the_wrong_type_are_named(world, tmp_path, capsys, items):
    folder = _copy_index(world, tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["items"] = items
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match=r"manifest\.json'?: items must be JSON objects"):
        GalleryIndex.load(folder)
    rc = index_main(["--model", str(world / "model"), "--images", str(world / "images"), "--output", str(folder),
                     "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "items must be JSON objects" in err and "Traceback" not in err


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('UNPICKLED').write_text('code ran')",))


def test_a_pickle_only_model_folder_is_refused_in_one_line(world, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in (world / "model").iterdir():
        if path.name != "model.safetensors":
            (folder / path.name).write_bytes(path.read_bytes())
    torch.save({"weights": _RunsCode()}, folder / "pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    rc = index_main(["--model", str(folder), "--images", str(world / "images"), "--output", str(tmp_path / "i"),
                     "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"--model {folder}: its weights are a pickle" in err and "(exec)" not in err and "names exec" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "i").exists()
    rc = eval_main(["--model", str(folder), "--dataset", "synthetic", "--split", "val", "--max-images", "4",
                    "--synthetic-size", "32", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "its weights are a pickle" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "UNPICKLED").exists()


def _disk_fills_after(monkeypatch, writes: int) -> None:
    """Every safetensors write after the first `writes` fails as on a full disk (ENOSPC)."""
    import errno

    import mtgfe.search.index_storage as storage

    real, calls = storage.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > writes:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(storage, "save_file", save_file)


def test_a_full_disk_during_a_build_is_one_line_and_the_build_resumes(world, tmp_path, capsys, monkeypatch):
    output = tmp_path / "idx"
    common = ["--model", str(world / "model"), "--images", str(world / "images"), "--output", str(output),
              "--batch-size", "2", "--shard-size", "2", "--quiet"]
    _disk_fills_after(monkeypatch, writes=1)
    assert index_main(common) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    assert f"cannot write the index in {output}: No space left on device" in err and "--resume" in err
    monkeypatch.undo()
    assert index_main([*common, "--resume"]) == 0
    assert len(GalleryIndex.load(output)) == 5


def test_a_full_disk_during_an_update_keeps_the_saved_index(world, tmp_path, capsys, monkeypatch):
    folder = _copy_index(world, tmp_path)
    write_images(tmp_path / "more", 3, seed=7, nested=False)
    _disk_fills_after(monkeypatch, writes=0)
    rc = index_main(["--model", str(world / "model"), "--images", str(tmp_path / "more"), "--output", str(folder),
                     "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "No space left on device" in err
    assert "still holds its last saved version" in err
    monkeypatch.undo()
    assert len(GalleryIndex.load(folder)) == 5


# ------------------------------------------------------------------------------------------------ smaller items
def test_place_flags_on_an_image_index_are_refused_before_the_search(world, tmp_path, capsys, monkeypatch):
    searched = []
    real = GalleryIndex.search
    monkeypatch.setattr(GalleryIndex, "search", lambda self, *a, **k: searched.append(1) or real(self, *a, **k))
    for flag in (["--nms", "0.5"], ["--merge", "0.5"], ["--geojson", str(tmp_path / "g.geojson")]):
        rc = search_main(["--index", str(world / "idx"), "--model", str(world / "model"), "a road", "--k", "2",
                          "--top-k", "1", *flag])
        err = capsys.readouterr().err
        assert rc == 2 and "need a scene index" in err and flag[0] in err
    assert not searched and not (tmp_path / "g.geojson").exists()
    with pytest.raises(SystemExit):
        search_main(["--index", str(world / "idx"), "--model", str(world / "model"), "a road", "--nms", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_control_characters_neither_make_a_query_nor_split_the_table(world, tmp_path, capsys):
    rc = search_main(["--index", str(world / "idx"), "--model", str(world / "model"), "\x00", "--k", "2", "--top-k", "1"])
    assert rc == 2 and "only control characters" in capsys.readouterr().err
    with pytest.raises(ValueError, match="empty, blank or only control characters"):
        GalleryIndex.load(world / "idx", model=tiny_model(), processor=tiny_processor()).search([""], k=2, top_k=1)
    folder = tmp_path / "odd"
    write_images(folder, 2, nested=False)
    (folder / "img_000.png").rename(folder / "line\nbreak.png")
    assert index_main(["--model", str(world / "model"), "--images", str(folder), "--output", str(tmp_path / "i"),
                       "--quiet"]) == 0
    capsys.readouterr()
    assert search_main(["--index", str(tmp_path / "i"), "--model", str(world / "model"), "a road", "--k", "2",
                        "--top-k", "2"]) == 0
    table = capsys.readouterr().out
    assert "line\\nbreak.png" in table and len(table.strip().splitlines()) == 4  # query, header, 2 hits


def test_shards_get_the_same_file_mode_as_the_other_index_files(world):
    modes = {path.name: path.stat().st_mode & 0o777 for path in (world / "idx").iterdir() if path.is_file()}
    assert len(set(modes.values())) == 1, modes
