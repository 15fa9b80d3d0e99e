"""An index reads and writes only files inside its own folder, whatever its manifest or build state says.

Gallery image paths are the exception by design (they name the archive); they are only ever read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mtgfe.search.cli import index_main
from mtgfe.search.gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, GalleryIndex, IndexCorruptError
from tests.helpers.retrieval import tiny_model, tiny_processor, write_images


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("confine")
    model, processor = tiny_model(), tiny_processor()
    write_images(root / "images", 6, nested=False)
    GalleryIndex.build(model, processor, root / "images", output_dir=root / "idx", batch_size=3, shard_size=3,
                       progress=False)
    (root / "outside.safetensors").write_bytes((root / "idx" / "shard_00000.safetensors").read_bytes())
    return model, processor, root


def _copy_index(root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "idx"
    folder.mkdir()
    for path in (root / "idx").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.safetensors", "../../outside.safetensors",
                                  "sub/shard_00000.safetensors", "..", ""])
def test_a_shard_entry_outside_the_folder_is_refused_naming_it(world, tmp_path, name):
    _, _, root = world
    folder = _copy_index(root, tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["shards"][1]["file"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match=rf"shard entry 1 names the file {name!r}, which is not a file of"):
        GalleryIndex.load(folder)


def test_a_shard_linked_to_a_file_outside_is_refused(world, tmp_path):
    _, _, root = world
    folder = _copy_index(root, tmp_path)
    (folder / "shard_00001.safetensors").unlink()
    os.symlink(root / "outside.safetensors", folder / "shard_00001.safetensors")
    with pytest.raises(IndexCorruptError, match=r"shard entry 1 names the file 'shard_00001\.safetensors'"):
        GalleryIndex.load(folder)


@pytest.mark.parametrize("record", [{"file": "/etc/passwd", "count": 6}, {"file": "../outside.npy", "count": 6}])
def test_an_embeddings_entry_outside_the_folder_is_refused(world, tmp_path, record):
    _, _, root = world
    folder = _copy_index(root, tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["embeddings_file"] = record
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match=rf"embeddings_file names the file {record['file']!r}"):
        GalleryIndex.load(folder)


def test_a_malformed_embeddings_entry_is_named(world, tmp_path):
    _, _, root = world
    folder = _copy_index(root, tmp_path)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["embeddings_file"] = {"file": 3}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match=r"manifest\.json'?: embeddings_file must hold a file name"):
        GalleryIndex.load(folder)


def test_a_build_state_entry_outside_the_folder_is_refused_on_resume(world, tmp_path, capsys):
    model, processor, root = world
    folder = tmp_path / "partial"
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    folder.mkdir()
    state = {"shards": [{"file": "../outside.safetensors", "count": 3, "start": 0, "items": [], "consumed": []}],
             "skipped": []}
    (folder / BUILD_STATE_NAME).write_text(json.dumps(state))
    rc = index_main(["--model", str(tmp_path / "model"), "--images", str(root / "images"), "--output", str(folder),
                     "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "shards[0].file names the file '../outside.safetensors'" in err and "Traceback" not in err
