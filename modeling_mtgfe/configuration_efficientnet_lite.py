# Copyright 2024 The mtgfe authors. Licensed under the Apache License, Version 2.0.
"""Configuration of EfficientNet-Lite used as an MTGFE vision backbone.

EfficientNet-Lite (Tan & Le, TF "efficientnet/lite" release) is EfficientNet without squeeze-excitation, with ReLU6
instead of swish and with a stem (32 channels) and head (1280 channels) that are *not* scaled by the width
coefficient. transformers has no class for it (`EfficientNetModel` always has squeeze-excitation), so mtgfe ships
its own. This file travels as Hub remote code: it imports only third-party packages.
"""

import math

from transformers import PreTrainedConfig


# (width_coefficient, depth_coefficient, native resolution, classifier dropout) from the TF
# `efficientnet/lite/efficientnet_lite_builder.py`; the resolution and dropout are informational only here.
EFFICIENTNET_LITE_VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}

# Activations that `transformers.activations.ACT2FN` resolves without extra dependencies. ReLU6 is what Lite uses
# (it quantises well); the others are only useful for experiments with random initialisation.
_SUPPORTED_ACTIVATIONS = ("relu6", "relu", "silu", "swish", "gelu", "hardswish")


class EfficientNetLiteConfig(PreTrainedConfig):
    r"""
    Configuration of [`EfficientNetLiteModel`].

    Defaults give EfficientNet-Lite0 at 256 px (the MTGFE image size). Use [`~EfficientNetLiteConfig.from_variant`]
    for `lite0` ... `lite4`.

    Args:
        num_channels (`int`, defaults to 3):
            Channels of the input image.
        image_size (`int` or `[height, width]`, defaults to 256):
            The image size the model is used at. The network is fully convolutional and pads dynamically
            (TensorFlow "SAME"), so this does not change any weight or any output value; it only documents the
            intended input and gives [`~EfficientNetLiteConfig.feature_map_size`] / `num_image_tokens`.
        width_coefficient (`float`, defaults to 1.0):
            Channel multiplier of the MBConv stages (not of the stem and head, which Lite keeps fixed).
        depth_coefficient (`float`, defaults to 1.0):
            Repeat multiplier of the MBConv stages, except the first and the last stage (fixed in Lite).
        depth_divisor (`int`, defaults to 8):
            Scaled channel counts are rounded to a multiple of this.
        stem_channels (`int`, defaults to 32):
            Output channels of the stem convolution (input of the first stage); not scaled.
        hidden_size (`int`, defaults to 1280):
            Output channels of the head 1x1 convolution: the width of every image token and of the pooled output.
            Not scaled (Lite fixes the head).
        kernel_sizes, out_channels, strides, num_block_repeats, expand_ratios (`list[int]`, 7 entries each):
            Per-stage MBConv settings before width/depth scaling; the defaults are the B0/Lite0 table. The input
            channels of a stage are the (scaled) output channels of the previous one.
        hidden_act (`str`, defaults to `"relu6"`):
            Activation after the stem, expansion, depthwise and head convolutions.
        batch_norm_eps (`float`, defaults to 1e-3):
            Epsilon of every BatchNorm (TF value; the pretrained statistics were computed with it).
        batch_norm_momentum (`float`, defaults to 0.01):
            **PyTorch convention** (weight of the new batch in the running average), i.e. 1 - the TF decay 0.99.
            `transformers.EfficientNetConfig` passes 0.99 to `nn.BatchNorm2d`, which wipes the running statistics
            at every training step; this config does not repeat that.
        drop_connect_rate (`float`, defaults to 0.2):
            Stochastic-depth rate of the last block; block `i` of `N` drops its residual branch with probability
            `drop_connect_rate * i / N` in training (the TF/lukemelas schedule). Has no effect in eval mode.
        freeze_batch_norm (`bool`, defaults to False):
            Keep every BatchNorm in eval mode (running statistics frozen) even when the model is in training mode;
            see [`EfficientNetLiteModel.freeze_batchnorm_stats`]. Stored here so the choice survives
            `save_pretrained`.
    """

    model_type = "mtgfe_efficientnet_lite"

    num_channels: int = 3
    image_size: int | list[int] | tuple[int, int] = 256
    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    depth_divisor: int = 8
    stem_channels: int = 32
    hidden_size: int = 1280
    kernel_sizes: list[int] | tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
    out_channels: list[int] | tuple[int, ...] = (16, 24, 40, 80, 112, 192, 320)
    strides: list[int] | tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    num_block_repeats: list[int] | tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
    expand_ratios: list[int] | tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6)
    hidden_act: str = "relu6"
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01
    drop_connect_rate: float = 0.2
    freeze_batch_norm: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_fields()

    # ------------------------------------------------------------------ validation
    def check_fields(self) -> None:
        """Raise a `ValueError` naming the first invalid field.

        Called after construction and again by the model, because dataclass fields can be reassigned after the
        config was built.
        """

        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"EfficientNetLiteConfig.{name} must be a positive int, got {value!r}")

        def positive_number(name, value):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"EfficientNetLiteConfig.{name} must be a positive number, got {value!r}")

        positive_int("num_channels", self.num_channels)
        positive_int("hidden_size", self.hidden_size)
        positive_int("stem_channels", self.stem_channels)
        positive_int("depth_divisor", self.depth_divisor)
        positive_number("width_coefficient", self.width_coefficient)
        positive_number("depth_coefficient", self.depth_coefficient)
        positive_number("batch_norm_eps", self.batch_norm_eps)

        size = self.image_size
        if isinstance(size, (list, tuple)):
            if len(size) != 2:
                raise ValueError(f"EfficientNetLiteConfig.image_size must be an int or [height, width], got {size!r}")
            for value in size:
                positive_int("image_size", value)
        else:
            positive_int("image_size", size)

        stage_fields = ("kernel_sizes", "out_channels", "strides", "num_block_repeats", "expand_ratios")
        num_stages = len(self.kernel_sizes) if isinstance(self.kernel_sizes, (list, tuple)) else -1
        for name in stage_fields:
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"EfficientNetLiteConfig.{name} must be a non-empty list of ints, got {values!r}")
            if len(values) != num_stages:
                raise ValueError(
                    f"EfficientNetLiteConfig.{name} has {len(values)} entries but kernel_sizes has {num_stages}: "
                    "every per-stage list needs one entry per stage"
                )
            for value in values:
                positive_int(name, value)
        for kernel in self.kernel_sizes:
            if kernel % 2 == 0:
                raise ValueError(f"EfficientNetLiteConfig.kernel_sizes must be odd, got {list(self.kernel_sizes)}")

        if self.hidden_act not in _SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"EfficientNetLiteConfig.hidden_act must be one of {_SUPPORTED_ACTIVATIONS}, got {self.hidden_act!r}"
            )
        if not 0.0 < self.batch_norm_momentum < 1.0:
            raise ValueError(
                "EfficientNetLiteConfig.batch_norm_momentum must be in (0, 1) in PyTorch convention (0.01 = TF decay "
                f"0.99), got {self.batch_norm_momentum!r}"
            )
        if self.batch_norm_momentum > 0.5:
            raise ValueError(
                f"EfficientNetLiteConfig.batch_norm_momentum={self.batch_norm_momentum} looks like a TF decay; "
                f"PyTorch momentum is 1 - decay, e.g. {1 - self.batch_norm_momentum:.4g}"
            )
        if isinstance(self.drop_connect_rate, bool) or not 0.0 <= self.drop_connect_rate < 1.0:
            raise ValueError(
                f"EfficientNetLiteConfig.drop_connect_rate must be in [0, 1), got {self.drop_connect_rate!r}"
            )
        if not isinstance(self.freeze_batch_norm, bool):
            raise ValueError(f"EfficientNetLiteConfig.freeze_batch_norm must be a bool, got {self.freeze_batch_norm!r}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_variant(cls, variant: str = "lite0", **kwargs) -> "EfficientNetLiteConfig":
        """Config of `lite0` ... `lite4` (also accepts `"efficientnet-lite2"`).

        `image_size` keeps the mtgfe default (256) unless passed; the variants' native resolutions (224 ... 300) are
        in `EFFICIENTNET_LITE_VARIANTS`. Other keyword arguments override fields.
        """
        key = variant.lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
        if key not in EFFICIENTNET_LITE_VARIANTS:
            raise ValueError(
                f"Unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(EFFICIENTNET_LITE_VARIANTS)}"
            )
        width, depth, _, _ = EFFICIENTNET_LITE_VARIANTS[key]
        kwargs.setdefault("width_coefficient", width)
        kwargs.setdefault("depth_coefficient", depth)
        return cls(**kwargs)

    # ------------------------------------------------------------------ derived architecture
    def round_filters(self, channels: int) -> int:
        """Scale a stage's channel count by `width_coefficient`, rounded to `depth_divisor` (TF rule)."""
        divisor = self.depth_divisor
        scaled = channels * self.width_coefficient
        new_channels = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if new_channels < 0.9 * scaled:  # never round down by more than 10%
            new_channels += divisor
        return int(new_channels)

    def stage_specs(self) -> list[dict[str, int]]:
        """Per stage after scaling: `in_channels`, `out_channels`, `kernel_size`, `stride`, `expand_ratio`, `repeats`.

        Lite keeps the first and last stage's repeats and the first stage's input (the fixed stem) unscaled.
        """
        specs = []
        in_channels = self.stem_channels
        last = len(self.kernel_sizes) - 1
        for i in range(len(self.kernel_sizes)):
            repeats = self.num_block_repeats[i]
            if 0 < i < last:
                repeats = int(math.ceil(self.depth_coefficient * repeats))
            out_channels = self.round_filters(self.out_channels[i])
            specs.append(
                {
                    "in_channels": in_channels,
                    "out_channels": out_channels,
                    "kernel_size": self.kernel_sizes[i],
                    "stride": self.strides[i],
                    "expand_ratio": self.expand_ratios[i],
                    "repeats": repeats,
                }
            )
            in_channels = out_channels
        return specs

    @property
    def num_blocks(self) -> int:
        """Total number of MBConv blocks."""
        return sum(spec["repeats"] for spec in self.stage_specs())

    @property
    def feature_map_size(self) -> tuple[int, int]:
        """(height, width) of the final feature map for an `image_size` input: ceil-division by every stride."""
        height, width = (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size
        for stride in (2, *self.strides):  # the stem has stride 2
            height, width = -(-height // stride), -(-width // stride)
        return height, width

    @property
    def num_image_tokens(self) -> int:
        """Tokens in `last_hidden_state` at `image_size` (64 at 256 px, 49 at 224 px)."""
        height, width = self.feature_map_size
        return height * width


__all__ = ["EFFICIENTNET_LITE_VARIANTS", "EfficientNetLiteConfig"]
