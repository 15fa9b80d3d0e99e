"""End-to-end training on the synthetic data with the tiny preset: smoke run, exact resume, freezing, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtgfe.training.cli import main
from tests.helpers.training import BASE, compare_runs, one_thread, records  # noqa: F401  (autouse: one intra-op thread)


def run(tmp: Path, *overrides: str) -> int:
    return main(BASE + [f"output_dir={tmp}", *overrides])



@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A fixed WordPiece tokenizer for runs that are compared with each other: training one is not
    reproducible across calls (token ids, even the token set, vary), so each run would get its own."""
    from mtgfe.processing import build_wordpiece_tokenizer
    from mtgfe.data.synthetic import load_synthetic

    folder = tmp_path_factory.mktemp("tokenizer")
    captions = load_synthetic("train", num_scenes=48, image_size=16)["caption"]
    build_wordpiece_tokenizer(captions, vocab_size=1000, model_max_length=40).save_pretrained(str(folder))
    return folder


def test_collate_is_a_function_of_seed_epoch_and_index(tokenizer_dir):
    """Caption draw and augmentation depend only on (seed, epoch, index/image): resume- and worker-proof."""
    import numpy as np
    from transformers import AutoTokenizer

    from mtgfe.training.collate import EpochCaptionDataset, TrainCollator
    from mtgfe.training.config import build_view_transforms, load_config
    from mtgfe.data.synthetic import load_synthetic
    from mtgfe.training.train import build_processor

    rows = load_synthetic("train", num_scenes=12, image_size=48)
    data = EpochCaptionDataset(rows, captions_per_image=1, seed=7)
    assert len(data) == data.num_images == 12 and data.max_captions_per_image == 1
    epoch0 = [data[i]["caption"] for i in range(len(data))]
    assert sorted(data[i]["image_id"] for i in range(len(data))) == list(range(12))  # each image once
    data.set_epoch(1)
    epoch1 = [data[i]["caption"] for i in range(len(data))]
    assert epoch0 != epoch1  # a new caption draw per epoch
    data.set_epoch(0)
    assert [data[i]["caption"] for i in range(len(data))] == epoch0
    assert len(EpochCaptionDataset(rows, captions_per_image=None, seed=7)) == 60

    cfg = load_config("synthetic_tiny", [f"data.tokenizer={tokenizer_dir}"])
    processor = build_processor(cfg, AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    collate = TrainCollator(processor, 7, *build_view_transforms(cfg), max_length=40)
    items = [data[i] for i in (3, 1, 4)]
    a, b = collate(items), collate(items)  # global RNG state in between is irrelevant
    np.random.seed(123), torch.manual_seed(123)
    c = collate(list(reversed(items)))
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["pixel_values_view2"], b["pixel_values_view2"])
    assert torch.equal(a["pixel_values"], c["pixel_values"].flip(0))  # per sample, not per batch position
    assert not torch.equal(a["pixel_values"], a["pixel_values_view2"])
    assert a["pixel_values"].shape == (3, 3, 32, 32) and a["input_ids"].shape == (3, 40)
    assert a["image_ids"].tolist() == [items[i]["image_id"] for i in range(3)]
    assert a["text_ids"].tolist() == [items[i]["caption_id"] for i in range(3)]
    data.set_epoch(1)
    d = collate([data[i] for i in (3, 1, 4)])
    assert not torch.equal(a["pixel_values"], d["pixel_values"])  # another epoch, other views


def test_smoke_run_writes_log_checkpoint_and_loadable_final(tmp_path):
    from modeling_mtgfe import MTGFEForPreTraining
    from mtgfe.processing import MTGFEProcessor

    out = tmp_path / "run"
    assert run(out, "max_steps=5", "eval.every=2") == 0
    train_log = records(out)
    assert [r["step"] for r in train_log] == [1, 2, 3, 4, 5]
    for key in ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_mvjrc", "lr", "samples_per_s", "elapsed_s", "epoch"):
        assert all(key in r for r in train_log), key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train_log)
    evals = records(out, "eval")
    assert [r["step"] for r in evals] == [2, 4, 5] and "mR" in evals[-1]["metrics"]
    assert (out / "eval" / "step-4.json").is_file()
    assert (out / "checkpoint-5" / "trainer_state.json").is_file()
    best = json.loads((out / "checkpoint-5" / "trainer_state.json").read_text())["best"]
    assert best["metric"] == "mR" and (out / "best" / "eval_results.json").is_file()
    assert not list(out.glob(".tmp-*"))  # every folder was published atomically

    final = out / "final"
    model = MTGFEForPreTraining.from_pretrained(final)
    processor = MTGFEProcessor.from_pretrained(final)
    assert processor.image_processor.size["height"] == 32
    assert model.config.cls_token_id == processor.tokenizer.cls_token_id  # wordpiece ids went into the config
    inputs = processor(images=[torch.zeros(32, 32, 3).numpy().astype("uint8")] * 2, text=["a red car", "two planes"])
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"])
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    assert image.shape == text.shape == (2, model.config.embed_dim)


@pytest.mark.parametrize("accum", [1, 2])
def test_exact_resume_from_a_mid_epoch_checkpoint(tmp_path, accum):
    """N steps straight vs. resume from the checkpoint at N/2 (mid-epoch): same batches, losses, weights."""
    common = ["max_steps=6", "log.sample_ids=true", "eval.at_end=false", "checkpoint.keep_last=null",
              f"grad_accum={accum}", f"batch_size={16 // accum}"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert run(full, *common, "checkpoint.save_every=4") == 0  # step 4 is 1 batch into epoch 2 (3 steps/epoch)
    state = json.loads((full / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and 0 < state["batch_in_epoch"] < 3 * accum
    assert run(resumed, *common, f"checkpoint.resume_from={full / 'checkpoint-4'}") == 0
    compare_runs(full, resumed, from_step=4)


def test_interrupted_run_resumes_from_latest(tmp_path, tokenizer_dir, monkeypatch):
    """Stop a run right after its step-3 checkpoint, then `resume_from=latest` in the same folder."""
    import mtgfe.training.checkpointing as train_module  # train() calls checkpointing.save_checkpoint

    common = ["max_steps=6", "log.sample_ids=true", "eval.at_end=false", "checkpoint.keep_last=null",
              "checkpoint.save_every=3", f"data.tokenizer={tokenizer_dir}"]
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    assert run(full, *common) == 0

    real_save = train_module.save_checkpoint

    class Interrupt(Exception):
        pass

    def save_then_stop(accelerator, output_dir, state, keep_last, processor):
        path = real_save(accelerator, output_dir, state, keep_last, processor)
        if state["step"] == 3:
            raise Interrupt
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupt):
        run(interrupted, *common)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    assert [r["step"] for r in records(interrupted)] == [1, 2, 3]
    assert not (interrupted / "final").exists()
    assert run(interrupted, *common, "checkpoint.resume_from=latest") == 0
    assert [r["step"] for r in records(interrupted)] == [1, 2, 3, 4, 5, 6]
    compare_runs(full, interrupted, from_step=3)


def test_freeze_and_unfreeze(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    assert run(out, "max_steps=3", "freeze.vision=true", "eval.at_end=false", "checkpoint.save_every=2",
               "checkpoint.keep_last=null") == 0
    # compare checkpoints (save_state keys; save_pretrained writes ViT weights under their legacy names)
    first, last = load_file(out / "checkpoint-2" / "model.safetensors"), load_file(out / "checkpoint-3" / "model.safetensors")
    vision = [k for k in last if k.startswith("mtgfe.vision_model.")]
    assert vision and all(torch.equal(first[k], last[k]) for k in vision)
    assert not torch.equal(first["mtgfe.itm_head.weight"], last["mtgfe.itm_head.weight"])

    out = tmp_path / "unfrozen"
    assert run(out, "max_steps=4", "freeze.vision=true", "freeze.unfreeze_after_steps=2", "eval.at_end=false",
               "checkpoint.save_every=2", "checkpoint.keep_last=null") == 0
    at2, final = load_file(out / "checkpoint-2" / "model.safetensors"), load_file(out / "checkpoint-4" / "model.safetensors")
    assert any(not torch.equal(at2[k], final[k]) for k in vision)


def test_config_error_returns_2(tmp_path, capsys):
    assert run(tmp_path, "optim.lr=-1") == 2
    assert "optim.lr=-1 must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_two_stage_recipe_trains_its_missing_stage_one_first(tmp_path):
    """model.pretrained_recipe: stage 1 runs into <pretrained>/.. with the shared data/seed overrides."""
    from mtgfe.training.config import ConfigError, load_config
    from mtgfe.training.cli import prerequisite_config

    stage1 = tmp_path / "stage1"
    stage2 = ["model.preset=null", f"model.pretrained={stage1 / 'final'}", "model.pretrained_recipe=synthetic_tiny",
              "data.tokenizer=default", "max_steps=2", "eval.every=0", "model.mlm_weight=0"]
    cfg = load_config("synthetic_tiny", BASE[3:] + stage2)
    first = prerequisite_config(cfg, BASE[3:] + ["seed=3"] + stage2)
    assert Path(first.output_dir) == stage1 and first.seed == 3 and first.data.synthetic.train_scenes == 48
    assert first.model.preset == "tiny" and first.data.tokenizer == "wordpiece" and first.max_steps is None
    assert run(tmp_path / "stage2", *stage2) == 0
    assert (stage1 / "final" / "model.safetensors").is_file() and (tmp_path / "stage2" / "final").is_dir()
    assert prerequisite_config(cfg, stage2) is None  # stage 1 exists now: nothing to do first
    with pytest.raises(ConfigError, match=r"model\.pretrained_recipe='synthetic_tiny' needs model\.pretrained=<its output_dir>/final"):
        load_config("synthetic_tiny", ["model.preset=null", f"model.pretrained={stage1}", "model.pretrained_recipe=synthetic_tiny"])
    with pytest.raises(ConfigError, match=r"model\.pretrained_recipe='no_such_recipe': config file no_such_recipe does not exist"):
        load_config("synthetic_tiny", ["model.preset=null", f"model.pretrained={stage1 / 'final'}", "model.pretrained_recipe=no_such_recipe"])


def test_eval_alpha_of_an_itm_itc_recipe_becomes_the_models_search_alpha(tmp_path):
    """eval.score=itm+itc: the saved model carries eval.alpha as config.retrieval_alpha, which the
    pipeline / GalleryIndex / mtgfe-search use when the caller gives no alpha."""
    from modeling_mtgfe import MTGFEModel
    from modeling_mtgfe.configuration_mtgfe import resolve_retrieval_settings

    out = tmp_path / "run"
    assert run(out, "max_steps=1", "eval.every=0", "eval.score=itm+itc", "eval.alpha=3.5") == 0
    model = MTGFEModel.from_pretrained(out / "final")
    assert model.config.retrieval_alpha == 3.5
    assert resolve_retrieval_settings(model.config, score="itm+itc") == (model.config.retrieval_k, "itm+itc", 3.5)
    assert resolve_retrieval_settings(model.config, score="itm+itc", alpha=0.0)[2] == 0.0


def test_the_default_recipe_is_the_shipped_two_stage_ucm_recipe(capsys):
    assert main(["--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "pretrained_recipe: ucm_dual_finetune" in printed and "score: itm+itc" in printed


# ------------------------------------------------------------------------------------------ bad training files
def _jsonl_run(tmp_path: Path, last_image: str) -> list[str]:
    """Overrides for a JSONL run over 8 good PNGs plus one row whose image is `last_image`."""
    import numpy as np
    from PIL import Image

    rows = []
    for i in range(8):
        Image.fromarray(np.full((32, 32, 3), i * 30, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "captions": [f"a field of shade {i}"]})
    rows.append({"image": last_image, "captions": ["the bad row"]})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return ["data.dataset=jsonl", f"data.train_file={tmp_path / 'train.jsonl'}", "data.tokenizer=wordpiece",
            "batch_size=4", "max_steps=2", "eval.at_end=false", "eval.every=0"]


@pytest.mark.parametrize("bad, named", [
    ("/etc/hostname", "training image(s) cannot be used: 8: '/etc/hostname' (not a readable image"),
    ("missing.png", "data.train_file="),
    ("notes.png", "training image(s) cannot be used: 8: "),  # text with an image ending
])
def test_a_training_image_that_is_missing_or_not_an_image_is_named_before_training(tmp_path, capsys, bad, named):
    (tmp_path / "notes.png").write_text("not an image\n")
    out = tmp_path / "run"
    assert run(out, *_jsonl_run(tmp_path, bad)) == 2
    err = capsys.readouterr().err
    assert named in err and Path(bad).name in err and "Traceback" not in err, err
    assert not (out / "final").exists() and not (out / "metrics.jsonl").exists()
