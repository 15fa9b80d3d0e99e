"""The demo's pieces: its scene match, its queries, and that every recipe it runs is a valid shipped config."""

from __future__ import annotations

import json


from mtgfe.training.demo import SYNTHETIC_QUERIES, distinct_caption_queries, scene_match


def test_scene_match_checks_kind_colour_count():
    scene = {"groups": [{"kind": "plane", "colour": "white", "count": 2}, {"kind": "car", "colour": "red", "count": 3}]}
    assert scene_match({"kind": "plane", "colour": "white", "count": 2}, scene) == {"kind": True, "colour": True, "count": True}
    assert scene_match({"kind": "plane", "colour": "white", "count": 3}, json.dumps(scene))["count"] is False
    assert scene_match({"kind": "car", "colour": "white", "count": 3}, scene) == {"kind": True, "colour": False, "count": False}
    assert scene_match({"kind": "boat", "colour": "red", "count": 3}, scene)["kind"] is False
    assert scene_match({"kind": "boat"}, None) is None


def test_synthetic_queries_can_be_shown_by_the_held_out_gallery():
    """Every example query has >= 5 matching scenes among the demo's 150 held-out scenes (a perfect top-5 exists)."""
    import numpy as np

    from mtgfe.data.synthetic import SPLIT_CODES, sample_scene

    scenes = [sample_scene(np.random.default_rng([0, SPLIT_CODES["test"], i])) for i in range(150)]
    for query in SYNTHETIC_QUERIES:
        assert sum(scene_match(query["want"], s)["count"] for s in scenes) >= 5, query


def test_distinct_caption_queries_ask_for_different_things():
    rows = [{"filename": f"{i}.tif", "captions": ["There is a piece of farmland .", "There is a piece of cropland ."]}
            for i in range(3)]
    rows += [{"filename": "7.tif", "captions": ["It is a piece of farmland .", "Many planes at the airport ."]},
             {"filename": "9.tif", "captions": ["A beach with waves ."]}]
    assert distinct_caption_queries(rows, 3) == ["There is a piece of farmland .", "Many planes at the airport .",
                                                 "A beach with waves ."]
    rows = [{"filename": f"agricultural{i:02d}.tif", "captions": ["There is a piece of farmland ."] * 5} for i in range(3)]
    rows += [{"filename": "airplane00.tif", "captions": ["An airplane is parked ."]},
             {"filename": "beach00.tif", "captions": ["There is a piece of farmland .", "A beach with waves ."]}]
    assert distinct_caption_queries(rows, 3) == ["There is a piece of farmland .", "An airplane is parked .",
                                                 "A beach with waves ."]


def test_every_demo_recipe_is_a_valid_shipped_config(tmp_path):
    """The UCM demo runs the two-stage recipe; its stage 1 must resolve (trained first when missing)."""
    from mtgfe.training.config import load_config
    from mtgfe.training.demo import DEMO_CONFIGS
    from mtgfe.training.cli import prerequisite_config

    for name, _ in DEMO_CONFIGS.values():
        cfg = load_config(name, ["output_dir=/nonexistent/demo/model", "model.pretrained=/nonexistent/demo/stage1/final"]
                          if name == "ucm_fusion" else [])
        if cfg.model.pretrained_recipe is not None:
            stage1 = prerequisite_config(cfg, [f"data.data_dir={tmp_path}"])
            assert stage1.output_dir == "/nonexistent/demo/stage1" and stage1.data.data_dir == str(tmp_path)
