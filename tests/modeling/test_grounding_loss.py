"""Auxiliary grounding loss: `losses.grounding_loss` and the model's fusion layer 0 cross-attention
(`MTGFEForPreTraining.forward(grounding_cells=...)`, weight `grounding_weight`)."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
from modeling_mtgfe.losses import grounding_loss

RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [16, 24], "depths": [1, 1],
          "layer_type": "basic", "downsample_in_first_stage": False, "image_size": 32}  # 4 x 4 = 16 tokens
INPUT_IDS = torch.tensor([[101, 2048, 2300, 1999, 102], [101, 2500, 2187, 102, 0], [101, 3000, 102, 0, 0]])


def cells_of(targets: dict[tuple[int, int], list[int]], shape=(3, 5, 16)) -> torch.Tensor:
    cells = torch.zeros(shape, dtype=torch.bool)
    for (row, token), where in targets.items():
        cells[row, token, where] = True
    return cells


CELLS = cells_of({(0, 1): [0, 1], (0, 2): [0, 1], (2, 1): [15]})  # row 1 has no target


# ------------------------------------------------------------------ the pure function
def test_loss_is_minus_log_of_the_head_averaged_mass_on_the_target_cells():
    probs = torch.full((2, 2, 3, 4), 0.25)  # (pairs, heads, tokens, cells), uniform
    probs[0, 0, 1] = torch.tensor([0.7, 0.1, 0.1, 0.1])  # head 0 of pair 0, token 1: mostly cell 0
    cells = torch.zeros(2, 3, 4, dtype=torch.bool)
    cells[0, 1, 0] = True  # pair 0 token 1 -> cell 0: head mean (0.7 + 0.25) / 2
    cells[1, 2, [2, 3]] = True  # pair 1 token 2 -> cells 2, 3: 0.5
    expected = -(math.log(0.475 + 1e-6) + math.log(0.5 + 1e-6)) / 2
    assert grounding_loss(probs, cells).item() == pytest.approx(expected, rel=1e-6)
    # untargeted tokens do not count, whatever their attention
    probs[1, :, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert grounding_loss(probs, cells).item() == pytest.approx(expected, rel=1e-6)
    # all mass on the targets: 0 up to eps; none: large but finite
    on = torch.zeros(1, 1, 1, 4)
    on[..., 0] = 1.0
    target = torch.zeros(1, 1, 4, dtype=torch.bool)
    target[..., 0] = True
    assert grounding_loss(on, target).item() == pytest.approx(0.0, abs=1e-5)
    assert grounding_loss(on, ~target).item() == pytest.approx(-math.log(1e-6), rel=1e-6)


def test_no_target_gives_zero_with_a_graph_and_bad_shapes_are_named():
    probs = torch.rand(2, 2, 3, 4, requires_grad=True)
    loss = grounding_loss(probs, torch.zeros(2, 3, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match=r"cross_attention_probs must be \(pairs, heads, tokens, cells\)"):
        grounding_loss(probs[0], torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"token_cells has shape \(2, 3, 5\)"):
        grounding_loss(probs, torch.zeros(2, 3, 5, dtype=torch.bool))


# ------------------------------------------------------------------ the model
def model_of(**overrides) -> MTGFEForPreTraining:
    torch.manual_seed(0)
    config = MTGFEConfig.from_preset("tiny", vision_config=dict(RESNET), image_pooling="mean",
                                     image_position_embedding="sine", mlm_weight=0.0, mvjrc_weight=0.0,
                                     text_config={"initializer_range": 0.3}, **overrides)
    return MTGFEForPreTraining(config).eval()  # eval: no dropout, so two paths can be compared exactly


PIXELS = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_fuse_returns_layer_0_cross_attention_without_changing_the_states():
    base = model_of().mtgfe
    with torch.no_grad():
        _, tokens = base.encode_image(PIXELS)
        states, mask = base.encode_text(INPUT_IDS), (INPUT_IDS != 0).long()
        plain = base.fuse(states, mask, image_tokens=tokens)
        fused, probs = base.fuse(states, mask, image_tokens=tokens, cross_attention_layer=0)
        # layer 0's cross-attention by hand: its self-attention block, then softmax(q k^T / sqrt(d))
        layer = base.fusion_encoder[0]
        hidden = layer.attention(states, (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min)
        attn = layer.crossattention.self
        key = attn.project_key_value(tokens)[0]
        by_hand = torch.softmax(attn._heads(attn.query(hidden)) @ key.transpose(-1, -2) * attn.scaling, -1)
    assert torch.equal(fused, plain)
    assert probs.shape == (3, base.config.text_config.num_attention_heads, 5, 16)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    torch.testing.assert_close(probs, by_hand)
    with pytest.raises(ValueError, match=r"cross_attention_layer=2 is not a fusion layer index in \[0, 1\]"):
        base.fuse(states, mask, image_tokens=tokens, cross_attention_layer=2)


def test_off_by_default_and_costs_nothing():
    """grounding_weight 0 (the default): no loss, and the targets are ignored."""
    assert MTGFEConfig().grounding_weight == 0.0
    model = model_of()
    out = model(pixel_values=PIXELS, input_ids=INPUT_IDS, grounding_cells=CELLS)
    assert out.loss_grounding is None and out.loss_itm is not None


def test_forward_adds_the_weighted_grounding_loss_of_the_positive_pairs():
    model = model_of(grounding_weight=2.0)
    torch.manual_seed(3)
    out = model(pixel_values=PIXELS, input_ids=INPUT_IDS, grounding_cells=CELLS)
    base = model.mtgfe
    with torch.no_grad():
        _, tokens = base.encode_image(PIXELS)
        _, probs = base.fuse(base.encode_text(INPUT_IDS), (INPUT_IDS != 0).long(), image_tokens=tokens,
                             cross_attention_layer=0)
    expected = grounding_loss(probs, CELLS)
    assert 0 < out.loss_grounding.item() < 10
    torch.testing.assert_close(out.loss_grounding, expected)
    torch.testing.assert_close(out.loss, out.loss_itc + out.loss_itm + 2.0 * out.loss_grounding)
    # ITM off: the rows with targets are fused on their own, same loss
    alone = model_of(grounding_weight=2.0, itm_weight=0.0)
    out_alone = alone(pixel_values=PIXELS, input_ids=INPUT_IDS, grounding_cells=CELLS)
    torch.testing.assert_close(out_alone.loss_grounding, expected)
    # a batch without any target: no grounding term
    empty = model(pixel_values=PIXELS, input_ids=INPUT_IDS, grounding_cells=torch.zeros_like(CELLS))
    assert empty.loss_grounding is None


def test_grounding_gradients_sharpen_the_attention_on_the_target_cells():
    """A few steps on the grounding loss alone (fixed batch) lower it: the loss reaches the cross-attention."""
    model = model_of(grounding_weight=1.0, itc_weight=0.0, itm_weight=0.0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model(pixel_values=PIXELS, input_ids=INPUT_IDS, grounding_cells=CELLS)
        losses.append(out.loss_grounding.item())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.1, losses


def test_missing_or_misshapen_targets_are_refused():
    model = model_of(grounding_weight=1.0)
    with pytest.raises(ValueError, match="grounding_weight > 0 needs grounding_cells"):
        model(pixel_values=PIXELS, input_ids=INPUT_IDS)
    with pytest.raises(ValueError, match=r"expected \(batch, caption tokens, image tokens\) = \(3, 5, 16\)"):
        model(pixel_values=PIXELS, input_ids=INPUT_IDS, grounding_cells=torch.zeros(3, 5, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"grounding_weight=-1.0 must be a number >= 0.0"):
        MTGFEConfig.from_preset("tiny", grounding_weight=-1.0)
