"""MTGFE training loop: one flat, readable Accelerate loop (ITC + ITM + MLM + MVJRC).

    mtgfe-train --config synthetic_tiny --set optim.lr=1e-4 --set max_steps=20
    python -m mtgfe.training.train --config training/configs/ucm_small.yaml
    accelerate launch --multi_gpu --num_processes 2 -m mtgfe.training.train --config ...   # 2-process CPU DDP

What one run does, in order (everything that can fail cheaply fails before the model is built):

1. `TrainConfig` from YAML + `--set` overrides, validated (`config.py`).
2. Accelerator (mixed precision, gradient accumulation, seedable sampler, DDP with
   `find_unused_parameters`: a loss weight of 0 or a frozen part leaves parameters without gradient).
3. Data: the training captions view, wrapped so each epoch trains on `captions_per_image` captions
   per image; a DataLoader with its *own* generator (without one, creating the resumed iterator
   consumes the global RNG and the run diverges at the first resumed step; hf-v5-notes §7).
   Data-dependent checks (warm-up vs run length, batch vs captions per image).
4. Tokenizer, processor, model (preset / pretrained backbones / saved MTGFE), freezing, AdamW with
   parameter groups (`param_groups`), lr as a pure function of the optimizer step.
5. Loop: forward, backward, clip, step; JSONL (+ TensorBoard) log; evaluation on the val split every
   `eval.every` steps with the retrieval filter; `best/` on the selection metric; atomic
   `checkpoint-{step}/` folders; `final/` (model + processor, loadable with `from_pretrained`).

Exact resume: the data order is a function of (seed, epoch) (seedable sampler seeded with the run
seed), the augmentation of every sample a function of (seed, epoch, index) (`collate.py`), the caption
draw a function of (seed, epoch, image); `save_state` stores model, optimizer and every global RNG,
and the checkpoint JSON the loop position (epoch, optimizer step, micro-batches done in the epoch).
Resuming loads all of it, skips the consumed micro-batches with `skip_first_batches` and continues
with the same batches, masks and negatives as the uninterrupted run. Evaluation runs inside
`torch.random.fork_rng`, so how often one evaluates does not change the training trajectory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers.utils import logging

from .config import (
    ConfigError,
    TrainConfig,
    build_view_transforms,
    check_data_dependent,
    load_config,
    warmup_steps,
)


logger = logging.get_logger(__name__)

STATE_FILE = "trainer_state.json"
PROCESSOR_DIR = "processor"  # inside each checkpoint: the exact tokenizer the run trains with
LOG_FILE = "metrics.jsonl"
# Parameters that start fresh on top of pretrained backbones (from_vision_text_pretrained): they get
# optim.head_lr. Everything else (vision backbone, BERT embeddings and layers) is "pretrained".
NEW_PARAMETER_PATTERNS = ("crossattention", "vision_token_proj", "vision_proj", "text_proj", "itm_head",
                          "mlm_head", "mvjrc_head")
# Parameters that never get weight decay besides biases/norms (ndim < 2) and nn.Embedding tables.
NO_DECAY_NAMES = ("temp", "cls_token", "mask_token", "position_embeddings")


# ------------------------------------------------------------------------------------------ data
def load_split(cfg: TrainConfig, split: str, view: str):
    """A split of the configured dataset, or None for a jsonl run without that file."""
    d = cfg.data
    if d.dataset == "synthetic":
        from .synthetic import load_synthetic

        scenes = d.synthetic.train_scenes if split == d.train_split else d.synthetic.val_scenes
        return load_synthetic(split, num_scenes=scenes, seed=d.synthetic.seed, image_size=d.synthetic.render_size,
                              view=view)
    if d.dataset == "jsonl":
        from .data import load_caption_file

        file = d.train_file if split == d.train_split else d.val_file
        return load_caption_file(file, image_dir=d.image_dir, view=view) if file else None
    from .data import load_rs_benchmark

    return load_rs_benchmark(d.dataset, d.data_dir, split=split, view=view, image_dir=d.image_dir)


def load_cv(cfg: TrainConfig):
    """`data.cv`: the train + val images pooled and cut into folds (`cv.py`): training captions of the
    other folds, images view of fold `data.cv.fold`, the whole pool (for the backbone cache)."""
    from .cv import cv_split

    d = cfg.data
    splits = {split: load_split(cfg, split, "images") for split in (d.train_split, d.val_split)}
    try:
        return cv_split(splits, d.cv.folds, d.cv.fold)
    except ValueError as error:
        raise ConfigError(f"data.cv: {error}") from None


def build_tokenizer(cfg: TrainConfig, train_captions: Sequence[str], accelerator, resume_dir: Path | None):
    """`default` (BERT uncased, matches MiniLM), `wordpiece` (trained on the training captions, small
    vocabulary for models trained from scratch), or a saved tokenizer/processor folder.

    A trained WordPiece vocabulary is not reproducible: the trainer numbers tokens of equal frequency
    in an order that changes from process to process. So it is trained once, on the main process,
    saved to `output_dir/tokenizer`, and every rank loads that copy; a resumed run loads the copy in
    the checkpoint, so token ids keep matching the trained embeddings.
    """
    from transformers import AutoTokenizer

    from mtgfe.processing import build_wordpiece_tokenizer, load_default_tokenizer

    d = cfg.data
    if resume_dir is not None and (resume_dir / PROCESSOR_DIR).is_dir():
        return AutoTokenizer.from_pretrained(str(resume_dir / PROCESSOR_DIR), model_max_length=d.max_length)
    if cfg.model.pretrained is not None and d.tokenizer == "default":
        return AutoTokenizer.from_pretrained(cfg.model.pretrained, model_max_length=d.max_length)
    if d.tokenizer == "default":
        return load_default_tokenizer(model_max_length=d.max_length)
    if d.tokenizer == "wordpiece":
        folder = Path(cfg.output_dir) / "tokenizer"
        if accelerator.is_main_process:
            tokenizer = build_wordpiece_tokenizer(train_captions, vocab_size=d.tokenizer_vocab_size,
                                                  model_max_length=d.max_length)
            tokenizer.save_pretrained(str(folder))
        accelerator.wait_for_everyone()
        return AutoTokenizer.from_pretrained(str(folder), model_max_length=d.max_length)
    return AutoTokenizer.from_pretrained(d.tokenizer, model_max_length=d.max_length)


def build_processor(cfg: TrainConfig, tokenizer):
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor

    size = cfg.data.image_size
    return MTGFEProcessor(MTGFEImageProcessor(size={"height": size, "width": size}), tokenizer,
                          max_length=cfg.data.max_length)


# ------------------------------------------------------------------------------------------ model
def _model_overrides(cfg: TrainConfig, tokenizer) -> dict:
    """MTGFEConfig keyword overrides: task weights and switches, extra fields, the tokenizer's special ids."""
    m = cfg.model
    overrides: dict[str, Any] = {
        "itc_weight": m.itc_weight, "itm_weight": m.itm_weight, "mlm_weight": m.mlm_weight,
        "mvjrc_weight": m.mvjrc_weight, "mvjrc_variant": m.mvjrc_variant,
        "itm_random_negative_prob": m.itm_random_negative_prob,
        "pad_token_id": tokenizer.pad_token_id, "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id, "mask_token_id": tokenizer.mask_token_id,
    }
    if m.fusion_layer is not None:
        overrides["fusion_layer"] = m.fusion_layer
    if m.num_fusion_layers is not None:  # config validation guarantees model.init (from_vision_text_pretrained)
        overrides["num_fusion_layers"] = m.num_fusion_layers
    overrides.update(m.config)
    return overrides


def build_model(cfg: TrainConfig, tokenizer):
    """The model to train, from a preset, pretrained backbones, or a saved MTGFE folder."""
    from modeling_mtgfe import MTGFEForImageTextRetrieval
    from modeling_mtgfe.configuration_mtgfe import PRESETS, MTGFEConfig

    m, size = cfg.model, cfg.data.image_size
    overrides = _model_overrides(cfg, tokenizer)
    if m.pretrained is not None:
        model = MTGFEForImageTextRetrieval.from_pretrained(m.pretrained, **overrides)
    elif m.init is not None:
        kwargs = {k: v for k, v in PRESETS[m.preset].items() if k not in ("vision_config", "text_config")} if m.preset else {}
        kwargs.update(overrides)
        if m.init.vision == "efficientnet-lite0":
            kwargs["image_size"] = size  # the offline loader builds its config at this size
        model = MTGFEForImageTextRetrieval.from_vision_text_pretrained(m.init.vision, m.init.text, **kwargs)
    else:
        text_config = {"vocab_size": len(tokenizer), **overrides.pop("text_config", {})}
        vision_config = {"image_size": size, **overrides.pop("vision_config", {})}
        config = MTGFEConfig.from_preset(m.preset, vision_config=vision_config, text_config=text_config, **overrides)
        model = MTGFEForImageTextRetrieval(config)
    text_config = model.config.text_config
    if len(tokenizer) > text_config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
                          f"{text_config.vocab_size}: data.tokenizer does not match the text weights")
    if cfg.data.max_length > text_config.max_position_embeddings:
        raise ConfigError(f"data.max_length={cfg.data.max_length} exceeds the model's max_position_embeddings="
                          f"{text_config.max_position_embeddings}")
    if cfg.activation_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model


def load_or_build_backbone_cache(cfg: TrainConfig, model, processor, train_rows, accelerator, pool_rows=None):
    """The frozen backbone's tokens of every training image and cached view (`data.backbone_cache`).

    Loaded from `dir` when a file with the same fingerprint exists (images, size, view policy, slots,
    cache seed, backbone weights), else encoded once (main process first when persisted, the other
    ranks then load the file) and written atomically. Costs ~(1 + num_views) x 11 ms per UCM image
    with EfficientNet-Lite0 on 2 cores, once; every training step after that skips the backbone.
    With `data.cv`, `pool_rows` (every pooled image, pool ids) is what is cached and fingerprinted, so
    all folds share one file; the cache must hold every training image (it may hold more).
    """
    from . import views
    from .collate import BackboneCache, cache_fingerprint, image_sources

    c = cfg.data.backbone_cache
    dtype = getattr(torch, c.dtype)
    sources, image_ids = image_sources(train_rows if pool_rows is None else pool_rows)
    view_config = {**cfg.views.mvjrc, "image_size": cfg.data.image_size}
    transform = views.MultiViewTransform(config=views.ViewConfig.from_dict(view_config), num_views=1)
    vision = accelerator.unwrap_model(model).mtgfe.vision_model
    key = cache_fingerprint(sources, cfg.data.image_size, transform.config.to_dict(), c.num_views, c.seed, vision)
    path = Path(c.dir).expanduser() / f"backbone-{key}-{c.dtype}.safetensors" if c.dir else None
    start = time.perf_counter()

    def build():
        cache = BackboneCache.build(model, processor, sources, image_ids, transform, c.num_views, cache_seed=c.seed,
                                    batch_size=c.batch_size, dtype=dtype,
                                    progress=accelerator.is_local_main_process and cfg.log.progress_bar)
        if path is not None:
            cache.save(path, {"fingerprint": key, "num_views": c.num_views, "image_size": cfg.data.image_size})
        return cache

    if path is not None and path.is_file():
        cache, how = BackboneCache.load(path), f"loaded {path}"
    elif path is not None and accelerator.num_processes > 1:
        cache = build() if accelerator.is_main_process else None
        accelerator.wait_for_everyone()
        cache, how = (cache or BackboneCache.load(path)), f"built {path}"
    else:
        cache, how = build(), (f"built {path}" if path else "built (in memory only)")
    missing = sorted({int(i) for i in train_rows["image_id"]} - set(cache.image_ids))
    if missing:
        raise ConfigError(f"backbone cache {path or '(in memory)'} lacks {len(missing)} of the training images (ids "
                          f"{missing[:5]}{', ...' if len(missing) > 5 else ''}): it was built for other images; delete it")
    accelerator.print(f"backbone cache {how}: {tuple(cache.tokens.shape)} {c.dtype}, "
                      f"{cache.tokens.numel() * cache.tokens.element_size() / 2**20:.0f} MiB, "
                      f"{time.perf_counter() - start:.1f} s")
    return cache


def backbones_are_pretrained(cfg: TrainConfig) -> bool:
    return cfg.model.init is not None or cfg.model.pretrained is not None


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW parameter groups: {pretrained, new} × {decay, no decay}.

    New parameters (cross-attention, projections, heads; `NEW_PARAMETER_PATTERNS`) get `optim.head_lr`
    when the model starts from pretrained weights (`model.init`, or a saved MTGFE in `model.pretrained`,
    e.g. stage 2 of a two-stage recipe, whose fusion parts never trained in stage 1): fresh layers need a
    larger step than weights that already work. `optim.head_lr: null` gives every parameter `optim.lr`.
    No weight decay on biases, norm weights, embedding tables, position embeddings, the ITC temperature:
    decaying them pulls them to 0, which is not a prior anyone wants for them.
    Each group carries `peak_lr`, which the schedule scales.
    """
    o = cfg.optim
    split_new = backbones_are_pretrained(cfg) and o.head_lr is not None
    groups: dict[tuple[bool, bool], dict] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue  # tied weights: count once
            seen.add(id(param))
            full = f"{module_name}.{name}" if module_name else name
            new = split_new and (any(pattern in full for pattern in NEW_PARAMETER_PATTERNS) or name == "temp")
            no_decay = param.ndim < 2 or isinstance(module, nn.Embedding) or name in NO_DECAY_NAMES
            key = (new, not no_decay)
            if key not in groups:
                lr = o.head_lr if new else o.lr
                groups[key] = {"params": [], "names": [], "lr": lr, "peak_lr": lr,
                               "weight_decay": o.weight_decay if not no_decay else 0.0,
                               "group": f"{'new' if new else 'pretrained'}/{'decay' if not no_decay else 'no_decay'}"}
            groups[key]["params"].append(param)
            groups[key]["names"].append(full)
    return [groups[key] for key in sorted(groups)]


def lr_scale(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, cosine to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def frozen_parameters(model, cfg: TrainConfig) -> list[nn.Parameter]:
    """Parameters named by `freeze.vision` / `freeze.text` (text: embeddings + text-only layers)."""
    base = model.mtgfe
    modules = []
    if cfg.freeze.vision:
        modules.append(base.vision_model)
    if cfg.freeze.text:
        modules += [base.embeddings, base.text_encoder]
    return [p for module in modules for p in module.parameters()]


def freeze_batchnorm(model, cfg: TrainConfig) -> bool:
    """Freeze BatchNorm running statistics of a pretrained EfficientNet (`freeze.batchnorm_stats`)."""
    vision = model.mtgfe.vision_model
    wanted = cfg.freeze.batchnorm_stats
    if wanted is None:
        wanted = backbones_are_pretrained(cfg)
    if wanted and hasattr(vision, "freeze_batchnorm_stats"):
        vision.freeze_batchnorm_stats(True)
        return True
    return False


# ------------------------------------------------------------------------------------------ checkpoints
def _atomic_dir(final: Path) -> Path:
    return final.with_name(f".tmp-{final.name}")


def _publish(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place: readers see the old folder or the new one, never half."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(accelerator, output_dir: Path, state: dict, keep_last: int | None, processor) -> Path:
    """`checkpoint-{step}/`: accelerate state (model, optimizer, RNGs, sampler), `trainer_state.json`
    and the processor (tokenizer), written to a temp folder and renamed into place."""
    final = output_dir / f"checkpoint-{state['step']}"
    tmp = _atomic_dir(final)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    with _quiet("accelerate.utils.other"):  # "Removed shared tensor" (the tied MLM decoder) on every save
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        processor.save_pretrained(str(tmp / PROCESSOR_DIR))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, final)
        if keep_last is not None:
            for old in list_checkpoints(output_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence one library logger below ERROR for a block. Used for accelerate's per-save warning about
    the tied MLM decoder: the tie is intended and restored on load (the exact-resume test checks it)."""
    import logging as std_logging

    target = std_logging.getLogger(logger_name)
    level = target.level
    target.setLevel(std_logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-*` folders that hold a state file, oldest first."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def resolve_resume(cfg: TrainConfig) -> Path | None:
    value = cfg.checkpoint.resume_from
    if value is None:
        return None
    if value == "latest":
        checkpoints = list_checkpoints(Path(cfg.output_dir))
        return checkpoints[-1] if checkpoints else None
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"checkpoint.resume_from={value!r} has no {STATE_FILE}: not a checkpoint written by mtgfe-train")
    return path


def save_pretrained_atomic(accelerator, model, processor, folder: Path, extra: dict | None = None) -> None:
    """Model + processor via `save_pretrained` (main process), written to a temp folder then renamed."""
    if accelerator.is_main_process:
        tmp = _atomic_dir(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for name, payload in (extra or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, folder)
    accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------------ logging
class MetricsLog:
    """`metrics.jsonl` (always, main process) and TensorBoard scalars (when installed and wanted)."""

    def __init__(self, accelerator, cfg: TrainConfig, resume_step: int | None):
        self.enabled = accelerator.is_main_process
        self.path = Path(cfg.output_dir) / LOG_FILE
        self.writer = None
        if not self.enabled:
            return
        if resume_step is not None and self.path.is_file():
            # Drop what the interrupted run logged after its checkpoint: those steps are redone.
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif resume_step is None and self.path.is_file():
            self.path.unlink()
        want_tb = cfg.log.tensorboard
        if want_tb is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if want_tb:
                    raise ConfigError("log.tensorboard=true but tensorboard is not installed (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(str(Path(cfg.output_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = "eval" if record.get("type") == "eval" else "train"
            values = record.get("metrics", record)
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------------------ training
def train(cfg: TrainConfig) -> dict:
    """Run training as configured; returns a summary dict (steps, final/best paths, last losses, eval)."""
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .collate import CachedTrainCollator, EpochCaptionDataset, TrainCollator
    from .evaluation import evaluate_model, write_json

    output_dir = Path(cfg.output_dir)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    set_seed(cfg.seed)

    # ---- data (annotations only so far: images decode lazily) and the checks that need it
    cv = load_cv(cfg) if cfg.data.cv.folds is not None else None
    val_name = cfg.data.val_split
    if cv is not None:
        from .cv import FOLDS_FILE

        m = cv.membership
        val_name = f"cv fold {m['fold']}/{m['folds']} of {'+'.join(m['pool_splits'])}"
        accelerator.print(f"data.cv: {m['pool_images']} pooled images in folds of {m['fold_sizes']}; training on "
                          f"{m['train']['images']} images ({m['train']['captions']} captions), validating on fold "
                          f"{m['fold']}: {m['val']['images']} images ({m['val']['captions']} captions)")
        if accelerator.is_main_process:
            write_json(m, output_dir / FOLDS_FILE)
    train_rows = cv.train if cv is not None else load_split(cfg, cfg.data.train_split, "captions")
    cache_cfg = cfg.data.backbone_cache
    train_set = EpochCaptionDataset(train_rows, cfg.data.captions_per_image, seed=cfg.seed,
                                    load_images=not cache_cfg.enabled)
    val_set = None
    if cfg.eval.every > 0 or cfg.eval.at_end:
        val_set = cv.val if cv is not None else load_split(cfg, cfg.data.val_split, "images")
        if val_set is None:
            logger.warning("no validation data (data.val_file is not set): evaluation and best/ are skipped")
        elif cfg.eval.max_images is not None and cfg.eval.max_images < len(val_set):
            val_set = val_set.select(range(cfg.eval.max_images))
    base_view, second_view = build_view_transforms(cfg)
    resume_dir = resolve_resume(cfg)
    tokenizer = build_tokenizer(cfg, train_rows["caption"], accelerator, resume_dir)
    processor = build_processor(cfg, tokenizer)
    if cache_cfg.enabled:  # the cache itself needs the model: it is attached right after the model is built
        collator = CachedTrainCollator(processor, cfg.seed, None, augment=cfg.views.augment,
                                       mvjrc=cfg.model.mvjrc_weight > 0, max_length=cfg.data.max_length)
    else:
        collator = TrainCollator(processor, cfg.seed, base_view, second_view, cfg.data.max_length)
    train_dl = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,  # full batches: ITM needs negatives, MVJRC's BatchNorm more than one row
        collate_fn=collator,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # own generator: exact resume (notes §7)
    )
    train_dl = accelerator.prepare(train_dl)
    batches_per_epoch = len(train_dl)
    if batches_per_epoch == 0:
        raise ConfigError(f"the training set has {len(train_set)} rows per epoch: too few for batch_size={cfg.batch_size} "
                          f"on {accelerator.num_processes} process(es)")
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    check_data_dependent(cfg, total_steps, train_set.max_captions_per_image)
    warmup = warmup_steps(cfg, total_steps)

    # ---- model, freezing, optimizer
    model = build_model(cfg, tokenizer)
    if cfg.eval.score == "itm+itc":  # the search score the recipe was selected with travels with the model
        model.config.retrieval_alpha = cfg.eval.alpha
    bn_frozen = freeze_batchnorm(model, cfg)
    frozen = frozen_parameters(model, cfg)
    unfreeze_at = cfg.freeze.unfreeze_after_steps
    # DDP registers only parameters that require grad when it wraps the model, so a part that is
    # unfrozen later must stay registered: on several processes it keeps requires_grad and its
    # gradients are dropped before the optimizer step until then (same update, no compute saved).
    drop_grads = accelerator.num_processes > 1 and unfreeze_at is not None
    for param in frozen:
        param.requires_grad_(drop_grads)
    if cache_cfg.enabled:
        collator.cache = load_or_build_backbone_cache(cfg, model, processor, train_rows, accelerator,
                                                      pool_rows=cv.pool if cv is not None else None)
        collator.dtype = next(model.parameters()).dtype
    groups = param_groups(model, cfg)
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "names"} for g in groups],
        lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    min_ratio = cfg.schedule.min_lr / cfg.optim.lr

    # ---- resume
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": None, "total_steps": total_steps}
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        saved = json.loads((resume_dir / STATE_FILE).read_text(encoding="utf-8"))
        if saved.get("total_steps") != total_steps:
            logger.warning("resuming a run planned for %s steps as a %s-step run: the lr schedule differs",
                           saved.get("total_steps"), total_steps)
        state.update({k: saved[k] for k in ("epoch", "step", "batch_in_epoch", "best")})
        if state["batch_in_epoch"] >= batches_per_epoch:
            state["epoch"], state["batch_in_epoch"] = state["epoch"] + 1, 0
        accelerator.print(f"resumed from {resume_dir} at step {state['step']} (epoch {state['epoch']}, "
                          f"{state['batch_in_epoch']} batches into it)")
    else:
        set_seed(cfg.seed, device_specific=True)  # per-rank streams for masking/negatives/dropout
    log = MetricsLog(accelerator, cfg, state["step"] if resume_dir is not None else None)
    accelerator.print(
        f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {accelerator.num_processes} "
        f"process(es): {len(train_set)} rows/epoch, {batches_per_epoch} batches/epoch/process, {total_steps} optimizer "
        f"steps ({warmup} warm-up), BatchNorm stats {'frozen' if bn_frozen else 'trained'}"
    )

    def set_trainable(step: int) -> bool:
        """Freeze state at `step`; returns whether the frozen parts still are frozen."""
        still_frozen = bool(frozen) and (unfreeze_at is None or step < unfreeze_at)
        if not drop_grads:
            for param in frozen:
                param.requires_grad_(not still_frozen)
        return still_frozen

    def run_eval(step: int) -> dict | None:
        if val_set is None:
            return None
        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            report = evaluate_model(
                model, processor, val_set, k=cfg.eval.k, exhaustive=cfg.eval.exhaustive, score=cfg.eval.score,
                filter_only=cfg.eval.filter_only,
                alpha=cfg.eval.alpha, batch_size=cfg.eval.batch_size, accelerator=accelerator,
                dataset_name=cfg.data.dataset, split=val_name, model_path=str(output_dir),
                alpha_sweep=cfg.eval.alpha_sweep,
            )
        report["step"] = step
        value = report["metrics"][cfg.eval.selection_metric]
        log.write({"type": "eval", "step": step, "epoch": state["epoch"], "metrics": report["metrics"],
                   "fusion_passes": report["fusion_passes"], "eval_s": report["timings"]["total_s"]})
        if accelerator.is_main_process:
            write_json(report, output_dir / "eval" / f"step-{step}.json")
        best = state["best"]
        if best is None or value > best["value"]:
            state["best"] = {"metric": cfg.eval.selection_metric, "value": value, "step": step}
            save_pretrained_atomic(accelerator, model, processor, output_dir / "best", {"eval_results.json": report})
        accelerator.print(f"step {step}: val {cfg.eval.selection_metric} {value:.2f} "
                          f"(best {state['best']['value']:.2f} at step {state['best']['step']})")
        return report

    # ---- loop
    model.train()
    frozen_now = set_trainable(state["step"])
    progress = tqdm(total=total_steps, initial=state["step"], desc="training", unit="step",
                    disable=not (accelerator.is_local_main_process and cfg.log.progress_bar))
    start_time = window_start = time.perf_counter()
    window: dict[str, list[torch.Tensor]] = {}  # losses of the micro-batches since the last log line
    window_ids: list[int] = []
    last_record: dict = {}
    last_eval: dict | None = None
    scale = grad_norm = None
    done = state["step"] >= total_steps
    for epoch in range(state["epoch"], num_epochs):
        if done:
            break
        state["epoch"] = epoch
        train_set.set_epoch(epoch)
        train_dl.set_epoch(epoch)
        skip = state["batch_in_epoch"]  # > 0 only in the epoch a resume lands in
        loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        for batch in loader:
            sample_ids = batch.pop("sample_index")
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    if drop_grads and frozen_now:
                        for param in frozen:
                            param.grad = None
                    if cfg.optim.max_grad_norm is not None:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                    scale = lr_scale(state["step"], total_steps, warmup, min_ratio)
                    for group in optimizer.param_groups:
                        group["lr"] = group["peak_lr"] * scale
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            state["batch_in_epoch"] += 1
            for name in ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_mvjrc"):
                value = getattr(out, name)
                if value is not None:
                    window.setdefault(name, []).append(value.detach().float())
            if cfg.log.sample_ids:
                window_ids.extend(sample_ids.tolist())
            if not accelerator.sync_gradients:
                continue

            # ---- one optimizer step done: log, unfreeze, evaluate, checkpoint
            state["step"] += 1
            step = state["step"]
            last = step >= total_steps
            progress.update(1)
            if step % cfg.log.every == 0 or last:
                now = time.perf_counter()
                losses = {name: accelerator.reduce(torch.stack(values).mean(), reduction="mean").item()
                          for name, values in window.items()}
                samples = cfg.batch_size * len(window["loss"]) * accelerator.num_processes
                record = {"type": "train", "step": step, "epoch": epoch, **losses,
                          "lr": cfg.optim.lr * scale,
                          "lr_groups": {g["group"]: g["lr"] for g in optimizer.param_groups},
                          "grad_norm": float(grad_norm) if grad_norm is not None else None,
                          "samples_per_s": samples / max(now - window_start, 1e-9),
                          "elapsed_s": now - start_time}
                if cfg.log.sample_ids:
                    record["sample_ids"] = _gather_lists(accelerator, window_ids)
                log.write(record)
                last_record = record
                progress.set_postfix(loss=f"{losses['loss']:.4f}")
                window, window_ids, window_start = {}, [], time.perf_counter()
            if frozen_now and unfreeze_at is not None and step >= unfreeze_at:
                frozen_now = set_trainable(step)
                accelerator.print(f"step {step}: unfroze {len(frozen)} parameter tensors")
            if (cfg.eval.every > 0 and step % cfg.eval.every == 0) or (last and cfg.eval.at_end):
                last_eval = run_eval(step)
            if (cfg.checkpoint.save_every > 0 and step % cfg.checkpoint.save_every == 0) or (
                    last and cfg.checkpoint.save_last):
                save_checkpoint(accelerator, output_dir, dict(state), cfg.checkpoint.keep_last, processor)
            if last:
                done = True
                break
        if not done:
            state["batch_in_epoch"] = 0
    progress.close()

    # ---- final model (+ the last evaluation, copied beside it)
    final_dir = output_dir / "final"
    save_pretrained_atomic(accelerator, model, processor, final_dir,
                           {"eval_results.json": last_eval} if last_eval else None)
    log.close()
    accelerator.wait_for_everyone()
    summary = {
        "steps": state["step"],
        "epochs": state["epoch"] + 1,
        "final_dir": str(final_dir),
        "best_dir": str(output_dir / "best") if state["best"] else None,
        "best": state["best"],
        "last_train": last_record,
        "last_eval": last_eval["metrics"] if last_eval else None,
        "output_dir": str(output_dir),
    }
    accelerator.end_training()
    return summary


def _gather_lists(accelerator, items: list[int]) -> list[list[int]]:
    """One list per process (rank order): the sample indices each rank trained on."""
    if accelerator.num_processes == 1:
        return [items]
    from accelerate.utils import gather_object

    return gather_object([items])


# The recipe `mtgfe-train` runs without --config: the best one measured on UCM (two-stage, alpha by CV).
DEFAULT_RECIPE = "ucm_fusion"

# Overrides that describe the data and the machine, not the model: they apply to a prerequisite stage too
# (except data.tokenizer: a stage 2 reads its tokenizer from the stage-1 folder).
STAGE_SHARED_KEYS = ("data.", "seed=", "num_threads=", "mixed_precision=")


def prerequisite_config(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig | None:
    """The stage-1 config of a two-stage recipe (`model.pretrained_recipe`) when its output is missing.

    It writes to the parent of `model.pretrained` (`<output_dir>/final`), and takes the data, seed and
    machine overrides given for stage 2 (so `--set seed=1 data.cv.fold=2` trains the matching stage 1).
    """
    m = cfg.model
    if m.pretrained_recipe is None or Path(m.pretrained).is_dir():
        return None
    shared = [item for item in overrides if item.startswith(STAGE_SHARED_KEYS) and not item.startswith("data.tokenizer")]
    return load_config(m.pretrained_recipe, shared + [f"output_dir={Path(m.pretrained).parent}"])


def train_recipe(cfg: TrainConfig, overrides: Sequence[str]) -> dict:
    """Train `cfg`, first its missing stage 1 when it is a two-stage recipe (`prerequisite_config`)."""
    stage1 = prerequisite_config(cfg, overrides)
    if stage1 is not None:
        print(f"mtgfe-train: {cfg.model.pretrained} does not exist yet: training its recipe "
              f"{cfg.model.pretrained_recipe!r} first (output_dir={stage1.output_dir})", flush=True)
        train(stage1)
    return train(cfg)


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtgfe-train",
        description="Train MTGFE (ITC + ITM + MLM + MVJRC). Configs: see mtgfe/training/configs/*.yaml.",
    )
    parser.add_argument("--config", default=DEFAULT_RECIPE,
                        help="YAML/JSON config file, or the name of a shipped config (e.g. synthetic_tiny); default: "
                             f"{DEFAULT_RECIPE}, the best UCM recipe found (results/README.md)")
    parser.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a config value by its dotted key, e.g. --set optim.lr=1e-4 max_steps=100")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`mtgfe-train`: parse, build a validated `TrainConfig`, train. Config errors exit with status 2."""
    args = build_parser().parse_args(argv)
    overrides = [item for group in args.overrides for item in group]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as error:
        sys.stderr.write(f"mtgfe-train: config error: {error}\n")
        return 2
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        return 0
    try:
        summary = train_recipe(cfg, overrides)
    except ConfigError as error:
        sys.stderr.write(f"mtgfe-train: config error: {error}\n")
        return 2
    if summary and int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({k: summary[k] for k in ("steps", "final_dir", "best")}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
