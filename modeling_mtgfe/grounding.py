"""Grounding maps: where in the image a fusion encoder found the query (ALBEF-style Grad-CAM).

A dual encoder scores a whole image against a whole query; the fusion layers of MTGFE attend from every
query token to every image grid token, so they can also say *where* the match is. Following ALBEF (Li et
al. 2021, §4 "weakly-supervised visual grounding"), the map of one cross-attention layer is

    cam[head, token, cell] = attention_probs * d(ITM match logit) / d(attention_probs), clamped at 0,

averaged over heads. The attention alone shows where a token looks, wanted or not; the gradient keeps the
cells whose attention raises the match score. A token's row is its map (per word); the mean of the rows of
the query's word tokens ([CLS], [SEP] and padding left out) is the map of the whole query.

The last fusion layer is the exception: the ITM head reads [CLS] only, and in the last layer a word token's
cross-attention output reaches nothing but its own position, so every word row's gradient there is exactly
zero. At the last layer (and so in a one-layer fusion stack) the whole-query map is the [CLS] row.

Design choices, and why:

* **From cached tokens.** The input is the fusion tokens a gallery index stores (`image_tokens`, positions
  already added), so a search result is explained without re-reading or re-encoding its image, and nothing
  back-propagates into the vision backbone or the text encoder: the gradient is taken with respect to the
  attention probabilities of one layer only (they are detached from what computes them, which changes no
  forward value and keeps the backward pass to the fusion layers above that one).
* **One layer, patched for the call only.** The attention kernels (SDPA, flash) never materialise the
  probabilities, so during `ground_pairs` the chosen layer's cross-attention runs the eager formula and
  records them; every other call of the model keeps its fast path untouched.
* **The model's own ITM logit.** The score differentiated is `compute_itm_scores(..., return_logits=True)`,
  the function retrieval ranks with, class 1 (match), as ALBEF's `itm_head(...)[:, 1]`; the readout is not
  re-implemented here.
* **Default layer.** ALBEF explains with the third of its six fusion layers (BERT block 8); the same
  relative depth, the middle fusion layer rounded down (`(num_fusion_layers - 1) // 2`), is the default
  here; it is never the last layer of a deeper stack. `layer=` picks any other.

This file travels as Hub remote code: it imports only third-party packages (no sibling is needed).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class MTGFEGroundingOutput(ModelOutput):
    """
    query_maps (`(P, rows, cols)` float32): Grad-CAM map of each pair's whole query (mean over its word tokens).
    token_maps (`(P, T, rows, cols)` float32, or `None`): one map per text token (`per_token=True`); rows of
        [CLS], [SEP] and padding are kept (zeros for padding) so index `t` is token `t` of the input.
    word_mask (`(P, T)` bool): the tokens averaged into `query_maps`: real tokens other than [CLS] / [SEP], or
        [CLS] alone at the last fusion layer (whose word rows have no gradient).
    itm_logits (`(P,)` float32): the ITM match logit that was differentiated (class 1 of the ITM head).
    layer (`int`): the fusion layer (0-based, within the fusion stack) the maps come from.
    grid (`(rows, cols)`): the image grid the maps lie on, row-major like the tokens.
    """

    query_maps: torch.Tensor | None = None
    token_maps: torch.Tensor | None = None
    word_mask: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    layer: int | None = None
    grid: tuple[int, int] | None = None


def default_grounding_layer(num_fusion_layers: int) -> int:
    """The middle fusion layer, rounded down: ALBEF's relative depth (its layer 3 of 6 is index 2)."""
    if num_fusion_layers < 1:
        raise ValueError(f"Grounding needs at least one fusion layer; the model has {num_fusion_layers}.")
    return (num_fusion_layers - 1) // 2


def grounding_grid(num_tokens: int, grid: tuple[int, int] | None = None,
                   configured: tuple[int, int] | None = None) -> tuple[tuple[int, int], int]:
    """`((rows, cols), leading)`: the grid of `num_tokens` image tokens and how many leading tokens are not
    grid cells (1 for a ViT class token, else 0).

    `grid` (the caller's) wins, then `configured` (`config.image_position_grid`), then a square. A token count
    one above a grid is read as a class token first, as ViT backbones emit it.
    """
    for candidate in (grid, configured):
        if candidate is None:
            continue
        rows, cols = int(candidate[0]), int(candidate[1])
        for leading in (0, 1):
            if rows * cols == num_tokens - leading:
                return (rows, cols), leading
        if candidate is grid:
            raise ValueError(f"image_grid_size={(rows, cols)} does not match the {num_tokens} image tokens.")
    for leading in (0, 1):
        side = math.isqrt(max(num_tokens - leading, 0))
        if side > 0 and side * side == num_tokens - leading:
            return (side, side), leading
    raise ValueError(
        f"{num_tokens} image tokens do not form a square grid (with or without a class token): pass "
        "image_grid_size=(rows, cols)."
    )


class _AttentionRecorder:
    """Eager cross-attention for one `MTGFEAttention` module that keeps its probabilities for the gradient."""

    def __init__(self, attention: torch.nn.Module):
        self.attention = attention
        self.probs: torch.Tensor | None = None

    def forward(self, hidden_states, attention_mask=None, key_value=None):
        attn = self.attention
        query = attn._heads(attn.query(hidden_states))
        key, value = key_value if key_value is not None else attn.project_key_value(hidden_states)
        scores = torch.matmul(query, key.transpose(-1, -2)) * attn.scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        # detached: the gradient wanted is d logit / d probs; nothing below this layer needs one
        probs = scores.float().softmax(-1).to(query.dtype).detach().requires_grad_(True)
        self.probs = probs
        out = torch.matmul(probs, value).transpose(1, 2).contiguous()
        return out.reshape(*hidden_states.shape[:-1], -1)


@contextlib.contextmanager
def recording_cross_attention(base, layer: int) -> Iterator[_AttentionRecorder]:
    """Within the block, fusion layer `layer`'s cross-attention runs `_AttentionRecorder.forward` (an instance
    attribute shadows the class's `forward`; removing it restores the module exactly)."""
    attention = base.fusion_encoder[layer].crossattention.self
    recorder = _AttentionRecorder(attention)
    attention.forward = recorder.forward
    try:
        yield recorder
    finally:
        del attention.forward


def _resolve_pairs(num_images: int, num_texts: int, image_index, text_index, device):
    """Explicit `(image_index, text_index)` with `compute_itm_scores`' pairing rules."""
    if image_index is None and text_index is None:
        if num_images == num_texts:
            rows = torch.arange(num_images, device=device)
            return rows, rows
        if num_images == 1:
            return torch.zeros(num_texts, dtype=torch.long, device=device), torch.arange(num_texts, device=device)
        if num_texts == 1:
            return torch.arange(num_images, device=device), torch.zeros(num_images, dtype=torch.long, device=device)
        raise ValueError(
            f"Cannot pair {num_images} images with {num_texts} texts: pass image_index/text_index, or give equal "
            "batch sizes, or a batch of one on either side."
        )
    if image_index is None or text_index is None:
        raise ValueError("Pass both image_index and text_index (or neither).")
    image_index, text_index = image_index.to(device).long(), text_index.to(device).long()
    if image_index.shape != text_index.shape or image_index.dim() != 1:
        raise ValueError(f"image_index {tuple(image_index.shape)} and text_index {tuple(text_index.shape)} must be "
                         "1-D and of equal length (one entry per pair).")
    return image_index, text_index


def word_token_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens that are words: the attention mask without [CLS] (first) and [SEP] (last real token).

    By position, not by token id: the processor always lays a text out this way, while a model config's
    special ids need not be the tokenizer's (a tokenizer built for a small vocabulary numbers them itself). A
    text of special tokens only keeps its real tokens, so its query map is still defined.
    """
    mask = attention_mask.bool().clone()
    mask[:, 0] = False
    last = attention_mask.long().sum(1) - 1
    mask[torch.arange(mask.shape[0], device=mask.device), last.clamp_min(0)] = False
    empty = ~mask.any(1)
    mask[empty] = attention_mask.bool()[empty]
    return mask


def _cls_only(attention_mask: torch.Tensor) -> torch.Tensor:
    cls = torch.zeros_like(attention_mask, dtype=torch.bool)
    cls[:, 0] = True
    return cls


def ground_pairs(
    base,
    image_tokens: torch.Tensor,
    text_states: torch.Tensor,
    text_attention_mask: torch.Tensor,
    image_index: torch.Tensor | None = None,
    text_index: torch.Tensor | None = None,
    layer: int | None = None,
    image_grid_size: tuple[int, int] | None = None,
    per_token: bool = False,
    batch_size: int = 64,
) -> MTGFEGroundingOutput:
    """Grad-CAM maps of (image, text) pairs; see the module docstring. `base` is an `MTGFEModel`.

    `image_tokens` `(N_img, T_img, H)`: fusion tokens (e.g. from a gallery index); `text_states` /
    `text_attention_mask` `(N_txt, T, ...)`: from `get_text_retrieval_features`. Pairs follow
    `compute_itm_scores`. Runs under whatever autocast the caller set (bf16 / fp16 maps come back as float32)
    and inside `torch.no_grad()`, but not inside `torch.inference_mode()`, which no code can leave for autograd.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grounding maps need autograd: call ground() outside torch.inference_mode() "
                           "(torch.no_grad() is fine).")
    num_layers = len(base.fusion_encoder)
    layer = default_grounding_layer(num_layers) if layer is None else layer
    if isinstance(layer, bool) or not isinstance(layer, int) or not -num_layers <= layer < num_layers:
        raise ValueError(f"layer={layer!r} must be an int in [0, {num_layers}) (a fusion layer of this model).")
    layer %= num_layers
    last = layer == num_layers - 1
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if image_tokens.dim() != 3 or text_states.dim() != 3:
        raise ValueError(f"image_tokens and text_states must be 3-D; got {tuple(image_tokens.shape)} and "
                         f"{tuple(text_states.shape)}.")
    configured = getattr(base.config, "image_position_grid", None)
    grid, leading = grounding_grid(image_tokens.shape[1], image_grid_size, configured)
    device = text_states.device
    image_index, text_index = _resolve_pairs(image_tokens.shape[0], text_states.shape[0], image_index,
                                             text_index, device)
    # the rows averaged into the query map: the words, or [CLS] at the last layer (module docstring)
    query_rows = _cls_only(text_attention_mask) if last else word_token_mask(text_attention_mask)

    query_maps, token_maps, logits_out = [], [], []
    for start in range(0, image_index.shape[0], batch_size):
        img = image_index[start:start + batch_size]
        txt = text_index[start:start + batch_size]
        # stored tokens may be float16 (an index's default): cast to the text side's (the model's) dtype
        tokens = image_tokens[img.to(image_tokens.device)].to(device=device, dtype=text_states.dtype).detach()
        states, mask = text_states[txt].detach(), text_attention_mask[txt]
        with torch.enable_grad(), recording_cross_attention(base, layer) as recorder:
            logits = base.compute_itm_scores(tokens, states, mask, return_logits=True)
            match = logits[:, 1]
            (grad,) = torch.autograd.grad(match.sum(), recorder.probs)
        cam = (recorder.probs.detach().float() * grad.float()).clamp_min(0).mean(1)  # (p, T, T_img)
        cam = cam[..., leading:].reshape(cam.shape[0], cam.shape[1], *grid)
        cam = cam * mask[:, :, None, None].to(cam.dtype)
        words = query_rows[txt].to(cam.dtype)
        query_maps.append((cam * words[:, :, None, None]).sum(1) / words.sum(1).clamp_min(1)[:, None, None])
        if per_token:
            token_maps.append(cam)
        logits_out.append(match.detach().float())
    return MTGFEGroundingOutput(
        query_maps=torch.cat(query_maps),
        token_maps=torch.cat(token_maps) if per_token else None,
        word_mask=query_rows[text_index],
        itm_logits=torch.cat(logits_out),
        layer=layer,
        grid=grid,
    )


__all__ = [
    "MTGFEGroundingOutput",
    "default_grounding_layer",
    "ground_pairs",
    "grounding_grid",
    "recording_cross_attention",
    "word_token_mask",
]
