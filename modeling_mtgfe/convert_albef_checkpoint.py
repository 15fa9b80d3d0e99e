# Copyright 2025 The MTGFE authors. Licensed under the Apache License, Version 2.0.
"""Convert a salesforce/ALBEF checkpoint (`.pth`) into an MTGFE `save_pretrained` folder.

Why: docs/METHOD.md §2 initialises MTGFE at paper scale from an ALBEF checkpoint. ALBEF stores a timm ViT
(`visual_encoder.*`, fused `qkv`), a forked HF BERT (`text_encoder[.bert].*`, layers >= `fusion_layer`
with `crossattention`), the filter projections, the ITM head and the temperature, plus training-only
state (momentum copies `*_m.*`, queues) that MTGFE does not use.

Key mapping (ALBEF → MTGFE; `V = mtgfe.vision_model`, `L = mtgfe.text_encoder.{i}` for i < fusion_layer,
else `mtgfe.fusion_encoder.{i - fusion_layer}`):

| ALBEF | MTGFE |
|---|---|
| `visual_encoder.cls_token` | `V.embeddings.cls_token` |
| `visual_encoder.pos_embed` | `V.embeddings.position_embeddings` (bicubic-resized patch grid when the size changes) |
| `visual_encoder.patch_embed.proj.*` | `V.embeddings.patch_embeddings.projection.*` |
| `visual_encoder.blocks.{i}.norm1.*` / `norm2.*` | `V.layers.{i}.layernorm_before.*` / `layernorm_after.*` |
| `visual_encoder.blocks.{i}.attn.qkv.*` | split in three rows blocks → `V.layers.{i}.attention.{q,k,v}_proj.*` |
| `visual_encoder.blocks.{i}.attn.proj.*` | `V.layers.{i}.attention.o_proj.*` |
| `visual_encoder.blocks.{i}.mlp.fc{1,2}.*` | `V.layers.{i}.mlp.fc{1,2}.*` |
| `visual_encoder.norm.*` | `V.layernorm.*` |
| `text_encoder[.bert].embeddings.*` | `mtgfe.embeddings.*` (`position_ids` buffer dropped: rebuilt) |
| `text_encoder[.bert].encoder.layer.{i}.<rest>` | `L.<rest>` (same BERT names, `crossattention.*` included) |
| `text_encoder.cls.predictions.{bias,transform.*}` | `mlm_head.{bias,transform.*}` (decoder tied to word embeddings) |
| `vision_proj.*`, `text_proj.*`, `itm_head.*`, `temp` | `mtgfe.vision_proj.*`, `mtgfe.text_proj.*`, `mtgfe.itm_head.*`, `mtgfe.temp` |
| `*_m.*`, `image_queue`, `text_queue`, `idx_queue`, `queue_ptr` | dropped on purpose (momentum distillation is off by default, docs/METHOD.md §2) |

The config is read off the tensor shapes (widths, layer counts, patch size, grid, vocabulary, fusion layer
= first layer with cross-attention, `embed_dim`); head counts are not visible in shapes and default to
64-wide heads (ALBEF: 12 heads of 64), overridable. Every source tensor that found no place and every
target tensor left at its fresh initialisation is logged and returned in a [`ConversionReport`].

Usage:

```bash
python -m modeling_mtgfe.cli convert-albef --checkpoint ALBEF.pth --output mtgfe-albef \
    --vision-image-size 256 --text-config bert-base --tokenizer
```
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers.utils import logging

from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, load_default_tokenizer

from .configuration_mtgfe import PRESETS, MTGFEConfig
from .modeling_mtgfe import MTGFEForPreTraining

logger = logging.get_logger(__name__)

# ALBEF normalises with CLIP's statistics (ALBEF/Retrieval.py); the image processor must match them.
ALBEF_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
ALBEF_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

# Named text configs for `--text-config`; ALBEF's configs/config_bert.json is BERT-base uncased.
TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "bert-base": dict(PRESETS["base"]["text_config"], type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu"),
}

VISION_PREFIX = "visual_encoder."
TEXT_PREFIX = "text_encoder."

# Training-only state of ALBEF that MTGFE intentionally does not carry over.
DROPPED_PATTERNS = (
    re.compile(r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m)\."),
    re.compile(r"^(image_queue|text_queue|idx_queue|queue_ptr)$"),
    re.compile(r"^text_encoder\.embeddings\.position_ids$"),  # a deterministic buffer, rebuilt by BertEmbeddings
)

_V = "mtgfe.vision_model."
# (ALBEF regex after the text prefix is normalised to `text_encoder.`, MTGFE template). Layer rules that
# depend on the fusion split and the fused qkv are handled in `_map_key`.
KEY_MAPPING: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"^visual_encoder\.cls_token$", _V + "embeddings.cls_token"),
        (r"^visual_encoder\.pos_embed$", _V + "embeddings.position_embeddings"),
        (r"^visual_encoder\.patch_embed\.proj\.(weight|bias)$", _V + r"embeddings.patch_embeddings.projection.\1"),
        (r"^visual_encoder\.blocks\.(\d+)\.norm1\.(weight|bias)$", _V + r"layers.\1.layernorm_before.\2"),
        (r"^visual_encoder\.blocks\.(\d+)\.norm2\.(weight|bias)$", _V + r"layers.\1.layernorm_after.\2"),
        (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$", _V + r"layers.\1.attention.o_proj.\2"),
        (r"^visual_encoder\.blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)$", _V + r"layers.\1.mlp.fc\2.\3"),
        (r"^visual_encoder\.norm\.(weight|bias)$", _V + r"layernorm.\1"),
        (
            r"^text_encoder\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$",
            r"mtgfe.embeddings.\1.weight",
        ),
        (r"^text_encoder\.embeddings\.LayerNorm\.(weight|bias)$", r"mtgfe.embeddings.LayerNorm.\1"),
        (r"^text_encoder\.cls\.predictions\.bias$", "mlm_head.bias"),
        (r"^text_encoder\.cls\.predictions\.transform\.(dense|LayerNorm)\.(weight|bias)$", r"mlm_head.transform.\1.\2"),
        (r"^(vision_proj|text_proj|itm_head)\.(weight|bias)$", r"mtgfe.\1.\2"),
        (r"^temp$", "mtgfe.temp"),
    )
)
_QKV = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_TEXT_LAYER = re.compile(r"^text_encoder\.encoder\.layer\.(\d+)\.(.+)$")
# ALBEF ties the MLM decoder to the word embeddings (and its bias to `predictions.bias`); MTGFE ties them too.
_TIED_SOURCES = {
    "text_encoder.cls.predictions.decoder.weight": "text_encoder.embeddings.word_embeddings.weight",
    "text_encoder.cls.predictions.decoder.bias": "text_encoder.cls.predictions.bias",
}


@dataclass
class ConversionReport:
    """What happened to every tensor (source keys as spelled in the checkpoint).

    loaded: `{mtgfe_key: albef_key}` of the target tensors filled from the checkpoint (a qkv split fills three).
    dropped: source keys left out on purpose (momentum encoders, queues, the `position_ids` buffer).
    unplaced: source keys with no MTGFE counterpart (e.g. a BERT pooler): lost in the conversion.
    uninitialized: target keys left at their fresh initialisation (e.g. `mvjrc_head.*`, which ALBEF lacks).
    tied: target keys that share storage with a loaded tensor (MLM decoder ↔ word embeddings).
    pos_embed_grid: `(checkpoint_grid, new_grid)` of the ViT position embeddings.
    """

    checkpoint: str
    loaded: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    uninitialized: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    pos_embed_grid: tuple[int, int] | None = None

    def summary(self) -> str:
        grid = self.pos_embed_grid
        lines = [
            f"ALBEF checkpoint: {self.checkpoint}",
            f"  loaded target tensors: {len(self.loaded)}",
            f"  dropped on purpose (momentum/queues/buffers): {len(self.dropped)}",
            f"  source tensors not placed: {len(self.unplaced)}" + (f" {self.unplaced}" if self.unplaced else ""),
            f"  target tensors left uninitialised: {len(self.uninitialized)}"
            + (f" (by prefix: {_count_prefixes(self.uninitialized)})" if self.uninitialized else ""),
        ]
        if grid is not None and grid[0] != grid[1]:
            lines.append(f"  position embeddings interpolated: {grid[0]}x{grid[0]} -> {grid[1]}x{grid[1]} patches")
        return "\n".join(lines)


def _count_prefixes(keys: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:2])
        counts[prefix] = counts.get(prefix, 0) + 1
    return counts


# ----------------------------------------------------------------------------------------------- loading
def load_albef_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an ALBEF checkpoint's tensors, without executing pickled code.

    `.pth` files are read with `torch.load(weights_only=True)`: a checkpoint is a pickle, and a full
    unpickle would run whatever the file says. ALBEF's own checkpoints (`{"model": state_dict, "optimizer":
    ..., "config": dict, "epoch": int}`) only hold tensors and plain containers, so they pass. A
    `.safetensors` file is read directly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ALBEF checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"Refusing to load {path}: it is not a plain tensor checkpoint, and torch.load(weights_only=True) "
                f"rejected it ({str(error).splitlines()[0]}). Unpickling arbitrary objects can run code. If you "
                "trust the file, load it in a separate trusted session and re-save only its state dict with "
                "torch.save(checkpoint['model'], 'albef_state_dict.pth')."
            ) from error
        except (RuntimeError, EOFError) as error:
            raise ValueError(f"Cannot read {path} as a PyTorch checkpoint: {error}") from error
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__}); expected an ALBEF checkpoint.")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _validate_albef(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse anything that does not look like ALBEF, naming what is missing (text prefix already normalised)."""
    missing = []
    if not any(k.startswith(VISION_PREFIX) for k in state):
        missing.append("'visual_encoder.*' (the ViT image encoder)")
    if not any(k.startswith(TEXT_PREFIX) for k in state):
        missing.append("'text_encoder.*' (the BERT text/fusion encoder)")
    if missing:
        prefixes = sorted({k.split(".")[0] for k in state})[:12]
        raise ValueError(
            f"{source} is not an ALBEF checkpoint: it has no {' and no '.join(missing)} tensors "
            f"(top-level names found: {prefixes or 'none'})."
        )
    required = (
        "visual_encoder.cls_token",
        "visual_encoder.pos_embed",
        "visual_encoder.patch_embed.proj.weight",
        "visual_encoder.blocks.0.mlp.fc1.weight",
        "text_encoder.embeddings.word_embeddings.weight",
        "text_encoder.embeddings.position_embeddings.weight",
        "text_encoder.embeddings.token_type_embeddings.weight",
        "text_encoder.encoder.layer.0.intermediate.dense.weight",
    )
    absent = [key for key in required if key not in state]
    if absent:
        raise ValueError(f"{source} is not a complete ALBEF checkpoint: tensor(s) {absent} are missing.")


def _normalise_key(key: str) -> str:
    """`text_encoder.bert.*` (pre-training, `BertForMaskedLM`) → `text_encoder.*` (retrieval, `BertModel`)."""
    return TEXT_PREFIX + key[len("text_encoder.bert.") :] if key.startswith("text_encoder.bert.") else key


# ----------------------------------------------------------------------------------------------- config
def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_extra_tokens: int = 1) -> torch.Tensor:
    """Resize ViT position embeddings `(1, extra + g*g, D)` to a `new_grid` x `new_grid` patch grid.

    Same as ALBEF's `interpolate_pos_embed` (bicubic, `align_corners=False`, extra tokens kept), so a 256 px
    pre-training checkpoint can serve 384 px and vice versa.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim); got {tuple(pos_embed.shape)}.")
    num_patches = pos_embed.shape[1] - num_extra_tokens
    old_grid = int(round(num_patches**0.5))
    if old_grid * old_grid != num_patches:
        raise ValueError(f"pos_embed has {num_patches} patch positions, which is not a square grid.")
    if old_grid == new_grid:
        return pos_embed
    extra, patches = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    dim = pos_embed.shape[-1]
    patches = patches.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat([extra, patches], dim=1)


def _load_text_config(text_config: str | Path | Mapping | None) -> dict[str, Any]:
    if text_config is None:
        return {}
    if isinstance(text_config, Mapping):
        return dict(text_config)
    if str(text_config) in TEXT_CONFIGS:
        return dict(TEXT_CONFIGS[str(text_config)])
    path = Path(text_config)
    if not path.is_file():
        raise ValueError(
            f"--text-config {text_config!r} is neither a known name ({sorted(TEXT_CONFIGS)}) nor a JSON file."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"Text config {path} is not valid JSON: {error}") from error


def _default_heads(width: int, what: str, override: int | None) -> int:
    if override is not None:
        return int(override)
    if width % 64 == 0:
        return width // 64
    raise ValueError(
        f"Cannot infer the number of {what} attention heads for width {width} (not a multiple of 64): "
        f"pass it explicitly ({'--vision-num-heads' if what == 'vision' else '--text-num-heads or --text-config'})."
    )


def infer_config(
    state: Mapping[str, torch.Tensor],
    vision_image_size: int | None = None,
    text_config: str | Path | Mapping | None = None,
    vision_num_heads: int | None = None,
    text_num_heads: int | None = None,
    special_token_ids: Mapping[str, int] | None = None,
    source: str = "<state dict>",
) -> MTGFEConfig:
    """Build the `MTGFEConfig` an ALBEF state dict (text prefix normalised) describes.

    Shapes decide every width and count; a given `text_config` must agree with them (a disagreement names
    the field), and supplies what shapes cannot (heads, eps, activation).
    """
    cls_token = state["visual_encoder.cls_token"]
    patch_weight = state["visual_encoder.patch_embed.proj.weight"]
    pos_embed = state["visual_encoder.pos_embed"]
    vision_width, patch_size = cls_token.shape[-1], patch_weight.shape[-1]
    grid = int(round((pos_embed.shape[1] - 1) ** 0.5))
    if grid * grid != pos_embed.shape[1] - 1:
        raise ValueError(
            f"{source}: visual_encoder.pos_embed has {pos_embed.shape[1] - 1} patch positions, not a square grid."
        )
    image_size = int(vision_image_size) if vision_image_size else grid * patch_size
    if image_size % patch_size:
        raise ValueError(
            f"--vision-image-size {image_size} is not a multiple of the checkpoint's patch size {patch_size}."
        )
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"^visual_encoder\.blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError(f"{source}: visual_encoder.blocks.* indices {blocks} are not 0..N-1.")
    vision_config = dict(
        model_type="vit",
        image_size=image_size,
        patch_size=patch_size,
        num_channels=patch_weight.shape[1],
        hidden_size=vision_width,
        num_hidden_layers=len(blocks),
        num_attention_heads=_default_heads(vision_width, "vision", vision_num_heads),
        intermediate_size=state["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="visual_encoder.blocks.0.attn.qkv.bias" in state,
        layer_norm_eps=1e-6,  # timm ViT in ALBEF: partial(nn.LayerNorm, eps=1e-6)
        hidden_act="gelu",
    )

    given = _load_text_config(text_config)
    given_fusion = given.pop("fusion_layer", None)
    encoder_width = given.pop("encoder_width", None)
    for key in ("architectures", "model_type", "transformers_version", "add_cross_attention"):
        given.pop(key, None)
    words = state["text_encoder.embeddings.word_embeddings.weight"]
    layers = sorted({int(m.group(1)) for k in state if (m := _TEXT_LAYER.match(k))})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{source}: text_encoder.encoder.layer.* indices {layers} are not 0..N-1.")
    cross = sorted(
        {int(m.group(1)) for k in state if (m := _TEXT_LAYER.match(k)) and m.group(2).startswith("crossattention.")}
    )
    if not cross:
        raise ValueError(
            f"{source}: no text_encoder layer has 'crossattention.*' tensors: not an ALBEF fusion encoder."
        )
    fusion_layer = cross[0]
    if cross != list(range(fusion_layer, len(layers))):
        raise ValueError(
            f"{source}: cross-attention in layers {cross}; MTGFE needs every layer from the first fusion layer "
            f"({fusion_layer}) to the last ({len(layers) - 1}) to have it."
        )
    inferred = dict(
        vocab_size=words.shape[0],
        hidden_size=words.shape[1],
        num_hidden_layers=len(layers),
        intermediate_size=state["text_encoder.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["text_encoder.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["text_encoder.embeddings.token_type_embeddings.weight"].shape[0],
    )
    for key, value in inferred.items():
        if key in given and given[key] != value:
            raise ValueError(f"Text config says {key}={given[key]!r} but the checkpoint {source} has {key}={value!r}.")
    if given_fusion is not None and given_fusion != fusion_layer:
        raise ValueError(
            f"Text config says fusion_layer={given_fusion} but {source} has cross-attention from layer {fusion_layer}."
        )
    if encoder_width is not None and encoder_width != vision_width:
        raise ValueError(
            f"Text config says encoder_width={encoder_width} but {source} has a ViT of width {vision_width}."
        )
    text = {**given, **inferred}
    if text_num_heads is not None:
        text["num_attention_heads"] = int(text_num_heads)
    if "num_attention_heads" not in text:
        text["num_attention_heads"] = _default_heads(text["hidden_size"], "text", None)
    text.setdefault("layer_norm_eps", 1e-12)
    if vision_width != text["hidden_size"]:
        # ALBEF's cross-attention reads the ViT tokens directly (key/value: Linear(encoder_width, H)); MTGFE
        # first projects them to H, so a different width cannot be converted exactly.
        raise ValueError(
            f"{source}: ViT width {vision_width} differs from BERT width {text['hidden_size']}; only equal widths "
            "(as in every released ALBEF checkpoint) convert exactly."
        )
    embed_dim = state["vision_proj.weight"].shape[0] if "vision_proj.weight" in state else 256
    temperature = float(state["temp"]) if "temp" in state else 0.07
    specials = dict(special_token_ids or {})
    if not specials and text["vocab_size"] <= 103:
        raise ValueError(
            f"{source} has a {text['vocab_size']}-token vocabulary, too small for BERT uncased special ids "
            "([MASK]=103): pass the tokenizer (--tokenizer DIR) or special_token_ids."
        )
    return MTGFEConfig(
        vision_config=vision_config,
        text_config=text,
        fusion_layer=fusion_layer,
        embed_dim=embed_dim,
        temperature=min(max(temperature, 1e-3), 1.0),
        **specials,
    )


# ----------------------------------------------------------------------------------------------- mapping
def _map_key(key: str, fusion_layer: int) -> list[str] | None:
    """MTGFE target key(s) of one normalised ALBEF key, or None when it has no place."""
    if m := _QKV.match(key):
        block, kind = m.groups()
        return [f"{_V}layers.{block}.attention.{p}_proj.{kind}" for p in ("q", "k", "v")]
    if m := _TEXT_LAYER.match(key):
        index, rest = int(m.group(1)), m.group(2)
        if index < fusion_layer:
            return [f"mtgfe.text_encoder.{index}.{rest}"]
        return [f"mtgfe.fusion_encoder.{index - fusion_layer}.{rest}"]
    for pattern, template in KEY_MAPPING:
        if pattern.match(key):
            return [pattern.sub(template, key)]
    return None


@torch.no_grad()
def convert_albef_state_dict(
    state: Mapping[str, torch.Tensor],
    config: MTGFEConfig,
    source: str = "<state dict>",
    original_names: Mapping[str, str] | None = None,
) -> tuple[MTGFEForPreTraining, ConversionReport]:
    """Place the (prefix-normalised) ALBEF tensors into a fresh `MTGFEForPreTraining(config)`.

    `original_names` maps normalised keys back to the checkpoint's own, so the report names what the
    user's file actually contains (`text_encoder.bert.*` in pre-training checkpoints).
    """
    original_names = original_names or {}
    model = MTGFEForPreTraining(config).eval()
    target = model.state_dict()
    report = ConversionReport(checkpoint=source)
    new_state: dict[str, torch.Tensor] = {}
    grid = config.image_size // config.vision_config.patch_size

    for key in sorted(state):
        tensor = state[key]
        if any(p.match(key) for p in DROPPED_PATTERNS):
            report.dropped.append(original_names.get(key, key))
            continue
        if key in _TIED_SOURCES:
            partner = state.get(_TIED_SOURCES[key])
            if partner is not None and partner.shape == tensor.shape and torch.equal(partner, tensor):
                continue  # the MTGFE tie reproduces it
            logger.warning(
                "%s: %s differs from %s; MTGFE ties them, so it is not placed.", source, key, _TIED_SOURCES[key]
            )
            report.unplaced.append(original_names.get(key, key))
            continue
        names = _map_key(key, config.fusion_layer)
        if names is None or any(name not in target for name in names):
            report.unplaced.append(original_names.get(key, key))
            continue
        if key == "visual_encoder.pos_embed":
            old_grid = int(round((tensor.shape[1] - 1) ** 0.5))
            tensor = interpolate_pos_embed(tensor, grid)
            report.pos_embed_grid = (old_grid, grid)
        elif key == "temp":
            tensor = tensor.reshape(target[names[0]].shape)
        if len(names) == 3 and tensor.shape[0] % 3:
            raise ValueError(
                f"{source}: {key} has shape {tuple(tensor.shape)}; a fused qkv needs a first dim divisible by 3."
            )
        parts = tensor.chunk(3, dim=0) if len(names) == 3 else (tensor,)
        for name, part in zip(names, parts):
            if part.shape != target[name].shape:
                raise ValueError(
                    f"{source}: tensor {key!r} has shape {tuple(part.shape)} but MTGFE's {name!r} needs "
                    f"{tuple(target[name].shape)}."
                )
            new_state[name] = part.to(target[name].dtype).clone()
            report.loaded[name] = original_names.get(key, key)

    result = model.load_state_dict(new_state, strict=False)
    if result.unexpected_keys:  # cannot happen: every name was checked against the target
        raise RuntimeError(f"Unexpected keys while loading the converted state: {result.unexpected_keys}")
    tied = {"mlm_head.decoder.weight", "mlm_head.decoder.bias"}
    for name in sorted(set(target) - set(new_state)):
        (report.tied if name in tied else report.uninitialized).append(name)
    if report.unplaced:
        logger.warning("%s: %d source tensor(s) were not placed: %s", source, len(report.unplaced), report.unplaced)
    if report.uninitialized:
        logger.warning(
            "%s: %d MTGFE tensor(s) keep their fresh initialisation: %s",
            source,
            len(report.uninitialized),
            _count_prefixes(report.uninitialized),
        )
    logger.info("%s: dropped %d momentum/queue/buffer tensor(s) on purpose.", source, len(report.dropped))
    return model, report


def _load_tokenizer(tokenizer: str | Path | bool | None):
    if tokenizer in (None, False):
        return None
    if tokenizer is True or str(tokenizer) == "default":
        return load_default_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))


def convert_albef_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path | None = None,
    vision_image_size: int | None = None,
    text_config: str | Path | Mapping | None = None,
    vision_num_heads: int | None = None,
    text_num_heads: int | None = None,
    special_token_ids: Mapping[str, int] | None = None,
    tokenizer: str | Path | bool | None = None,
    strict: bool = False,
) -> tuple[MTGFEForPreTraining, ConversionReport]:
    """Convert an ALBEF checkpoint file; save it with `save_pretrained` (safetensors) when `output_dir` is given.

    Args:
        checkpoint: ALBEF `.pth` (optionally `{"model": state_dict, ...}`) or `.safetensors`.
        output_dir: where to save the MTGFE folder (config, weights, remote code, and a processor with a tokenizer).
        vision_image_size: input size of the converted ViT; default the checkpoint's own (256 pre-train, 384
            fine-tune). Position embeddings are bicubic-resized when it differs.
        text_config: `"bert-base"`, a JSON file (ALBEF's `config_bert.json` works) or a dict; checked against
            the tensor shapes, supplies head count and eps.
        vision_num_heads / text_num_heads: head counts (not visible in shapes); default width // 64.
        special_token_ids: `pad/cls/sep/mask_token_id` overrides; default the tokenizer's, else BERT uncased.
        tokenizer: `True`/`"default"` for the bundled BERT uncased tokenizer, a folder, or None for no processor.
        strict: raise if any source tensor could not be placed.
    """
    source = str(checkpoint)
    state = load_albef_state_dict(checkpoint)
    original_names = {_normalise_key(k): k for k in state}
    state = {_normalise_key(k): v for k, v in state.items()}
    _validate_albef(state, source)
    tok = _load_tokenizer(tokenizer)
    specials = dict(special_token_ids or {})
    if tok is not None:
        for token in ("pad_token", "cls_token", "sep_token", "mask_token"):
            specials.setdefault(f"{token}_id", tok.convert_tokens_to_ids(getattr(tok, token)))
    vocab_size = state["text_encoder.embeddings.word_embeddings.weight"].shape[0]
    if tok is not None and len(tok) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tok)} tokens but {source} embeds only {vocab_size}: "
            "ids past the table would crash; use the tokenizer the checkpoint was trained with."
        )
    config = infer_config(state, vision_image_size, text_config, vision_num_heads, text_num_heads, specials, source)
    model, report = convert_albef_state_dict(state, config, source, original_names)
    if strict and report.unplaced:
        raise ValueError(f"{source}: strict conversion failed, tensors not placed: {report.unplaced}")
    if output_dir is not None:
        output_dir = Path(output_dir)
        model.save_pretrained(output_dir)
        if tok is not None:
            size = {"height": config.image_size, "width": config.image_size}
            image_processor = MTGFEImageProcessor(size=size, image_mean=ALBEF_IMAGE_MEAN, image_std=ALBEF_IMAGE_STD)
            MTGFEProcessor(image_processor, tok).save_pretrained(output_dir)
        logger.info("Saved the converted MTGFE model to %s", output_dir)
    return model, report
