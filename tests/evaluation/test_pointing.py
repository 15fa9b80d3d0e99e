"""Synthetic pointing game (`mtgfe.evaluation.pointing`): target cells, bound phrases, peaks and the dual
map on hand-built cases whose answer is known; the whole evaluation on a tiny model; the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from mtgfe.evaluation.cli import pointing_main
from mtgfe.evaluation.pointing import (
    dual_maps,
    evaluate_pointing,
    format_pointing_table,
    group_cells,
    is_bound,
    peak_cells,
    pointing_items,
    score_maps,
)
from tests.helpers.retrieval import tiny_model, tiny_processor


def _group(kind, colour, *objects):
    return {"kind": kind, "colour": colour, "count": len(objects),
            "objects": [{"x": x, "y": y, "size": s, "angle": 0.0} for x, y, s in objects]}


def test_group_cells_are_the_cells_the_object_boxes_overlap():
    assert group_cells(_group("car", "red", (0.1, 0.1, 0.1)), (4, 4)) == [0]
    # a box across the centre touches the four middle cells of a 4x4 grid
    assert group_cells(_group("car", "red", (0.5, 0.5, 0.2)), (4, 4)) == [5, 6, 9, 10]
    # two objects, one at the bottom-right corner (clipped to the grid), on a non-square grid
    assert group_cells(_group("car", "red", (0.1, 0.1, 0.05), (0.99, 0.99, 0.1)), (2, 3)) == [0, 5]


def test_bound_means_another_group_shares_kind_or_colour():
    scene = {"groups": [_group("car", "red", (0.1, 0.1, 0.1)), _group("car", "blue", (0.9, 0.9, 0.1)),
                        _group("building", "white", (0.5, 0.5, 0.1))]}
    assert [is_bound(scene, i) for i in range(3)] == [True, True, False]
    scene["groups"][2]["colour"] = "red"
    assert is_bound(scene, 2)


def test_peaks_and_scores_on_hand_built_maps():
    maps = torch.zeros(3, 2, 2)
    maps[0, 1, 0] = 1.0   # peak cell 2
    maps[1, 0, 1] = 0.5   # peak cell 1
    # map 2 is flat: the first cell wins the tie
    assert peak_cells(maps).tolist() == [2, 1, 0]
    assert score_maps(maps, [[2, 3], [0], [0]]).tolist() == [True, False, True]


def test_dual_map_peaks_on_the_token_the_text_embedding_copies():
    """A text embedding equal to grid token k's projection has cosine 1 there: the dual map peaks at k."""
    model = tiny_model(seed=1)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model.backbone_hidden_states(pixels)  # ViT: class token + 4x4 grid
        text = model.vision_proj(hidden[torch.arange(2), torch.tensor([1 + 5, 1 + 12])])
    maps = dual_maps(model, pixels, text)
    assert maps.shape == (2, 4, 4)
    assert peak_cells(maps).tolist() == [5, 12]
    assert maps.flatten(1).max(1).values == pytest.approx([1.0, 1.0], abs=1e-5)


def test_items_are_deterministic_unique_and_checked():
    items = pointing_items(num_scenes=12, seed=0, split="val")
    assert items == pointing_items(num_scenes=12, seed=0, split="val")
    assert items != pointing_items(num_scenes=12, seed=0, split="test")
    for item in items:
        phrases = [it["phrase"] for it in items if it["scene_index"] == item["scene_index"]]
        assert phrases.count(item["phrase"]) == 1
        assert item["bound"] == is_bound(item["scene"], item["group"])
    with pytest.raises(ValueError, match="split"):
        pointing_items(3, split="dev")
    with pytest.raises(ValueError, match="num_scenes"):
        pointing_items(0)


def test_evaluate_pointing_on_a_tiny_model_priors_are_exact():
    model, processor = tiny_model(seed=2), tiny_processor()
    report = evaluate_pointing(model, processor, num_scenes=10, split="val", batch_size=7)
    items = pointing_items(10, split="val")
    assert report["n"] == len(items) and report["grid"] == [4, 4] and report["layer"] == 0
    targets = [group_cells(it["scene"]["groups"][it["group"]], (4, 4)) for it in items]
    expected_random = 100 * sum(len(t) / 16 for t in targets) / len(targets)
    assert report["maps"]["random"]["all"] == pytest.approx(expected_random, abs=0.06)
    expected_centre = 100 * sum(2 * 4 + 2 in t for t in targets) / len(targets)
    assert report["maps"]["centre"]["all"] == pytest.approx(expected_centre, abs=0.06)
    for name in ("fusion", "dual"):
        assert 0 <= report["maps"][name]["all"] <= 100
    table = format_pointing_table(report)
    assert "fusion" in table and "dual" in table and f"{report['n']} phrases" in table


def test_pointing_cli_writes_a_report_per_layer(tmp_path):
    model, processor = tiny_model(seed=2), tiny_processor()
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    out = tmp_path / "pointing.json"
    assert pointing_main(["--model", str(tmp_path / "m"), "--scenes", "4", "--split", "val", "--layer", "all",
                          "--output", str(out)]) == 0
    reports = json.loads(out.read_text())
    assert [r["layer"] for r in reports] == [0, 1]
    assert pointing_main(["--model", str(tmp_path / "m"), "--scenes", "4", "--layer", "7"]) == 2
