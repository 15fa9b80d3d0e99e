"""Benchmark and caption-file loaders against every annotation file in shared/data."""

import csv
import json
from functools import lru_cache
from pathlib import Path

import pytest
from datasets import Image as ImageFeature
from PIL import Image

from mtgfe.data.annotations import (
    AnnotationFormatError,
    ImageLocator,
    dataset_features,
    load_caption_file,
    load_rs_benchmark,
    normalize_caption,
)
from tests.helpers.paths import shared_data_dir


DATA = shared_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "MANIFEST.json").is_file(), reason=f"no benchmark data at {DATA}")


@lru_cache(maxsize=None)
def load(name, split, view="captions", layout=None, require_images=False):
    """Loads are cached: several tests look at the same split."""
    return load_rs_benchmark(name, split=split, view=view, layout=layout, require_images=require_images)


def paths_of(ds):
    return [row["path"] for row in ds.cast_column("image", ImageFeature(decode=False))["image"]]


# ---------------------------------------------------------------------------- every annotation file

SPLITS, AMFMN_SPLITS = ("train", "val", "test"), ("train", "test")
# (dataset, layout, split) -> the manifest path it reads; AMFMN pairs are listed by their caps file.
ANNOTATION_FILES = {
    ("ucm", "karpathy", "train"): "ucm_captions/annotations/karpathy_json/dataset_ucm_modified.json",
    ("sydney", "karpathy", "train"): "sydney_captions/annotations/karpathy_json/dataset_sydney_modified.json",
    **{("sydney", "coco", s): f"sydney_captions/annotations/coco_json/{s}_sydney.json" for s in SPLITS},
    **{("rsicd", "coco", s): f"rsicd/annotations/coco_json/captions_{s}2017.json" for s in ("val", "test")},
    **{("rsicd", "harma", s): f"rsicd/annotations/harma_json/rsicd_{s}.json" for s in ("val", "test")},
    **{("rsitmd", "harma", s): f"rsitmd/annotations/harma_json/rsitmd_{s}.json" for s in SPLITS},
    **{(d, "amfmn", s): f"{d}/annotations/amfmn_txt/{s}_caps.txt" for d in ("rsicd", "rsitmd") for s in AMFMN_SPLITS},
}
MANIFEST = {e["path"]: e for e in json.loads((DATA / "MANIFEST.json").read_text())["annotations"]}
CAPTION_LAYOUT_DIRS = ("karpathy_json", "coco_json", "harma_json", "amfmn_txt")


def test_every_caption_annotation_file_is_covered():
    caption_files = {p for p in MANIFEST
                     if Path(p).parent.name in CAPTION_LAYOUT_DIRS and not p.endswith("_filename.txt")}
    assert caption_files == set(ANNOTATION_FILES.values())


@pytest.mark.parametrize("key", sorted(ANNOTATION_FILES), ids="-".join)
def test_annotation_file_counts_match_manifest(key):
    name, layout, split = key
    entry = MANIFEST[ANNOTATION_FILES[key]]
    images = load(name, split, "images", layout)
    n_captions = sum(len(c) for c in images["captions"])
    assert len(load(name, split, "captions", layout)) == n_captions
    if layout == "karpathy":  # all splits of the one file
        totals = [load(name, s, "images", layout) for s in ("train", "val", "test")]
        assert sum(len(t) for t in totals) == entry.get("images", sum(len(t) for t in totals))
    elif layout == "amfmn":
        assert n_captions == entry["lines"]
        assert len(images) == MANIFEST[ANNOTATION_FILES[key].replace("_caps", "_filename")]["unique_images"]
    else:
        expected_images = entry.get("images")
        if expected_images is not None:
            assert len(images) == expected_images
        if "captions" in entry:
            assert n_captions == entry["captions"]


# ---------------------------------------------------------------------------- sizes per dataset

@pytest.mark.parametrize("split,n_images", [("train", 1680), ("val", 210), ("test", 210)])
def test_ucm_splits_with_images(split, n_images):
    images = load("ucm", split, "images", require_images=True)
    captions = load("ucm", split, "captions", require_images=True)
    assert (len(images), len(captions)) == (n_images, 5 * n_images)
    assert images.features == dataset_features("images") and captions.features == dataset_features("captions")
    assert all(len(c) == 5 for c in images["captions"])
    # Karpathy names `N.tif`; the shipped file is the JPEG re-encode `jpeg_q95/N.jpg`.
    paths = paths_of(images)
    assert all(f.endswith(".tif") for f in images["filename"])
    assert [Path(p).name for p in paths] == [f.replace(".tif", ".jpg") for f in images["filename"]]
    assert all(Path(p).parent.name == "jpeg_q95" for p in paths)


def test_ucm_images_decode_lazily_and_rows_agree():
    captions = load("ucm", "test", "captions", require_images=True)
    images = load("ucm", "test", "images", require_images=True)
    assert all(v["bytes"] is None for v in captions.cast_column("image", ImageFeature(decode=False))["image"][:50])
    row = captions[7]
    assert isinstance(row["image"], Image.Image) and min(row["image"].size) >= 240
    assert images[row["image_id"]]["filename"] == row["filename"]
    assert row["caption"] in images[row["image_id"]]["captions"]
    assert captions["image_id"] == [i for i in range(len(images)) for _ in range(5)]


def test_caption_ids_mark_identical_normalised_strings():
    captions = load("ucm", "test")
    by_key = {}
    for text, cid in zip(captions["caption"], captions["caption_id"]):
        by_key.setdefault(normalize_caption(text), set()).add(cid)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert len(set(captions["caption_id"])) == len(by_key) == 377  # docs/METHOD.md §6b: 377 distinct strings
    assert sorted(set(captions["caption_id"])) == list(range(len(by_key)))


def test_normalize_caption():
    assert normalize_caption("  There is a piece of  Farmland . ") == "there is a piece of farmland"
    assert normalize_caption("there is a piece of farmland.") == "there is a piece of farmland"
    assert normalize_caption("a v.i.p. lounge") == "a v.i.p. lounge"


def test_sydney_karpathy_and_coco_agree():
    for split, n in (("train", 497), ("val", 58), ("test", 58)):
        karpathy = load("sydney", split, "images")
        coco = load("sydney", split, "images", "coco")
        assert len(karpathy) == len(coco) == n
        assert karpathy["filename"] == coco["filename"]
        assert "image" not in karpathy.column_names


def test_sydney_without_images_raises_naming_missing_files():
    with pytest.raises(FileNotFoundError, match=r"488 of 497 images not found.*10\.tif"):
        load_rs_benchmark("sydney", split="train")


def test_rsicd_test_with_images_and_layouts_agree():
    harma = load("rsicd", "test", "images", require_images=True)
    amfmn = load("rsicd", "test", "images", "amfmn", require_images=True)
    assert (len(harma), sum(len(c) for c in harma["captions"])) == (1093, 5465)
    assert sorted(zip(harma["filename"], harma["captions"])) == sorted(zip(amfmn["filename"], amfmn["captions"]))
    assert all(Path(p).parent.name == "retrieval_test" for p in paths_of(harma))
    assert not any(f.startswith("test/") for f in harma["filename"])  # HarMA prefix stripped
    captions = load("rsicd", "test", require_images=True)
    assert len(captions) == 5465 and len(set(captions["caption_id"])) < 3400


def test_rsicd_retrieval_train_is_amfmn_train_minus_harma_val():
    train = set(load("rsicd", "train", "images")["filename"])
    val = set(load("rsicd", "val", "images")["filename"])
    amfmn_train = set(load("rsicd", "train", "images", "amfmn")["filename"])
    assert (len(train), len(val), len(amfmn_train)) == (7862, 1966, 9828)
    assert not train & val and train | val == amfmn_train
    assert len(load("rsicd", "train")) == 5 * 7862


def test_rsicd_coco_is_the_captioning_split():
    retrieval_test = set(load("rsicd", "test", "images")["filename"])
    coco_test = set(load("rsicd", "test", "images", "coco")["filename"])
    assert len(coco_test) == 1093 and len(coco_test & retrieval_test) == 108


def test_rsitmd_splits_and_missing_images():
    sizes = {s: len(load("rsitmd", s, "images")) for s in ("train", "val", "test")}
    assert sizes == {"train": 3435, "val": 856, "test": 452}
    assert len(load("rsitmd", "train")) == 17175
    amfmn_train = set(load("rsitmd", "train", "images", "amfmn")["filename"])
    harma = {s: set(load("rsitmd", s, "images")["filename"]) for s in ("train", "val", "test")}
    assert len(amfmn_train) == 4291 and harma["train"] | harma["val"] == amfmn_train
    assert harma["test"] == set(load("rsitmd", "test", "images", "amfmn")["filename"])
    with pytest.raises(FileNotFoundError, match=r"rsitmd/images does not exist.*require_images=False"):
        load_rs_benchmark("rsitmd", split="test")


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(name="eurosat"), ValueError, r"unknown dataset 'eurosat'.*rsicd"),
        (dict(name="ucm", split="dev"), ValueError, r"unknown split 'dev'.*\['train', 'val', 'test'\]"),
        (dict(name="rsitmd", split="val", layout="amfmn"), ValueError, r"unknown split 'val'.*\['train', 'test'\]"),
        (dict(name="rsicd", split="train", layout="coco"), ValueError, r"unknown split 'train'.*coco"),
        (dict(name="ucm", layout="harma"), ValueError, r"unknown layout 'harma'.*karpathy"),
        (dict(name="ucm", view="pairs"), ValueError, r"unknown view 'pairs'"),
        (dict(name="rsicd", split="train", layout="harma"), FileNotFoundError, r"rsicd_train\.json"),
    ],
)
def test_invalid_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_rs_benchmark(require_images=False, **kwargs)


def test_missing_data_dir_and_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder .*nowhere"):
        load_rs_benchmark("ucm", data_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"dataset_ucm_modified\.json"):
        load_rs_benchmark("ucm", data_dir=tmp_path)


def test_structure_mismatch_raises(tmp_path):
    bad = tmp_path / "dataset.json"
    bad.write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(AnnotationFormatError, match=r"dataset\.json.*'images'"):
        load_rs_benchmark("ucm", annotation_file=bad, layout="karpathy", require_images=False)
    harma_file = DATA / ANNOTATION_FILES[("rsitmd", "harma", "test")]
    with pytest.raises(AnnotationFormatError, match="structure of layout 'harma', not 'karpathy'"):
        load_rs_benchmark("ucm", annotation_file=harma_file, layout="karpathy", require_images=False)
    (tmp_path / "x_caps.txt").write_text("a\nb\nc\n")
    (tmp_path / "x_filename.txt").write_text("1.jpg\n2.jpg\n")
    with pytest.raises(AnnotationFormatError, match="3 captions but .*x_filename.txt names 2 images"):
        load_rs_benchmark("rsitmd", annotation_file=tmp_path / "x_caps.txt", require_images=False)


# ---------------------------------------------------------------------------- user data

def _write_png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_annotation_file_and_image_dir_override(tmp_path):
    """A user's Karpathy file and image folder: `.tif` names resolve to the `.png` files present."""
    entries = [
        {"filename": f"{i}.tif", "split": "test", "sentences": [{"raw": f"scene {i} ."}, {"raw": "Same text."}]}
        for i in range(3)
    ]
    (tmp_path / "ann.json").write_text(json.dumps({"images": entries}))
    for i in range(3):
        _write_png(tmp_path / "imgs" / f"{i}.png", (i, 0, 0))
    ds = load_rs_benchmark("ucm", annotation_file=tmp_path / "ann.json", image_dir=tmp_path / "imgs")
    assert len(ds) == 6 and ds["caption_id"] == [0, 1, 2, 1, 3, 1]
    assert ds[2]["image"].getpixel((0, 0)) == (1, 0, 0)
    with pytest.raises(ValueError, match="no image with split 'train'.*'test'"):
        load_rs_benchmark("ucm", annotation_file=tmp_path / "ann.json", split="train", image_dir=tmp_path)


def test_image_locator_prefers_split_folder_then_basename(tmp_path):
    _write_png(tmp_path / "test" / "a.jpg", (1, 1, 1))
    _write_png(tmp_path / "b.jpg", (2, 2, 2))
    locator = ImageLocator([tmp_path])
    assert locator.find("test/a.jpg") == tmp_path / "test" / "a.jpg"
    assert locator.find("test/b.jpg") == tmp_path / "b.jpg"
    assert locator.find("b.tif") == tmp_path / "b.jpg"
    assert ImageLocator([tmp_path], match_extension=False).find("b.tif") is None


def test_load_caption_file_jsonl_and_csv(tmp_path):
    _write_png(tmp_path / "img" / "a.png", (10, 20, 30))
    _write_png(tmp_path / "img" / "b.png", (40, 50, 60))
    jsonl = tmp_path / "caps.jsonl"
    rows = [{"image": "img/a.png", "captions": ["A red roof.", "a red roof"]},
            {"image": "img/b.png", "caption": "Sea."}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_caption_file(jsonl)
    assert ds.features == dataset_features("captions")
    assert ds["caption_id"] == [0, 0, 1] and ds["image_id"] == [0, 0, 1] and ds["filename"][2] == "img/b.png"
    assert ds[2]["image"].getpixel((0, 0)) == (40, 50, 60)

    csv_path = tmp_path / "caps.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "caption"])
        writer.writeheader()
        writer.writerows([{"image": "a.png", "caption": "one"}, {"image": "b.png", "caption": "two"},
                          {"image": "a.png", "caption": "three"}])
    images = load_caption_file(csv_path, image_dir=tmp_path / "img", view="images")
    assert images["captions"] == [["one", "three"], ["two"]]

    (tmp_path / "broken.jsonl").write_text(json.dumps({"image": "img/missing.png", "captions": ["x"]}))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_caption_file(tmp_path / "broken.jsonl")
    assert len(load_caption_file(tmp_path / "broken.jsonl", require_images=False)) == 1
    (tmp_path / "nocap.jsonl").write_text(json.dumps({"image": "img/a.png"}))
    with pytest.raises(AnnotationFormatError, match=r"nocap.jsonl:1.*'captions'"):
        load_caption_file(tmp_path / "nocap.jsonl")
