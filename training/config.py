"""`TrainConfig`: the whole training run in one typed, validated dataclass.

A run is described by a YAML (or JSON) file plus `--set section.key=value` overrides. Everything is
checked here, before any dataset is read or model built, so a typo or an impossible setting costs a
second, not the minutes it takes to load backbones and start training:

* unknown keys raise and name the key with close matches (also from other sections: `lr` at the top
  level suggests `optim.lr`);
* values are converted to the declared field types (YAML reads `1e-4` as a *string*; a `float` field
  accepts it) and a value that does not convert names the key and the expected type;
* `validate()` (in `config_validation.py`, which also holds the choices and `ConfigError`) rejects impossible combinations (negative loss weights, batches too small for ITM hard
  negatives, lr <= 0, warm-up longer than the run, unknown dataset/preset/precision, ...).

Checks that need the data (number of steps of an epoch, captions per image when all captions are
used) are in `check_data_dependent`, which the trainer calls right after loading the annotations and
still before building the model.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from modeling_mtgfe.configuration_mtgfe import MTGFEConfig

# The choices, `ConfigError` and the checks live in config_validation.py (a leaf: it imports nothing
# from here), so the schema below and its validation no longer import each other. The choice tuples
# are re-exported: `mtgfe.training.config` stays the one place users import config names from.
from .deprecation import deprecated_attribute
from .config_validation import (
    BENCHMARK_DATASETS,
    CACHE_DTYPES,
    DATASETS,
    LOSS_NAMES,
    MIXED_PRECISIONS,
    SELECTION_METRICS,
    TOKENIZER_CHOICES,
    ConfigError,
    build_view_transforms,
    check_data_dependent,
    resolve_config_path,
    validate,
    warmup_steps,
)


# ------------------------------------------------------------------------------------------ schema
# `model.*` fields that are `MTGFEConfig` fields of the same name: their defaults come from the model
# config and the trainer passes them through unchanged, so nothing is written down twice.
MODEL_TASK_FIELDS = ("itc_weight", "itm_weight", "mlm_weight", "mvjrc_weight", "mvjrc_variant",
                     "itm_random_negative_prob", "itm_perturbation_negatives", "itc_perturbation_negatives")
_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MTGFEConfig) if f.name in MODEL_TASK_FIELDS}
# Names that moved out of this module; `__getattr__` below still serves them with a DeprecationWarning.
_MOVED = {"EVAL_SCORES": ("modeling_mtgfe.configuration_mtgfe", "RETRIEVAL_SCORES"),
          "MVJRC_VARIANTS": ("modeling_mtgfe.configuration_mtgfe", "MVJRC_VARIANTS")}


@dataclass
class InitConfig:
    """Backbones for `MTGFEForPreTraining.from_vision_text_pretrained` (offline names or folders)."""

    vision: str = "efficientnet-lite0"
    text: str = "minilm-l6"


@dataclass
class ModelConfig:
    """Which model to train.

    Exactly one source of weights: `preset` alone (random init), `init` (pretrained backbones; a
    `preset` given beside it supplies the non-backbone fields such as `fusion_layer`, `embed_dim` and
    the MVJRC widths), or `pretrained` (a saved MTGFE folder, e.g. to fine-tune a checkpoint).
    The loss weights and task switches are explicit fields so they are validated here; any other
    `MTGFEConfig` field goes in `config` (e.g. `{embed_dim: 128, mlm_probability: 0.2}`).
    """

    preset: str | None = None
    init: InitConfig | None = None
    pretrained: str | None = None
    # Defaults read from `MTGFEConfig` (one source of truth); `model_config_overrides` copies these
    # fields (`MODEL_TASK_FIELDS`) into the model config by name.
    itc_weight: float = _MODEL_DEFAULTS["itc_weight"]
    itm_weight: float = _MODEL_DEFAULTS["itm_weight"]
    mlm_weight: float = _MODEL_DEFAULTS["mlm_weight"]
    mvjrc_weight: float = _MODEL_DEFAULTS["mvjrc_weight"]
    mvjrc_variant: str = _MODEL_DEFAULTS["mvjrc_variant"]
    itm_random_negative_prob: float = _MODEL_DEFAULTS["itm_random_negative_prob"]
    # Edited train captions as extra negatives (training/perturbation.py): ITM pairs and/or ITC columns.
    itm_perturbation_negatives: float = _MODEL_DEFAULTS["itm_perturbation_negatives"]
    itc_perturbation_negatives: float = _MODEL_DEFAULTS["itc_perturbation_negatives"]
    # Where those negatives come from: "edits" (rule edits), "pairs" (partner captions of other train images,
    # blind-proof), "pairs+edits" (training/perturbation.py explains the difference).
    perturbation_source: str = "edits"
    fusion_layer: int | None = None
    num_fusion_layers: int | None = None  # with model.init: fusion stack from the top text layers (see from_vision_text_pretrained)
    # Two-stage recipes: the shipped config that produces `pretrained` (which must then be
    # `<that run's output_dir>/final`); mtgfe-train trains it first when the folder does not exist yet.
    pretrained_recipe: str | None = None
    config: dict = field(default_factory=dict)


@dataclass
class FreezeConfig:
    """Parameter freezing: cheaper CPU steps, and protects pretrained backbones early in fine-tuning.

    `batchnorm_stats` keeps EfficientNet's BatchNorm running statistics frozen (always eval-mode
    BN): small single-domain batches would otherwise overwrite the ImageNet statistics and make an
    image's features depend on its batch mates. `null` (default) freezes them when the backbone is
    pretrained (`model.init` / `model.pretrained`) and trains them for a model built from scratch.
    Text freezing covers the embeddings (hence the tied MLM decoder) and the text-only layers.
    """

    vision: bool = False
    text: bool = False
    unfreeze_after_steps: int | None = None
    batchnorm_stats: bool | None = None


@dataclass
class TwinsConfig:
    """Rendered twins of the synthetic *training* scenes as balanced swap quads (`synthetic_twins`).

    `types`: any of count, colour, spatial, binding, near (empty: off). `per_scene`: distinct twins per
    scene and type. `seed`: the twins' own draw (which group, which colour), apart from the scenes' seed.
    They enter batches through `model.perturbation_source: twins`, at the rate of
    `model.itm_perturbation_negatives` (ITM) / `model.itc_perturbation_negatives` (NegCLIP ITC columns).
    """

    types: list[str] = field(default_factory=list)
    per_scene: int = 1
    seed: int = 0


@dataclass
class SyntheticConfig:
    """Size of the procedural dataset (`mtgfe.training.synthetic`); `None` = its default split size.

    `train_placeless_focus`: probability that a one-group training caption leaves out its ground or water
    ("a yellow car parked", `synthetic.describe_scene`); the validation split keeps the generator's captions.
    """

    train_scenes: int | None = None
    val_scenes: int | None = None
    seed: int = 0
    render_size: int = 128
    train_placeless_focus: float = 0.0
    twins: TwinsConfig = field(default_factory=TwinsConfig)


@dataclass
class BackboneCacheConfig:
    """Frozen-backbone token cache (`mtgfe.training.backbone_cache`): the CPU-feasible recipe.

    With `freeze.vision: true` the vision backbone's tokens of an image never change, yet computing
    them is most of a training step on a CPU (EfficientNet-Lite0 ~11 ms/image). So each training image
    is encoded once, before training, as slot 0 = the plain resized image (the evaluation view) plus
    `num_views` augmented views drawn with the MVJRC view policy (`views.mvjrc`, resolution/colour/angle)
    from a generator seeded by (`seed`, image, slot). Every epoch each sample picks one slot for the
    ITM/MLM/ITC view and a different slot for the second MVJRC view, as a function of (run seed,
    epoch, index), so resume stays exact. `seed` is the cache's own seed (not the run's), so runs with
    different seeds and ablations can share one cache file in `dir` (keyed by a hash of the images,
    size, view policy, `num_views`, `seed` and the backbone weights). `dtype` is the storage type
    (float16 halves the RAM; the tokens are cast to the model dtype when a batch is built).
    """

    enabled: bool = False
    num_views: int = 4
    dtype: str = "float16"
    dir: str | None = None
    seed: int = 0
    batch_size: int = 32


@dataclass
class CVConfig:
    """k-fold cross-validation over train + val (`folds: null` = the plain train/val split).

    Why: UCM's 210 val images (~1,050 captions) cannot resolve mR differences below ~1-2 points, so
    selection (configs, alpha, epochs) on val is noise. With `folds: k` the pool of train + val images
    (UCM: 1,680 + 210 = 1,890; the test split is never pooled) is sorted by file name in natural order
    (`1.tif, 2.tif, ..., 10.tif`: UCM's class-contiguous numbering then spreads every class evenly)
    and the image at sorted position p gets fold p % k. The run trains on the other folds and evaluates
    (in-loop eval, `best/`, eval JSON) on fold `fold`; `cv_folds.json` in `output_dir` lists both roles.
    One backbone cache over the whole pool serves every fold. A 3-fold CV of a config, then the summary:
        for f in 0 1 2; do mtgfe-train --config ucm_small --set data.cv.folds=3 --set data.cv.fold=$f \\
            --set output_dir=outputs/cv/ucm_small_f$f; done
        mtgfe-cv outputs/cv/ucm_small_f*            # mean ± std over folds (`--json FILE` writes it)
    """

    folds: int | None = None
    fold: int = 0


@dataclass
class DataConfig:
    """Where the captions come from and how they are turned into batches.

    `captions_per_image: 1` trains on each image once per epoch with one caption drawn per epoch
    (UCM: 1,680 steps' worth of images instead of 8,400 captions), `k` draws up to k distinct
    captions, `null` uses every caption. The draw depends only on (seed, epoch, image), so it is the
    same after a resume and on any number of processes.
    """

    dataset: str = "synthetic"
    data_dir: str | None = None
    image_dir: str | None = None
    train_file: str | None = None
    val_file: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 256
    max_length: int = 40
    num_workers: int = 0
    captions_per_image: int | None = 1
    tokenizer: str = "default"
    tokenizer_vocab_size: int = 1000
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    backbone_cache: BackboneCacheConfig = field(default_factory=BackboneCacheConfig)
    cv: CVConfig = field(default_factory=CVConfig)


@dataclass
class ViewsConfig:
    """Training augmentation (`mtgfe.training.views`, docs/METHOD.md §4).

    `base` configures the ITM/MLM view (`BaseTransform`: scale, ratio, hflip, interpolation) and
    `mvjrc` the second MVJRC view (`ViewConfig` fields: rescale, colour jitter, rot90, flips, ...),
    passed through as given. The base view doubles as MVJRC view 1 (the model reuses its fusion
    pass), so MVJRC costs one extra view. `augment: false` replaces the base view by a plain resize
    (the second MVJRC view stays random: it is what the task is about). The size is `data.image_size`.
    """

    augment: bool = True
    base: dict = field(default_factory=dict)
    mvjrc: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW. `head_lr` is the peak lr of parameters that start fresh on top of pretrained backbones
    (cross-attention, projections, ITM/MLM/MVJRC heads, temperature): they need a larger step than the
    backbones (ALBEF fine-tuning: 1e-5 backbone). `null` = `lr`. Models built from a preset are all
    fresh and train at `lr`."""

    lr: float = 1e-5
    head_lr: float | None = 5e-5
    weight_decay: float = 0.02
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0


@dataclass
class ScheduleConfig:
    """Linear warm-up then cosine decay. `min_lr` is the floor of the `lr` group; every other group
    decays to the same fraction (`min_lr / lr`) of its own peak. `warmup_steps` wins over `warmup_ratio`."""

    warmup_steps: int | None = None
    warmup_ratio: float = 0.0
    min_lr: float = 1e-6


@dataclass
class EvalConfig:
    """Retrieval evaluation on the validation split during training and best-checkpoint selection.

    `every`: optimizer steps between evaluations (0 = none during training); `at_end` also evaluates
    after the last step. `k` is the filter's top-k (the fusion model re-ranks k candidates per query);
    `max_images` evaluates on the first N validation images to bound the cost of in-loop evaluation.
    `filter_only` ranks by the filter cosine alone (no fusion): selection for dual-encoder runs.
    """

    every: int = 0
    at_end: bool = True
    k: int = 16
    exhaustive: bool = False
    score: str = "itm"
    alpha: float = 0.0
    batch_size: int = 32
    max_images: int | None = None
    selection_metric: str = "mR"
    filter_only: bool = False  # rank by the ITC cosine alone: the dual-encoder rows (ITC-only training)
    # with score: itm, also report ITM + a * cosine for each a (same candidates, one fusion pass): how alpha
    # is chosen by cross-validation (data.cv) instead of on the small val split
    alpha_sweep: list[float] | None = None


@dataclass
class CheckpointConfig:
    """Resumable checkpoints (`accelerator.save_state` + a small JSON of the loop position).

    `save_every` optimizer steps (0 = only at the end, when `save_last`); `keep_last` most recent
    `checkpoint-*` folders are kept (`null` keeps all). `resume_from`: a checkpoint folder or `latest`
    (the newest `checkpoint-*` in `output_dir`; starts from scratch when there is none). A resume checks
    the checkpoint first: it must be this run's (same run identity) and every file intact (sizes +
    sha256 recorded at save). `allow_inexact_resume`: a damaged RNG state (`random_states_*.pkl`) then
    only warns and the run continues, no longer bit-identical to an uninterrupted one.
    """

    save_every: int = 0
    save_last: bool = True
    keep_last: int | None = 2
    resume_from: str | None = None
    allow_inexact_resume: bool = False


@dataclass
class LogConfig:
    """`metrics.jsonl` is always written; TensorBoard when installed (`tensorboard: null` = auto).
    `sample_ids` adds the dataset indices of every step to the log (used to check the data order)."""

    every: int = 1
    tensorboard: bool | None = None
    sample_ids: bool = False
    progress_bar: bool = True


@dataclass
class TrainConfig:
    """One training run. Sections: model, freeze, data, views, optim, schedule, eval, checkpoint, log.

    `batch_size` is per process and per micro-batch; the effective batch is
    `batch_size * grad_accum * num_processes`. `max_steps` (optimizer steps) wins over `epochs`.
    `num_threads`: torch intra-op threads per process (null = torch's default). On a CPU shared with
    other jobs, 1 avoids OpenMP oversubscription, which was measured to slow small models ~10x.
    `overwrite`: a fresh run refuses an `output_dir` that holds another run (checkpoints, final/, best/,
    metrics.jsonl); `true` removes that run's artefacts first (and logs what it removed).
    """

    output_dir: str = "outputs/mtgfe"
    seed: int = 42
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None
    mixed_precision: str = "no"
    activation_checkpointing: bool = False
    num_threads: int | None = None
    overwrite: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {name: getattr(self.model, f"{name}_weight") for name in LOSS_NAMES}


# ------------------------------------------------------------------------------------------ parsing
def _all_paths(cls, prefix: str = "") -> list[str]:
    """Every dotted field path of the schema (for "did you mean" across sections)."""
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        paths.append(path)
        inner = _dataclass_in(hints[f.name])
        if inner is not None:
            paths.extend(_all_paths(inner, f"{path}."))
    return paths


def _dataclass_in(tp) -> type | None:
    """The dataclass in `X` or `X | None`, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _suggest(key: str, path: str, siblings: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(siblings), n=3, cutoff=0.6)
    prefix = path.rsplit(".", 1)[0] + "." if "." in path else ""
    names = [prefix + c for c in close]
    # The same name in another section is the most common mistake (`lr` instead of `optim.lr`).
    names += [p for p in _all_paths(TrainConfig) if p.rsplit(".", 1)[-1] == key and p != path and p not in names]
    return f"; did you mean {' or '.join(repr(n) for n in names)}?" if names else ""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp, value, path: str):
    """Convert a YAML/CLI value to the field type `tp`, or raise naming the key."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, path)
        raise ConfigError(f"{path}: unsupported union type {tp}")  # pragma: no cover - schema bug
    if value is None:
        raise ConfigError(f"{path}: null is not allowed (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, path + ".")
    origin = typing.get_origin(tp)
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(item_tp, v, f"{path}[{i}]") if item_tp is not Any else v for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value  # Any


def _build(cls, data: Mapping, prefix: str = ""):
    """Build dataclass `cls` from a mapping, refusing unknown keys."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown config key {path!r}{_suggest(str(key), path, names)}")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value) -> None:
    """`data["a"]["b"] = value` for `a.b`, creating (or replacing null) intermediate mappings."""
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[: depth + 1])} is not a section (it holds {child!r})")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str] | None) -> list[tuple[str, Any]]:
    """`["optim.lr=1e-4", "data.dataset=ucm"]` → `[("optim.lr", "1e-4"), ...]`; values are YAML."""
    parsed = []
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {error}") from error
        parsed.append((key, value))
    return parsed


def config_from_dict(data: Mapping | None, overrides: Sequence[str] | None = None, source: str = "<dict>") -> TrainConfig:
    """Build and validate a `TrainConfig` from a mapping and `key=value` overrides."""
    raw = json.loads(json.dumps(dict(data or {})))  # deep copy; also rejects non-JSON values early
    for key, value in parse_overrides(overrides):
        _set_dotted(raw, key, value)
    try:
        cfg = _build(TrainConfig, raw)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    except TypeError as error:  # a required nested field missing
        raise ConfigError(f"{source}: {error}") from None
    validate(cfg, source)
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] | None = None) -> TrainConfig:
    """Read a YAML/JSON config file (or none: defaults), apply `--set` overrides, validate.

    A bare name like `synthetic_tiny` (or `synthetic_tiny.yaml`) resolves to the configs shipped in
    `mtgfe/training/configs/` when no such file exists in the working directory. A file may start
    from another one with `extends: other.yaml` (relative to the file, or a shipped name); its
    mappings are merged key by key, so an ablation config states only what it changes.
    """
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        data = _read_with_extends(file, seen=())
    return config_from_dict(data, overrides, source)


def _read_mapping(file: Path) -> dict:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML/JSON: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _read_with_extends(file: Path, seen: tuple[Path, ...]) -> dict:
    data = _read_mapping(file)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_file = file.parent / str(parent)
    parent_file = parent_file if parent_file.is_file() else resolve_config_path(str(parent))
    if parent_file.resolve() in seen:
        raise ConfigError(f"{file}: 'extends' loops back to {parent_file}")
    return _merge(_read_with_extends(parent_file, seen + (file.resolve(),)), data)


def _merge(base: dict, child: dict) -> dict:
    """Recursive dict merge; the child's values win, mappings merge key by key."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


__all__ = [
    "BackboneCacheConfig",
    "CheckpointConfig",
    "ConfigError",
    "MODEL_TASK_FIELDS",
    "CVConfig",
    "DataConfig",
    "EvalConfig",
    "FreezeConfig",
    "InitConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "SyntheticConfig",
    "TwinsConfig",
    "TrainConfig",
    "ViewsConfig",
    "build_view_transforms",
    "check_data_dependent",
    "config_from_dict",
    "load_config",
    "resolve_config_path",
    "parse_overrides",
    "validate",
    "warmup_steps",
]


def __getattr__(name: str):
    """Old names kept importable (with a DeprecationWarning): see `_MOVED`."""
    return deprecated_attribute(__name__, name, _MOVED)
