"""Synthetic scenes: determinism, schema, caption variety, and captions/pixels agreeing with the scene graph."""

import io
import json
import re

import numpy as np
import pytest
from datasets import Dataset, Value
from datasets import Image as ImageFeature
from PIL import Image

from mtgfe.data.annotations import dataset_features, normalize_caption
from mtgfe.data.synthetic import COLOURS, NUMBER_WORDS, VAGUE_COUNTS, load_synthetic


@pytest.fixture(scope="module")
def train_images():
    return load_synthetic("train", num_scenes=120, seed=0, view="images")


def _bytes(ds):
    return [v["bytes"] for v in ds.cast_column("image", ImageFeature(decode=False))["image"]]


def test_same_seed_gives_byte_identical_images_and_captions():
    first = load_synthetic("val", num_scenes=12, seed=3, view="images")
    second = load_synthetic("val", num_scenes=12, seed=3, view="images")
    assert _bytes(first) == _bytes(second)
    assert first["captions"] == second["captions"] and first["scene"] == second["scene"]
    other_seed = load_synthetic("val", num_scenes=12, seed=4, view="images")
    assert not set(_bytes(first)) & set(_bytes(other_seed))


def test_splits_do_not_overlap():
    splits = {s: load_synthetic(s, num_scenes=40, seed=0, view="images") for s in ("train", "val", "test")}
    scenes = {s: set(ds["scene"]) for s, ds in splits.items()}
    assert not (scenes["train"] & scenes["val"] or scenes["train"] & scenes["test"] or scenes["val"] & scenes["test"])
    assert splits["test"]["filename"][0] == "synthetic_test_00000.png"


def test_schema_of_both_views(train_images):
    extra = {"scene": Value("string")}
    assert train_images.features == dataset_features("images", extra=extra)
    captions = load_synthetic("train", num_scenes=30, seed=0, image_size=64)
    assert captions.features == dataset_features("captions", extra=extra)
    assert len(captions) == 5 * 30 and captions["image_id"] == [i for i in range(30) for _ in range(5)]
    assert captions["caption"][:50] == [c for caps in train_images["captions"][:10] for c in caps]
    assert captions[0]["image"].size == (64, 64) and train_images[0]["image"].size == (128, 128)
    ids = {}
    for text, cid in zip(captions["caption"], captions["caption_id"]):
        assert ids.setdefault(normalize_caption(text), cid) == cid


def test_embedded_images_survive_parquet(tmp_path):
    ds = load_synthetic("test", num_scenes=4, seed=1, view="images")
    ds.to_parquet(tmp_path / "synthetic.parquet")
    back = Dataset.from_parquet(str(tmp_path / "synthetic.parquet"))
    assert np.array_equal(np.asarray(back[2]["image"]), np.asarray(ds[2]["image"]))


def test_caption_variety(train_images):
    captions = [c for caps in train_images["captions"] for c in caps]
    assert len(set(captions)) / len(captions) > 0.85
    multi = [caps for caps, scene in zip(train_images["captions"], train_images["scene"])
             if len(json.loads(scene)["groups"]) > 1]
    assert multi and all(len(set(caps)) == 5 for caps in multi)
    scenes = [json.loads(s) for s in train_images["scene"]]
    assert {g["count"] for s in scenes for g in s["groups"]} == {1, 2, 3, 4, 5}
    assert len({g["kind"] for s in scenes for g in s["groups"]}) == 6
    assert len({r for s in scenes for _, r, _ in s["relations"]}) >= 6
    # Scenes that share their kinds still differ in what the captions say (counts, colours, relations).
    by_kinds = {}
    for scene, caps in zip(scenes, train_images["captions"]):
        by_kinds.setdefault(tuple(sorted(g["kind"] for g in scene["groups"])), []).append(caps[0])
    assert any(len(set(first)) > 1 for first in by_kinds.values() if len(first) > 1)


NOUNS = {
    "storage tank": r"storage tanks?|oil tanks?|tanks?", "plane": r"airplanes?|planes?|aircraft",
    "car": r"cars?|vehicles?", "building": r"buildings?|houses?", "boat": r"boats?|ships?", "tree": r"trees?",
}
MENTION = re.compile(
    r"\b(a few|several|many|one|two|three|four|five|[1-5]|an?)\s+(?:(%s)\s+)?(%s)\b"
    % ("|".join(COLOURS), "|".join(NOUNS.values())),
    re.IGNORECASE,
)


def _kind_of(noun):
    return next(k for k, pattern in NOUNS.items() if re.fullmatch(pattern, noun, re.IGNORECASE))


def _count_ok(word, count):
    word = word.lower()
    if word in VAGUE_COUNTS:
        low, high = VAGUE_COUNTS[word]
        return low <= count <= high
    value = 1 if word in ("a", "an") else int(word) if word.isdigit() else {v: k for k, v in NUMBER_WORDS.items()}[word]
    return value == count


def test_counts_and_colours_in_captions_match_the_scene(train_images):
    for caps, raw in zip(train_images["captions"], train_images["scene"]):
        groups = {g["kind"]: g for g in json.loads(raw)["groups"]}
        for i, caption in enumerate(caps):
            mentions = MENTION.findall(caption)
            assert mentions, caption
            for number, colour, noun in mentions:
                group = groups[_kind_of(noun)]
                assert _count_ok(number, group["count"]), (caption, group)
                assert not colour or colour.lower() == group["colour"], (caption, group)
                assert len(group["objects"]) == group["count"]
            if i == 0:  # the first caption describes every group
                assert {_kind_of(n) for _, _, n in mentions} == set(groups), (caption, groups)


def test_relations_match_object_positions(train_images):
    checks = {"left of": lambda dx, dy: dx < 0, "right of": lambda dx, dy: dx > 0,
              "above": lambda dx, dy: dy < 0, "below": lambda dx, dy: dy > 0}
    seen = 0
    for raw in train_images["scene"]:
        scene = json.loads(raw)
        for i, relation, j in scene["relations"]:
            a, b = scene["groups"][i], scene["groups"][j]
            if relation in checks:
                seen += 1
                assert checks[relation](a["cx"] - b["cx"], a["cy"] - b["cy"]), (relation, a, b)
            if relation == "around":
                assert b["count"] == 1 and a["count"] >= 3
    assert seen > 20


def test_rendered_objects_have_their_colour(train_images):
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    names = list(COLOURS)
    hits = total = 0
    for png, raw in zip(_bytes(train_images)[:60], train_images["scene"][:60]):
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
        side = pixels.shape[0]
        for group in json.loads(raw)["groups"]:
            for obj in group["objects"]:
                x, y = min(int(obj["x"] * side), side - 1), min(int(obj["y"] * side), side - 1)
                nearest = names[int(np.argmin(np.linalg.norm(palette - pixels[y, x], axis=1)))]
                hits += nearest == group["colour"]
                total += 1
    assert total > 200 and hits / total > 0.9


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(split="dev"), r"unknown split 'dev'.*\['train', 'val', 'test'\]"),
     (dict(num_scenes=0), "num_scenes must be a positive integer, got 0"),
     (dict(image_size=8), "image_size must be an integer >= 16, got 8"),
     (dict(view="pairs", num_scenes=1), "unknown view 'pairs'"),
     (dict(placeless_focus=1.5, num_scenes=1), r"placeless_focus must be a probability in \[0, 1\], got 1.5")],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_synthetic(**kwargs)


PLACE_WORDS = re.compile(r"\b(on the|along|beside|in the|near|off the|with|of|to the|north|south|east|west|"
                         r"around|surround\w*|encircled|above|below|next to|close to)\b", re.IGNORECASE)


def test_placeless_focus_captions_leave_out_the_place_and_nothing_else(train_images):
    """`placeless_focus` (the demo's training captions): some one-group captions lose their ground or water,
    as search queries do ("a yellow car parked"); scene graphs and pixels are untouched, and 0 gives the
    generator's usual captions."""
    assert load_synthetic("train", num_scenes=120, seed=0, view="images", placeless_focus=0.0)["captions"] \
        == train_images["captions"]
    bare = load_synthetic("train", num_scenes=120, seed=0, view="images", placeless_focus=1.0)
    assert bare["scene"] == train_images["scene"] and _bytes(bare) == _bytes(train_images)
    usual = [c for caps in train_images["captions"] for c in caps]
    assert not [c for c in usual if not PLACE_WORDS.search(c)]  # every usual caption names a place or a relation
    placeless = [c for caps in bare["captions"] for c in caps if not PLACE_WORDS.search(c)]
    assert len(placeless) > 40, placeless[:5]
    for caps, raw in zip(bare["captions"], bare["scene"]):  # still true of the scene: kind, count, colour
        groups = {g["kind"]: g for g in json.loads(raw)["groups"]}
        for caption in caps:
            for number, colour, noun in MENTION.findall(caption):
                group = groups[_kind_of(noun)]
                assert _count_ok(number, group["count"]) and (not colour or colour.lower() == group["colour"]), caption
