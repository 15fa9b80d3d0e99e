"""Grounding targets of rendered twins (`training.grounding`), the config rule that guards them, and a tiny run
with `model.grounding_weight > 0`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from modeling_mtgfe import MTGFEConfig, MTGFEModel
from mtgfe.data.synthetic import load_synthetic
from mtgfe.evaluation.compositional.synthetic_pairs import group_phrase
from mtgfe.processing import build_wordpiece_tokenizer
from mtgfe.training.cli import main
from mtgfe.training.config import ConfigError, load_config
from mtgfe.training.grounding import GroundingTargets, phrase_token_cells, token_grid
from mtgfe.training.synthetic_twins import generate_twins, load_twin_rows

from tests.helpers.training import BASE, one_thread, records  # noqa: F401  (autouse: one intra-op thread)

GRID = (4, 4)


@pytest.fixture(scope="module")
def twins():
    return generate_twins(30, ["count", "colour", "spatial", "binding"])


@pytest.fixture(scope="module")
def tokenizer(twins):
    return build_wordpiece_tokenizer([t[k] for t in twins for k in ("caption", "twin_caption")], vocab_size=400)


def cells_by_hand(group: dict) -> set[int]:
    return {min(int(o["y"] * 4), 3) * 4 + min(int(o["x"] * 4), 3) for o in group["objects"]}


def test_targets_are_the_phrase_tokens_and_the_cells_of_their_group(twins, tokenizer):
    named = 0
    for item in twins:
        for scene, caption in ((item["scene"], item["caption"]), (item["twin"], item["twin_caption"])):
            encoded = tokenizer(caption, return_offsets_mapping=True)
            targets = phrase_token_cells(scene, caption, encoded["offset_mapping"], GRID)
            by_cells: dict[tuple, list[int]] = {}
            for token, cells in targets:
                by_cells.setdefault(tuple(cells), []).append(token)
            for group in scene["groups"]:
                phrase = group_phrase(group)
                if caption.count(phrase) != 1 or [group_phrase(g) for g in scene["groups"]].count(phrase) != 1:
                    continue
                tokens = by_cells[tuple(sorted(cells_by_hand(group)))]
                assert tokenizer.decode([encoded["input_ids"][t] for t in tokens]) == phrase.lower()
                assert tokens == list(range(tokens[0], tokens[0] + len(tokens)))  # contiguous, after [CLS]
                assert tokens[0] >= 1
                named += 1
    assert named >= 60  # every twin caption names at least one group


def test_a_mirrored_twin_targets_the_mirrored_cells(twins, tokenizer):
    """Spatial twins are exact mirrors: the named group's cells move to the other side (column c -> 3 - c for a
    left/right mirror), which is what the loss teaches the attention to follow."""
    mirrored = 0
    for item in (t for t in twins if t["type"] == "spatial" and t["twin"]["mirrored"] == "x"):
        base = phrase_token_cells(item["scene"], item["caption"],
                                  tokenizer(item["caption"], return_offsets_mapping=True)["offset_mapping"], GRID)
        for group, twin_group in zip(item["scene"]["groups"], item["twin"]["groups"]):
            # cells of objects off the cell borders (a centre exactly on a border rounds one way only)
            inner = [k for k, o in enumerate(group["objects"]) if min(abs(o["x"] * 4 - round(o["x"] * 4)), 1) > 1e-3]
            left = {min(int(group["objects"][k]["y"] * 4), 3) * 4 + min(int(group["objects"][k]["x"] * 4), 3) for k in inner}
            right = {min(int(twin_group["objects"][k]["y"] * 4), 3) * 4 + min(int(twin_group["objects"][k]["x"] * 4), 3)
                     for k in inner}
            assert right == {(c // 4) * 4 + 3 - c % 4 for c in left}
        mirrored += bool(base)
    assert mirrored >= 3


def test_targets_reach_twin_rows_only():
    train = load_synthetic("train", num_scenes=12, image_size=32)
    rows = load_twin_rows(train, ["spatial", "colour"], image_size=32)
    tokenizer = build_wordpiece_tokenizer(list(train["caption"]) + list(rows["caption"]), vocab_size=400)
    batch = [dict(train[0]), dict(rows[0]), dict(rows[1])]
    cells = GroundingTargets(tokenizer, GRID, max_length=24).encode(batch)
    assert cells.shape == (3, 24, 16) and cells.dtype == torch.bool
    assert not cells[0].any()  # an ordinary caption carries no scene
    for i in (1, 2):
        scene = json.loads(batch[i]["scene"])
        expected = phrase_token_cells(scene, batch[i]["caption"],
                                      tokenizer(batch[i]["caption"], max_length=24, truncation=True,
                                                return_offsets_mapping=True)["offset_mapping"], GRID)
        assert expected and {(t, tuple(c)) for t, c in expected} == {
            (t, tuple(torch.nonzero(cells[i, t]).flatten().tolist())) for t in range(24) if cells[i, t].any()}


def test_token_grid_reads_the_feature_map_and_refuses_a_vit():
    resnet = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [16, 24], "depths": [1, 1],
              "layer_type": "basic", "downsample_in_first_stage": False}
    model = MTGFEModel(MTGFEConfig.from_preset("tiny", vision_config=resnet, image_pooling="mean"))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert token_grid(model, 32) == (4, 4) and token_grid(model, 64) == (8, 8)
    assert model.vision_model.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics untouched
    with pytest.raises(ValueError, match="need a convolutional backbone"):
        token_grid(MTGFEModel(MTGFEConfig.from_preset("tiny")), 32)


TWINS = ["data.synthetic.twins.types=[spatial,colour]", "model.perturbation_source=twins",
         "model.itm_perturbation_negatives=1.0", "views.base={scale: [1, 1], ratio: [1, 1], hflip: false}",
         "model.mvjrc_weight=0", "model.mlm_weight=0"]
RESNET = ("model.config={vision_config: {model_type: resnet, embedding_size: 8, hidden_sizes: [16, 24], "
          "depths: [1, 1], layer_type: basic, downsample_in_first_stage: false}, image_pooling: mean, "
          "image_position_embedding: sine}")


def test_config_refuses_grounding_without_twins_or_with_a_moving_view():
    assert load_config("synthetic_tiny", [*TWINS, "model.grounding_weight=1"]).model.grounding_weight == 1.0
    assert load_config("synthetic_tiny", [*TWINS, "model.grounding_weight=1", "views.augment=false",
                                          "views.base={}"])
    with pytest.raises(ConfigError, match=r"model.grounding_weight=1.0 needs rendered twins"):
        load_config("synthetic_tiny", ["model.grounding_weight=1"])
    with pytest.raises(ConfigError, match=r"views.base crops or flips images \(scale=\[0.7, 1.0\]"):
        load_config("synthetic_tiny", [*TWINS[:3], "views.base={hflip: false, scale: [0.7, 1.0]}",
                                       "model.mvjrc_weight=0", "model.grounding_weight=1"])
    with pytest.raises(ConfigError, match=r"cached views are rescaled and rotated"):
        load_config("synthetic_tiny", [*TWINS, "views.base={}", "views.mvjrc={rot90_p: 0, hflip_p: 0, vflip_p: 0}",
                                       "freeze.vision=true", "data.backbone_cache.enabled=true",
                                       "model.grounding_weight=1"])
    with pytest.raises(ConfigError, match=r"grounding_weight"):
        load_config("synthetic_tiny", [*TWINS, "model.grounding_weight=-1"])


def test_a_tiny_run_trains_with_the_grounding_loss(tmp_path):
    args = BASE + [f"output_dir={tmp_path}", *TWINS, RESNET, "model.grounding_weight=1", "max_steps=3",
                   "eval.at_end=false"]
    assert main(args) == 0
    log = records(tmp_path)
    assert len(log) == 3
    assert all(math.isfinite(r["loss_grounding"]) and 0 < r["loss_grounding"] < 2 * math.log(16) for r in log), log
    assert all(r["loss"] == pytest.approx(r["loss_itc"] + r["loss_itm"] + r["loss_grounding"], rel=1e-5) for r in log)
