"""The twin recipe's training levers: `model.linear_init_std` (text and fusion layers from N(0, std))."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtgfe.processing import build_wordpiece_tokenizer
from mtgfe.training.config import ConfigError, load_config
from mtgfe.training.train import build_model

from tests.helpers.training import one_thread  # noqa: F401  (autouse: one intra-op thread)

TOKENIZER = build_wordpiece_tokenizer(["four red buildings on the left side of two cars"], vocab_size=120)


def linears(model, stacks=("text_encoder", "fusion_encoder")) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.mtgfe.named_modules() if isinstance(m, nn.Linear) and name.startswith(stacks)}


def test_linear_init_std_scales_only_the_text_and_fusion_linears():
    torch.manual_seed(0)
    plain = build_model(load_config("synthetic_tiny"), TOKENIZER)
    torch.manual_seed(0)
    scaled = build_model(load_config("synthetic_tiny", ["model.linear_init_std=0.08"]), TOKENIZER)
    layers = linears(scaled)
    assert len(layers) == 4 * 6 + 2 * 4  # 4 layers x (q, k, v, out, FFN in, FFN out) + 2 fusion x cross (q, k, v, out)
    weights = torch.cat([m.weight.flatten() for m in layers.values()])
    assert weights.std().item() == pytest.approx(0.08, rel=0.05)
    assert all(not m.bias.any() for m in layers.values())
    assert torch.cat([m.weight.flatten() for m in linears(plain).values()]).std().item() == pytest.approx(0.02, rel=0.05)
    # everything else keeps the preset's init: the same draws as without the lever
    touched = {f"mtgfe.{name}.{p}" for name in layers for p in ("weight", "bias")}
    plain_state, scaled_state = plain.state_dict(), scaled.state_dict()
    untouched = [k for k in plain_state if k not in touched]
    assert any(k.startswith("mtgfe.embeddings.") for k in untouched) and any("itm_head" in k for k in untouched)
    assert all(torch.equal(plain_state[k], scaled_state[k]) for k in untouched)


def test_linear_init_std_is_refused_with_pretrained_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"model.linear_init_std=0.08 re-initialises .* model.init / model.pretrained"):
        load_config("synthetic_tiny", ["model.preset=null", f"model.pretrained={tmp_path}", "data.tokenizer=default",
                                       "model.linear_init_std=0.08"])
    with pytest.raises(ConfigError, match=r"model.linear_init_std=0.08 re-initialises"):
        load_config("synthetic_tiny", ["model.init={vision: efficientnet-lite0, text: minilm-l6}",
                                       "data.tokenizer=default", "model.linear_init_std=0.08"])
    with pytest.raises(ConfigError, match=r"linear_init_std"):
        load_config("synthetic_tiny", ["model.linear_init_std=0"])
