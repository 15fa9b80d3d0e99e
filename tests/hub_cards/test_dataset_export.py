"""Benchmark export to Parquet with embedded image bytes (docs/HF_PITFALLS.md §6 pitfall), on real UCM images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from datasets import DatasetDict, Image, load_dataset
from huggingface_hub import DatasetCard
from PIL import Image as PILImage

from mtgfe.hub_cards import export_benchmark_to_parquet

N_VAL, N_TEST = 12, 8


def _ucm_source(data_dir):
    root = data_dir / "ucm_captions"
    ann = root / "annotations" / "karpathy_json" / "dataset_ucm_modified.json"
    images = root / "images" / "jpeg_q95"
    if not ann.is_file() or not images.is_dir():
        pytest.skip(f"UCM-Captions files not found under {root}")
    return json.loads(ann.read_text())["images"], images


def _build_ucm_subset(data_dir, image_dir) -> DatasetDict:
    """UCM val/test subsets (images view) loaded by the real benchmark loader from *copies* of the images.

    The copies live in ``image_dir`` so the test can delete them and prove the export does not need them.
    """
    from mtgfe.data.annotations import load_rs_benchmark

    _, src = _ucm_source(data_dir)
    image_dir.mkdir()
    splits = {}
    for split, n in {"val": N_VAL, "test": N_TEST}.items():
        full = load_rs_benchmark("ucm", data_dir=data_dir, split=split, view="images")
        for name in full["filename"]:
            jpg = name.replace(".tif", ".jpg")
            shutil.copyfile(src / jpg, image_dir / jpg)
        copied = load_rs_benchmark("ucm", data_dir=data_dir, split=split, view="images", image_dir=image_dir)
        subset = copied.select(range(0, len(copied), len(copied) // n)[:n])  # spread over the class blocks
        # keep the exported file names equal to the files on disk
        subset = subset.map(lambda row: {"filename": row["filename"].replace(".tif", ".jpg")})
        splits[split] = subset.select_columns(["image", "captions", "image_id", "filename"])
    return DatasetDict(splits)


def test_export_embeds_images_and_reloads_without_sources(data_dir, tmp_path):
    image_dir = tmp_path / "images"
    ds = _build_ucm_subset(data_dir, image_dir)
    expected = {split: d.remove_columns("image").to_dict() for split, d in ds.items()}
    out = tmp_path / "export"
    files = export_benchmark_to_parquet(ds, out, dataset_name="ucm")
    assert files == {"val": out / "data" / "val.parquet", "test": out / "data" / "test.parquet"}
    shutil.rmtree(image_dir)  # the exported files must not need the image paths any more

    _, src = _ucm_source(data_dir)
    cache = tmp_path / "hf_cache"
    loaded = load_dataset("parquet", data_files={s: str(p) for s, p in files.items()}, cache_dir=str(cache))
    for split in ("val", "test"):
        got = loaded[split]
        assert isinstance(got.features["image"], Image)
        assert got.remove_columns("image").to_dict() == expected[split]
        for row in got:
            with PILImage.open(src / row["filename"]) as ref:
                np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(ref))
        raw = got.cast_column("image", Image(decode=False))
        for row in raw:
            assert row["image"]["bytes"] == (src / row["filename"]).read_bytes()
            assert row["image"]["path"] == row["filename"]  # base name only: no local paths leak out

    # The card's `configs` let load_dataset find the splits from the folder alone.
    by_folder = load_dataset(str(out), cache_dir=str(cache))
    assert {s: len(d) for s, d in by_folder.items()} == {"val": N_VAL, "test": N_TEST}

    card = DatasetCard.load(out / "README.md")
    assert card.data.pretty_name == "UCM-Captions"
    assert card.data.to_dict()["dataset_info"]["splits"] == [
        {"name": "val", "num_examples": N_VAL},
        {"name": "test", "num_examples": N_TEST},
    ]
    assert f"| test | {N_TEST} | {5 * N_TEST} |" in card.text
    assert "| `image` | image (encoded file bytes embedded) |" in card.text


def test_lone_dataset_overwrite_and_errors(data_dir, tmp_path):
    ds = _build_ucm_subset(data_dir, tmp_path / "images")["test"].select(range(3))
    out = tmp_path / "export"
    files = export_benchmark_to_parquet(ds, out, dataset_name="ucm", split="test", card=False)
    assert list(files) == ["test"] and not (out / "README.md").exists()
    with pytest.raises(FileExistsError, match=r"test\.parquet exists"):
        export_benchmark_to_parquet(ds, out, dataset_name="ucm", split="test", card=False)
    export_benchmark_to_parquet(ds, out, dataset_name="ucm", split="test", overwrite=True)
    assert (out / "README.md").is_file()
    assert not list((out / "data").glob("*.partial"))
    with pytest.raises(ValueError, match=r"split name 'bad/split'"):
        export_benchmark_to_parquet(ds, tmp_path / "x", dataset_name="ucm", split="bad/split")
    with pytest.raises(TypeError, match=r"dataset must be a datasets.Dataset or DatasetDict"):
        export_benchmark_to_parquet([1, 2], tmp_path / "y", dataset_name="ucm")
    with pytest.raises(ValueError, match=r"source_citation is required for 'mine'"):
        export_benchmark_to_parquet(ds, tmp_path / "z", dataset_name="mine", split="test")
