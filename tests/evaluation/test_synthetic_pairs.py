"""Synthetic minimal pairs: held-out, deterministic, one attribute apart, captions naming the edit; scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import ImageOps

from mtgfe.data.synthetic import SPLIT_CODES, sample_scene
from mtgfe.data.synthetic import RELATION_WORDS
from mtgfe.evaluation.compositional.synthetic_pairs import (PAIR_TYPES, SCORERS, _ground, group_phrase, _relation_of,
                                                    evaluate_minimal_pairs, format_pairs_table, generate_pairs,
                                                    load_synthetic_pairs, render)


@pytest.fixture(scope="module")
def items():
    return generate_pairs(num_items=12, seed=0)


def _groups(scene):
    return [(g["kind"], g["colour"], g["count"]) for g in scene["groups"]]


def test_every_type_is_built_deterministically_from_test_scenes(items):
    assert {t: sum(it["type"] == t for it in items) for t in PAIR_TYPES} == dict.fromkeys(PAIR_TYPES, 12)
    assert items == generate_pairs(num_items=12, seed=0)
    for it in items:  # the base scene is held-out test scene `base_index`, never a train scene
        base = sample_scene(np.random.default_rng([0, SPLIT_CODES["test"], it["base_index"]]))
        assert base in (it["scene"], it["scene_b"]) and it["source"] == "synthetic_test"
    assert {it["scene"] == sample_scene(np.random.default_rng([0, SPLIT_CODES["test"], it["base_index"]]))
            for it in items} == {True, False}  # the edited scene is on either side


def test_scenes_differ_in_exactly_the_named_attribute(items):
    for it in items:
        a, b, typ = it["scene"], it["scene_b"], it["type"]
        assert a["background"] == b["background"] and a["jitter"] == b["jitter"] and it["caption"] != it["negative"]
        if typ == "count":
            changed = [(ga, gb) for ga, gb in zip(a["groups"], b["groups"]) if ga != gb]
            assert len(changed) == 1 and changed[0][0]["count"] != changed[0][1]["count"]
            assert [len(g["objects"]) for g in changed[0]] == [g["count"] for g in changed[0]]
            assert changed[0][0]["colour"] == changed[0][1]["colour"]
        elif typ == "colour":
            assert [(k, n) for k, _, n in _groups(a)] == [(k, n) for k, _, n in _groups(b)]
            assert sum(x != y for x, y in zip(_groups(a), _groups(b))) == 1
        elif typ == "binding":
            assert sorted(it["caption"].split()) == sorted(it["negative"].split())  # same words, other binding
            changed = [(x, y) for x, y in zip(_groups(a), _groups(b)) if x != y]
            assert len(changed) == 2 and changed[0][0][1] == changed[1][1][1] and changed[1][0][1] == changed[0][1][1]
        else:
            assert _groups(a) == _groups(b) and ("mirrored" in a) != ("mirrored" in b)


def test_captions_describe_their_own_scene(items):
    for it in items:
        for scene, caption in ((it["scene"], it["caption"]), (it["scene_b"], it["negative"])):
            phrases = [group_phrase(g) for g in scene["groups"]]
            if it["type"] in ("count", "colour"):
                assert caption == f"{caption.split(' on the ')[0]} on the {_ground(scene)}"
                assert caption.split(" on the ")[0] in phrases
            elif it["type"] == "binding":
                first, second = caption.split(" and ")
                assert first in phrases and second in phrases
            else:  # "<group i> <relation> <group j>" and that relation holds between the centroids
                pairs = [(gi, gj, caption[len(group_phrase(gi)) + 1: -len(group_phrase(gj)) - 1])
                         for gi in scene["groups"] for gj in scene["groups"]
                         if gi is not gj and caption.startswith(group_phrase(gi) + " ") and caption.endswith(" " + group_phrase(gj))]
                assert pairs, caption
                gi, gj, words = pairs[0]
                assert words == RELATION_WORDS[_relation_of(gi, gj)][0]


def test_mirrored_twin_is_the_pixel_mirror_of_its_base(items):
    for it in [it for it in items if it["type"] == "spatial"][:4]:
        mirrored, base = (it["scene_b"], it["scene"]) if "mirrored" in it["scene_b"] else (it["scene"], it["scene_b"])
        flip = ImageOps.mirror if mirrored["mirrored"] == "x" else ImageOps.flip
        assert flip(render(base, 48)).tobytes() == render(mirrored, 48).tobytes()


def test_dataset_fields_and_scores_on_a_random_model():
    from modeling_mtgfe import MTGFEConfig, MTGFEModel
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, load_default_tokenizer

    ds = load_synthetic_pairs(num_items=2, seed=0, image_size=32)
    assert len(ds) == 8 and set(ds["type"]) == set(PAIR_TYPES) and set(ds["source"]) == {"synthetic_test"}
    assert {"image", "image_b", "caption", "negative", "type", "source", "scene", "scene_b"} <= set(ds.column_names)
    assert ds[0]["image"].size == (32, 32) and json.loads(ds[0]["scene"])["groups"]
    torch.manual_seed(0)
    model = MTGFEModel(MTGFEConfig.from_preset("tiny")).eval()
    processor = MTGFEProcessor(MTGFEImageProcessor(size={"height": 32, "width": 32}), load_default_tokenizer())
    report = evaluate_minimal_pairs(model, processor, ds, alpha=1.0)
    assert set(report["per_type"]) == set(PAIR_TYPES) and "not a benchmark" in report["note"]
    for row in [*report["per_type"].values(), report["overall"]]:
        for scorer in SCORERS:
            cell = row[scorer]
            assert 0 <= cell["group"] <= min(cell["text"], cell["image"]) <= 100
    assert report["overall"]["itm"]["n"] == 8
    assert "binding" in format_pairs_table(report)
