"""Model and dataset cards: rendering, offline round trip of the model-index, input validation."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import DatasetCard, ModelCard

from mtgfe.hub_cards import render_dataset_card, render_model_card
from mtgfe.hub_cards.cards import MTGFE_CITATION, load_eval_results

UCM_EVAL = {
    "dataset": "ucm",
    "split": "test",
    "metrics": {
        "i2t_R@1": 13.5123,
        "i2t_R@5": 49.1,
        "i2t_R@10": 74.7,
        "t2i_R@1": 13.6,
        "t2i_R@5": 54.8,
        "t2i_R@10": 87.2,
        "mR": 48.8187,
        "tie_rule": "expected",  # as retrieval_metrics returns it
        "ties": {"i2t_tied_frac": 0.8},  # non-metric entries are ignored
    },
    "k": 32,
    "score": "itm+itc",
    "metrics_std": {"mR": 0.1},
    "seeds": [0, 1, 2],
    "metrics_by_tie_rule": {"pessimistic": {"mR": 42.9}, "optimistic": {"mR": 57.9}},
    "num_images": 210,
    "num_texts": 1050,
    "checkpoint": "out/last",  # unknown keys are tolerated
}
RSICD_EVAL = {
    "dataset": "RSICD",
    "split": "test",
    "split_convention": "amfmn-precomp",
    "tie_rule": "argsort",
    "k": None,
    "metrics": {"i2t_R@1": 15.28, "i2t_R@5": 37.05, "i2t_R@10": 51.6, "t2i_R@1": 8.67, "t2i_R@5": 27.56,
                "t2i_R@10": 43.92, "mR": 30.68},
}  # fmt: skip


@pytest.fixture()
def model_dir(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    cfg = {
        "model_type": "mtgfe",
        "fusion_layer": 6,
        "embed_dim": 256,
        "k_test": 128,
        "vision_config": {"model_type": "vit", "image_size": 256},
        "text_config": {"hidden_size": 768, "num_hidden_layers": 12},
    }
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _render(model_dir, tmp_path, **kw):
    eval_path = tmp_path / "eval_rsicd.json"
    eval_path.write_text(json.dumps(RSICD_EVAL))
    kw.setdefault("eval_results", [UCM_EVAL, eval_path])
    return render_model_card(
        model_dir,
        repo_id="someone/mtgfe-ucm",
        base_models=["someone/albef-4m"],
        train_config={"data": "ucm", "image_size": 256, "lr": 1e-5, "epochs": 30},
        reproduce_commands=["mtgfe-train --config configs/ucm.yaml", "mtgfe-eval --checkpoint out/last"],
        **kw,
    )


def test_model_card_round_trip_offline(model_dir, tmp_path):
    card = _render(model_dir, tmp_path)
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.to_dict() == card.data.to_dict()
    assert loaded.data.eval_results == card.data.eval_results
    data = loaded.data
    assert data.model_name == "mtgfe-ucm"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "feature-extraction"
    assert data.license == "apache-2.0"
    assert data.base_model == ["someone/albef-4m"]
    assert {"remote-sensing", "image-text-retrieval", "mtgfe"} <= set(data.tags)

    by_key = {(r.dataset_name, r.task_type, r.metric_type): r for r in data.eval_results}
    # 2 datasets x (3 i2t + i2t mean + 3 t2i + t2i mean + mR)
    assert len(data.eval_results) == 18 == len(by_key)
    r = by_key[("UCM-Captions", "image-to-text-retrieval", "recall@1")]
    assert r.metric_value == 13.51  # two decimals, the field's convention
    assert r.dataset_split == "test" and r.dataset_type == "ucm_captions"
    assert r.metric_args == {"tie_rule": "expected", "k": 32, "score": "itm+itc"}
    assert "ties: expected" in r.metric_name and "tie_rule=expected" in r.metric_config
    assert by_key[("UCM-Captions", "image-text-retrieval", "mean_recall")].metric_value == 48.82
    assert by_key[("UCM-Captions", "text-to-image-retrieval", "mean_recall")].metric_value == round(
        (13.6 + 54.8 + 87.2) / 3, 2
    )
    rs = by_key[("RSICD", "text-to-image-retrieval", "recall@10")]
    assert rs.metric_value == 43.92 and rs.dataset_config == "amfmn-precomp"
    assert rs.metric_args == {"tie_rule": "argsort", "k": "full", "score": "unspecified"}


def test_model_card_body(model_dir, tmp_path):
    text = _render(model_dir, tmp_path).text
    # results table with the tie rule and filter k on every row, bounds and seeds
    assert "| UCM-Captions | test | expected | 32 | itm+itc | 13.51 |" in text
    assert "48.82 ± 0.10" in text
    assert "| UCM-Captions | test | pessimistic | 32 |" in text
    assert "| RSICD | test (amfmn-precomp) | argsort | full |" in text
    # architecture from config.json, training data and resolution in the limitations
    assert "layers 6..11 fuse image and text" in text
    assert "resized to 256x256 px" in text
    assert "USGS National Map" in text
    assert "**Evaluated (not trained) on:** **RSICD**" in text
    # reproduce commands, train config, citations (MTGFE + the datasets used)
    assert "mtgfe-eval --checkpoint out/last" in text
    assert "epochs: 30" in text
    assert MTGFE_CITATION in text
    assert "10.3390/rs15184637" in text
    assert "Deep Semantic Understanding" in text  # UCM (Qu et al. 2016)
    assert "Exploring Models and Data for Remote Sensing Image Caption Generation" in text  # RSICD
    assert "Fine-Grained Multiscale" not in text  # RSITMD is not used here
    assert 'AutoModel.from_pretrained("someone/mtgfe-ucm", trust_remote_code=True)' in text
    assert "{{" not in text and "{%" not in text


def test_model_card_without_results_or_config(tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    card = render_model_card(d, None, pipeline_tag=None)
    assert card.data.eval_results is None
    assert card.data.pipeline_tag is None
    assert card.data.model_name == "bare"
    assert "No evaluation results" in card.text
    assert "not recorded" in card.text
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.to_dict() == card.data.to_dict()


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        ({"split": "test", "metrics": {"mR": 1.0}, "tie_rule": "expected"}, ValueError, r"lacks required key 'dataset'"),
        ({"dataset": "ucm", "split": "test", "metrics": {"mR": 1.0}}, ValueError, r"lacks 'tie_rule'"),
        ({"dataset": "ucm", "split": "test", "tie_rule": "expected", "metrics": {"x": 1}}, ValueError, r"no 'i2t_R@K'"),
        ({"dataset": "ucm", "split": "test", "tie_rule": "expected", "metrics": {"mR": 0.5e3}}, ValueError, r"metrics\['mR'\] = 500.0 is outside \[0, 100\]"),
        ({"dataset": "ucm", "split": "test", "tie_rule": "expected", "metrics": {"i2t_R@1": "12"}}, ValueError, r"metrics\['i2t_R@1'\] must be a finite number"),
        ({"dataset": "ucm", "split": "test", "tie_rule": "expected", "metrics": {"mR": 1.0}, "k": 0}, ValueError, r"'k' must be a positive integer"),
        ([1, 2], ValueError, r"eval_results\[0\] must be a JSON object"),
    ],
)
def test_bad_eval_results(bad, exc, match):
    with pytest.raises(exc, match=match):
        load_eval_results(bad)


def test_eval_results_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        load_eval_results(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_eval_results(str(broken))
    with pytest.raises(FileNotFoundError, match=r"model_dir .* is not a directory"):
        render_model_card(tmp_path / "missing", None)


def test_dataset_card_round_trip(tmp_path):
    card = render_dataset_card(
        "ucm_captions",
        {"train": 1680, "val": 210, "test": 210},
        source_citation=None,
        data_files={"train": "data/train.parquet", "val": "data/val.parquet", "test": "data/test.parquet"},
        features={"image": "image", "captions": "list of string"},
        num_captions={"test": 1050},
    )
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert loaded.data.to_dict() == card.data.to_dict()
    d = loaded.data.to_dict()
    assert d["pretty_name"] == "UCM-Captions"
    assert d["license"] == "other"
    assert d["size_categories"] == ["1K<n<10K"]
    assert d["configs"][0]["data_files"][2] == {"split": "test", "path": "data/test.parquet"}
    assert "| test | 210 | 1,050 |" in loaded.text
    assert "Deep Semantic Understanding" in loaded.text and "Yang, Y. and Newsam, S." in loaded.text
    with pytest.raises(ValueError, match=r"source_citation is required for 'my-set'"):
        render_dataset_card("my-set", {"test": 3})
    with pytest.raises(ValueError, match=r"splits\['test'\] must be a non-negative int"):
        render_dataset_card("ucm", {"test": -1})
    with pytest.raises(ValueError, match=r"data_files lacks split\(s\) \['val'\]"):
        render_dataset_card("ucm", {"test": 1, "val": 1}, data_files={"test": "data/test.parquet"})
