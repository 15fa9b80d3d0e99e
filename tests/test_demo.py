"""`make demo` end to end on a shortened budget: trains, indexes, searches, evaluates, writes the page."""

from __future__ import annotations

import json

import pytest

from mtgfe.training.demo import build_parser, run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    args = build_parser().parse_args(
        ["--output", str(tmp_path), "--gallery-size", "24", "--k", "4", "--top-k", "3",
         "--set", "max_steps=6", "data.synthetic.train_scenes=64", "data.synthetic.val_scenes=16", "num_threads=1"]
    )
    out = run_demo(args)
    page = (tmp_path / "results.html").read_text()
    assert "two white planes parked near the terminal" in page and "<img src='data:image/jpeg;base64," in page
    filtered = json.loads((tmp_path / "eval_filtered.json").read_text())
    exhaustive = json.loads((tmp_path / "eval_exhaustive.json").read_text())
    assert filtered["num_images"] == exhaustive["num_images"] == 24
    assert filtered["fusion_passes"] < exhaustive["fusion_passes"]
    assert len(out["results"]) == 4 and all(len(r["hits"]) == 3 for r in out["results"])


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
