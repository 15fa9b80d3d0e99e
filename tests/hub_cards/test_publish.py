"""mtgfe-publish: the assembled Hub folder is self-contained, allow-listed, carded, and the upload is wired."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from tests.helpers.isolated import run_isolated

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
from mtgfe.hub_cards.cli import main
from mtgfe.hub_cards.publish import ALLOWED_PATTERNS, assemble_hub_folder

EVAL = {
    "dataset": "ucm",
    "split": "test",
    "tie_rule": "expected",
    "k": 16,
    "score": "itm+itc",
    "metrics": {"i2t_R@1": 13.51, "i2t_R@5": 49.1, "i2t_R@10": 74.7, "t2i_R@1": 13.6, "t2i_R@5": 54.8, "t2i_R@10": 87.2, "mR": 48.82},
}
EXPECTED_FILES = {
    "README.md", "config.json", "model.safetensors",
    "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "configuration_mtgfe.py", "configuration_efficientnet_lite.py", "modeling_mtgfe.py", "modeling_efficientnet_lite.py",
    "losses.py", "retrieval.py", "retrieval_features.py", "grounding.py", "pipeline_mtgfe.py", "image_processing_mtgfe.py", "image_decoding.py", "processing_mtgfe.py",
}  # fmt: skip


@pytest.fixture(scope="module")
def training_dir(tmp_path_factory) -> Path:
    """A training output folder: checkpoint + processor, plus the junk a trainer leaves behind."""
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, build_wordpiece_tokenizer

    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    MTGFEForPreTraining(MTGFEConfig.from_preset("tiny")).save_pretrained(folder)
    tokenizer = build_wordpiece_tokenizer(["two white planes near a terminal", "a river with a bridge"] * 5, vocab_size=200)
    MTGFEProcessor(MTGFEImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    torch.save({"state": {}}, folder / "optimizer.bin")
    torch.save({"step": 3}, folder / "scheduler.pt")
    (folder / "random_states_0.pkl").write_bytes(b"\x80\x04N.")
    (folder / "train_captions.jsonl").write_text('{"caption": "a plane"}\n')
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"stale")
    return folder


@pytest.fixture(scope="module")
def hub_dir(training_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "mtgfe-tiny"
    files = assemble_hub_folder(training_dir, out, eval_results=EVAL, repo_id="org/mtgfe-tiny")
    assert sorted(files) == sorted(out / name for name in EXPECTED_FILES)
    return out


def test_folder_holds_exactly_the_allow_list(hub_dir):
    from huggingface_hub.utils import filter_repo_objects

    names = sorted(p.relative_to(hub_dir).as_posix() for p in hub_dir.rglob("*") if p.is_file())
    assert set(names) == EXPECTED_FILES  # optimizer.bin, scheduler.pt, *.pkl, data and checkpoint-10/ left out
    assert sorted(filter_repo_objects(names, allow_patterns=ALLOWED_PATTERNS)) == names
    for junk in ("optimizer.bin", "scheduler.pt", "random_states_0.pkl", "train_captions.jsonl", "checkpoint-10/model.safetensors"):
        assert list(filter_repo_objects([junk], allow_patterns=ALLOWED_PATTERNS)) == [], junk
    config = json.loads((hub_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_mtgfe.MTGFEModel"
    assert config["custom_pipelines"]["rs-retrieval"]["impl"] == "pipeline_mtgfe.MTGFERetrievalPipeline"


def test_weights_are_the_checkpoints(training_dir, hub_dir):
    from safetensors.torch import load_file

    original, published = load_file(training_dir / "model.safetensors"), load_file(hub_dir / "model.safetensors")
    assert original.keys() == published.keys()
    for key in original:
        assert torch.equal(original[key], published[key]), key


def test_card_shows_the_eval_numbers(hub_dir):
    card = ModelCard.load(hub_dir / "README.md")
    assert "13.51" in card.text and "48.82" in card.text and "org/mtgfe-tiny" in card.text
    values = {(r.metric_name, r.metric_value) for r in card.data.eval_results}
    assert ("mR (ties: expected)", 48.82) in values and ("i2t R@1 (ties: expected)", 13.51) in values


def test_folder_loads_and_searches_without_the_package(hub_dir, tmp_path):
    result = run_isolated(
        f"""
        from PIL import Image
        from transformers import AutoModel, AutoProcessor, pipeline
        folder = {str(hub_dir)!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(processor).__name__ == "MTGFEProcessor"
        pipe = pipeline("rs-retrieval", model=folder, trust_remote_code=True)
        assert type(pipe).__name__ == "MTGFERetrievalPipeline", type(pipe)
        gallery = [Image.new("RGB", (40, 40), c) for c in [(10, 120, 30), (200, 200, 210), (30, 60, 200)]]
        hits = pipe("two white planes", gallery=gallery, top_k=2, k=3)
        assert len(hits) == 2 and {{"score", "rank", "index"}} <= set(hits[0]), hits
        print("PUBLISHED FOLDER OK")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PUBLISHED FOLDER OK" in result.stdout


def test_incomplete_model_dir_is_refused(training_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((training_dir / "config.json").read_text())
    torch.save({}, partial / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError) as info:
        assemble_hub_folder(partial, tmp_path / "out")
    message = str(info.value)
    assert "model.safetensors" in message and "pytorch_model.bin" in message and "tokenizer.json" in message
    with pytest.raises(FileExistsError, match="not an empty folder"):
        assemble_hub_folder(training_dir, training_dir.parent)


def test_upload_sends_the_allow_listed_folder(training_dir, tmp_path, monkeypatch, capsys):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"] = (repo_id, kwargs)

    def upload_folder(self, **kwargs):
        calls["upload_folder"] = kwargs
        calls["uploaded_files"] = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        return "https://huggingface.co/org/mtgfe-tiny/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(EVAL))
    argv = [str(training_dir), "--repo-id", "org/mtgfe-tiny", "--eval", str(eval_path), "--private",
            "--revision", "v1", "--commit-message", "MTGFE tiny, UCM"]  # fmt: skip
    assert main(argv) == 0
    assert calls["create_repo"] == ("org/mtgfe-tiny", {"private": True, "exist_ok": True})
    assert calls["create_branch"] == ("org/mtgfe-tiny", {"branch": "v1", "exist_ok": True})
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "org/mtgfe-tiny" and upload["commit_message"] == "MTGFE tiny, UCM"
    assert upload["allow_patterns"] == ALLOWED_PATTERNS and upload["revision"] == "v1"
    assert set(calls["uploaded_files"]) == EXPECTED_FILES
    assert f"uploaded {len(EXPECTED_FILES)} files to org/mtgfe-tiny" in capsys.readouterr().out


def test_offline_upload_fails_with_a_clear_message(training_dir, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main([str(training_dir), "--repo-id", "org/mtgfe-tiny"]) == 1
    err = capsys.readouterr().err
    assert "offline mode is enabled" in err and "--dry-run" in err


def test_dry_run_cli_and_bad_repo_id(training_dir, tmp_path, capsys):
    assert main([str(training_dir), "--repo-id", "org/mtgfe-tiny", "--dry-run", str(tmp_path / "dry")]) == 0
    assert "nothing uploaded" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "dry").iterdir()} == EXPECTED_FILES
    assert main([str(training_dir), "--repo-id", "no-slash", "--dry-run", str(tmp_path / "dry2")]) == 1
    assert "ORG/NAME" in capsys.readouterr().err
