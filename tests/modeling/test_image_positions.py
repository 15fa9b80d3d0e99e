"""2D positions of convolutional grid tokens (`image_position_embedding`): cross-attention is invariant to the
order of its keys, so without positions a shuffle of an image's grid tokens leaves ITM unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining, MTGFEModel
from modeling_mtgfe.configuration_mtgfe import IMAGE_POSITION_EMBEDDINGS, PRESETS
from modeling_mtgfe.modeling_mtgfe import sine_position_grid

# 32 px through this ResNet: a 4 x 4 map of 24 channels, projected to the tiny text width 32.
RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [16, 24], "depths": [1, 1],
          "layer_type": "basic", "downsample_in_first_stage": False, "image_size": 32}


def resnet_config(kind: str = "none", **overrides) -> MTGFEConfig:
    # initializer_range 0.5: at BERT's 0.02 a random tiny fusion stack barely reads the image at all (ITM moves
    # by ~1e-7 even for another image), so a shuffle's effect could not be told from float noise
    grid = {"image_position_grid": [4, 4]} if kind == "learned" else {}
    return MTGFEConfig.from_preset("tiny", vision_config=dict(RESNET), text_config={"initializer_range": 0.5},
                                   mlm_weight=0.0, mvjrc_weight=0.0, image_pooling="mean",
                                   image_position_embedding=kind, **{**grid, **overrides})


def model_of(config: MTGFEConfig) -> MTGFEModel:
    torch.manual_seed(0)
    return MTGFEModel(config).eval()


INPUT_IDS = torch.tensor([[101, 2048, 2300, 1999, 102], [101, 2500, 2187, 102, 0], [101, 3000, 102, 0, 0]])


def itm_logits(model: MTGFEModel, hidden: torch.Tensor) -> torch.Tensor:
    """ITM logits of every image against every caption, from backbone tokens (the cached-token path)."""
    with torch.no_grad():
        _, tokens = model.encode_image(vision_hidden_states=hidden)
        text = model.get_text_retrieval_features(INPUT_IDS)
        n_img, n_txt = tokens.shape[0], INPUT_IDS.shape[0]
        image_index = torch.arange(n_img).repeat_interleave(n_txt)
        text_index = torch.arange(n_txt).repeat(n_img)
        return model.compute_itm_scores(tokens, text.text_states, text.attention_mask, image_index=image_index,
                                        text_index=text_index, return_logits=True)


def shuffle_change(kind: str) -> float:
    """Largest change of an ITM logit when the grid tokens are permuted (float64: summation-order noise ~1e-15)."""
    model = model_of(resnet_config(kind)).double()
    with torch.no_grad():
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        hidden = model.backbone_hidden_states(pixels)
    assert hidden.shape[1] == 16
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(2))
    return (itm_logits(model, hidden) - itm_logits(model, hidden[:, perm])).abs().max().item()


def test_without_positions_a_shuffle_of_the_grid_tokens_leaves_itm_unchanged():
    assert shuffle_change("none") <= 1e-5


@pytest.mark.parametrize("kind", ["sine", "learned"])
def test_with_positions_a_shuffle_of_the_grid_tokens_changes_itm(kind):
    assert shuffle_change(kind) > 1e-2  # logits of magnitude ~4; the "none" case moves by float noise


def test_pixels_and_cached_tokens_give_the_same_fusion_tokens():
    """Positions are added in the model after the backbone: the training cache (position-free backbone tokens)
    and the pixel path (grid read from the feature map) give identical tokens."""
    model = model_of(resnet_config("sine"))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, from_pixels = model.encode_image(pixels)
        _, from_cache = model.encode_image(vision_hidden_states=model.backbone_hidden_states(pixels))
        plain = model.vision_token_proj(model.backbone_hidden_states(pixels))
    torch.testing.assert_close(from_cache, from_pixels, rtol=0, atol=0)
    assert (from_pixels - plain).abs().max() > 0.1  # positions are in the tokens the index stores
    torch.testing.assert_close(model.get_image_retrieval_features(pixels).image_tokens, from_pixels)


def test_sine_positions_are_distinct_and_scale_with_the_grid():
    grid = sine_position_grid(4, 4, 32)
    assert grid.shape == (16, 32)
    assert torch.cdist(grid, grid).add(torch.eye(16) * 10).min() > 0.1  # every cell has its own code
    # normalised to the grid: the centre cell of a 3 x 3 map and of a 9 x 9 map (same place) share their code
    torch.testing.assert_close(sine_position_grid(3, 3, 32)[4], sine_position_grid(9, 9, 32)[4 * 9 + 4])
    assert not torch.allclose(sine_position_grid(3, 3, 32)[0], sine_position_grid(9, 9, 32)[0])
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_position_grid(2, 2, 30)


def test_variable_grid_sizes():
    """Sine works for any feature map; learned tables are interpolated to another grid; cached tokens of a
    grid that is not square need the grid named."""
    for kind in ("sine", "learned"):
        model = model_of(resnet_config(kind))
        with torch.no_grad():
            _, tokens = model.encode_image(torch.randn(1, 3, 48, 64))  # 6 x 8 map
        assert tokens.shape == (1, 48, 32) and torch.isfinite(tokens).all()
        hidden = torch.randn(1, 48, 24)
        with pytest.raises(ValueError, match="image_grid_size"):
            model.encode_image(vision_hidden_states=hidden)
        with torch.no_grad():
            _, named = model.encode_image(vision_hidden_states=hidden, image_grid_size=(6, 8))
        assert named.shape == (1, 48, 32)
        with pytest.raises(ValueError, match=r"image_grid_size=\(5, 8\) does not match the 48"):
            model.encode_image(vision_hidden_states=hidden, image_grid_size=(5, 8))


def test_a_saved_model_without_the_field_loads_with_bit_identical_scores(tmp_path):
    """A config.json written before the field existed loads as `none`, and its ITM/ITC scores match exactly."""
    assert MTGFEConfig().image_position_embedding == "none"
    model = model_of(resnet_config("none"))
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    saved.pop("image_position_embedding")
    saved.pop("image_position_grid", None)
    path.write_text(json.dumps(saved))
    reloaded = MTGFEModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.image_position_embedding == "none" and reloaded.image_position is None
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for m in (model, reloaded):
            m.out = m(pixel_values=pixels, input_ids=INPUT_IDS[:2], attention_mask=(INPUT_IDS[:2] != 0).long())
    assert torch.equal(model.out.itm_logits, reloaded.out.itm_logits)
    assert torch.equal(model.out.logits_per_image, reloaded.out.logits_per_image)


@pytest.mark.parametrize("kind", ["sine", "learned"])
def test_a_model_with_positions_saves_and_reloads(tmp_path, kind):
    model = model_of(resnet_config(kind))
    model.save_pretrained(tmp_path)
    reloaded = MTGFEModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.image_position_embedding == kind
    hidden = torch.randn(2, 16, 24)
    assert torch.equal(itm_logits(model, hidden), itm_logits(reloaded, hidden))


def test_learned_positions_are_new_parameters_without_decay():
    """They start fresh on pretrained backbones (head_lr) and, like every position table, get no decay."""
    from mtgfe.training.config import load_config
    from mtgfe.training.train import param_groups

    model = MTGFEForPreTraining(resnet_config("learned"))
    cfg = load_config("synthetic_tiny", ["optim.head_lr=1e-3"])
    cfg.model.init = object()  # param_groups only asks whether the backbones are pretrained
    groups = {g["group"]: {id(p) for p in g["params"]} for g in param_groups(model, cfg)}
    table = model.mtgfe.image_position.row_embeddings
    assert id(table) in groups["new/no_decay"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_position_embedding="rope"), r"image_position_embedding='rope'; allowed: \('none', 'sine', 'learned'\)"),
        (dict(image_position_embedding="learned"), "needs image_position_grid"),
        (dict(image_position_embedding="learned", image_position_grid=[4]), "image_position_grid"),
        (dict(image_position_embedding="sine", text_config={"hidden_size": 30, "num_attention_heads": 2}),
         "divisible by 4"),
    ],
)
def test_bad_values_name_the_field(kwargs, message):
    base = dict(vision_config=dict(RESNET), image_pooling="mean")
    with pytest.raises(ValueError, match=message):
        MTGFEConfig.from_preset("tiny", **{**base, **kwargs})


def test_vit_backbones_keep_their_own_positions():
    assert MTGFEConfig.from_preset("tiny").image_position_embedding == "none"
    assert MTGFEConfig.from_preset("base").image_position_embedding == "none"
    with pytest.raises(ValueError, match="model_type='vit' adds its own position embeddings"):
        MTGFEConfig.from_preset("tiny", image_position_embedding="sine")
    assert IMAGE_POSITION_EMBEDDINGS == ("none", "sine", "learned")


def test_convolutional_presets_and_recipes_turn_positions_on():
    from mtgfe.training.config import load_config

    assert PRESETS["small"]["image_position_embedding"] == "sine"
    assert MTGFEConfig.from_preset("small").image_position_embedding == "sine"
    demo = load_config("synthetic_demo")
    assert demo.model.config["image_position_embedding"] == "sine"


@pytest.mark.parametrize("kind", ["sine", "learned"])
def test_positions_load_through_remote_code_without_the_package(tmp_path, kind):
    """The position module lives in the modeling file that travels with a saved folder: a process that cannot
    import the package loads it with trust_remote_code and gets the same ITM logits."""
    from tests.helpers.isolated import remote_code_itm_logits

    model = model_of(resnet_config(kind))
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_mtgfe.MTGFEModel"
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(pixel_values=pixels, input_ids=INPUT_IDS[:2], attention_mask=(INPUT_IDS[:2] != 0).long())
    logits = remote_code_itm_logits(folder, pixels, INPUT_IDS[:2], "image_position", "MTGFEImagePositionEmbedding",
                                    tmp_path)
    torch.testing.assert_close(torch.tensor(logits), expected.itm_logits.flatten(), atol=1e-5, rtol=1e-5)
