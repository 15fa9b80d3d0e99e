"""`mtgfe-eval --compositional` on a tiny random model and real UCM test items."""

from __future__ import annotations

import json

import pytest
import torch

from mtgfe.evaluation.compositional.generation import COMPOSITIONAL_VERSION, items_hash, load_compositional
from mtgfe.evaluation.compositional.evaluation import SCORERS, bootstrap_ci, evaluate_compositional
from mtgfe.evaluation.cli import main


@pytest.fixture(scope="module")
def tiny():
    from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, load_default_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_default_tokenizer(model_max_length=32)
    processor = MTGFEProcessor(MTGFEImageProcessor(size={"height": 32, "width": 32}), tokenizer, max_length=32)
    torch.manual_seed(0)
    model = MTGFEForPreTraining(MTGFEConfig.from_preset("tiny", retrieval_alpha=2.0, retrieval_k=8)).eval()
    return model, processor


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [1, 0, 1, 1, 0, 1, 0, 1]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    low, high = bootstrap_ci(values)
    assert low <= sum(values) / len(values) <= high
    assert bootstrap_ci([]) is None and bootstrap_ci([1, 1, 1]) == [1.0, 1.0]


def test_report_on_ucm_test(tiny, data_dir, tmp_path):
    model, processor = tiny
    report = evaluate_compositional(model, processor, sources=["ucm_test"], data_dir=data_dir, n_boot=200)
    assert report["version"] == COMPOSITIONAL_VERSION and report["alpha"] == 2.0 and report["k"] == 8
    pairs = load_compositional("ucm_test", "pairs", data_dir, require_images=False)
    single = load_compositional("ucm_test", "single", data_dir, require_images=False)
    assert report["items_hash"]["ucm_test/pairs"] in pairs.info.description
    assert report["items_hash"]["ucm_test/single"] in single.info.description
    res = report["sources"]["ucm_test"]
    assert res["pairs"]["overall"]["filter"]["text"]["n"] == len(pairs)
    assert res["single"]["overall"]["itm"]["accuracy"]["n"] == len(single)
    assert set(res["single"]) == {"overall", *single["type"]}
    for scorer in SCORERS:
        cell = res["pairs"]["overall"][scorer]
        assert cell["group"]["mean"] <= min(cell["text"]["mean"], cell["image"]["mean"])  # group = text AND image
        low, high = cell["text"]["ci95"]
        assert low <= cell["text"]["mean"] <= high
    retrieval = res["retrieval"]["overall"]
    assert retrieval["n"] == len(pairs) + len(single)
    for query in ("true", "edited"):
        assert 1 <= retrieval[query]["mean_rank"]["mean"] <= res["gallery_images"] == 210
    json.dumps(report)  # JSON-able


def test_cli(tiny, data_dir, tmp_path, capsys):
    model, processor = tiny
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    out = tmp_path / "comp.json"
    assert main(["--model", str(folder), "--compositional", "--sources", "ucm_test", "--data-dir", str(data_dir),
                 "--n-boot", "100", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["items_hash"]["ucm_test/pairs"] and "ucm_test" in report["sources"] and "pooled" not in report["sources"]
    assert "single" in capsys.readouterr().out
    assert main(["--model", str(folder), "--compositional", "--dataset", "ucm"]) == 2  # a usage error, rc=2
    assert "--compositional" in capsys.readouterr().err
