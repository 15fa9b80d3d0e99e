"""MTGFE training loop: one flat, readable Accelerate loop (ITC + ITM + MLM + MVJRC).

    mtgfe-train --config synthetic_tiny --set optim.lr=1e-4 --set max_steps=20      # the CLI: cli.py
    accelerate launch --multi_gpu --num_processes 2 -m mtgfe.training.cli --config ...   # 2-process DDP
    from mtgfe.training.train import train; train(load_config("synthetic_tiny"))     # as a library

This module is the builders (tokenizer, processor, model, parameter groups, lr schedule, freezing)
and `train()`, one flat loop that reads top to bottom. Checkpoints and the metrics log are in
`checkpointing.py`, the backbone cache in `backbone_cache.py`, the command line in `cli.py`.

What one run does, in order (everything that can fail cheaply fails before the model is built):

1. `TrainConfig` from YAML + `--set` overrides, validated (`config.py`).
2. Accelerator (mixed precision, gradient accumulation, seedable sampler, DDP with
   `find_unused_parameters`: a loss weight of 0 or a frozen part leaves parameters without gradient).
3. Data: the training captions view, wrapped so each epoch trains on `captions_per_image` captions
   per image; a DataLoader with its *own* generator (without one, creating the resumed iterator
   consumes the global RNG and the run diverges at the first resumed step; docs/HF_PITFALLS.md §7).
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
Bit-identical with `num_threads: 1`; with more intra-op threads only within float noise (CPU kernels
reduce in a thread-dependent order, so two straight multi-threaded runs already differ). Before loading,
`checkpointing.verify_checkpoint` checks the checkpoint is this run's and every file intact.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from datasets import concatenate_datasets
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer
from transformers.utils import logging

from modeling_mtgfe import MTGFEForPreTraining
from modeling_mtgfe.configuration_mtgfe import PRESETS, TASK_FIELDS, MTGFEConfig
from modeling_mtgfe.pipeline_mtgfe import check_gallery_files
from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, build_wordpiece_tokenizer, load_default_tokenizer
from mtgfe.evaluation import cv as cross_validation
from mtgfe.evaluation.retrieval import evaluate_model
from mtgfe.utils.io import atomic_write_json, atomic_write_text

from . import backbone_cache, checkpointing
from .collate import CachedTrainCollator, EpochCaptionDataset, TrainCollator, image_sources
from .config import (
    ConfigError,
    TrainConfig,
    build_view_transforms,
    check_data_dependent,
    warmup_steps,
)
from .grounding import GroundingTargets, token_grid
from .perturbation import CaptionPerturber
from .splits import load_config_split, load_cv
from .synthetic_twins import TwinQuads, load_twin_rows


logger = logging.get_logger(__name__)

# Parameters that start fresh on top of pretrained backbones (from_vision_text_pretrained): they get
# optim.head_lr. Everything else (vision backbone, BERT embeddings and layers) is "pretrained".
NEW_PARAMETER_PATTERNS = ("crossattention", "vision_token_proj", "image_position", "vision_proj", "text_proj", "itm_head",
                          "mlm_head", "mvjrc_head")
# Parameters that never get weight decay besides biases/norms (ndim < 2) and nn.Embedding tables.
NO_DECAY_NAMES = ("temp", "cls_token", "mask_token", "position_embeddings", "row_embeddings", "column_embeddings")
LOSS_NAMES = ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_mvjrc", "loss_grounding")


# ------------------------------------------------------------------------------------------ builders
def build_tokenizer(cfg: TrainConfig, train_captions: Sequence[str], accelerator, resume_dir: Path | None):
    """`default` (BERT uncased, matches MiniLM), `wordpiece` (trained on the training captions, small
    vocabulary for models trained from scratch), or a saved tokenizer/processor folder.

    A trained WordPiece vocabulary is not reproducible: the trainer numbers tokens of equal frequency
    in an order that changes from process to process. So it is trained once, on the main process,
    saved to `output_dir/tokenizer`, and every rank loads that copy; a resumed run loads the copy in
    the checkpoint, so token ids keep matching the trained embeddings.
    """
    d = cfg.data
    if resume_dir is not None and (resume_dir / checkpointing.PROCESSOR_DIR).is_dir():
        return AutoTokenizer.from_pretrained(str(resume_dir / checkpointing.PROCESSOR_DIR), model_max_length=d.max_length)
    if cfg.model.pretrained is not None and d.tokenizer == "default":
        return AutoTokenizer.from_pretrained(cfg.model.pretrained, model_max_length=d.max_length)
    if d.tokenizer == "default":
        return load_default_tokenizer(model_max_length=d.max_length)
    if d.tokenizer == "wordpiece":
        # Staged beside the run and renamed to `tokenizer/` by `publish_tokenizer` once every check has passed:
        # with overwrite=true the previous run's `tokenizer/` stays until then.
        folder = Path(cfg.output_dir) / STAGED_TOKENIZER
        if accelerator.is_main_process:
            tokenizer = build_wordpiece_tokenizer(train_captions, vocab_size=d.tokenizer_vocab_size,
                                                  model_max_length=d.max_length)
            shutil.rmtree(folder, ignore_errors=True)  # a staging copy a killed run left: never another run's work
            tokenizer.save_pretrained(str(folder))
        accelerator.wait_for_everyone()
        return AutoTokenizer.from_pretrained(str(folder), model_max_length=d.max_length)
    return AutoTokenizer.from_pretrained(d.tokenizer, model_max_length=d.max_length)


STAGED_TOKENIZER = ".tmp-tokenizer"


def publish_tokenizer(output_dir: Path) -> None:
    """Move a staged WordPiece tokenizer (`build_tokenizer`) to `output_dir/tokenizer` (main process)."""
    staged = output_dir / STAGED_TOKENIZER
    if staged.is_dir():
        shutil.rmtree(output_dir / "tokenizer", ignore_errors=True)
        os.replace(staged, output_dir / "tokenizer")


def build_processor(cfg: TrainConfig, tokenizer):
    """The processor the run trains and saves with: images at `data.image_size`, the run's tokenizer."""
    size = cfg.data.image_size
    return MTGFEProcessor(MTGFEImageProcessor(size={"height": size, "width": size}), tokenizer,
                          max_length=cfg.data.max_length)


# ------------------------------------------------------------------------------------------ model
def model_config_overrides(cfg: TrainConfig, tokenizer) -> dict:
    """MTGFEConfig keyword overrides: task weights and switches (the model config's `TASK_FIELDS`, from
    which the `model` section of the training config is built), extra fields, the tokenizer's special ids."""
    m = cfg.model
    overrides: dict[str, Any] = {name: getattr(m, name) for name in TASK_FIELDS}
    overrides.update({
        "pad_token_id": tokenizer.pad_token_id, "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id, "mask_token_id": tokenizer.mask_token_id,
    })
    if m.fusion_layer is not None:
        overrides["fusion_layer"] = m.fusion_layer
    if m.num_fusion_layers is not None:  # config validation guarantees model.init (from_vision_text_pretrained)
        overrides["num_fusion_layers"] = m.num_fusion_layers
    overrides.update(m.config)
    return overrides


def build_model(cfg: TrainConfig, tokenizer):
    """The model to train, from a preset, pretrained backbones, or a saved MTGFE folder."""
    m, size = cfg.model, cfg.data.image_size
    overrides = model_config_overrides(cfg, tokenizer)
    if m.pretrained is not None:
        model = MTGFEForPreTraining.from_pretrained(m.pretrained, **overrides)
    elif m.init is not None:
        kwargs = {k: v for k, v in PRESETS[m.preset].items() if k not in ("vision_config", "text_config")} if m.preset else {}
        kwargs.update(overrides)
        if m.init.vision == "efficientnet-lite0":
            kwargs["image_size"] = size  # the offline loader builds its config at this size
        model = MTGFEForPreTraining.from_vision_text_pretrained(m.init.vision, m.init.text, **kwargs)
    else:
        text_config = {"vocab_size": len(tokenizer), **overrides.pop("text_config", {})}
        vision_config = {"image_size": size, **overrides.pop("vision_config", {})}
        config = MTGFEConfig.from_preset(m.preset, vision_config=vision_config, text_config=text_config, **overrides)
        model = MTGFEForPreTraining(config)
        if m.linear_init_std is not None:  # from scratch only (config rule)
            init_text_fusion_linears(model, m.linear_init_std)
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


@torch.no_grad()
def init_text_fusion_linears(model, std: float) -> int:
    """Weights of every `nn.Linear` in the text and fusion layers from N(0, std), biases 0; returns how many.

    `model.linear_init_std` (its docstring says why: BERT's 0.02 kept the swap-quad loss of mirrored twins at
    ln 2 in the twin-recipe probes, 0.08 let it learn). Embeddings, projections and heads are left alone.
    """
    base = getattr(model, "mtgfe", model)
    count = 0
    for module in (*base.text_encoder.modules(), *base.fusion_encoder.modules()):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            count += 1
    return count


def backbones_are_pretrained(cfg: TrainConfig) -> bool:
    """Whether the run starts from trained weights (`model.init` or `model.pretrained`), not random ones."""
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


# ------------------------------------------------------------------------------------------ setup
def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """Mixed precision, gradient accumulation, a seedable sampler (the data order is a function of the
    seed and epoch: exact resume) and DDP with `find_unused_parameters` (a loss weight of 0 or a frozen
    part leaves parameters without gradient)."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def load_run_data(cfg: TrainConfig, accelerator):
    """`(train captions view, val images view or None, val label, CVData or None)` of the run.

    Annotations only: images decode lazily. With `data.cv`, `train` writes the fold assignment beside the
    run (`cv_folds.json`) once every check has passed, so `mtgfe-cv` can check fold runs come from one setup.
    """
    cv = load_cv(cfg) if cfg.data.cv.folds is not None else None
    val_name = cfg.data.val_split
    if cv is not None:
        m = cv.membership
        val_name = f"cv fold {m['fold']}/{m['folds']} of {'+'.join(m['pool_splits'])}"
        accelerator.print(f"data.cv: {m['pool_images']} pooled images in folds of {m['fold_sizes']}; training on "
                          f"{m['train']['images']} images ({m['train']['captions']} captions), validating on fold "
                          f"{m['fold']}: {m['val']['images']} images ({m['val']['captions']} captions)")
    train_rows = cv.train if cv is not None else load_config_split(cfg, cfg.data.train_split, "captions")
    val_set = None
    if cfg.eval.every > 0 or cfg.eval.at_end:
        val_set = cv.val if cv is not None else load_config_split(cfg, cfg.data.val_split, "images")
        if val_set is None:
            logger.warning("no validation data (data.val_file is not set): evaluation and best/ are skipped")
        elif cfg.eval.max_images is not None and cfg.eval.max_images < len(val_set):
            val_set = val_set.select(range(cfg.eval.max_images))
    return train_rows, val_set, val_name, cv


def check_image_files(rows, what: str) -> None:
    """Header-check every distinct image file of a split before the model is built: a missing file or one
    that is no image (a typo in a JSONL row, `/etc/hostname`) is named now, as a config error, instead of
    crashing the first step that samples it. Images held as bytes (synthetic) are decoded later as usual."""
    if rows is None or "image" not in rows.column_names:
        return
    sources, _ = image_sources(rows)
    try:
        check_gallery_files([s for s in sources if isinstance(s, str)], what=f"{what} image(s)",
                            outcome="Fix or remove those rows; nothing was trained.")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def load_twins(cfg: TrainConfig, train_rows):
    """The rendered twin quads of the synthetic training scenes (`data.synthetic.twins`), or None when off.

    Built from the training rows themselves (scene i = image i of the train split), so no validation or test
    scene can be the source of a twin."""
    t, syn = cfg.data.synthetic.twins, cfg.data.synthetic
    if not t.types:
        return None
    rows = load_twin_rows(train_rows, t.types, per_scene=t.per_scene, seed=syn.seed, twin_seed=t.seed,
                          image_size=syn.render_size)
    logger.info("twins: %d quads of types %s from %d training scenes", len(rows) // 2, t.types,
                len(set(train_rows["image_id"])))
    return rows


def build_perturber(cfg: TrainConfig, train_set, twin_rows=None) -> CaptionPerturber | None:
    """Edited-caption negatives (`model.itm/itc_perturbation_negatives`) from the *training* captions only.

    ITM and ITC levers share one generator with the same rate and seed: a run with either lever at rate r
    sees exactly the same edited captions, so the two are compared on the same data and budget.
    `twin_rows` (`load_twins`): the quads of `perturbation_source: twins`."""
    m = cfg.model
    rate = max(m.itm_perturbation_negatives if m.itm_weight > 0 else 0.0,
               m.itc_perturbation_negatives if m.itc_weight > 0 else 0.0)
    if rate <= 0:
        return None
    dataset = getattr(train_set, "dataset", train_set)
    twins = None
    if m.perturbation_source == "twins":
        if twin_rows is None:
            raise ConfigError("model.perturbation_source=twins needs data.synthetic.twins.types (rendered twins)")
        if cfg.data.backbone_cache.enabled:  # the collator reads tokens by image id: skip decoding the images
            twin_rows = twin_rows.select_columns([c for c in twin_rows.column_names if c != "image"])
        twins = TwinQuads(twin_rows)
    perturber = CaptionPerturber(dataset["caption"], rate=rate, seed=cfg.seed, source=m.perturbation_source,
                                 dataset=dataset if m.perturbation_source in ("pairs", "pairs+edits") else None,
                                 twins=twins)
    if perturber.partners is not None:
        logger.info("swap quads: %d of %d training images have a partner caption",
                    perturber.partners.images_with_partners(), len(set(dataset["image_id"])))
    return perturber


def build_train_loader(cfg: TrainConfig, train_set, processor, views_pair, accelerator, twin_rows=None):
    """`(collator, prepared DataLoader)`. The loader has its *own* generator: without one, creating the
    resumed iterator consumes the global RNG and the run diverges at the first resumed step (docs/HF_PITFALLS.md §7).
    With the backbone cache the collator gets its cache once the model exists (`train`)."""
    perturber = build_perturber(cfg, train_set, twin_rows)
    if cfg.data.backbone_cache.enabled:
        collator = CachedTrainCollator(processor, cfg.seed, None, augment=cfg.views.augment,
                                       mvjrc=cfg.model.mvjrc_weight > 0, max_length=cfg.data.max_length,
                                       perturber=perturber)
    else:
        collator = TrainCollator(processor, cfg.seed, *views_pair, cfg.data.max_length, perturber=perturber)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,  # full batches: ITM needs negatives, MVJRC's BatchNorm more than one row
        collate_fn=collator,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    quads = perturber is not None and (perturber.partners is not None or perturber.twins is not None)
    if quads and accelerator.num_processes > 1:
        # partner rows make batch sizes differ across processes, which the cross-process ITC gather cannot take
        raise ConfigError(f"model.perturbation_source={cfg.model.perturbation_source} runs on one process only "
                          f"(got {accelerator.num_processes}); use perturbation_source=edits for multi-process runs")
    loader = accelerator.prepare(loader)
    if len(loader) == 0:
        raise ConfigError(f"the training set has {len(train_set)} rows per epoch: too few for batch_size={cfg.batch_size} "
                          f"on {accelerator.num_processes} process(es)")
    return collator, loader


def write_retrieval_defaults(config, cfg: TrainConfig) -> None:
    """Store how the run scored retrieval (`eval.k`, `eval.score`, `eval.alpha`; `eval.filter_only` is
    the `filter` score) in the model config, so `mtgfe-eval`, search and the pipeline score the saved
    model the way its recipe was selected, without the user repeating the flags."""
    e = cfg.eval
    config.retrieval_k = e.k
    config.retrieval_score = "filter" if e.filter_only else e.score
    if e.score == "itm+itc":
        config.retrieval_alpha = e.alpha


def resume_state(accelerator, resume_dir: Path, state: dict, total_steps: int, batches_per_epoch: int,
                 saved: dict | None = None) -> None:
    """Load model, optimizer and RNG states and the loop position of `resume_dir` into `state`.
    `saved`: its trainer state, already checked by `checkpointing.verify_checkpoint`."""
    if saved is None:
        saved = checkpointing.read_trainer_state(resume_dir)
    accelerator.load_state(str(resume_dir))
    if saved.get("total_steps") != total_steps:
        logger.warning("resuming a run planned for %s steps as a %s-step run: the lr schedule differs",
                       saved.get("total_steps"), total_steps)
    state.update({k: saved[k] for k in ("epoch", "step", "batch_in_epoch", "best")})
    if state["batch_in_epoch"] >= batches_per_epoch:
        state["epoch"], state["batch_in_epoch"] = state["epoch"] + 1, 0
    accelerator.print(f"resumed from {resume_dir} at step {state['step']} (epoch {state['epoch']}, "
                      f"{state['batch_in_epoch']} batches into it)")


def evaluate_and_select(cfg: TrainConfig, accelerator, model, processor, val_set, val_name: str, state: dict,
                        log: checkpointing.MetricsLog, step: int) -> dict:
    """Evaluate on the validation images (inside `fork_rng`: how often one evaluates must not change the
    training trajectory), log it, write `eval/step-N.json`, and save `best/` when the selection metric
    improved."""
    output_dir = Path(cfg.output_dir)
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        report = evaluate_model(
            model, processor, val_set, k=cfg.eval.k, exhaustive=cfg.eval.exhaustive, score=cfg.eval.score,
            filter_only=cfg.eval.filter_only or cfg.eval.score == "filter",
            alpha=cfg.eval.alpha, batch_size=cfg.eval.batch_size, accelerator=accelerator,
            dataset_name=cfg.data.dataset, split=val_name, model_path=str(output_dir),
            alpha_sweep=cfg.eval.alpha_sweep,
        )
    report["step"] = step
    value = report["metrics"][cfg.eval.selection_metric]
    log.write({"type": "eval", "step": step, "epoch": state["epoch"], "metrics": report["metrics"],
               "fusion_passes": report["fusion_passes"], "eval_s": report["timings"]["total_s"]})
    if accelerator.is_main_process:
        atomic_write_json(output_dir / "eval" / f"step-{step}.json", report)
    best = state["best"]
    if best is None or value > best["value"]:
        state["best"] = {"metric": cfg.eval.selection_metric, "value": value, "step": step}
        checkpointing.save_pretrained_atomic(accelerator, model, processor, output_dir / "best", {"eval_results.json": report})
    accelerator.print(f"step {step}: val {cfg.eval.selection_metric} {value:.2f} "
                      f"(best {state['best']['value']:.2f} at step {state['best']['step']})")
    return report


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups` (their `names` lists are for tests and logs; torch does not take them)."""
    groups = param_groups(model, cfg)
    return torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "names"} for g in groups],
        lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
    )


def train_record(cfg: TrainConfig, accelerator, optimizer, window: dict, window_ids: list[int], step: int, epoch: int,
                 scale: float, grad_norm, window_start: float, start_time: float) -> dict:
    """The `metrics.jsonl` line of a logging step: the mean of each loss over the micro-batches since the
    last line (averaged over processes), lr per group, grad norm, throughput (and sample ids if wanted)."""
    now = time.perf_counter()
    # With the cross-process ITC (model.config.itc_gather) each process's loss_itc covers its own rows
    # against the global batch, so this mean over processes is the global batch's ITC loss (equal batches).
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
        record["sample_ids"] = gather_lists(accelerator, window_ids)
    return record


def gather_lists(accelerator, items: list[int]) -> list[list[int]]:
    """One list per process (rank order): the sample indices each rank trained on."""
    if accelerator.num_processes == 1:
        return [items]
    return gather_object([items])


# ------------------------------------------------------------------------------------------ training
def train(cfg: TrainConfig) -> dict:
    """Run training as configured; returns a summary dict (steps, final/best paths, last losses, eval).

    Everything that can fail cheaply (config, data, tokenizer, run length) fails before the model is built.
    """
    output_dir = Path(cfg.output_dir)
    # ---- the output folder and the checkpoint to resume, checked before any work or any write: a fresh
    # run never mixes with another run's folder, a resume only continues this run from intact files
    resume_dir = checkpointing.resolve_resume(cfg)
    accelerator = make_accelerator(cfg)
    replaced: list[Path] = []  # with overwrite=true: the previous run's artefacts, removed once all checks pass
    if resume_dir is None:
        replaced = checkpointing.check_output_dir(cfg)
        resumed_state = None
    else:
        resumed_state = checkpointing.verify_checkpoint(resume_dir, cfg, accelerator.num_processes)
        if resume_dir.resolve().parent != output_dir.resolve():  # continuing into another folder: it must be free
            replaced = checkpointing.check_output_dir(cfg)
    set_seed(cfg.seed)

    # ---- data (annotations only so far: images decode lazily), tokenizer, loader, data-dependent checks
    train_rows, val_set, val_name, cv = load_run_data(cfg, accelerator)
    check_image_files(train_rows, "training")
    check_image_files(val_set, "validation")
    twin_rows = load_twins(cfg, train_rows)
    cache_cfg = cfg.data.backbone_cache
    train_set = EpochCaptionDataset(train_rows, cfg.data.captions_per_image, seed=cfg.seed,
                                    load_images=not cache_cfg.enabled)
    views_pair = build_view_transforms(cfg)
    # a wordpiece vocabulary also learns the twins' words (training captions too; "top", "far" are in no other)
    vocabulary_captions = list(train_rows["caption"]) + (list(twin_rows["caption"]) if twin_rows is not None else [])
    tokenizer = build_tokenizer(cfg, vocabulary_captions, accelerator, resume_dir)
    try:
        processor = build_processor(cfg, tokenizer)
        collator, train_dl = build_train_loader(cfg, train_set, processor, views_pair, accelerator, twin_rows)
        batches_per_epoch = len(train_dl)
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
        total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
        num_epochs = math.ceil(total_steps / steps_per_epoch)
        check_data_dependent(cfg, total_steps, train_set.max_captions_per_image)
        warmup = warmup_steps(cfg, total_steps)
    except BaseException:  # a refused run leaves the folder as it found it: no staged tokenizer behind
        if accelerator.is_main_process:
            shutil.rmtree(output_dir / STAGED_TOKENIZER, ignore_errors=True)
        raise

    # ---- every check has passed: only now replace the previous run (overwrite=true) and write this one's files
    accelerator.wait_for_everyone()  # every rank has read the staged tokenizer before it moves
    if accelerator.is_main_process:
        checkpointing.remove_run_artefacts(output_dir, replaced)
        publish_tokenizer(output_dir)
        atomic_write_text(output_dir / checkpointing.CONFIG_FILE, cfg.to_yaml())
        if cv is not None:
            atomic_write_json(output_dir / cross_validation.FOLDS_FILE, cv.membership)
    accelerator.wait_for_everyone()

    # ---- model, freezing, optimizer
    model = build_model(cfg, tokenizer)
    write_retrieval_defaults(model.config, cfg)  # how the recipe was selected travels with the model
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
        pool_rows = cv.pool if cv is not None else None
        if twin_rows is not None:  # twin images need their own cache rows (they are looked up by image id)
            pool_rows = concatenate_datasets([d.select_columns(["image", "image_id"]) for d in (train_rows, twin_rows)])
        collator.cache = backbone_cache.load_or_build_backbone_cache(cfg, model, processor, train_rows, accelerator,
                                                      pool_rows=pool_rows)
        collator.dtype = next(model.parameters()).dtype
    if cfg.model.grounding_weight > 0:  # targets index the model's token grid, known once the model exists
        grid = token_grid(model, cfg.data.image_size)
        collator.grounding = GroundingTargets(tokenizer, grid, cfg.data.max_length)
        accelerator.print(f"grounding loss (weight {cfg.model.grounding_weight}) on the {grid[0]} x {grid[1]} token "
                          "grid of the twin rows")
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    min_ratio = cfg.schedule.min_lr / cfg.optim.lr

    # ---- resume
    run_id, run_fields = checkpointing.run_identity(cfg)
    state = {"epoch": 0, "step": 0, "batch_in_epoch": 0, "best": None, "total_steps": total_steps,
             "run_id": run_id, "run_config": run_fields}
    if resume_dir is not None:
        resume_state(accelerator, resume_dir, state, total_steps, batches_per_epoch, resumed_state)
    else:
        set_seed(cfg.seed, device_specific=True)  # per-rank streams for masking/negatives/dropout
    log = checkpointing.MetricsLog(accelerator, cfg, state["step"] if resume_dir is not None else None)
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
            for name in LOSS_NAMES:
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
                record = train_record(cfg, accelerator, optimizer, window, window_ids, step, epoch, scale, grad_norm,
                                      window_start, start_time)
                log.write(record)
                last_record = record
                progress.set_postfix(loss=f"{record['loss']:.4f}")
                window, window_ids, window_start = {}, [], time.perf_counter()
            if frozen_now and unfreeze_at is not None and step >= unfreeze_at:
                frozen_now = set_trainable(step)
                accelerator.print(f"step {step}: unfroze {len(frozen)} parameter tensors")
            if val_set is not None and ((cfg.eval.every > 0 and step % cfg.eval.every == 0) or (last and cfg.eval.at_end)):
                last_eval = evaluate_and_select(cfg, accelerator, model, processor, val_set, val_name, state, log, step)
            if (cfg.checkpoint.save_every > 0 and step % cfg.checkpoint.save_every == 0) or (
                    last and cfg.checkpoint.save_last):
                checkpointing.save_checkpoint(accelerator, output_dir, dict(state), cfg.checkpoint.keep_last, processor)
            if last:
                done = True
                break
        if not done:
            state["batch_in_epoch"] = 0
    progress.close()

    # ---- final model (+ the last evaluation, copied beside it)
    final_dir = output_dir / "final"
    checkpointing.save_pretrained_atomic(accelerator, model, processor, final_dir,
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
