"""The training config schema: every field's type, default, allowed range or choices and doc, in one place.

Each section is a pydantic model; a field's docstring (the string literal under it) is its documentation
(`use_attribute_docstrings`), its `Field(...)` bounds or `Literal` choices its allowed values. The rules
that relate several fields (the model source, batch size vs captions per image, the backbone cache vs
freezing, ...) are the `TrainConfig` model validator at the end. `config.py` reads files, applies
`extends:` and `--set`, and turns pydantic's errors into a `ConfigError`.

Why pydantic v2 and not dataclasses + a validation library, nor OmegaConf: pydantic converts YAML/CLI
values to the declared types (lax mode: `"1e-4"` for a float, `"true"` for a bool), refuses unknown keys
(`extra="forbid"`), checks bounds and choices declared on the field, refuses NaN/inf for every float
(`allow_inf_nan=False`) and reports *all* errors with their path, which is what the hand-written
`_coerce`/`_build`/`validate` did, in one declaration per field. Dataclasses would still need that
validation layer (a second place per field); OmegaConf types values and merges files but has no ranges,
choices or cross-field rules, so the checks would stay hand-written. The loss and task fields are not
declared here: they are `MTGFEConfig`'s (`TASK_FIELDS`), and the `model` section is built from that table.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import typing
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from modeling_mtgfe.configuration_mtgfe import MAX_RETRIEVAL_ALPHA, PRESETS, RETRIEVAL_SCORES, TASK_FIELDS, MTGFEConfig

from mtgfe.data import registry as benchmarks
from mtgfe.data import views
from mtgfe.evaluation.metrics import RECALL_KEYS

from .perturbation import PERTURBATION_SOURCES
from .synthetic_twins import TWIN_TYPES


BENCHMARK_DATASETS = tuple(benchmarks.BENCHMARKS)  # the one benchmark registry: ucm, sydney, rsicd, rsitmd
DATASETS = (*BENCHMARK_DATASETS, "synthetic", "jsonl")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
SELECTION_METRICS = ("mR", *(key for key in RECALL_KEYS if key != "mR"))  # the report's keys, mR first
LOSS_NAMES = ("itc", "itm", "mlm", "mvjrc")
TOKENIZER_CHOICES = ("default", "wordpiece")
CACHE_DTYPES = ("float16", "bfloat16", "float32")
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A training configuration is invalid; the message names the key, the value and the source file."""


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file by path, else by name among the shipped configs (`synthetic_tiny`, `ucm_fusion.yaml`).

    Here rather than in config.py because a schema rule needs it too (`model.pretrained_recipe` must name
    an existing config).
    """
    file = Path(path)
    if file.is_file():
        return file
    for candidate in (SHIPPED_CONFIGS / file.name, SHIPPED_CONFIGS / f"{file.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))
    raise ConfigError(f"config file {path} does not exist (shipped configs: {available})")


def did_you_mean(key: str, choices, prefix: str = "") -> str:
    """`"; did you mean 'a' or 'b'?"` for the close matches of `key` among `choices` (empty when none)."""
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""


class Section(BaseModel):
    """Shared behaviour of every section: unknown keys refused, numbers from YAML/CLI strings converted
    (a `str` field takes `123` as "123"), NaN and inf refused for every float, field docstrings as docs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True,
                              use_attribute_docstrings=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info):
        """Lax mode would read `true` as 1 in a number field; a weight or a step count is never a yes/no."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            kinds = {annotation, *typing.get_args(annotation)}
            if bool not in kinds and kinds & {int, float}:
                raise ValueError("is a boolean, not a number")
        return value


# ------------------------------------------------------------------------------------------ model
class InitConfig(Section):
    """Backbones for `MTGFEForPreTraining.from_vision_text_pretrained` (offline names or folders)."""

    vision: str = Field("efficientnet-lite0", min_length=1)
    """Vision backbone: an offline name or a folder."""
    text: str = Field("minilm-l6", min_length=1)
    """Text backbone: an offline name or a folder."""


class _ModelSource(Section):
    """Which model to train.

    Exactly one source of weights: `preset` alone (random init), `init` (pretrained backbones; a
    `preset` given beside it supplies the non-backbone fields such as `fusion_layer`, `embed_dim` and
    the MVJRC widths), or `pretrained` (a saved MTGFE folder, e.g. to fine-tune a checkpoint).
    The loss weights and task switches (`TASK_FIELDS` of the model config: `itc_weight`, ...,
    `mvjrc_variant`, `itm_perturbation_negatives`) are fields of this section too, built from the model
    config's declaration; any other `MTGFEConfig` field goes in `config` (e.g. `{embed_dim: 128}`).
    """

    preset: Optional[Literal[tuple(PRESETS)]] = None  # type: ignore[valid-type]
    """A named `MTGFEConfig` preset (`base`, `small`, `tiny`)."""
    init: Optional[InitConfig] = None
    """Pretrained backbones to start from."""
    pretrained: Optional[str] = None
    """A saved MTGFE folder to start from."""
    perturbation_source: Literal[PERTURBATION_SOURCES] = "edits"  # type: ignore[valid-type]
    """Where the perturbation negatives come from: `edits` (rule edits of the caption), `pairs` (partner
    captions of other train images, blind-proof), `pairs+edits` (training/perturbation.py)."""
    fusion_layer: Optional[int] = None
    """Text-only layers below the fusion layers (the model config checks it against the text depth)."""
    num_fusion_layers: Optional[int] = Field(None, ge=1)
    """With `init`: the fusion stack is built from this many top text layers (see from_vision_text_pretrained)."""
    pretrained_recipe: Optional[str] = None
    """Two-stage recipes: the shipped config that produces `pretrained` (which must then be `<that run's
    output_dir>/final`); mtgfe-train trains it first when the folder does not exist yet."""
    linear_init_std: Optional[float] = Field(None, gt=0.0)
    """Training from scratch (`preset`) only: initialise the weights of every `nn.Linear` of the text and fusion
    layers (self- and cross-attention, FFN) from N(0, std), biases 0, instead of BERT's 0.02
    (`text_config.initializer_range`); embeddings, projections and heads keep their init. Why: in the
    twin-recipe probes (width 96, 4 layers) the balanced swap-quad loss of mirrored twins stayed at ln 2 at
    0.02 and left it at 0.08: at 0.02 the cross-attention is near-uniform (a permutation-symmetric summary of
    the grid, blind to position) and the FFN's GELU near-linear, so the product of attention sharpness,
    position and nonlinearity that a mirror twin needs starts at ~0. `text_config.initializer_range` would also
    scale the embeddings and heads, which was not measured. Pretrained weights (`init`, `pretrained`) bring
    their own scale: refused with them. null: the preset's init."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Any other `MTGFEConfig` field, passed to the model config as given."""

    @field_validator("config")
    @classmethod
    def _known_model_fields(cls, value: dict) -> dict:
        known = {f.name for f in dataclasses.fields(MTGFEConfig)}
        for key in value:
            if key in ModelConfig.model_fields:
                raise ValueError(f"model.config.{key}: set it as model.{key} instead")
            if key not in known:
                raise ValueError(f"model.config.{key} is not an MTGFEConfig field{did_you_mean(key, known, 'model.config.')}")
        return value


def _task_field(name: str) -> tuple[Any, Any]:
    """(annotation, Field) of one `TASK_FIELDS` entry: `MTGFEConfig`'s default and type, the table's bounds."""
    default, allowed = getattr(MTGFEConfig, name), TASK_FIELDS[name]
    if "choices" in allowed:
        return Literal[tuple(allowed["choices"])], Field(default)
    return type(default), Field(default, **allowed)


ModelConfig = create_model("ModelConfig", __base__=_ModelSource, __module__=__name__,
                           **{name: _task_field(name) for name in TASK_FIELDS})
ModelConfig.__doc__ = _ModelSource.__doc__


# ------------------------------------------------------------------------------------------ freeze
class FreezeConfig(Section):
    """Parameter freezing: cheaper CPU steps, and protects pretrained backbones early in fine-tuning.
    Text freezing covers the embeddings (hence the tied MLM decoder) and the text-only layers."""

    vision: bool = False
    """Freeze the vision backbone."""
    text: bool = False
    """Freeze the text embeddings and text-only layers."""
    unfreeze_after_steps: Optional[int] = Field(None, ge=1)
    """Unfreeze what `vision`/`text` froze after this many optimizer steps (null: never)."""
    batchnorm_stats: Optional[bool] = None
    """Keep EfficientNet's BatchNorm running statistics frozen (eval-mode BN): small single-domain batches
    would otherwise overwrite the ImageNet statistics and make an image's features depend on its batch
    mates. null: frozen when the backbone is pretrained (`model.init` / `model.pretrained`)."""


# ------------------------------------------------------------------------------------------ data
class TwinsConfig(Section):
    """Rendered twins of the synthetic *training* scenes as balanced swap quads (`training.synthetic_twins`).

    They enter batches through `model.perturbation_source: twins`, at the rate of
    `model.itm_perturbation_negatives` (ITM) / `model.itc_perturbation_negatives` (NegCLIP ITC columns).
    """

    types: list[Literal[TWIN_TYPES]] = Field(default_factory=list)  # type: ignore[valid-type]
    """Which attribute a twin changes, any of count, colour, spatial, binding, near, side (empty: off)."""
    per_scene: int = Field(1, ge=1)
    """Distinct twins per scene and type."""
    seed: int = 0
    """The twins' own draw (which group, which colour), apart from the scenes' seed."""


class SyntheticConfig(Section):
    """Size of the procedural dataset (`mtgfe.data.synthetic`)."""

    train_scenes: Optional[int] = Field(None, ge=1)
    """Training scenes (null: the generator's default split size)."""
    val_scenes: Optional[int] = Field(None, ge=1)
    """Validation scenes (null: the generator's default split size)."""
    seed: int = 0
    """Seed of the generator."""
    render_size: int = Field(128, ge=16)
    """Rendered image side in pixels."""
    train_placeless_focus: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a one-group training caption leaves out its ground or water ("a yellow car parked",
    `synthetic.describe_scene`); the validation split keeps the generator's captions."""
    twins: TwinsConfig = Field(default_factory=TwinsConfig)
    """Rendered training twins (off unless `types` is set)."""


class BackboneCacheConfig(Section):
    """Frozen-backbone token cache (`mtgfe.training.backbone_cache`): the CPU-feasible recipe.

    With `freeze.vision: true` the vision backbone's tokens of an image never change, yet computing
    them is most of a training step on a CPU (EfficientNet-Lite0 ~11 ms/image). So each training image
    is encoded once, before training, as slot 0 = the plain resized image (the evaluation view) plus
    `num_views` augmented views drawn with the MVJRC view policy (`views.mvjrc`) from a generator seeded
    by (`seed`, image, slot). Every epoch each sample picks one slot for the ITM/MLM/ITC view and a
    different slot for the second MVJRC view, as a function of (run seed, epoch, index), so resume stays
    exact. The cache file in `dir` is keyed by a hash of the images, size, view policy, `num_views`, `seed`
    and the backbone weights, so runs with different seeds and ablations share it.
    """

    enabled: bool = False
    """Use the cache (needs `freeze.vision: true`)."""
    num_views: int = Field(4, ge=1)
    """Augmented views per image besides the plain one (MVJRC needs two distinct views)."""
    dtype: Literal[CACHE_DTYPES] = "float16"  # type: ignore[valid-type]
    """Storage type (float16 halves the RAM; tokens are cast to the model dtype when a batch is built)."""
    dir: Optional[str] = None
    """Folder of the cache files (null: under output_dir)."""
    seed: int = Field(0, ge=0)
    """The cache's own seed (not the run's), so runs with different seeds can share one cache."""
    batch_size: int = Field(32, ge=1)
    """Images per backbone batch while the cache is built."""


class CVConfig(Section):
    """k-fold cross-validation over train + val (`folds: null` = the plain train/val split).

    Why: UCM's 210 val images (~1,050 captions) cannot resolve mR differences below ~1-2 points, so
    selection (configs, alpha, epochs) on val is noise. With `folds: k` the pool of train + val images
    (the test split is never pooled) is sorted by file name in natural order (`1.tif, 2.tif, ..., 10.tif`:
    UCM's class-contiguous numbering then spreads every class evenly) and the image at sorted position p
    gets fold p % k. The run trains on the other folds and evaluates (in-loop eval, `best/`, eval JSON) on
    fold `fold`; `cv_folds.json` in `output_dir` lists both roles. A 3-fold CV of a config, then the summary:
        for f in 0 1 2; do mtgfe-train --config ucm_small --set data.cv.folds=3 --set data.cv.fold=$f \\
            --set output_dir=outputs/cv/ucm_small_f$f; done
        mtgfe-cv outputs/cv/ucm_small_f*            # mean ± std over folds (`--json FILE` writes it)
    """

    folds: Optional[int] = Field(None, ge=2)
    """Number of folds (null: no cross-validation)."""
    fold: int = Field(0, ge=0)
    """The held-out fold, in [0, folds - 1]."""


class DataConfig(Section):
    """Where the captions come from and how they are turned into batches."""

    dataset: Literal[DATASETS] = "synthetic"  # type: ignore[valid-type]
    """A registered benchmark, `synthetic` (procedural scenes) or `jsonl` (your own caption files)."""
    data_dir: Optional[str] = None
    """Folder of a benchmark's annotations and images (null: the default data folder)."""
    image_dir: Optional[str] = None
    """Folder the image paths of the caption files are relative to."""
    train_file: Optional[str] = None
    """`jsonl`: the training captions (JSONL or CSV)."""
    val_file: Optional[str] = None
    """`jsonl`: the validation captions."""
    train_split: str = "train"
    """Split trained on."""
    val_split: str = "val"
    """Split evaluated on during training."""
    image_size: int = Field(256, ge=16)
    """Side of the training and evaluation views in pixels."""
    max_length: int = Field(40, ge=3)
    """Caption tokens, [CLS] and [SEP] included."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes."""
    captions_per_image: Optional[int] = Field(1, ge=1)
    """Captions drawn per image and epoch: 1 trains on each image once per epoch (UCM: 1,680 steps' worth
    of images instead of 8,400 captions), k draws up to k distinct captions, null uses every caption. The
    draw depends only on (seed, epoch, image): the same after a resume and on any number of processes."""
    tokenizer: str = "default"
    """`default` (BERT uncased, matches MiniLM), `wordpiece` (trained on the training captions) or a saved
    tokenizer folder."""
    tokenizer_vocab_size: int = Field(1000, gt=5)
    """Vocabulary size of a `wordpiece` tokenizer (more than the 5 special tokens)."""
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    backbone_cache: BackboneCacheConfig = Field(default_factory=BackboneCacheConfig)
    cv: CVConfig = Field(default_factory=CVConfig)

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_exists(cls, value: str) -> str:
        if value not in TOKENIZER_CHOICES and not Path(value).exists():
            raise ValueError(f"is neither one of {list(TOKENIZER_CHOICES)} nor an existing folder")
        return value

    @field_validator("image_dir")
    @classmethod
    def _image_dir_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_dir():
            raise ValueError("is not a folder")
        return value


# ------------------------------------------------------------------------------------------ views
class ViewsConfig(Section):
    """Training augmentation (`mtgfe.data.views`, docs/METHOD.md §4).

    The base view doubles as MVJRC view 1 (the model reuses its fusion pass), so MVJRC costs one extra
    view. The view size is `data.image_size`.
    """

    augment: bool = True
    """`false` replaces the base view by a plain resize (the second MVJRC view stays random: it is what
    the task is about)."""
    base: dict[str, Any] = Field(default_factory=dict)
    """The ITM/MLM view (`BaseTransform`: scale, ratio, hflip, interpolation), passed through as given."""
    mvjrc: dict[str, Any] = Field(default_factory=dict)
    """The second MVJRC view (`ViewConfig` fields: rescale, colour jitter, rot90, flips, ...)."""


# ------------------------------------------------------------------------------------------ optimisation
class OptimConfig(Section):
    """AdamW. Models built from a preset are all fresh and train at `lr`."""

    lr: float = Field(1e-5, gt=0.0)
    """Peak learning rate (of the pretrained parameters when `head_lr` is set)."""
    head_lr: Optional[float] = Field(5e-5, gt=0.0)
    """Peak lr of parameters that start fresh on top of pretrained backbones (cross-attention, projections,
    ITM/MLM/MVJRC heads, temperature): they need a larger step than the backbones (ALBEF fine-tuning: 1e-5
    backbone). null: `lr`."""
    weight_decay: float = Field(0.02, ge=0.0)
    """AdamW weight decay (never on biases, norms, embedding tables, the temperature)."""
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)
    """AdamW's two betas, each in [0, 1)."""
    eps: float = Field(1e-8, gt=0.0)
    """AdamW epsilon."""
    max_grad_norm: Optional[float] = Field(1.0, gt=0.0)
    """Gradient clipping norm (null: no clipping)."""

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, value: list[float]) -> list[float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError("must be two numbers in [0, 1)")
        return value


class ScheduleConfig(Section):
    """Linear warm-up then cosine decay. Every parameter group decays to the same fraction
    (`min_lr / optim.lr`) of its own peak."""

    warmup_steps: Optional[int] = Field(None, ge=0)
    """Warm-up optimizer steps; wins over `warmup_ratio`."""
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Warm-up as a share of the run's optimizer steps."""
    min_lr: float = Field(1e-6, ge=0.0)
    """Floor of the `optim.lr` group, in [0, optim.lr]."""


# ------------------------------------------------------------------------------------------ eval / checkpoints / log
class EvalConfig(Section):
    """Retrieval evaluation on the validation split during training and best-checkpoint selection. The
    trainer writes `k`, `score` and `alpha` into the saved model config (`retrieval_*`): the search
    defaults of the model."""

    every: int = Field(0, ge=0)
    """Optimizer steps between evaluations (0: none during training)."""
    at_end: bool = True
    """Also evaluate after the last step."""
    k: int = Field(MTGFEConfig.retrieval_k, ge=1)
    """The filter's top-k: the fusion model re-ranks k candidates per query."""
    exhaustive: bool = False
    """Fuse every (image, caption) pair: the no-filter baseline."""
    score: Literal[RETRIEVAL_SCORES] = "itm"  # type: ignore[valid-type]
    """How the shortlist is ranked: `itm`, `itm+itc` (ITM + alpha * cosine) or `filter`."""
    alpha: float = Field(0.0, ge=0.0, le=MAX_RETRIEVAL_ALPHA)
    """Weight of the cosine with `score: itm+itc` (at most `MAX_RETRIEVAL_ALPHA`: beyond it the ITM term vanishes)."""
    batch_size: int = Field(32, ge=1)
    """Images per encoding batch."""
    max_images: Optional[int] = Field(None, ge=2)
    """Evaluate on the first N validation images, to bound the cost of in-loop evaluation (null: all)."""
    selection_metric: Literal[SELECTION_METRICS] = "mR"  # type: ignore[valid-type]
    """The metric that picks `best/`."""
    filter_only: bool = False
    """Rank by the ITC cosine alone (no fusion): selection for dual-encoder (ITC-only) runs."""
    alpha_sweep: Optional[list[float]] = Field(None, min_length=1)
    """With `score: itm`, also report ITM + a * cosine for each a >= 0 (same candidates, one fusion pass):
    how alpha is chosen by cross-validation (data.cv) instead of on the small val split."""

    @field_validator("alpha_sweep")
    @classmethod
    def _non_negative(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not 0 <= a <= MAX_RETRIEVAL_ALPHA for a in value):
            raise ValueError(f"must be a non-empty list of numbers >= 0 and <= {MAX_RETRIEVAL_ALPHA:g}")
        return value


class CheckpointConfig(Section):
    """Resumable checkpoints (`accelerator.save_state` + a small JSON of the loop position). A resume checks
    the checkpoint first: it must be this run's (same run identity) and every file intact (sizes + sha256
    recorded at save)."""

    save_every: int = Field(0, ge=0)
    """Optimizer steps between checkpoints (0: only at the end, when `save_last`)."""
    save_last: bool = True
    """Write a checkpoint after the last step."""
    keep_last: Optional[int] = Field(2, ge=1)
    """Most recent `checkpoint-*` folders kept (null: all)."""
    resume_from: Optional[str] = None
    """A checkpoint folder, or `latest` (the newest `checkpoint-*` in `output_dir`; from scratch when none)."""
    allow_inexact_resume: bool = False
    """A damaged RNG state then only warns and the run continues, no longer bit-identical to an
    uninterrupted one."""

    @field_validator("resume_from")
    @classmethod
    def _checkpoint_folder(cls, value: str | None) -> str | None:
        if value not in (None, "latest") and not Path(value).is_dir():
            raise ValueError("is not a checkpoint folder (or use 'latest')")
        return value


class LogConfig(Section):
    """`metrics.jsonl` is always written."""

    every: int = Field(1, ge=1)
    """Optimizer steps between log lines."""
    tensorboard: Optional[bool] = None
    """Also log to TensorBoard (null: when installed)."""
    sample_ids: bool = False
    """Add the dataset indices of every step to the log (used to check the data order)."""
    progress_bar: bool = True
    """Show a progress bar."""

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, value: bool | None) -> bool | None:
        if value and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("is set but tensorboard is not installed (pip install tensorboard)")
        return value


# ------------------------------------------------------------------------------------------ the run
class TrainConfig(Section):
    """One training run. Sections: model, freeze, data, views, optim, schedule, eval, checkpoint, log.

    The effective batch is `batch_size * grad_accum * num_processes`.
    """

    output_dir: str = Field("outputs/mtgfe", min_length=1)
    """Where checkpoints, `final/`, `best/` and `metrics.jsonl` go."""
    seed: int = Field(42, ge=0)
    """Seed of the run (data order, initialisation, augmentation)."""
    batch_size: int = Field(8, ge=2)
    """Pairs per process and micro-batch: ITC/ITM need at least 2 pairs, MVJRC's BatchNorm heads more than one row."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    epochs: int = 1
    """Epochs to train (>= 1 unless `max_steps` is set)."""
    max_steps: Optional[int] = Field(None, ge=1)
    """Optimizer steps to train; wins over `epochs`."""
    mixed_precision: Literal[MIXED_PRECISIONS] = "no"  # type: ignore[valid-type]
    """accelerate's mixed precision."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more time)."""
    num_threads: Optional[int] = Field(None, ge=1)
    """torch intra-op threads per process (null: torch's default). On a CPU shared with other jobs, 1 avoids
    OpenMP oversubscription, which was measured to slow small models ~10x."""
    overwrite: bool = False
    """A fresh run refuses an `output_dir` that holds another run; `true` removes that run's artefacts first
    (and logs what it removed)."""
    model: ModelConfig = Field(default_factory=ModelConfig)  # type: ignore[valid-type]
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {name: getattr(self.model, f"{name}_weight") for name in LOSS_NAMES}

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "TrainConfig":
        """Every rule that relates several fields; all of their problems are reported together."""
        problems = [problem for rule in CROSS_FIELD_RULES for problem in rule(self)]
        if problems:
            raise ValueError("\n".join(problems))
        return self


# ------------------------------------------------------------------------------------------ cross-field rules
# Each rule yields one message per problem, naming the keys and values involved.
def _model_source(cfg: TrainConfig) -> Iterator[str]:
    m = cfg.model
    if m.preset is None and m.init is None and m.pretrained is None:
        yield "model needs one of model.preset (e.g. 'tiny'), model.init {vision, text} or model.pretrained"
    if m.pretrained is not None and (m.preset is not None or m.init is not None):
        yield "model.pretrained loads a saved MTGFE model: do not combine it with model.preset/model.init"
    if m.pretrained_recipe is not None:
        if m.pretrained is None or Path(m.pretrained).name != "final":
            yield (f"model.pretrained_recipe={m.pretrained_recipe!r} needs model.pretrained=<its output_dir>/final, "
                   f"got model.pretrained={m.pretrained!r}")
        try:
            resolve_config_path(m.pretrained_recipe)
        except ConfigError as error:
            yield f"model.pretrained_recipe={m.pretrained_recipe!r}: {error}"
    elif m.pretrained is not None and not Path(m.pretrained).is_dir():
        yield (f"model.pretrained={m.pretrained!r} is not a folder (a saved MTGFE model; for the two-stage "
               "UCM recipe train stage 1 first: mtgfe-train --config ucm_dual_finetune)")
    if m.linear_init_std is not None and (m.init is not None or m.pretrained is not None):
        yield (f"model.linear_init_std={m.linear_init_std} re-initialises the text and fusion layers of a model "
               "trained from scratch (model.preset); it would overwrite the weights of model.init / "
               "model.pretrained: drop one of the two")
    if m.num_fusion_layers is not None and m.init is None:
        yield (f"model.num_fusion_layers={m.num_fusion_layers} needs model.init (it decides which pretrained text "
               "layers start the fusion stack); a preset or saved model fixes its layers itself")
    if cfg.data.tokenizer == "wordpiece" and (m.init is not None or m.pretrained is not None):
        yield ("data.tokenizer=wordpiece builds a new vocabulary, which does not match pretrained text weights "
               "(model.init / model.pretrained); use data.tokenizer=default or a saved tokenizer folder")


def _tasks(cfg: TrainConfig) -> Iterator[str]:
    m, weights = cfg.model, cfg.loss_weights
    if not any(w > 0 for w in weights.values()):
        yield "every loss weight is 0 (model.itc/itm/mlm/mvjrc_weight): nothing to train"
    if m.itm_perturbation_negatives > 0 and m.itm_weight == 0:
        yield "model.itm_perturbation_negatives > 0 needs model.itm_weight > 0 (they are ITM negatives)"
    if m.itc_perturbation_negatives > 0 and m.itc_weight == 0:
        yield "model.itc_perturbation_negatives > 0 needs model.itc_weight > 0 (they are ITC columns)"
    d = cfg.data
    if m.itm_weight > 0 and d.captions_per_image is not None and cfg.batch_size <= d.captions_per_image:
        yield (f"batch_size={cfg.batch_size} with data.captions_per_image={d.captions_per_image}: a batch may hold "
               "a single image, and ITM hard negatives need at least 2 distinct images per batch; use "
               f"batch_size >= {d.captions_per_image + 1}")


def _free_mappings_are_finite(cfg: TrainConfig) -> Iterator[str]:
    """NaN/inf in the pass-through mappings (`model.config`, `views.*`), which no field type covers."""
    for prefix, mapping in (("model.config", cfg.model.config), ("views.base", cfg.views.base),
                            ("views.mvjrc", cfg.views.mvjrc)):
        for key, number in _floats(mapping, prefix):
            if not math.isfinite(number):
                yield f"{key}={number!r} must be a finite number (not nan or inf)"


def _floats(node, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _floats(value, f"{prefix}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _floats(value, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node


def _data(cfg: TrainConfig) -> Iterator[str]:
    d, cv = cfg.data, cfg.data.cv
    if d.dataset == "jsonl":
        if not d.train_file:
            yield "data.dataset=jsonl needs data.train_file (a JSONL/CSV caption file)"
        for key in ("train_file", "val_file"):
            value = getattr(d, key)
            if value and not Path(value).is_file():
                yield f"data.{key}={value!r} does not exist"
    if d.dataset in BENCHMARK_DATASETS and d.data_dir is not None and not Path(d.data_dir).is_dir():
        yield f"data.data_dir={d.data_dir!r} is not a folder"
    if cv.folds is not None:
        if cv.fold >= cv.folds:
            yield f"data.cv.fold={cv.fold} must be in [0, {cv.folds - 1}] (data.cv.folds={cv.folds})"
        if d.dataset == "jsonl" and not (d.train_file and d.val_file):
            yield ("data.cv pools the train and val captions: data.dataset=jsonl needs data.train_file and "
                   f"data.val_file (got val_file={d.val_file!r})")
        if d.train_split == d.val_split or (d.dataset != "jsonl" and "test" in (d.train_split, d.val_split)):
            yield (f"data.cv pools two distinct non-test splits; got data.train_split={d.train_split!r}, "
                   f"data.val_split={d.val_split!r}")
    elif cv.fold != 0:
        yield f"data.cv.fold={cv.fold} is set but data.cv.folds is null"


def _freezing_and_cache(cfg: TrainConfig) -> Iterator[str]:
    f, bc = cfg.freeze, cfg.data.backbone_cache
    if f.unfreeze_after_steps is not None and not (f.vision or f.text):
        yield "freeze.unfreeze_after_steps is set but neither freeze.vision nor freeze.text is true"
    if not bc.enabled:
        return
    if not f.vision:
        yield ("data.backbone_cache.enabled=true needs freeze.vision=true: cached backbone tokens are only "
               "valid while the vision backbone does not change")
    if f.unfreeze_after_steps is not None:
        yield (f"data.backbone_cache.enabled=true with freeze.unfreeze_after_steps={f.unfreeze_after_steps}: the "
               "cache would go stale when the vision backbone is unfrozen; drop one of the two")
    if cfg.views.base:
        yield (f"views.base {sorted(cfg.views.base)} is ignored with data.backbone_cache.enabled=true "
               "(cached views use the views.mvjrc policy); remove views.base")
    if cfg.views.mvjrc.get("skip_geometric_for_direction_words"):
        yield ("views.mvjrc.skip_geometric_for_direction_words needs the caption, but cached views are "
               "drawn per image (data.backbone_cache.enabled=true); set it to false")


def _views(cfg: TrainConfig) -> Iterator[str]:
    """The augmentation policy: build the transforms once (cheap, PIL only) so a bad policy fails now."""
    for section in ("base", "mvjrc"):
        if "image_size" in getattr(cfg.views, section):
            yield f"views.{section}.image_size: the view size is data.image_size"
            return
    try:
        build_view_transforms(cfg)
    except (TypeError, ValueError) as error:
        yield f"views: {error}"


def _run_length_and_schedule(cfg: TrainConfig) -> Iterator[str]:
    s, lr = cfg.schedule, cfg.optim.lr
    if cfg.max_steps is None and cfg.epochs < 1:
        yield f"epochs={cfg.epochs} must be >= 1 (or set max_steps)"
    if s.min_lr > lr:
        yield f"schedule.min_lr={s.min_lr} must be in [0, optim.lr={lr}]"
    if s.warmup_steps is not None and cfg.max_steps is not None and s.warmup_steps > cfg.max_steps:
        yield f"schedule.warmup_steps={s.warmup_steps} is longer than the run (max_steps={cfg.max_steps})"


def _evaluation(cfg: TrainConfig) -> Iterator[str]:
    e = cfg.eval
    if e.filter_only and e.exhaustive:
        yield "eval.filter_only and eval.exhaustive exclude each other (no fusion vs every pair fused)"
    if e.alpha_sweep is not None and (e.filter_only or e.score != "itm"):
        yield (f"eval.alpha_sweep={e.alpha_sweep} needs eval.score=itm and eval.filter_only=false "
               "(the sweep adds a * cosine to the ITM score itself)")
    if e.score == "itm" and e.alpha != 0.0:
        yield f"eval.alpha={e.alpha} only applies to eval.score='itm+itc'"


def _twins(cfg: TrainConfig) -> Iterator[str]:
    """`data.synthetic.twins` and `model.perturbation_source: twins` go together, on synthetic data, and with
    no view that mirrors or rotates an image: twins teach left/right and above/below, and a flipped image
    with an unflipped caption ("cars to the left of a building") is a wrong label, so flips are refused."""
    d, m, t = cfg.data, cfg.model, cfg.data.synthetic.twins
    if len(set(t.types)) != len(t.types):
        yield f"data.synthetic.twins.types={t.types} repeats a type"
    if (m.perturbation_source == "twins") != bool(t.types):
        yield ("rendered twins need both data.synthetic.twins.types (which twins) and model.perturbation_source="
               f"twins (how they enter batches); got types={t.types}, perturbation_source={m.perturbation_source!r}")
    if not t.types:
        return
    if d.dataset != "synthetic":
        yield f"data.synthetic.twins are rendered synthetic scenes: they need data.dataset=synthetic, got {d.dataset!r}"
    if m.itm_perturbation_negatives <= 0 and m.itc_perturbation_negatives <= 0:
        yield ("data.synthetic.twins need model.itm_perturbation_negatives > 0 (ITM) and/or "
               "model.itc_perturbation_negatives > 0 (NegCLIP ITC columns): the rate at which a row starts a quad")
    if d.cv.folds is not None:
        yield ("data.synthetic.twins with data.cv: a fold's validation scenes would be twinned for training; "
               "use the plain train/val split")
    cached = d.backbone_cache.enabled
    if cfg.views.augment and not cached and cfg.views.base.get("hflip", True):
        yield ("data.synthetic.twins: views.base flips images left/right (hflip, on by default), which "
               "turns 'left of' captions false; set views.base.hflip=false (or views.augment=false)")
    if (m.mvjrc_weight > 0) or (cached and cfg.views.augment):
        flips = {k: cfg.views.mvjrc.get(k, default) for k, default in
                 (("rot90_p", 1.0), ("hflip_p", 0.5), ("vflip_p", 0.5), ("affine_p", 0.0))}
        on = sorted(k for k, v in flips.items() if v)
        # skip_geometric_for_direction_words is no way out: its word list has no "above" / "below"
        if on:
            yield (f"data.synthetic.twins: the views.mvjrc policy (used for "
                   f"{'cached views' if cached else 'the second MVJRC view'}) mirrors or rotates images "
                   f"({', '.join(on)} > 0), which turns left/right and above/below captions false; set "
                   f"{', '.join(f'views.mvjrc.{k}=0' for k in on)}")


def _grounding(cfg: TrainConfig) -> Iterator[str]:
    """`model.grounding_weight > 0`: its targets come from the synthetic generator through rendered twins (the
    only rows that carry a scene), and they are grid cells of the whole, unaugmented image, so the view the
    fusion layers see must be a plain resize (a crop or flip moves the objects off their cells)."""
    m, d, v = cfg.model, cfg.data, cfg.views
    if m.grounding_weight <= 0:
        return
    if not d.synthetic.twins.types or m.perturbation_source != "twins":
        yield (f"model.grounding_weight={m.grounding_weight} needs rendered twins (data.synthetic.twins.types and "
               "model.perturbation_source=twins): only twin rows carry grounding targets; set model.grounding_weight=0 "
               "otherwise")
    if not v.augment:
        return
    if d.backbone_cache.enabled:
        yield (f"model.grounding_weight={m.grounding_weight} with data.backbone_cache.enabled and views.augment: cached "
               "views are rescaled and rotated (views.mvjrc), which moves objects off their target cells; set "
               "views.augment=false")
        return
    try:
        base = views.BaseTransform(image_size=d.image_size, **v.base)
    except (TypeError, ValueError):
        return  # reported by the views rule
    if base.scale != (1.0, 1.0) or base.ratio != (1.0, 1.0) or base.hflip:
        yield (f"model.grounding_weight={m.grounding_weight}: views.base crops or flips images (scale={list(base.scale)}, "
               f"ratio={list(base.ratio)}, hflip={base.hflip}), which moves objects off their target cells; set "
               "views.base to {scale: [1, 1], ratio: [1, 1], hflip: false} or views.augment=false")


CROSS_FIELD_RULES = (_free_mappings_are_finite, _model_source, _tasks, _data, _freezing_and_cache, _views,
                     _run_length_and_schedule, _evaluation, _twins, _grounding)


# ------------------------------------------------------------------------------------------ helpers of the trainer
def check_data_dependent(cfg: TrainConfig, total_steps: int, max_captions_per_image: int) -> None:
    """Checks that need the training annotations; called before the model is built.

    `total_steps`: optimizer steps of the whole run; `max_captions_per_image`: the largest number of
    captions any training image contributes per epoch (after `captions_per_image` sampling).
    """
    warmup = warmup_steps(cfg, total_steps)
    if warmup > total_steps:
        raise ConfigError(
            f"schedule.warmup_steps={warmup} is longer than the whole run ({total_steps} optimizer steps)"
        )
    if cfg.model.itm_weight > 0 and cfg.batch_size <= max_captions_per_image:
        raise ConfigError(
            f"batch_size={cfg.batch_size} but an image contributes up to {max_captions_per_image} captions per epoch "
            "(data.captions_per_image): a batch may show a single image, and ITM hard negatives need at least 2 "
            f"distinct images; use batch_size >= {max_captions_per_image + 1} or data.captions_per_image: 1"
        )


def build_view_transforms(cfg: TrainConfig, seed: int | None = None):
    """`(base_transform, mvjrc_transform)` from `cfg.views`; the second is None when MVJRC is off."""
    size = cfg.data.image_size
    if cfg.views.augment:
        base = views.BaseTransform(image_size=size, seed=seed, **cfg.views.base)
    else:
        if cfg.views.base:
            raise ValueError(f"views.base {sorted(cfg.views.base)} is set but views.augment is false")
        base = None
    second = None
    if cfg.model.mvjrc_weight > 0 or cfg.views.mvjrc:
        config = views.ViewConfig.from_dict({**cfg.views.mvjrc, "image_size": size})
        second = views.MultiViewTransform(config=config, num_views=1, seed=seed)
    return base, (second if cfg.model.mvjrc_weight > 0 else None)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    if cfg.schedule.warmup_steps is not None:
        return cfg.schedule.warmup_steps
    return int(round(cfg.schedule.warmup_ratio * total_steps))
