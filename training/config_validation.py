"""Validation of a `TrainConfig`: the checks `config_from_dict` runs before anything loads.

`validate` holds every static check (impossible combinations, out-of-range values, unknown names),
`check_data_dependent` the ones that need the annotations (steps per epoch, captions per image); both
fail with a `ConfigError` that names the key, the value and the allowed range. Kept apart from the
schema and parsing in `config.py` so each file stays readable. The allowed choices and `ConfigError`
live here too, so that this module is a leaf: config.py imports it, it never imports config.py (the two
used to import each other). Choices the model defines (`MVJRC_VARIANTS`, `RETRIEVAL_SCORES`, presets)
come from `modeling_mtgfe.configuration_mtgfe`, never copied.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from modeling_mtgfe.configuration_mtgfe import MVJRC_VARIANTS, PRESETS, RETRIEVAL_SCORES, MTGFEConfig

from mtgfe.utils.validation import check_finite

from . import benchmarks, views
from .metrics import RECALL_KEYS
from .perturbation import PERTURBATION_SOURCES
from .synthetic_twins import TWIN_TYPES


if TYPE_CHECKING:  # annotations only: config.py imports this module, never the other way round
    from .config import TrainConfig


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

    Here rather than in config.py because validation needs it too (`model.pretrained_recipe` must name
    an existing config) and this module must not import config.py (that was an import cycle).
    """
    file = Path(path)
    if file.is_file():
        return file
    shipped = SHIPPED_CONFIGS
    for candidate in (shipped / file.name, shipped / f"{file.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in shipped.glob("*.yaml"))
    raise ConfigError(f"config file {path} does not exist (shipped configs: {available})")


def _fail(source: str, message: str) -> None:
    raise ConfigError(f"{source}: {message}")


def _float_fields(node, prefix: str = ""):
    """`(dotted key, value)` of every float anywhere in a config: dataclass fields, lists (`optim.betas`,
    `eval.alpha_sweep`) and free mappings (`model.config`, `views.*`)."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _float_fields(getattr(node, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _float_fields(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _float_fields(value, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node


def check_all_finite(cfg: TrainConfig, source: str = "<config>") -> None:
    """Every float of the config is finite. Runs before the range checks: NaN compares False with
    everything, so `if value < 0: fail` lets it through (and `value <= 0` lets +inf through)."""
    for key, number in _float_fields(cfg):
        try:
            check_finite(key, number)
        except ValueError as error:
            _fail(source, str(error))


def validate(cfg: TrainConfig, source: str = "<config>") -> None:
    """Static checks: everything decidable without reading data or building the model."""
    m, d, o, s, e = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.eval
    check_all_finite(cfg, source)

    # model source

    if m.preset is None and m.init is None and m.pretrained is None:
        _fail(source, "model needs one of model.preset (e.g. 'tiny'), model.init {vision, text} or model.pretrained")
    if m.pretrained is not None and (m.preset is not None or m.init is not None):
        _fail(source, "model.pretrained loads a saved MTGFE model: do not combine it with model.preset/model.init")
    if m.preset is not None and m.preset not in PRESETS:
        _fail(source, f"unknown model.preset {m.preset!r}; allowed: {sorted(PRESETS)}")
    if m.init is not None and (not m.init.vision or not m.init.text):
        _fail(source, f"model.init needs both vision and text, got {dataclasses.asdict(m.init)}")
    if m.pretrained_recipe is not None:
        if m.pretrained is None or Path(m.pretrained).name != "final":
            _fail(source, f"model.pretrained_recipe={m.pretrained_recipe!r} needs model.pretrained=<its output_dir>/final, "
                          f"got model.pretrained={m.pretrained!r}")
        try:
            resolve_config_path(m.pretrained_recipe)
        except ConfigError as error:
            _fail(source, f"model.pretrained_recipe={m.pretrained_recipe!r}: {error}")
    elif m.pretrained is not None and not Path(m.pretrained).is_dir():
        _fail(source, f"model.pretrained={m.pretrained!r} is not a folder (a saved MTGFE model; for the two-stage "
                      "UCM recipe train stage 1 first: mtgfe-train --config ucm_dual_finetune)")
    weights = cfg.loss_weights
    for name, weight in weights.items():
        if weight < 0:
            _fail(source, f"model.{name}_weight={weight} is negative; loss weights must be >= 0 (0 switches a task off)")
    if not any(w > 0 for w in weights.values()):
        _fail(source, "every loss weight is 0 (model.itc/itm/mlm/mvjrc_weight): nothing to train")
    if m.mvjrc_variant not in MVJRC_VARIANTS:
        _fail(source, f"unknown model.mvjrc_variant {m.mvjrc_variant!r}; allowed: {list(MVJRC_VARIANTS)}")
    if not 0.0 <= m.itm_random_negative_prob <= 1.0:
        _fail(source, f"model.itm_random_negative_prob={m.itm_random_negative_prob} must be in [0, 1]")
    for name in ("itm_perturbation_negatives", "itc_perturbation_negatives"):
        value = getattr(m, name)
        if not 0.0 <= value <= 8.0:
            _fail(source, f"model.{name}={value} must be in [0, 8] (edited-caption negatives per positive; 0 = off)")
    if m.perturbation_source not in PERTURBATION_SOURCES:
        _fail(source, f"unknown model.perturbation_source {m.perturbation_source!r}; allowed: {list(PERTURBATION_SOURCES)}")
    if m.itm_perturbation_negatives > 0 and m.itm_weight == 0:
        _fail(source, "model.itm_perturbation_negatives > 0 needs model.itm_weight > 0 (they are ITM negatives)")
    if m.itc_perturbation_negatives > 0 and m.itc_weight == 0:
        _fail(source, "model.itc_perturbation_negatives > 0 needs model.itc_weight > 0 (they are ITC columns)")
    if m.num_fusion_layers is not None:
        if m.init is None:
            _fail(source, f"model.num_fusion_layers={m.num_fusion_layers} needs model.init (it decides which pretrained "
                          "text layers start the fusion stack); a preset or saved model fixes its layers itself")
        if not isinstance(m.num_fusion_layers, int) or m.num_fusion_layers < 1:
            _fail(source, f"model.num_fusion_layers={m.num_fusion_layers!r} must be an int >= 1 (or null)")
    reserved = {"itc_weight", "itm_weight", "mlm_weight", "mvjrc_weight", "mvjrc_variant", "itm_random_negative_prob",
                "itm_perturbation_negatives", "itc_perturbation_negatives", "perturbation_source", "fusion_layer",
                "num_fusion_layers"}
    for key in m.config:
        if key in reserved:
            _fail(source, f"model.config.{key}: set it as model.{key} instead")
    known_fields = _mtgfe_config_fields()
    for key in m.config:
        if key not in known_fields:
            _fail(source, f"unknown MTGFEConfig field model.config.{key}{_close(key, known_fields, 'model.config.')}")

    # freezing
    if cfg.freeze.unfreeze_after_steps is not None:
        if cfg.freeze.unfreeze_after_steps < 1:
            _fail(source, f"freeze.unfreeze_after_steps={cfg.freeze.unfreeze_after_steps} must be >= 1 (or null)")
        if not (cfg.freeze.vision or cfg.freeze.text):
            _fail(source, "freeze.unfreeze_after_steps is set but neither freeze.vision nor freeze.text is true")

    # data
    if d.dataset not in DATASETS:
        _fail(source, f"unknown data.dataset {d.dataset!r}; allowed: {list(DATASETS)}{_close(d.dataset, DATASETS, '')}")
    if d.dataset == "jsonl":
        if not d.train_file:
            _fail(source, "data.dataset=jsonl needs data.train_file (a JSONL/CSV caption file)")
        for key in ("train_file", "val_file"):
            value = getattr(d, key)
            if value and not Path(value).is_file():
                _fail(source, f"data.{key}={value!r} does not exist")
    if d.dataset in BENCHMARK_DATASETS and d.data_dir is not None and not Path(d.data_dir).is_dir():
        _fail(source, f"data.data_dir={d.data_dir!r} is not a folder")
    if d.image_dir is not None and not Path(d.image_dir).is_dir():
        _fail(source, f"data.image_dir={d.image_dir!r} is not a folder")
    if d.image_size < 16:
        _fail(source, f"data.image_size={d.image_size} is too small (>= 16)")
    if d.max_length < 3:
        _fail(source, f"data.max_length={d.max_length} must be >= 3 ([CLS], a token, [SEP])")
    if d.num_workers < 0:
        _fail(source, f"data.num_workers={d.num_workers} must be >= 0")
    if d.captions_per_image is not None and d.captions_per_image < 1:
        _fail(source, f"data.captions_per_image={d.captions_per_image} must be >= 1, or null for all captions")
    if d.tokenizer not in TOKENIZER_CHOICES and not Path(d.tokenizer).exists():
        _fail(source, f"data.tokenizer={d.tokenizer!r} is neither one of {list(TOKENIZER_CHOICES)} nor an existing folder")
    if d.tokenizer == "wordpiece" and d.tokenizer_vocab_size <= 5:
        _fail(source, f"data.tokenizer_vocab_size={d.tokenizer_vocab_size} must be > 5 (the special tokens)")
    if d.tokenizer == "wordpiece" and (m.init is not None or m.pretrained is not None):
        _fail(source, "data.tokenizer=wordpiece builds a new vocabulary, which does not match pretrained text "
                      "weights (model.init / model.pretrained); use data.tokenizer=default or a saved tokenizer folder")
    syn = d.synthetic
    for key in ("train_scenes", "val_scenes"):
        value = getattr(syn, key)
        if value is not None and value < 1:
            _fail(source, f"data.synthetic.{key}={value} must be >= 1")
    if syn.render_size < 16:
        _fail(source, f"data.synthetic.render_size={syn.render_size} must be >= 16")
    if not 0.0 <= syn.train_placeless_focus <= 1.0:
        _fail(source, f"data.synthetic.train_placeless_focus={syn.train_placeless_focus} must be a probability in [0, 1]")
    _validate_twins(cfg, source)
    cv = d.cv
    if cv.folds is not None:
        if cv.folds < 2:
            _fail(source, f"data.cv.folds={cv.folds} must be >= 2 (or null: no cross-validation)")
        if not 0 <= cv.fold < cv.folds:
            _fail(source, f"data.cv.fold={cv.fold} must be in [0, {cv.folds - 1}] (data.cv.folds={cv.folds})")
        if d.dataset == "jsonl" and not (d.train_file and d.val_file):
            _fail(source, "data.cv pools the train and val captions: data.dataset=jsonl needs data.train_file and "
                          f"data.val_file (got val_file={d.val_file!r})")
        if d.train_split == d.val_split or (d.dataset != "jsonl" and "test" in (d.train_split, d.val_split)):
            _fail(source, f"data.cv pools two distinct non-test splits; got data.train_split={d.train_split!r}, "
                          f"data.val_split={d.val_split!r}")
    elif cv.fold != 0:
        _fail(source, f"data.cv.fold={cv.fold} is set but data.cv.folds is null")
    bc = d.backbone_cache
    if bc.enabled:
        if not cfg.freeze.vision:
            _fail(source, "data.backbone_cache.enabled=true needs freeze.vision=true: cached backbone tokens are only "
                          "valid while the vision backbone does not change")
        if cfg.freeze.unfreeze_after_steps is not None:
            _fail(source, f"data.backbone_cache.enabled=true with freeze.unfreeze_after_steps="
                          f"{cfg.freeze.unfreeze_after_steps}: the cache would go stale when the vision backbone is "
                          "unfrozen; drop one of the two")
        if bc.num_views < 1:
            _fail(source, f"data.backbone_cache.num_views={bc.num_views} must be >= 1 (augmented views per image, "
                          "besides the plain one; MVJRC needs two distinct views)")
        if bc.dtype not in CACHE_DTYPES:
            _fail(source, f"data.backbone_cache.dtype={bc.dtype!r} is not one of {list(CACHE_DTYPES)}")
        if bc.batch_size < 1:
            _fail(source, f"data.backbone_cache.batch_size={bc.batch_size} must be >= 1")
        if bc.seed < 0:
            _fail(source, f"data.backbone_cache.seed={bc.seed} must be >= 0")
        if cfg.views.base:
            _fail(source, f"views.base {sorted(cfg.views.base)} is ignored with data.backbone_cache.enabled=true "
                          "(cached views use the views.mvjrc policy); remove views.base")
        if cfg.views.mvjrc.get("skip_geometric_for_direction_words"):
            _fail(source, "views.mvjrc.skip_geometric_for_direction_words needs the caption, but cached views are "
                          "drawn per image (data.backbone_cache.enabled=true); set it to false")

    # batch: ITM needs a negative image in the batch; BatchNorm (MVJRC heads) needs > 1 row
    if cfg.batch_size < 2:
        _fail(source, f"batch_size={cfg.batch_size} is too small: ITC/ITM need at least 2 pairs per batch and "
                      "MVJRC's BatchNorm heads more than one row")
    if weights["itm"] > 0 and d.captions_per_image is not None and cfg.batch_size <= d.captions_per_image:
        _fail(source, f"batch_size={cfg.batch_size} with data.captions_per_image={d.captions_per_image}: a batch may hold "
                      "a single image, and ITM hard negatives need at least 2 distinct images per batch; use "
                      f"batch_size >= {d.captions_per_image + 1}")
    if cfg.grad_accum < 1:
        _fail(source, f"grad_accum={cfg.grad_accum} must be >= 1")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        _fail(source, f"max_steps={cfg.max_steps} must be >= 1 (or null to train for `epochs`)")
    if cfg.max_steps is None and cfg.epochs < 1:
        _fail(source, f"epochs={cfg.epochs} must be >= 1 (or set max_steps)")
    if cfg.mixed_precision not in MIXED_PRECISIONS:
        _fail(source, f"mixed_precision={cfg.mixed_precision!r} is not one of {list(MIXED_PRECISIONS)}")

    # augmentation: build the transforms once (cheap, PIL only) so a bad policy fails now
    for section in ("base", "mvjrc"):
        if "image_size" in getattr(cfg.views, section):
            _fail(source, f"views.{section}.image_size: the view size is data.image_size")
    try:
        build_view_transforms(cfg)
    except (TypeError, ValueError) as error:
        _fail(source, f"views: {error}")

    # optimiser and schedule
    if o.lr <= 0:
        _fail(source, f"optim.lr={o.lr} must be > 0")
    if o.head_lr is not None and o.head_lr <= 0:
        _fail(source, f"optim.head_lr={o.head_lr} must be > 0 (or null to use optim.lr)")
    if o.weight_decay < 0:
        _fail(source, f"optim.weight_decay={o.weight_decay} must be >= 0")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        _fail(source, f"optim.betas={o.betas} must be two numbers in [0, 1)")
    if o.eps <= 0:
        _fail(source, f"optim.eps={o.eps} must be > 0")
    if o.max_grad_norm is not None and o.max_grad_norm <= 0:
        _fail(source, f"optim.max_grad_norm={o.max_grad_norm} must be > 0 (or null for no clipping)")
    if not 0.0 <= s.min_lr <= o.lr:
        _fail(source, f"schedule.min_lr={s.min_lr} must be in [0, optim.lr={o.lr}]")
    if not 0.0 <= s.warmup_ratio < 1.0:
        _fail(source, f"schedule.warmup_ratio={s.warmup_ratio} must be in [0, 1)")
    if s.warmup_steps is not None and s.warmup_steps < 0:
        _fail(source, f"schedule.warmup_steps={s.warmup_steps} must be >= 0")
    if s.warmup_steps is not None and cfg.max_steps is not None and s.warmup_steps > cfg.max_steps:
        _fail(source, f"schedule.warmup_steps={s.warmup_steps} is longer than the run (max_steps={cfg.max_steps})")

    # evaluation, checkpoints, logging
    if e.filter_only and e.exhaustive:
        _fail(source, "eval.filter_only and eval.exhaustive exclude each other (no fusion vs every pair fused)")
    if e.alpha_sweep is not None:
        if e.filter_only or e.score != "itm":
            _fail(source, f"eval.alpha_sweep={e.alpha_sweep} needs eval.score=itm and eval.filter_only=false "
                          "(the sweep adds a * cosine to the ITM score itself)")
        if not e.alpha_sweep or any(not isinstance(a, (int, float)) or a < 0 for a in e.alpha_sweep):
            _fail(source, f"eval.alpha_sweep={e.alpha_sweep} must be a non-empty list of numbers >= 0")
    if e.every < 0:
        _fail(source, f"eval.every={e.every} must be >= 0 (0: no evaluation during training)")
    if e.k < 1:
        _fail(source, f"eval.k={e.k} must be >= 1")
    if e.score not in RETRIEVAL_SCORES:
        _fail(source, f"eval.score={e.score!r} is not one of {list(RETRIEVAL_SCORES)}")
    if e.alpha < 0:
        _fail(source, f"eval.alpha={e.alpha} must be >= 0")
    if e.score == "itm" and e.alpha != 0.0:
        _fail(source, f"eval.alpha={e.alpha} only applies to eval.score='itm+itc'")
    if e.batch_size < 1:
        _fail(source, f"eval.batch_size={e.batch_size} must be >= 1")
    if e.max_images is not None and e.max_images < 2:
        _fail(source, f"eval.max_images={e.max_images} must be >= 2 (or null for the whole split)")
    if e.selection_metric not in SELECTION_METRICS:
        _fail(source, f"eval.selection_metric={e.selection_metric!r} is not one of {list(SELECTION_METRICS)}")
    c = cfg.checkpoint
    if c.save_every < 0:
        _fail(source, f"checkpoint.save_every={c.save_every} must be >= 0")
    if c.keep_last is not None and c.keep_last < 1:
        _fail(source, f"checkpoint.keep_last={c.keep_last} must be >= 1 (or null to keep all)")
    if c.resume_from not in (None, "latest") and not Path(c.resume_from).is_dir():
        _fail(source, f"checkpoint.resume_from={c.resume_from!r} is not a checkpoint folder (or use 'latest')")
    if cfg.log.every < 1:
        _fail(source, f"log.every={cfg.log.every} must be >= 1")
    if cfg.num_threads is not None and cfg.num_threads < 1:
        _fail(source, f"num_threads={cfg.num_threads} must be >= 1 (or null for torch's default)")
    if cfg.seed < 0:
        _fail(source, f"seed={cfg.seed} must be >= 0")
    if cfg.log.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            _fail(source, "log.tensorboard=true but tensorboard is not installed (pip install tensorboard)")
    if not cfg.output_dir:
        _fail(source, "output_dir is empty")


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


def _close(key: str, choices, prefix: str) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""


def _validate_twins(cfg: "TrainConfig", source: str) -> None:
    """`data.synthetic.twins` and `model.perturbation_source: twins` go together, on synthetic data, and with
    no view that mirrors or rotates an image: twins teach left/right and above/below, and a flipped image
    with an unflipped caption ("cars to the left of a building") is a wrong label, so flips are refused."""
    d, m, t = cfg.data, cfg.model, cfg.data.synthetic.twins
    unknown = [x for x in t.types if x not in TWIN_TYPES]
    if unknown:
        _fail(source, f"data.synthetic.twins.types has unknown type(s) {unknown}; allowed: {list(TWIN_TYPES)}")
    if len(set(t.types)) != len(t.types):
        _fail(source, f"data.synthetic.twins.types={t.types} repeats a type")
    if isinstance(t.per_scene, bool) or t.per_scene < 1:
        _fail(source, f"data.synthetic.twins.per_scene={t.per_scene} must be >= 1 (twins per scene and type)")
    if (m.perturbation_source == "twins") != bool(t.types):
        _fail(source, "rendered twins need both data.synthetic.twins.types (which twins) and model.perturbation_source="
                      f"twins (how they enter batches); got types={t.types}, perturbation_source={m.perturbation_source!r}")
    if not t.types:
        return
    if d.dataset != "synthetic":
        _fail(source, f"data.synthetic.twins are rendered synthetic scenes: they need data.dataset=synthetic, got {d.dataset!r}")
    if m.itm_perturbation_negatives <= 0 and m.itc_perturbation_negatives <= 0:
        _fail(source, "data.synthetic.twins need model.itm_perturbation_negatives > 0 (ITM) and/or "
                      "model.itc_perturbation_negatives > 0 (NegCLIP ITC columns): the rate at which a row starts a quad")
    if d.cv.folds is not None:
        _fail(source, "data.synthetic.twins with data.cv: a fold's validation scenes would be twinned for training; "
                      "use the plain train/val split")
    base = cfg.views.base
    cached = d.backbone_cache.enabled
    if cfg.views.augment and not cached and base.get("hflip", True):
        _fail(source, "data.synthetic.twins: views.base flips images left/right (hflip, on by default), which "
                      "turns 'left of' captions false; set views.base.hflip=false (or views.augment=false)")
    mvjrc_views = (m.mvjrc_weight > 0) or (cached and cfg.views.augment)
    if mvjrc_views:
        flips = {k: cfg.views.mvjrc.get(k, default) for k, default in
                 (("rot90_p", 1.0), ("hflip_p", 0.5), ("vflip_p", 0.5), ("affine_p", 0.0))}
        on = sorted(k for k, v in flips.items() if v)
        # skip_geometric_for_direction_words is no way out: its word list has no "above" / "below"
        if on:
            _fail(source, f"data.synthetic.twins: the views.mvjrc policy (used for "
                          f"{'cached views' if cached else 'the second MVJRC view'}) mirrors or rotates images "
                          f"({', '.join(on)} > 0), which turns left/right and above/below captions false; set "
                          f"{', '.join(f'views.mvjrc.{k}=0' for k in on)}")


def _mtgfe_config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(MTGFEConfig)}
