"""Grounding maps (`MTGFEModel.ground`, `modeling_mtgfe.grounding`): Grad-CAM of one fusion layer's
cross-attention, checked against hand-built cases whose answer is known, finite differences, cached
(float16) index tokens, bf16 autocast, and the model being left exactly as it was."""

from __future__ import annotations

import pytest
import torch

from modeling_mtgfe.grounding import (
    default_grounding_layer,
    ground_pairs,
    grounding_grid,
    recording_cross_attention,
    word_token_mask,
)
from modeling_mtgfe.retrieval import encode_images
from tests.helpers.retrieval import random_images, tiny_model, tiny_processor


def _texts(model, batch=3, seq=9, seed=0):
    config = model.config
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 150, (batch, seq), generator=g)
    lengths = torch.tensor([seq, seq - 3, 5][:batch])
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    ids[:, 0] = config.cls_token_id
    ids[torch.arange(batch), lengths - 1] = config.sep_token_id
    return ids.masked_fill(mask == 0, config.pad_token_id), mask


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def _image_tokens(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.get_image_retrieval_features(torch.randn(n, 3, 32, 32, generator=g)).image_tokens


def test_grid_rules():
    assert grounding_grid(16) == ((4, 4), 0)
    assert grounding_grid(17) == ((4, 4), 1)  # ViT class token first
    assert grounding_grid(12, (3, 4)) == ((3, 4), 0)
    assert grounding_grid(13, None, (3, 4)) == ((3, 4), 1)
    with pytest.raises(ValueError, match="image_grid_size"):
        grounding_grid(12, (5, 5))
    with pytest.raises(ValueError, match="square grid"):
        grounding_grid(12)
    assert [default_grounding_layer(n) for n in (1, 2, 3, 6)] == [0, 0, 1, 2]


def test_word_mask_drops_cls_sep_and_padding(model):
    ids, mask = _texts(model)
    words = word_token_mask(mask)
    assert words.sum(1).tolist() == [7, 4, 3]  # real tokens minus [CLS] and [SEP]
    assert not words[:, 0].any() and not words[1, 5:].any() and words[1, 1:5].all()
    only_specials = torch.tensor([[1, 1, 0]])
    assert word_token_mask(only_specials).tolist() == [[True, True, False]]


def test_shapes_pairing_and_query_map_is_mean_of_word_rows(model):
    ids, mask = _texts(model)
    tokens = _image_tokens(model)
    out = model.ground(tokens, ids, mask, per_token=True)
    assert out.query_maps.shape == (3, 4, 4) and out.token_maps.shape == (3, 9, 4, 4)
    assert out.grid == (4, 4) and out.layer == default_grounding_layer(len(model.fusion_encoder))
    assert (out.token_maps >= 0).all() and out.query_maps.dtype == torch.float32
    assert (out.token_maps[1, 6:] == 0).all()  # padding rows carry nothing
    words = out.word_mask.float()
    expected = (out.token_maps * words[:, :, None, None]).sum(1) / words.sum(1)[:, None, None]
    torch.testing.assert_close(out.query_maps, expected)
    # the differentiated logit is the model's own ITM match logit (eager attention vs the model's kernel)
    text = model.get_text_retrieval_features(ids, mask)
    reference = model.compute_itm_scores(tokens, text.text_states, mask, return_logits=True)[:, 1]
    torch.testing.assert_close(out.itm_logits, reference.detach(), rtol=1e-4, atol=1e-5)
    # one image against every text, explicit indices, and text_states instead of ids give the same maps
    single = model.ground(tokens[:1], ids, mask)
    torch.testing.assert_close(single.query_maps[0], out.query_maps[0])
    indexed = model.ground(tokens, text_states=text.text_states, attention_mask=mask,
                           image_index=torch.tensor([2, 0]), text_index=torch.tensor([2, 0]), batch_size=1)
    torch.testing.assert_close(indexed.query_maps, out.query_maps[[2, 0]], rtol=1e-4, atol=1e-7)


def test_cam_is_probs_times_positive_gradient(model):
    """The map equals attention × clamp(d logit / d attention, 0), averaged over heads, computed here by hand."""
    ids, mask = _texts(model)
    tokens = _image_tokens(model)
    layer = len(model.fusion_encoder) - 1
    out = model.ground(tokens, ids, mask, layer=layer, per_token=True)
    text = model.get_text_retrieval_features(ids, mask)
    with recording_cross_attention(model, layer) as recorder:
        logit = model.compute_itm_scores(tokens, text.text_states.detach(), mask, return_logits=True)[:, 1]
        (grad,) = torch.autograd.grad(logit.sum(), recorder.probs)
    cam = (recorder.probs * grad).clamp_min(0).mean(1)[..., 1:].reshape(3, 9, 4, 4) * mask[:, :, None, None]
    torch.testing.assert_close(out.token_maps, cam.detach())
    assert out.layer == layer


def test_hand_built_image_the_map_points_at_the_only_cell_that_matters():
    """All grid tokens zero except cell k, value bias zero: only cell k can move the ITM logit through this
    layer's attention, so every other cell's map is exactly 0; and the total attention×gradient at k equals
    the finite-difference derivative of the logit when cell k's value is scaled (float64, so the difference
    quotient is exact enough to compare)."""
    model = tiny_model(seed=3).double()
    layer = 0
    attention = model.fusion_encoder[layer].crossattention.self
    ids, mask = _texts(model, batch=1)
    text = model.get_text_retrieval_features(ids, mask)
    k = 6
    with torch.no_grad():
        attention.value.bias.zero_()
    tokens = torch.zeros(1, 17, 32, dtype=torch.float64)
    tokens[0, 1 + k] = torch.randn(32, generator=torch.Generator().manual_seed(0)) * 3
    out = model.ground(tokens, ids, mask, layer=layer, per_token=True)
    others = torch.ones(16, dtype=torch.bool)
    others[k] = False
    assert out.token_maps[0].flatten(1)[:, others].abs().max() == 0
    assert out.query_maps[0].flatten()[others].abs().max() == 0

    with recording_cross_attention(model, layer) as recorder:
        logit = model.compute_itm_scores(tokens, text.text_states.detach(), mask, return_logits=True)[0, 1]
        (grad,) = torch.autograd.grad(logit, recorder.probs)
    total = float((recorder.probs * grad)[..., 1 + k].sum().detach())

    def logit_at(scale):
        scaled = tokens.clone()
        scaled[0, 1 + k] *= scale
        with torch.no_grad():
            # only this layer's values move: its keys and every other layer see the unscaled cell
            key_values = model.image_key_values(tokens)
            key_values[layer] = (key_values[layer][0], model.image_key_values(scaled)[layer][1])
            return float(model.compute_itm_scores(None, text.text_states, mask, return_logits=True,
                                                  image_key_values=key_values)[0, 1])
    eps = 1e-4
    finite = (logit_at(1 + eps) - logit_at(1 - eps)) / (2 * eps)
    assert abs(finite) > 1e-6 and total == pytest.approx(finite, rel=1e-4)
    if total > 0:  # some head/token term is positive, so the clamped map at k is too
        assert out.token_maps[0].flatten(1)[:, k].sum() > 0


def test_cached_float16_index_tokens_no_backbone_no_gradient(model):
    """Tokens as `encode_images` keeps them for an index (float16 here): the backbone never runs again and
    no parameter receives a gradient."""
    processor = tiny_processor()
    feats = encode_images(model, processor, random_images(2), progress=False, tokens_dtype=torch.float16)
    assert feats.tokens.dtype == torch.float16
    ids, mask = _texts(model, batch=2)

    def refuse(*args, **kwargs):
        raise AssertionError("the vision backbone ran during grounding")

    model.vision_model.forward = refuse
    try:
        with torch.no_grad():
            out = model.ground(feats.tokens, ids, mask)
    finally:
        del model.vision_model.forward
    assert torch.isfinite(out.query_maps).all() and out.query_maps.shape == (2, 4, 4)
    assert all(p.grad is None for p in model.parameters())
    reference = model.ground(feats.tokens.float(), ids, mask)
    torch.testing.assert_close(out.query_maps, reference.query_maps, rtol=0.05, atol=1e-3 * float(reference.query_maps.max()))


def test_model_restored_after_ground_even_on_error(model):
    ids, mask = _texts(model)
    tokens = _image_tokens(model)
    text = model.get_text_retrieval_features(ids, mask)
    before = model.compute_itm_scores(tokens, text.text_states, mask, return_logits=True)
    model.ground(tokens, ids, mask)
    with pytest.raises(ValueError, match="Cannot pair"):
        ground_pairs(model, tokens[:2], text.text_states, mask)
    for layer in model.fusion_encoder:
        assert "forward" not in vars(layer.crossattention.self)
    assert torch.equal(model.compute_itm_scores(tokens, text.text_states, mask, return_logits=True), before)


def test_bf16_autocast_on_cpu(model):
    ids, mask = _texts(model)
    tokens = _image_tokens(model)
    full = model.ground(tokens, ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model.ground(tokens, ids, mask)
    assert half.query_maps.dtype == torch.float32 and torch.isfinite(half.query_maps).all()
    corr = torch.corrcoef(torch.stack([full.query_maps.flatten(), half.query_maps.flatten()]))[0, 1]
    assert corr > 0.9


def test_bad_arguments_are_named(model):
    ids, mask = _texts(model)
    tokens = _image_tokens(model)
    with pytest.raises(ValueError, match="layer=5"):
        model.ground(tokens, ids, mask, layer=5)
    with pytest.raises(ValueError, match="image_grid_size"):
        model.ground(tokens, ids, mask, image_grid_size=(3, 3))
    with pytest.raises(ValueError, match="input_ids or text_states"):
        model.ground(tokens)
    with pytest.raises(ValueError, match="attention_mask"):
        model.ground(tokens, text_states=torch.zeros(3, 9, 32))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        model.ground(tokens, ids, mask)


def test_last_layer_word_rows_have_no_gradient_so_the_query_map_is_the_cls_row(model):
    ids, mask = _texts(model)
    tokens = _image_tokens(model)
    last = len(model.fusion_encoder) - 1
    out = model.ground(tokens, ids, mask, layer=last, per_token=True)
    assert out.token_maps[:, 1:].abs().max() == 0
    assert out.token_maps[:, 0].sum() > 0
    torch.testing.assert_close(out.query_maps, out.token_maps[:, 0])
    assert out.word_mask.sum(1).tolist() == [1, 1, 1] and out.word_mask[:, 0].all()
