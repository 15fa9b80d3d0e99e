"""Frozen-backbone token cache (`data.backbone_cache`): same losses as pixels, validation, smoke + resume."""

from __future__ import annotations


import pytest
import torch

from mtgfe.training.config import ConfigError, load_config
from mtgfe.training.cli import main

from tests.helpers.training import BASE, CACHE, compare_runs, one_thread, records  # noqa: F401  (autouse: one intra-op thread)




def test_cache_needs_a_frozen_vision_backbone():
    with pytest.raises(ConfigError, match=r"data\.backbone_cache\.enabled.*freeze\.vision"):
        load_config("synthetic_tiny", ["data.backbone_cache.enabled=true"])
    with pytest.raises(ConfigError, match=r"freeze\.unfreeze_after_steps"):
        load_config("synthetic_tiny", [*CACHE, "freeze.unfreeze_after_steps=5"])
    with pytest.raises(ConfigError, match=r"data\.backbone_cache\.dtype"):
        load_config("synthetic_tiny", [*CACHE, "data.backbone_cache.dtype=int8"])
    with pytest.raises(ConfigError, match=r"views\.base"):  # the tiny config sets views.base: cached views ignore it
        load_config("synthetic_tiny", CACHE)
    cfg = load_config("synthetic_tiny", [*CACHE, "views.base={}"])
    assert cfg.data.backbone_cache.enabled and cfg.data.backbone_cache.num_views == 2


def test_cached_loss_equals_pixel_loss_for_the_same_views(tmp_path):
    """Plumbing check: the cached collator + cached tokens give the loss (every term) of the pixel path
    fed the very same views (the model-level equality of tokens vs pixels is tested in test_modeling)."""
    from transformers import AutoTokenizer

    from mtgfe.processing import build_wordpiece_tokenizer, load_image
    from mtgfe.data import views
    from mtgfe.training.collate import (BackboneCache, CachedTrainCollator, EpochCaptionDataset, image_sources,
                                        render_cache_slot)
    from mtgfe.data.synthetic import load_synthetic
    from mtgfe.training.train import build_model, build_processor

    rows = load_synthetic("train", num_scenes=8, image_size=48)
    build_wordpiece_tokenizer(rows["caption"], vocab_size=500, model_max_length=40).save_pretrained(str(tmp_path))
    cfg = load_config("synthetic_tiny", [*CACHE, "views.base={}", f"data.tokenizer={tmp_path}"])
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    processor = build_processor(cfg, tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()  # eval: dropout off so both paths see the same function

    sources, ids = image_sources(rows)
    transform = views.MultiViewTransform(config=views.ViewConfig(image_size=cfg.data.image_size), num_views=1)
    cache = BackboneCache.build(model, processor, sources, ids, transform, num_views=2, cache_seed=3,
                                dtype=torch.float32, progress=False)
    assert cache.tokens.shape[:2] == (8, 3)
    path = tmp_path / "cache.safetensors"
    cache.save(path)
    assert torch.equal(BackboneCache.load(path).tokens, cache.tokens)

    data = EpochCaptionDataset(rows, captions_per_image=1, seed=5, load_images=False)
    data.set_epoch(1)
    items = [data[i] for i in range(len(data))]
    assert "image" not in items[0]
    collator = CachedTrainCollator(processor, seed=5, cache=cache, augment=True, mvjrc=True)
    batch = collator(items)
    picks = collator.slots(items)
    assert all(a != b for a, b in picks) and len({a for a, _ in picks}) > 1  # distinct views, varied slots
    assert collator.slots(items) == picks  # a function of (seed, epoch, index)

    decoded = {i: load_image(s) for i, s in zip(ids, sources)}
    view1 = [render_cache_slot(decoded[r["image_id"]], a, r["image_id"], transform, 3) for r, (a, _) in zip(items, picks)]
    view2 = [render_cache_slot(decoded[r["image_id"]], b, r["image_id"], transform, 3) for r, (_, b) in zip(items, picks)]
    pixel_batch = {k: v for k, v in batch.items() if not k.startswith("vision_hidden_states")}
    pixel_batch["pixel_values"] = processor.image_processor(images=view1, return_tensors="pt")["pixel_values"]
    pixel_batch["pixel_values_view2"] = processor.image_processor(images=view2, return_tensors="pt")["pixel_values"]
    pixel_batch.pop("sample_index"), batch.pop("sample_index")

    outputs = []
    for inputs in (batch, pixel_batch):
        torch.manual_seed(11)  # same ITM negatives and MLM masks
        with torch.no_grad():
            outputs.append(model(**inputs))
    for name in ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_mvjrc"):
        a, b = getattr(outputs[0], name), getattr(outputs[1], name)
        assert a is not None and torch.allclose(a, b, atol=1e-5), (name, a, b)


def test_cached_training_smoke_reuses_the_cache_and_resumes_exactly(tmp_path):
    cache_dir = tmp_path / "cache"
    common = [*CACHE, "views.base={}", f"data.backbone_cache.dir={cache_dir}", "max_steps=4", "log.sample_ids=true",
              "eval.at_end=false", "checkpoint.keep_last=null", "checkpoint.save_every=2"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(BASE + [f"output_dir={full}", *common]) == 0
    files = list(cache_dir.glob("backbone-*.safetensors"))
    assert len(files) == 1 and not list(cache_dir.glob(".*.tmp"))
    stamp = files[0].stat().st_mtime_ns
    log = records(full)
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all("loss_mvjrc" in r for r in log)
    # the tokenizer is trained per run (not reproducible): resume reads the checkpoint's copy
    assert main(BASE + [f"output_dir={resumed}", *common, f"checkpoint.resume_from={full / 'checkpoint-2'}"]) == 0
    assert files[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    compare_runs(full, resumed, from_step=2)


def test_swap_quads_train_on_cached_tokens_and_resume_exactly(tmp_path):
    """`model.perturbation_source=pairs` through the real trainer: partner rows enter cached batches, and a
    resumed run draws the very same quads (they are a function of seed, epoch and index)."""
    from mtgfe.training.perturbation import PARTNER_INDEX_OFFSET, PartnerIndex
    from mtgfe.data.synthetic import load_synthetic

    rows = load_synthetic("train", num_scenes=48, image_size=48)
    assert PartnerIndex(rows["image_id"], rows["caption"]).images_with_partners() > 0  # the data has quads
    common = [*CACHE, "views.base={}", f"data.backbone_cache.dir={tmp_path / 'cache'}", "max_steps=4",
              "log.sample_ids=true", "eval.at_end=false", "checkpoint.keep_last=null", "checkpoint.save_every=2",
              "model.itm_perturbation_negatives=1.0", "model.perturbation_source=pairs"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(BASE + [f"output_dir={full}", *common]) == 0
    log = records(full)
    assert all(0 < r["loss_itm"] < 5 for r in log)
    ids = [i for r in log for i in r["sample_ids"]]
    ids = [i for x in ids for i in (x if isinstance(x, list) else [x])]  # one list per process
    assert any(i >= PARTNER_INDEX_OFFSET for i in ids)  # partner rows were trained on
    assert main(BASE + [f"output_dir={resumed}", *common, f"checkpoint.resume_from={full / 'checkpoint-2'}"]) == 0
    compare_runs(full, resumed, from_step=2)
