"""MTGFE config and model: shapes, masks, losses, checkpointing, attention backends, save/load."""

from __future__ import annotations

import pytest
import torch

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining, MTGFEModel
from modeling_mtgfe.losses import (
    caption_overlap,
    itc_loss,
    mask_tokens,
    positive_mask,
    sample_negatives,
    simsiam_loss,
)


def make_batch(config, batch=6, seq=12, seed=0, images_per_batch=None):
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=g)
    input_ids = torch.randint(1000, 2000, (batch, seq), generator=g)
    input_ids[:, 0] = config.cls_token_id
    lengths = torch.randint(4, seq, (batch,), generator=g)
    attention_mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    input_ids[torch.arange(batch), lengths - 1] = config.sep_token_id
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id)
    image_ids = torch.arange(batch) if images_per_batch is None else torch.arange(batch) % images_per_batch
    return dict(
        pixel_values=pixel_values,
        input_ids=input_ids,
        attention_mask=attention_mask,
        image_ids=image_ids,
        pixel_values_view2=pixel_values.flip(-1) + 0.1 * torch.randn(pixel_values.shape, generator=g),
    )


# ------------------------------------------------------------------------------------------------ config
def test_presets_build_and_validate():
    for name in ("tiny", "small", "base"):
        config = MTGFEConfig.from_preset(name)
        assert config.num_fusion_layers >= 1
    assert MTGFEConfig.from_preset("small").text_config.hidden_size == 384
    assert MTGFEConfig.from_preset("tiny", text_config={"vocab_size": 500}).text_config.vocab_size == 500


def test_preset_with_a_convolutional_vision_backbone_trains_and_saves(tmp_path):
    """A `vision_config` of another model type replaces the preset's ViT dict (no stale ViT `hidden_size`
    misstating the width); ResNet's parameter-free average pool stays (its forward calls it) and its
    (B, C, H, W) map becomes H*W fusion tokens (the `make demo` backbone)."""
    resnet = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [16, 24], "depths": [1, 1],
              "layer_type": "basic", "downsample_in_first_stage": False, "image_size": 32}
    config = MTGFEConfig.from_preset("tiny", vision_config=resnet, mlm_weight=0.0, mvjrc_weight=0.0, image_pooling="mean")
    assert config.vision_config.model_type == "resnet" and not hasattr(config.vision_config, "patch_size")
    assert config.vision_hidden_size == 24
    model = MTGFEForPreTraining(config)
    out = model(**make_batch(config))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    base = model.mtgfe.eval()
    features = base.get_image_retrieval_features(torch.randn(2, 3, 32, 32))
    assert features.image_tokens.shape == (2, 16, config.text_config.hidden_size)  # 32 px / 4 (stem) / 2 = 4 x 4
    assert features.image_embeds.shape == (2, config.embed_dim)
    base.save_pretrained(tmp_path)
    reloaded = MTGFEModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_config.model_type == "resnet"
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(reloaded.get_image_features(pixels), base.get_image_features(pixels))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fusion_layer=4), "fusion_layer=4 is out of range"),
        (dict(fusion_layer=0), "fusion_layer=0 is out of range"),
        (dict(text_config={"num_attention_heads": 3}), "not divisible"),
        (dict(itm_weight=-1.0), "itm_weight"),
        (dict(temperature=0.0), "temperature"),
        (dict(mlm_probability=1.5), "mlm_probability"),
        (dict(mvjrc_variant="byol"), "mvjrc_variant"),
        (dict(image_pooling="max"), "image_pooling"),
        (dict(mask_token_id=10**6), "mask_token_id"),
        (dict(itm_near_duplicate_overlap=0.0), "itm_near_duplicate_overlap"),
        (dict(itm_near_duplicate_overlap=1.5), "itm_near_duplicate_overlap"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MTGFEConfig.from_preset("tiny", **kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown MTGFE preset 'huge'"):
        MTGFEConfig.from_preset("huge")


def test_config_round_trip(tmp_path):
    config = MTGFEConfig.from_preset("tiny", itm_random_negative_prob=0.25)
    config.save_pretrained(tmp_path)
    loaded = MTGFEConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.text_config).__name__ == "BertConfig"
    assert loaded.vision_config.model_type == "vit"


def test_auto_classes_resolve():
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("mtgfe")
    assert isinstance(config, MTGFEConfig)
    model = AutoModel.from_config(MTGFEConfig.from_preset("tiny"))
    assert isinstance(model, MTGFEModel)


# ------------------------------------------------------------------------------------------------ model
def test_feature_shapes_and_normalisation(tiny_config):
    model = MTGFEModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch=3)
    image = model.get_image_retrieval_features(batch["pixel_values"])
    text = model.get_text_retrieval_features(batch["input_ids"], batch["attention_mask"])
    tokens = (tiny_config.image_size // tiny_config.vision_config.patch_size) ** 2 + 1
    assert image.image_embeds.shape == (3, tiny_config.embed_dim)
    assert image.image_tokens.shape == (3, tokens, tiny_config.text_config.hidden_size)
    assert text.text_states.shape == (3, 12, tiny_config.text_config.hidden_size)
    torch.testing.assert_close(image.image_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text.text_embeds.norm(dim=-1), torch.ones(3))
    out = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.logits_per_image.shape == (3, 3) and out.itm_logits.shape == (3, 2)


def test_padding_does_not_change_text_features(tiny_config):
    model = MTGFEModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch=2, seq=10)
    short = model.get_text_features(batch["input_ids"], batch["attention_mask"])
    pad = torch.full((2, 6), tiny_config.pad_token_id)
    longer = model.get_text_features(
        torch.cat([batch["input_ids"], pad], 1), torch.cat([batch["attention_mask"], torch.zeros_like(pad)], 1)
    )
    torch.testing.assert_close(short, longer, atol=1e-5, rtol=1e-5)


def test_itm_scores_broadcast_and_index_agree(tiny_config):
    model = MTGFEModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch=4)
    with torch.no_grad():
        image = model.get_image_retrieval_features(batch["pixel_values"])
        text = model.get_text_retrieval_features(batch["input_ids"], batch["attention_mask"])
        # one image against all texts
        one_vs_many = model.compute_itm_scores(image.image_tokens[1:2], text.text_states, text.attention_mask)
        # explicit pairs (1, j)
        indexed = model.compute_itm_scores(
            image.image_tokens, text.text_states, text.attention_mask,
            image_index=torch.full((4,), 1), text_index=torch.arange(4),
        )
        # one text against all images
        many_vs_one = model.compute_itm_scores(image.image_tokens, text.text_states[2:3], text.attention_mask[2:3])
        single = torch.stack([
            model.compute_itm_scores(image.image_tokens[i : i + 1], text.text_states[2:3], text.attention_mask[2:3])[0]
            for i in range(4)
        ])
    torch.testing.assert_close(one_vs_many, indexed, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(many_vs_one, single, atol=1e-6, rtol=1e-5)
    assert ((one_vs_many >= 0) & (one_vs_many <= 1)).all()
    with pytest.raises(ValueError, match="Cannot pair 4 images with 3 texts"):
        model.compute_itm_scores(image.image_tokens, text.text_states[:3], text.attention_mask[:3])


def test_forward_losses_and_zero_weights_cost_nothing(tiny_config):
    torch.manual_seed(0)
    model = MTGFEForPreTraining(tiny_config)
    batch = make_batch(tiny_config)
    out = model(**batch)
    for name in ("itc", "itm", "mlm", "mvjrc"):
        assert torch.isfinite(getattr(out, f"loss_{name}"))
    expected = out.loss_itc + out.loss_itm + out.loss_mlm + out.loss_mvjrc
    torch.testing.assert_close(out.loss, expected)

    config = MTGFEConfig.from_preset("tiny", mlm_weight=0.0, mvjrc_weight=0.0)
    model = MTGFEForPreTraining(config)
    calls = {"mlm": 0, "mvjrc": 0}
    model.mlm_head.register_forward_hook(lambda *a: calls.__setitem__("mlm", calls["mlm"] + 1))
    model.mvjrc_head.projector.register_forward_hook(lambda *a: calls.__setitem__("mvjrc", calls["mvjrc"] + 1))
    batch.pop("pixel_values_view2")
    out = model(**batch)
    assert out.loss_mlm is None and out.loss_mvjrc is None
    assert calls == {"mlm": 0, "mvjrc": 0}


def test_mvjrc_requires_second_view(tiny_config):
    model = MTGFEForPreTraining(tiny_config)
    batch = make_batch(tiny_config)
    batch.pop("pixel_values_view2")
    with pytest.raises(ValueError, match="pixel_values_view2"):
        model(**batch)


@pytest.mark.parametrize(
    "weights",
    [
        dict(itc_weight=1.0, itm_weight=0.0, mlm_weight=0.0, mvjrc_weight=0.0),
        dict(itc_weight=1.0, itm_weight=1.0, mlm_weight=0.0, mvjrc_weight=0.0),
        dict(itc_weight=0.0, itm_weight=0.0, mlm_weight=1.0, mvjrc_weight=0.0),
        dict(itc_weight=0.0, itm_weight=0.0, mlm_weight=0.0, mvjrc_weight=1.0, mvjrc_variant="infonce"),
        dict(itc_weight=0.0, itm_weight=0.0, mlm_weight=0.0, mvjrc_weight=1.0),
    ],
    ids=["itc", "itm", "mlm", "mvjrc-infonce", "mvjrc-simsiam"],
)
def test_each_loss_decreases_on_a_fixed_batch(weights):
    torch.manual_seed(0)
    config = MTGFEConfig.from_preset("tiny", **weights)
    model = MTGFEForPreTraining(config)
    batch = make_batch(config, batch=8, images_per_batch=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    name = [k for k, v in weights.items() if k.endswith("_weight") and v > 0 and k != "itc_weight"]
    name = name[0].removesuffix("_weight") if name else "itc"
    losses = []
    for step in range(40):
        torch.manual_seed(step)  # same masks/negatives pattern per step across runs
        out = model(**batch)
        losses.append(getattr(out, f"loss_{name}").item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.03 * abs(first), (name, losses)


def test_gradient_checkpointing_matches(tiny_config):
    config = MTGFEConfig.from_preset("tiny", mlm_weight=0.0, mvjrc_weight=0.0)
    config.text_config.hidden_dropout_prob = 0.0
    config.text_config.attention_probs_dropout_prob = 0.0
    config.vision_config.hidden_dropout_prob = 0.0
    torch.manual_seed(0)
    model = MTGFEForPreTraining(config).train()
    batch = make_batch(config)
    batch.pop("pixel_values_view2")

    def grads():
        model.zero_grad()
        torch.manual_seed(1)
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    assert model.mtgfe.fusion_encoder[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-5, rtol=1e-4, msg=name)


def test_eager_and_sdpa_agree(tiny_config):
    model = MTGFEModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch=3)
    inputs = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    model.set_attn_implementation("sdpa")
    sdpa = model(**inputs)
    model.set_attn_implementation("eager")
    eager = model(**inputs)
    torch.testing.assert_close(sdpa.itm_logits, eager.itm_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sdpa.logits_per_image, eager.logits_per_image, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_step(tiny_config):
    torch.manual_seed(0)
    model = MTGFEForPreTraining(tiny_config)
    batch = make_batch(tiny_config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_mixed_precision_step(tiny_config, dtype):
    model = MTGFEForPreTraining(tiny_config).cuda()
    batch = {k: v.cuda() for k, v in make_batch(tiny_config).items()}
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    with torch.autocast("cuda", dtype=dtype):
        out = model(**batch)
    scaler.scale(out.loss).backward()
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------------ losses
def test_hard_negative_sampling_never_picks_a_positive():
    g = torch.Generator().manual_seed(0)
    image_ids = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])
    text_ids = torch.tensor([10, 11, 10, 12, 13, 14, 15, 16])  # item 2 repeats item 0's caption
    pos = positive_mask(image_ids)
    same_text = text_ids[:, None] == text_ids[None, :]
    forbidden = pos | ((pos.float() @ same_text.float()) > 0)
    # Extreme similarity on forbidden cells must not leak through.
    weights = torch.where(forbidden, torch.full_like(pos, 1e6, dtype=torch.float), torch.rand(8, 8, generator=g))
    for random_prob in (0.0, 0.5, 1.0):
        draws = torch.stack([sample_negatives(weights, forbidden, random_prob, generator=g) for _ in range(300)])
        picked = forbidden[torch.arange(8).expand_as(draws), draws]
        assert not picked.any()
    assert forbidden[0, 2] and forbidden[2, 0]  # identical caption across images is never a negative


def test_caption_overlap_is_jaccard_of_token_sets_without_specials():
    # [CLS]=101 [SEP]=102 [PAD]=0; rows: {5,6,7}, {5,6,7,8} (a near copy), {9}, {5,6,7} repeated tokens
    ids = torch.tensor([[101, 5, 6, 7, 102, 0], [101, 5, 6, 7, 8, 102], [101, 9, 102, 0, 0, 0], [101, 5, 5, 6, 7, 102]])
    mask = (ids != 0).long()
    overlap = caption_overlap(ids, mask, (0, 101, 102))
    assert torch.allclose(overlap.diagonal(), torch.ones(4))
    assert overlap[0, 1] == pytest.approx(3 / 4) and overlap[1, 0] == pytest.approx(3 / 4)
    assert overlap[0, 2] == 0 and overlap[0, 3] == 1  # repeats do not count twice


def test_near_duplicate_captions_are_never_itm_negatives(monkeypatch):
    """With itm_near_duplicate_overlap, a near copy of an image's caption is forbidden as its negative."""
    import modeling_mtgfe.modeling_mtgfe as modeling

    config = MTGFEConfig.from_preset("tiny", mlm_weight=0.0, mvjrc_weight=0.0, itm_near_duplicate_overlap=0.7)
    model = MTGFEForPreTraining(config)
    batch = make_batch(config, batch=6, seq=8)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ids[0] = torch.tensor([101, 2001, 2002, 2003, 2004, 2005, 2006, 102])  # outside make_batch's 1000-1999 range
    ids[1] = torch.tensor([101, 2001, 2002, 2003, 2004, 2005, 2007, 102])  # one word changed: overlap 5/7
    mask[:2] = 1
    seen = []
    real = modeling.sample_negatives

    def spy(weights, forbidden, random_prob=0.0, generator=None):
        seen.append(forbidden.clone())
        return real(weights, forbidden, random_prob, generator)

    monkeypatch.setattr(modeling, "sample_negatives", spy)
    overlap = caption_overlap(ids, mask, (config.pad_token_id, config.cls_token_id, config.sep_token_id))
    assert overlap[0, 1] >= 0.7 > max(overlap[0, 2:].max(), overlap[1, 2:].max())
    model(**batch)
    neg_image_forbidden, neg_text_forbidden = seen
    assert neg_text_forbidden[0, 1] and neg_text_forbidden[1, 0] and neg_image_forbidden[0, 1]
    assert not neg_text_forbidden[0, 2:].any()
    model.config.itm_near_duplicate_overlap = None
    seen.clear()
    model(**batch)
    assert not seen[1][0, 1]  # without the option only the same image / identical strings are excluded


def test_sampling_errors_when_no_negative_exists():
    forbidden = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="no valid ITM negative"):
        sample_negatives(torch.ones(3, 3), forbidden)


def test_mlm_never_masks_special_tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 20), generator=g)
    ids[:, 0] = 101
    ids[:, 15] = 102
    ids[:, 16:] = 0
    mask = (ids != 0).long()
    masked, labels = mask_tokens(ids, mask, (0, 101, 102), 103, 30522, probability=0.5, generator=g)
    assert (labels[:, 0] == -100).all() and (labels[:, 15:] == -100).all()
    assert (masked[:, 0] == 101).all() and (masked[:, 15] == 102).all() and (masked[:, 16:] == 0).all()
    chosen = labels != -100
    assert (chosen.sum(1) >= 1).all()
    share_masked = (masked[chosen] == 103).float().mean().item()
    assert 0.7 < share_masked < 0.9
    assert (labels[chosen] == ids[chosen]).all()


def test_itc_loss_permutation_invariant_and_positive():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 6, generator=g)
    ids = torch.tensor([0, 0, 1, 2, 3, 3])
    pos = positive_mask(ids)
    perm = torch.randperm(6, generator=g)
    loss = itc_loss(sim, pos)
    permuted = itc_loss(sim[perm][:, perm], pos[perm][:, perm])
    torch.testing.assert_close(loss, permuted)
    assert loss > 0


def test_simsiam_symmetric_in_views():
    g = torch.Generator().manual_seed(0)
    p1, z1, p2, z2 = (torch.randn(4, 8, generator=g) for _ in range(4))
    torch.testing.assert_close(simsiam_loss(p1, z1, p2, z2), simsiam_loss(p2, z2, p1, z1))
    assert simsiam_loss(z1, z1, z1, z1).item() == pytest.approx(-1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------ save / load
def test_save_load_round_trip_identical(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = MTGFEForPreTraining(tiny_config).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert {"configuration_mtgfe.py", "modeling_mtgfe.py", "losses.py"} <= files
    loaded = MTGFEForPreTraining.from_pretrained(tmp_path).eval()
    batch = make_batch(tiny_config, batch=3)
    inputs = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask")}
    with torch.no_grad():
        a, b = model.mtgfe(**inputs), loaded.mtgfe(**inputs)
    torch.testing.assert_close(a.itm_logits, b.itm_logits, atol=0, rtol=0)
    torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=0, rtol=0)
    assert loaded.mlm_head.decoder.weight.data_ptr() == loaded.mtgfe.embeddings.word_embeddings.weight.data_ptr()
    # The base model (what AutoModel / the pipeline load) reads the same checkpoint.
    base = MTGFEModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(base(**inputs).itm_logits, a.itm_logits, atol=0, rtol=0)


def test_loading_mismatched_shapes_fails_clearly(tmp_path, tiny_config):
    MTGFEForPreTraining(tiny_config).save_pretrained(tmp_path)
    wrong = MTGFEConfig.from_preset("tiny", embed_dim=24)
    with pytest.raises(ValueError, match="does not match the model config"):
        MTGFEForPreTraining.from_pretrained(tmp_path, config=wrong)


def test_cached_backbone_tokens_reproduce_the_pixel_path(tiny_config):
    """A frozen backbone's tokens, computed once, give the same embeddings and losses as pixels."""
    model = MTGFEForPreTraining(tiny_config).eval()
    batch = make_batch(tiny_config)
    with torch.no_grad():
        hidden = model.mtgfe.backbone_hidden_states(batch["pixel_values"])
        hidden2 = model.mtgfe.backbone_hidden_states(batch["pixel_values_view2"])
        torch.manual_seed(3)
        from_pixels = model(**batch)
        cached = {k: v for k, v in batch.items() if not k.startswith("pixel_values")}
        torch.manual_seed(3)
        from_cache = model(**cached, vision_hidden_states=hidden, vision_hidden_states_view2=hidden2)
    torch.testing.assert_close(from_pixels.image_embeds, from_cache.image_embeds, atol=0, rtol=0)
    torch.testing.assert_close(from_pixels.loss, from_cache.loss, atol=0, rtol=0)
