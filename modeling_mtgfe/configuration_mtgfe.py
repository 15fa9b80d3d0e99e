"""MTGFE configuration.

MTGFE is an ALBEF-style fusion encoder: a vision backbone, BERT text layers, and BERT fusion layers
with cross-attention to the image tokens. One ``BertConfig`` describes the whole text stack; the first
``fusion_layer`` layers are text-only, the rest are fusion layers (ALBEF's split of BERT-base at
layer 6). The vision side is any transformers vision config (ViT by default) or the package's own
EfficientNet-Lite.

This file travels as Hub remote code: it imports only third-party packages and single-dot siblings.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, BertConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from .configuration_efficientnet_lite import EfficientNetLiteConfig

IMAGE_POOLINGS = ("auto", "cls", "mean")
TEXT_POOLINGS = ("cls", "mean")
MVJRC_VARIANTS = ("simsiam", "infonce")
# How a search ranks its shortlist: the fusion encoder's ITM probability, ITM + alpha * filter cosine, or
# the filter cosine alone (no fusion pass). Evaluation, the pipeline, `GalleryIndex` and the CLIs all read
# the defaults from the model config (`retrieval_k`, `retrieval_score`, `retrieval_alpha`), so one saved
# model ranks the same way everywhere.
RETRIEVAL_SCORES = ("itm+itc", "itm", "filter")
# Largest `alpha` of the `itm+itc` score (ITM probability + alpha × filter cosine). Scores are float32: past
# ~3e38 alpha × cosine overflows to ±inf (and JSON gets -Infinity), and long before that the ITM term drops
# below float32 resolution, so the ranking is the filter's alone; `score="filter"` says that directly.
MAX_RETRIEVAL_ALPHA = 1e4
# 2D positions added once to the projected grid tokens of a backbone whose tokens carry none (CNN feature
# maps): `none` (today's behaviour, the class default so configs saved without the field load unchanged),
# `sine` (fixed 2D sine/cosine, any grid size) or `learned` (row + column tables, ClipBERT).
IMAGE_POSITION_EMBEDDINGS = ("none", "sine", "learned")
# How the ITM logits are read from the fused text states: `cls` (a linear head on the fused [CLS], ALBEF's; the
# class default, so configs saved without the field load unchanged) or `cls_mean_mlp` (an MLP on the fused [CLS]
# concatenated with the masked mean of the fused word states).
ITM_READOUTS = ("cls", "cls_mean_mlp")

# Loss weights and task switches: the fields a training recipe sets (`model.<name>` in a training config).
# Declared once: the type and default are the class attributes of `MTGFEConfig` below, the allowed values
# are here (`ge`/`le`: closed bounds, `choices`: allowed strings). `MTGFEConfig` checks them at construction
# and the training config builds its schema for them from this table, so the two never disagree.
TASK_FIELDS: dict[str, dict] = {
    "itc_weight": {"ge": 0.0},
    "itm_weight": {"ge": 0.0},
    "mlm_weight": {"ge": 0.0},
    "mvjrc_weight": {"ge": 0.0},
    "mvjrc_variant": {"choices": MVJRC_VARIANTS},
    "itm_random_negative_prob": {"ge": 0.0, "le": 1.0},
    "itm_perturbation_negatives": {"ge": 0.0, "le": 8.0},
    "itc_perturbation_negatives": {"ge": 0.0, "le": 8.0},
    "grounding_weight": {"ge": 0.0},
}

# Vision model types whose first output token is a [CLS] token (ALBEF reads the image [CLS]).
_CLS_VISION_TYPES = {"vit", "deit", "dinov2", "clip_vision_model", "siglip_vision_model", "beit", "vit_mae"}

_BERT_BASE = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
)
_VIT_B16_256 = dict(
    model_type="vit",
    image_size=256,
    patch_size=16,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    qkv_bias=True,
)

PRESETS: dict[str, dict] = {
    # Paper scale: ViT-B/16 + BERT-base split 6 text + 6 fusion layers (ALBEF's layout).
    "base": dict(vision_config=_VIT_B16_256, text_config=_BERT_BASE, fusion_layer=6),
    # CPU-trainable: EfficientNet-Lite0 (49..64 tokens, 1280 wide, projected to 384) + a MiniLM-L6
    # sized text side split 3 text + 3 fusion layers. Matches the offline weights in README.
    "small": dict(
        vision_config=dict(model_type="mtgfe_efficientnet_lite", image_size=256),  # defaults are Lite0
        text_config=dict(
            vocab_size=30522,
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=1536,
            max_position_embeddings=512,
        ),
        fusion_layer=3,
        mvjrc_hidden_dim=1024,
        image_position_embedding="sine",  # a CNN grid: its tokens carry no positions of their own
    ),
    # Tests: a few hundred thousand parameters besides the embedding table.
    "tiny": dict(
        vision_config=dict(
            model_type="vit",
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        text_config=dict(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        fusion_layer=2,
        embed_dim=16,
        mvjrc_dim=16,
        mvjrc_hidden_dim=32,
        mvjrc_predictor_dim=16,
    ),
}


class MTGFEConfig(PreTrainedConfig):
    r"""Configuration of an MTGFE fusion encoder.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Any transformers vision backbone config (resolved through `AutoConfig` by its `model_type`).
            Defaults to ViT-B/16 at 256 px.
        text_config (`dict` or `BertConfig`, *optional*):
            A BERT-family config describing text *and* fusion layers. Defaults to BERT-base.
        fusion_layer (`int`, defaults to 6):
            Number of text-only layers; the remaining `text_config.num_hidden_layers - fusion_layer` layers
            get cross-attention to the image and form the fusion encoder.
        embed_dim (`int`, defaults to 256): width of the filter (ITC) embeddings.
        image_pooling (`str`, defaults to `"auto"`): how the global image vector for the filter is read from
            the backbone tokens: `cls` (first token, ALBEF), `mean` (token mean; EfficientNet-Lite's own global
            pool) or `auto` (`cls` for ViT-like backbones with a [CLS] token, else `mean`). Reading it from the
            tokens (not a backbone-specific pooler) lets cached backbone tokens reproduce it exactly.
        text_pooling (`str`, defaults to `"cls"`): `cls` or `mean` over the text-layer states.
        temperature (`float`, defaults to 0.07): initial ITC temperature (learnable, clamped to [0.001, 0.5]).
        mvjrc_variant (`str`, defaults to `"simsiam"`): `simsiam` (consistency, no negatives) or `infonce`.
        mvjrc_dim, mvjrc_hidden_dim, mvjrc_predictor_dim (`int`): MVJRC projector/predictor widths.
        mvjrc_temperature (`float`, defaults to 0.1): temperature of the InfoNCE variant.
        itc_weight, itm_weight, mlm_weight, mvjrc_weight (`float`, default 1.0): loss weights. A weight of 0
            switches the task off and costs no compute.
        itc_gather (`bool`, defaults to `True`): under `torch.distributed` with several processes (DDP,
            `accelerate launch`), ITC contrasts each process's rows against the embeddings and image ids
            gathered from every process, so the negatives (and cross-process positives) are those of the
            global batch; gradients match a single process on that batch (`losses.gather_for_itc`). ITM
            hard-negative mining, MLM and MVJRC stay per process. No effect on a single process; `False`:
            per-process negatives only (the behaviour before cross-process gathering).
        mlm_probability (`float`, defaults to 0.15): share of maskable tokens masked for MLM.
        itm_random_negative_prob (`float`, defaults to 0.0): share of ITM negatives drawn uniformly instead of
            by ITC similarity. RS captions repeat within a class, so pure hard negatives are often false
            negatives (docs/METHOD.md §3.2); random ones also teach ITM the easy cases it meets at large k.
        itm_near_duplicate_overlap (`float`, *optional*): when set, a caption whose token set overlaps one of
            the image's own captions in the batch by at least this Jaccard value is never drawn as its ITM
            negative (nor is that image drawn for the caption). `None`: only identical captions are excluded.
        itm_perturbation_negatives (`float`, defaults to 0.0): expected number of extra ITM negatives per positive
            that are edited versions of its own caption (count/colour/relation/binding edits of *train* captions,
            made by the trainer's collator and passed to `forward` as `perturbed_*`). 0: off, identical to before.
        itc_perturbation_negatives (`float`, defaults to 0.0): the same edited captions used as extra ITC text
            columns, negatives for their own image only (NegCLIP-style). 0: off.
        image_position_embedding (`str`, defaults to `"none"`): 2D positions of the grid tokens, one of
            `IMAGE_POSITION_EMBEDDINGS`. A convolutional backbone's flattened feature map carries no position, and
            cross-attention is invariant to the order of its keys, so without positions the fusion layers cannot
            tell left from right. `sine`: fixed 2D sine/cosine (DETR's, normalised to the grid, so any grid size
            works); `learned`: learned row and column tables (ClipBERT), of `image_position_grid` rows and
            columns, linearly interpolated to another grid. They are added once to the projected tokens (see
            `MTGFEModel.encode_image`). `none` for backbones that carry their own positions (ViT family), and the
            default, so a config saved before the field existed loads with the behaviour it was trained with.
        image_position_grid (`list[int]`, *optional*): `[rows, cols]` of the learned tables (required by
            `learned`, e.g. `[4, 4]` for 64 px through a stride-16 ResNet, `[8, 8]` for EfficientNet-Lite0 at
            256 px); ignored otherwise.
        itm_readout (`str`, defaults to `"cls"`): how ITM logits are read from the fused text states, one of
            `ITM_READOUTS`. `cls`: `Linear(H, 2)` on the fused [CLS] (ALBEF). `cls_mean_mlp`:
            `Linear(2H, 2H) -> GELU -> Linear(2H, 2)` on the fused [CLS] concatenated with the masked mean of the
            fused states of every other real token. Why the second exists: on rendered twins (a scene and its
            mirror, or two groups swapping colours) the linear [CLS] head left the balanced swap-quad loss at
            chance in the twin-recipe probes, while the MLP over the word states, with the grounding loss and a
            larger init, learned them; a nonlinearity next to the pooled word states is what crosses "where" with
            "which word". Every ITM score (training losses, re-ranking, the pipeline, cached K/V) goes through
            `MTGFEModel.fused_itm_logits`. `cls` is the default so a config saved before the field existed loads
            with the head it was trained with.
        grounding_weight (`float`, defaults to 0.0): weight of the auxiliary grounding loss
            (`losses.grounding_loss`): fusion layer 0's cross-attention of a positive pair is pulled onto the grid
            cells of the objects each group phrase names. The targets come from the synthetic generator (rendered
            twins, `grounding_cells` in `MTGFEForPreTraining.forward`). 0: off, no extra compute.
        retrieval_k (`int`, defaults to 16): filter candidates per query that the fusion encoder re-ranks.
        retrieval_score (`str`, defaults to `"itm+itc"`): how the shortlist is ranked, one of
            `RETRIEVAL_SCORES`: `itm+itc` (ITM + alpha * filter cosine), `itm` (ITM alone) or `filter`.
        retrieval_alpha (`float`, *optional*): weight of the filter cosine in the `itm+itc` search score
            (ITM + alpha * cosine) used by the pipeline, `GalleryIndex` and `mtgfe-search` when the caller gives
            none. The trainer writes its `eval.alpha` here when `eval.score` is `itm+itc` (a value chosen by
            cross-validation in the shipped recipes); `None`: 1.0.
        pad_token_id, cls_token_id, sep_token_id, mask_token_id (`int`): special token ids of the tokenizer
            (BERT uncased defaults). MLM never masks [PAD], [CLS] or [SEP].
        tie_word_embeddings (`bool`, defaults to `True`): tie the MLM decoder to the word embeddings.
    """

    model_type = "mtgfe"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", init_kwargs=_VIT_B16_256),
        "text_config": SubConfigSpec(config_class=BertConfig, init_kwargs=_BERT_BASE),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    fusion_layer: int = 6
    embed_dim: int = 256
    image_pooling: str = "auto"
    text_pooling: str = "cls"
    temperature: float = 0.07
    mvjrc_variant: str = "simsiam"
    mvjrc_dim: int = 256
    mvjrc_hidden_dim: int = 2048
    mvjrc_predictor_dim: int = 512
    mvjrc_temperature: float = 0.1
    itc_weight: float = 1.0
    itc_gather: bool = True
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    mvjrc_weight: float = 1.0
    mlm_probability: float = 0.15
    itm_random_negative_prob: float = 0.0
    itm_near_duplicate_overlap: float | None = None
    itm_perturbation_negatives: float = 0.0
    itc_perturbation_negatives: float = 0.0
    image_position_embedding: str = "none"
    image_position_grid: list[int] | None = None
    itm_readout: str = "cls"
    grounding_weight: float = 0.0
    retrieval_k: int = 16
    retrieval_score: str = "itm+itc"
    retrieval_alpha: float | None = None
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        # The EfficientNet-Lite vision config is resolved here, not through an `AutoConfig.register` at import:
        # this file also runs as Hub remote code, and a registration from there would make transformers treat
        # the model type as local code and reuse the first revision's class for every later load.
        vision = self.vision_config
        if isinstance(vision, dict) and vision.get("model_type") == EfficientNetLiteConfig.model_type:
            self.vision_config = EfficientNetLiteConfig(**{k: v for k, v in vision.items() if k != "model_type"})
        super().__post_init__(**kwargs)
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        """Fail at construction (and at load) with a message naming the field, never later in forward."""
        # Every float first: NaN compares False with everything, so the range checks below would let it
        # through (`itm_weight=nan` trained with ITM silently off). Inlined, not mtgfe.utils.validation:
        # this file travels as Hub remote code and imports nothing of the package.
        for owner, prefix in ((self, ""), (self.text_config, "text_config."), (self.vision_config, "vision_config.")):
            for name, value in list(vars(owner).items() if owner is not None else ()):
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{prefix}{name}={value!r} must be a finite number (not nan or inf).")
        text = self.text_config
        n_layers = text.num_hidden_layers
        if not isinstance(self.fusion_layer, int) or not 1 <= self.fusion_layer < n_layers:
            raise ValueError(
                f"fusion_layer={self.fusion_layer!r} is out of range: it must be an int in [1, {n_layers - 1}] "
                f"(text_config.num_hidden_layers={n_layers}; at least one text-only and one fusion layer)."
            )
        if text.hidden_size % text.num_attention_heads:
            raise ValueError(
                f"text_config.hidden_size={text.hidden_size} is not divisible by "
                f"text_config.num_attention_heads={text.num_attention_heads}."
            )
        self.vision_hidden_size  # raises if the vision width cannot be read
        for name in ("embed_dim", "mvjrc_dim", "mvjrc_hidden_dim", "mvjrc_predictor_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int.")
        for name, allowed in TASK_FIELDS.items():
            _check_task_field(name, getattr(self, name), allowed)
        if not isinstance(self.itc_gather, bool):
            raise ValueError(f"itc_gather={self.itc_gather!r} must be a bool (True: ITC negatives from every process).")
        if not 0.0 < self.temperature <= 1.0:
            raise ValueError(f"temperature={self.temperature!r} must be in (0, 1].")
        if not 0.0 < self.mvjrc_temperature <= 1.0:
            raise ValueError(f"mvjrc_temperature={self.mvjrc_temperature!r} must be in (0, 1].")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability={self.mlm_probability!r} must be in (0, 1).")
        check_retrieval_settings(self.retrieval_k, self.retrieval_score, self.retrieval_alpha, prefix="retrieval_")
        overlap = self.itm_near_duplicate_overlap
        if overlap is not None and (not isinstance(overlap, (int, float)) or not 0.0 < overlap <= 1.0):
            raise ValueError(f"itm_near_duplicate_overlap={overlap!r} must be in (0, 1] (or None: identical captions only).")
        if self.image_pooling not in IMAGE_POOLINGS:
            raise ValueError(f"image_pooling={self.image_pooling!r}; allowed: {IMAGE_POOLINGS}.")
        self._validate_image_positions()
        if self.itm_readout not in ITM_READOUTS:
            raise ValueError(f"itm_readout={self.itm_readout!r}; allowed: {ITM_READOUTS} (how ITM logits are read "
                             "from the fused text states).")
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling={self.text_pooling!r}; allowed: {TEXT_POOLINGS}.")
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < text.vocab_size:
                raise ValueError(f"{name}={value!r} must be a token id in [0, {text.vocab_size}).")

    def _validate_image_positions(self) -> None:
        kind = self.image_position_embedding
        if kind not in IMAGE_POSITION_EMBEDDINGS:
            raise ValueError(f"image_position_embedding={kind!r}; allowed: {IMAGE_POSITION_EMBEDDINGS}.")
        model_type = getattr(self.vision_config, "model_type", "")
        if kind != "none" and model_type in _CLS_VISION_TYPES:
            raise ValueError(
                f"image_position_embedding={kind!r} is for grid backbones whose tokens carry no position; "
                f"vision_config.model_type={model_type!r} adds its own position embeddings: use 'none'."
            )
        if kind == "sine" and self.text_config.hidden_size % 4:
            raise ValueError(
                f"image_position_embedding='sine' needs text_config.hidden_size divisible by 4 (sin and cos of "
                f"rows and columns); got {self.text_config.hidden_size}."
            )
        grid = self.image_position_grid
        if isinstance(grid, tuple):
            grid = self.image_position_grid = list(grid)
        if grid is not None and not (
            isinstance(grid, list) and len(grid) == 2 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in grid)
        ):
            raise ValueError(f"image_position_grid={grid!r} must be [rows, cols], two ints >= 1 (or None).")
        if kind == "learned" and grid is None:
            raise ValueError(
                "image_position_embedding='learned' needs image_position_grid=[rows, cols], the size of its "
                "row/column tables (the backbone's feature-map size at the training resolution)."
            )

    # ------------------------------------------------------------------ derived values
    @property
    def vision_hidden_size(self) -> int:
        """Width of the vision backbone's output tokens (projected to the text width when different)."""
        vision = self.vision_config
        width = getattr(vision, "hidden_size", None)
        if width is None and getattr(vision, "hidden_sizes", None):
            width = vision.hidden_sizes[-1]
        if not isinstance(width, int) or width < 1:
            raise ValueError(
                f"Cannot bridge vision_config (model_type={getattr(vision, 'model_type', '?')!r}) to the text width: "
                "it has neither `hidden_size` nor `hidden_sizes`."
            )
        return width

    @property
    def num_fusion_layers(self) -> int:
        return self.text_config.num_hidden_layers - self.fusion_layer

    @property
    def resolved_image_pooling(self) -> str:
        if self.image_pooling != "auto":
            return self.image_pooling
        return "cls" if getattr(self.vision_config, "model_type", "") in _CLS_VISION_TYPES else "mean"

    @property
    def image_size(self) -> int:
        size = getattr(self.vision_config, "image_size", 256)
        return size[0] if isinstance(size, (list, tuple)) else int(size)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MTGFEConfig":
        """Build one of the named presets (`base`, `small`, `tiny`); keyword overrides win.

        `vision_config` / `text_config` overrides given as dicts are merged into the preset's dicts, so
        `from_preset("small", text_config={"vocab_size": 3000})` changes only the vocabulary. A
        `vision_config` naming another `model_type` (e.g. `resnet` in place of the tiny preset's ViT) replaces
        the preset's dict instead: ViT fields such as `hidden_size` would otherwise ride along and misstate
        the other backbone's width.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown MTGFE preset {name!r}; allowed: {sorted(PRESETS)}.")
        kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()}
        for key, value in overrides.items():
            preset = kwargs.get(key)
            mergeable = key in ("vision_config", "text_config") and isinstance(value, dict) and isinstance(preset, dict)
            if mergeable and (key == "text_config"
                              or value.get("model_type", preset.get("model_type")) == preset.get("model_type")):
                kwargs[key] = {**preset, **value}
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _check_task_field(name: str, value, allowed: dict) -> None:
    """One `TASK_FIELDS` entry: a string among `choices`, or a real number within `ge`/`le` (bools refused)."""
    if "choices" in allowed:
        if value not in allowed["choices"]:
            raise ValueError(f"{name}={value!r}; allowed: {allowed['choices']}.")
        return
    low, high = allowed.get("ge"), allowed.get("le")
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or (low is not None and value < low)
            or (high is not None and value > high)):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={value!r} must be a number {bounds} (0 switches it off).")


# ----------------------------------------------------------------------------------------------- retrieval settings
def check_retrieval_settings(k, score, alpha, prefix: str = "") -> None:
    """Raise a ValueError naming the argument unless `k` is an int >= 1, `score` one of `RETRIEVAL_SCORES` and
    `alpha` None or a finite real >= 0 (NaN passes every comparison, so finiteness is checked first; bools and
    strings such as "nan" are refused before any `float()`). `prefix` names the fields (`retrieval_` in the
    model config)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{prefix}k must be a positive integer, got {k!r}.")
    if score not in RETRIEVAL_SCORES:
        raise ValueError(f"{prefix}score must be one of {RETRIEVAL_SCORES}, got {score!r}.")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not math.isfinite(alpha) or alpha < 0):
        raise ValueError(f"{prefix}alpha must be a finite number >= 0 (or None: 1.0), got {alpha!r}.")
    if alpha is not None and alpha > MAX_RETRIEVAL_ALPHA:
        raise ValueError(f"{prefix}alpha={alpha!r} is over {MAX_RETRIEVAL_ALPHA:g}: the ITM term would vanish below "
                         "float32 resolution (and scores overflow); use score='filter' for the filter ranking alone.")


def resolve_retrieval_settings(config, k: int | None = None, score: str | None = None,
                               alpha: float | None = None) -> tuple[int, str, float]:
    """`(k, score, alpha)` for a search or an evaluation: what the caller gave, else the model config's
    `retrieval_k` / `retrieval_score` / `retrieval_alpha`, validated (`check_retrieval_settings`).

    The one place these defaults are resolved, so a saved model ranks the same way in the pipeline,
    `GalleryIndex.search`, `mtgfe-search` and `mtgfe-eval` (the trainer writes the settings its run was
    selected with). A config without the fields (foreign or older, or `None`) gets `MTGFEConfig`'s defaults.
    `alpha` left `None`: the config's `retrieval_alpha` (None there: 1.0) for `itm+itc`, and 0.0 for the
    scores without a cosine term (`itm`, `filter`), where it has no effect.
    """
    if k is None:
        k = getattr(config, "retrieval_k", None) or MTGFEConfig.retrieval_k
    if score is None:
        score = getattr(config, "retrieval_score", None) or MTGFEConfig.retrieval_score
    if alpha is None and score == "itm+itc":
        alpha = getattr(config, "retrieval_alpha", None)
        alpha = 1.0 if alpha is None else alpha
    check_retrieval_settings(k, score, alpha)
    return k, score, 0.0 if alpha is None else float(alpha)


__all__ = ["IMAGE_POSITION_EMBEDDINGS", "ITM_READOUTS", "MAX_RETRIEVAL_ALPHA", "MTGFEConfig", "PRESETS", "TASK_FIELDS",
           "check_retrieval_settings", "resolve_retrieval_settings"]
