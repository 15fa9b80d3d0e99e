"""Retrieval evaluation of an MTGFE model on an images-view split: filtered, exhaustive or filter-only.

The scoring itself is `modeling_mtgfe.retrieval` (encode each image and distinct caption once, coarse
top-k by filter cosine with whole tie groups kept, ITM re-rank of every distinct candidate pair once);
this module only feeds it a dataset, spreads the work over processes and turns the score matrices
into the field's numbers with `mtgfe.training.metrics`:

* `mtgfe-eval --model DIR --dataset ucm --split test --k 16` (filtered), `--exhaustive` (every pair,
  the "no filter" row), `--filter-only` (ITC cosine alone, no fusion: the dual-encoder baseline row);
* the headline numbers use the expected tie rule (docs/METHOD.md §6b); pessimistic, optimistic and argsort
  variants are reported beside them, because UCM/RSICD repeat captions and R@1 depends on tie order.

Across processes (`accelerate launch`): images are encoded in shards and gathered; every rank
encodes the captions (cheap, and identical captions must share one encoding for exact ties); the
re-rank queries (images for i2t, distinct captions for t2i) are split between ranks, each rank fuses
the pairs of its queries, and the score rows are gathered. Memory is bounded by the retrieval
module's chunking and by fusing candidate pairs in `batch_size` groups.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from datasets import Image as ImageFeature
from PIL import Image
from transformers.utils import logging

import modeling_mtgfe  # noqa: F401  (registers the Auto classes)
from modeling_mtgfe import MTGFEModel
from modeling_mtgfe.configuration_mtgfe import RETRIEVAL_SCORES, resolve_retrieval_settings
from modeling_mtgfe.retrieval import (
    Candidates,
    ImageFeatures,
    coarse_topk,
    encode_images,
    encode_texts,
    score_candidates,
)
from mtgfe.processing import MTGFEProcessor, load_image
from mtgfe.utils.io import atomic_write_json
from mtgfe.utils.validation import check_finite, finite_float_arg

from . import metrics
from .benchmarks import BENCHMARKS, canonical_benchmark
from .config import load_config
from .config import ConfigError
from .compositional_eval import evaluate_compositional, format_compositional
from .cv import load_cv
from .deprecation import deprecated_attribute
from .loading import load_dataset_split
from .metrics import TIE_RULES, all_tie_rules
from .views import apply_colour


logger = logging.get_logger(__name__)

# Names that moved out of this module (still importable from here, with a DeprecationWarning).
_MOVED = {
    "RECALL_KEYS": ("mtgfe.training.metrics", "RECALL_KEYS"),
    "HEADLINE_RULE": ("mtgfe.training.metrics", "HEADLINE_RULE"),
    "_captions": ("mtgfe.training.evaluation", "flatten_captions"),
    "_image_sources": ("mtgfe.training.evaluation", "dataset_image_sources"),
}
SHIFTS = ("rotate90", "color", "rescale")
# Fixed colour shift (no randomness: every run sees the same test images): brighter, flatter, more
# saturated, hue moved by 0.05 of the circle.
_COLOR_SHIFT = {"jitter_order": ["brightness", "contrast", "saturation", "hue"], "brightness": 1.3,
                "contrast": 0.7, "saturation": 1.3, "hue": 0.05}


def apply_shift(image, shift: str):
    """A deterministic distribution shift of a test image (robustness rows):

    * `rotate90`: rotated by 90 degrees (RS captions rarely depend on orientation);
    * `color`: the fixed colour change `_COLOR_SHIFT`;
    * `rescale`: down-scaled x0.5 (the processor scales it back up: half the ground resolution).
    """
    if shift == "rotate90":
        return image.transpose(Image.Transpose.ROTATE_90)
    if shift == "color":
        return apply_colour(image.convert("RGB"), _COLOR_SHIFT)
    if shift == "rescale":
        return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)
    raise ValueError(f"unknown shift {shift!r}; allowed: {list(SHIFTS)}")


def dataset_image_sources(dataset) -> list[Any]:
    """Encoded bytes or paths of the split's images, without decoding them all into memory.

    `load_image` (inside the processor) then decodes each batch, with the RS-robust rules. Public
    because analyses (results/ucm_ceilings.py) encode the same images in the same order.
    """
    if "image" not in dataset.column_names:
        raise ValueError("The evaluation dataset has no 'image' column (was it loaded with require_images=False?)")
    raw = dataset.cast_column("image", ImageFeature(decode=False))["image"]
    sources = []
    for index, item in enumerate(raw):
        if item.get("bytes") is not None:
            sources.append(item["bytes"])
        elif item.get("path"):
            sources.append(item["path"])
        else:
            raise ValueError(f"image {index} of the evaluation dataset has neither bytes nor a path")
    return sources


def flatten_captions(dataset) -> tuple[list[str], list[int]]:
    """Flattened captions and the image row of each (`txt2img`): the order every score matrix uses."""
    if "captions" not in dataset.column_names:
        raise ValueError(
            f"evaluate_model needs the images view (a 'captions' list per image); got columns {dataset.column_names}. "
            "Load the split with view='images'."
        )
    texts, txt2img = [], []
    for row, captions in enumerate(dataset["captions"]):
        for caption in captions:
            texts.append(caption)
            txt2img.append(row)
    return texts, txt2img


def _shard(n: int, rank: int, world: int) -> range:
    """Contiguous block of `range(n)` for `rank` (sizes differ by at most one)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))


def _gather(accelerator, obj: list) -> list:
    """Concatenate per-rank lists in rank order (single process: the list itself)."""
    if accelerator is None or accelerator.num_processes == 1:
        return obj
    from accelerate.utils import gather_object  # only with several processes

    return gather_object(obj)


def _empty_like(candidates, keep: range):
    """Candidates with the rows outside `keep` emptied: `score_candidates` then fuses only this rank's queries."""
    empty_index = torch.empty(0, dtype=torch.long)
    empty_score = torch.empty(0, dtype=torch.float32)
    keep = set(keep)
    return Candidates(
        indices=[ix if q in keep else empty_index for q, ix in enumerate(candidates.indices)],
        scores=[sc if q in keep else empty_score for q, sc in enumerate(candidates.scores)],
    )


@torch.no_grad()
def evaluate_model(
    model,
    processor,
    dataset,
    k: int | None = None,
    exhaustive: bool = False,
    score: str | None = None,
    alpha: float | None = None,
    batch_size: int = 32,
    accelerator=None,
    filter_only: bool = False,
    rerank_batch_size: int = 256,
    dataset_name: str | None = None,
    split: str | None = None,
    model_path: str | None = None,
    output: str | os.PathLike | None = None,
    progress: bool = False,
    return_scores: bool = False,
    shift: str | None = None,
    alpha_sweep: Sequence[float] | None = None,
) -> dict:
    """Evaluate `model` on `dataset` (images view) and return (and optionally write) a result dict.

    Args:
        model: `MTGFEModel` or `MTGFEForPreTraining` (a DDP-wrapped model is unwrapped).
        processor: `MTGFEProcessor` (image decoding/normalisation and the tokenizer).
        dataset: `datasets.Dataset` with `image`, `captions` (list) rows; `txt2img` follows row order.
        k: filter top-k per query (ignored with `exhaustive` or `filter_only`); None: the model's
            `config.retrieval_k`.
        exhaustive: fuse every (image, distinct caption) pair: the "no filter" baseline.
        score: `itm` (ITM probability), `itm+itc` (`itm + alpha * cosine`) or `filter` (= `filter_only`);
            None: the model's `config.retrieval_score`.
        alpha: weight of the cosine with `itm+itc`; None: `config.retrieval_alpha` (None there: 1.0).
            With `itm` it must be None or 0.
        Defaults come from the model config so that `mtgfe-eval`, the search CLI and the pipeline score a
        saved model the same way, the way its training run selected it (`resolve_retrieval_settings`).
        filter_only: rank by the filter cosine alone (no fusion).
        batch_size: images per encoding batch; `rerank_batch_size`: pairs per fusion batch.
        accelerator: an `accelerate.Accelerator` to spread the work over its processes (all ranks must
            call this function; every rank gets the same result).
        output: write the result as JSON there (main process only).
        return_scores: also return the score matrices under `"scores"` (`{"i2t": (N_img, N_txt),
            "t2i": (N_txt, N_img) or None}`; None: t2i ranks the columns of `i2t`). Not written to JSON.
        shift: apply a deterministic distribution shift to every image (`SHIFTS`, `apply_shift`).
        alpha_sweep: with `score="itm"`, also report the metrics of `itm + a * cosine` for each `a`
            under `"alpha_sweep"` (same candidates, one fusion pass: the way to choose alpha on val
            without re-running the re-rank per value).

    Returns:
        `{dataset, split, k, exhaustive, filter_only, score, alpha, tie_rule, metrics, metrics_by_tie_rule,
        ties, timings {encode_s, rerank_s, total_s}, num_images, num_captions, num_distinct_captions,
        fusion_passes, exhaustive_pairs, model_path}`; `metrics` holds i2t/t2i R@1/5/10 and mR (percent,
        expected tie rule).
    """
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    alpha_given = alpha is not None
    k, score, alpha = resolve_retrieval_settings(getattr(model, "config", None), k, score, alpha)
    if score == "filter":
        filter_only, score = True, "itm"  # the report says score "itc" for filter-only, as before
    if filter_only and not alpha_given:
        alpha = 0.0  # no fused score to mix: the report's alpha stays 0, as before
    if score == "itm" and alpha != 0.0:
        raise ValueError(f"alpha={alpha} only applies to score='itm+itc'")
    was_training = model.training
    model.eval()
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    show = progress and rank == 0

    start = time.perf_counter()
    texts, txt2img = flatten_captions(dataset)
    sources = dataset_image_sources(dataset)
    if shift is not None:
        if shift not in SHIFTS:
            raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
        sources = [apply_shift(load_image(source), shift) for source in sources]
    num_images, num_texts = len(sources), len(texts)
    if num_images < 1 or num_texts < 1:
        raise ValueError(f"nothing to evaluate: {num_images} images, {num_texts} captions")

    # 1. encode: image shards gathered in rank order; captions on every rank (dedupe must see them all)
    my_images = _shard(num_images, rank, world)
    keep_tokens = not filter_only
    local = encode_images(model, processor, [sources[i] for i in my_images], batch_size=batch_size,
                          keep_tokens=keep_tokens, progress=show) if len(my_images) else None
    pieces = _gather(accelerator, [(local.embeds, local.tokens)] if local is not None else [])
    image_feats = ImageFeatures(
        embeds=torch.cat([embeds for embeds, _ in pieces]),
        tokens=torch.cat([tokens for _, tokens in pieces]) if keep_tokens else None,
    )
    text_feats = encode_texts(model, processor, texts, batch_size=max(batch_size, 128), keep_states=keep_tokens,
                              progress=show)
    encode_s = time.perf_counter() - start

    # 2. score
    rerank_start = time.perf_counter()
    fusion_passes = 0
    if filter_only:
        scores_i2t = image_feats.embeds @ text_feats.embeds[text_feats.inverse].t()
        scores_t2i = None  # t2i ranks the columns of the same cosine matrix
    else:
        # Exhaustive: every pair is fused once and both directions read the same matrix, so only the
        # i2t queries are shared out (t2i ranks its columns); filtered: each direction has its own top-k.
        topk = None if exhaustive else k
        cand_i2t = coarse_topk(image_feats.embeds, text_feats.embeds, topk, gallery_inverse=text_feats.inverse)
        cand_t2i = None if exhaustive else coarse_topk(text_feats.embeds, image_feats.embeds, topk)
        my_i2t = _shard(num_images, rank, world)
        my_t2i = _shard(text_feats.num_distinct, rank, world)
        if world > 1:
            cand_i2t = _empty_like(cand_i2t, my_i2t)
            cand_t2i = _empty_like(cand_t2i, my_t2i) if cand_t2i is not None else None
        result = score_candidates(model, image_feats, text_feats, cand_i2t, cand_t2i, score=score, alpha=alpha,
                                  batch_size=rerank_batch_size, progress=show)
        scores_i2t = torch.cat(_gather(accelerator, [result.scores_i2t[list(my_i2t)]]))
        scores_t2i = None
        if cand_t2i is not None:
            # gather distinct-caption rows (the result expands them to every input caption)
            first_input = torch.full((text_feats.num_distinct,), -1, dtype=torch.long)
            first_input[text_feats.inverse.flip(0)] = torch.arange(num_texts - 1, -1, -1)
            t2i_rows = _gather(accelerator, [result.scores_t2i[first_input[list(my_t2i)]]])
            scores_t2i = torch.cat(t2i_rows)[text_feats.inverse]
        fusion_passes = sum(_gather(accelerator, [int(result.stats.get("fusion_passes", 0))]))
    rerank_s = time.perf_counter() - rerank_start

    # 3. metrics under every tie rule, scanning the scores once
    by_rule = all_tie_rules(scores_i2t, txt2img, scores_t2i=scores_t2i)
    sweep = None
    if alpha_sweep:
        if filter_only or score != "itm":
            raise ValueError("alpha_sweep needs score='itm' with fusion (not filter_only)")
        cosine = (image_feats.embeds @ text_feats.embeds[text_feats.inverse].t()).float()
        sweep = {}
        for value in alpha_sweep:
            mixed_t2i = scores_t2i + value * cosine.t() if scores_t2i is not None else None
            rules = all_tie_rules(scores_i2t + value * cosine, txt2img, scores_t2i=mixed_t2i)
            sweep[str(float(value))] = {rule: {key: rules[rule][key] for key in metrics.RECALL_KEYS} for rule in TIE_RULES}
    headline = by_rule[metrics.HEADLINE_RULE]
    total_s = time.perf_counter() - start
    if was_training:
        model.train()
    report = {
        "dataset": dataset_name,
        "split": split,
        "k": None if (exhaustive or filter_only) else k,
        "exhaustive": bool(exhaustive and not filter_only),
        "filter_only": bool(filter_only),
        "score": "itc" if filter_only else score,
        "alpha": alpha,
        "shift": shift,
        "tie_rule": metrics.HEADLINE_RULE,
        "metrics": {key: headline[key] for key in metrics.RECALL_KEYS},
        "metrics_by_tie_rule": {rule: {key: by_rule[rule][key] for key in metrics.RECALL_KEYS} for rule in TIE_RULES},
        "ties": headline.get("ties", {}),
        "timings": {"encode_s": round(encode_s, 4), "rerank_s": round(rerank_s, 4), "total_s": round(total_s, 4)},
        "num_images": num_images,
        "num_captions": num_texts,
        "num_distinct_captions": text_feats.num_distinct,
        "fusion_passes": fusion_passes,
        "exhaustive_pairs": num_images * text_feats.num_distinct,
        "num_processes": world,
        "model_path": model_path,
    }
    if sweep is not None:
        report["alpha_sweep"] = sweep
    if output is not None and rank == 0:
        atomic_write_json(output, report)
    if return_scores:
        report["scores"] = {"i2t": scores_i2t, "t2i": scores_t2i}
    return report


def write_json(obj: dict, path: str | os.PathLike) -> None:
    """Deprecated: use `mtgfe.utils.io.atomic_write_json(path, obj)` (note the argument order)."""
    warnings.warn("mtgfe.training.evaluation.write_json is deprecated; use mtgfe.utils.io.atomic_write_json(path, obj)",
                  DeprecationWarning, stacklevel=2)
    atomic_write_json(path, obj)


def format_table(report: dict) -> str:
    """Markdown table: one row per tie rule, the headline rule first."""
    header = "| tie rule | " + " | ".join(metrics.RECALL_KEYS) + " |"
    rule_line = "|---|" + "---:|" * len(metrics.RECALL_KEYS)
    rows = []
    for rule in (metrics.HEADLINE_RULE, *[r for r in TIE_RULES if r != metrics.HEADLINE_RULE]):
        values = report["metrics_by_tie_rule"][rule]
        rows.append(f"| {rule} | " + " | ".join(f"{values[key]:.2f}" for key in metrics.RECALL_KEYS) + " |")
    mode = "filter only (ITC)" if report["filter_only"] else ("exhaustive" if report["exhaustive"] else f"k={report['k']}")
    t = report["timings"]
    title = (
        f"{report.get('dataset')} {report.get('split')}: {report['num_images']} images, {report['num_captions']} "
        f"captions ({report['num_distinct_captions']} distinct); {mode}, score={report['score']}"
        + (f" alpha={report['alpha']}" if report["score"] == "itm+itc" else "")
        + (f", shift={report['shift']}" if report.get("shift") else "")
    )
    footer = (
        f"fusion passes {report['fusion_passes']} (exhaustive {report['exhaustive_pairs']}); "
        f"encode {t['encode_s']:.1f} s, re-rank {t['rerank_s']:.1f} s, total {t['total_s']:.1f} s"
    )
    return "\n".join([title, "", header, rule_line, *rows, "", footer])


# ------------------------------------------------------------------------------------------ CLI
def load_eval_dataset(name: str, split: str, data_dir: str | None = None, image_dir: str | None = None,
                      data_file: str | None = None, max_images: int | None = None, synthetic_size: int = 128,
                      synthetic_scenes: int | None = None, synthetic_seed: int = 0):
    """The images view of a split: a benchmark, the synthetic data, or a user's JSONL/CSV file
    (`loading.load_dataset_split`, the loader the trainer and the demo use too)."""
    return load_dataset_split(name, split, "images", data_dir=data_dir, image_dir=image_dir, data_file=data_file,
                              max_images=max_images, synthetic_scenes=synthetic_scenes,
                              synthetic_seed=synthetic_seed, synthetic_size=synthetic_size)


class UsageError(ValueError):
    """A `mtgfe-eval` argument or input is wrong: printed as one line, exit status 2."""


def held_out_fold(run_dir: str | Path):
    """`(images dataset, dataset name, split label)` of the fold a `data.cv` training run held out."""
    config_file = Path(run_dir) / "train_config.yaml"
    if not config_file.is_file():
        raise UsageError(f"--cv-run {run_dir} has no train_config.yaml (not a training output folder)")
    try:
        cfg = load_config(config_file)
    except ConfigError as error:
        raise UsageError(f"--cv-run {run_dir}: {error}") from None
    if cfg.data.cv.folds is None:
        raise UsageError(f"--cv-run {run_dir} was not a cross-validation run (data.cv.folds is not set)")
    c = cfg.data.cv
    return load_cv(cfg).val, cfg.data.dataset, f"cv fold {c.fold}/{c.folds} of {cfg.data.train_split}+{cfg.data.val_split}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtgfe-eval",
        description="Evaluate an MTGFE model on text-image retrieval (R@1/5/10 both directions, mR).",
    )
    parser.add_argument("--model", required=True, help="folder saved by save_pretrained (model + processor)")
    parser.add_argument("--dataset", default=None, help="ucm | sydney | rsicd | rsitmd | synthetic | jsonl")
    parser.add_argument("--cv-run", default=None, metavar="DIR",
                        help="instead of --dataset/--split: the held-out fold of this cross-validation training run "
                             "(its train_config.yaml with data.cv), e.g. to score a fold model filter-only")
    parser.add_argument("--data-dir", default=None, help="benchmark data folder (default: $MTGFE_DATA_DIR or shared/data)")
    parser.add_argument("--image-dir", default=None, help="folder of the images, if not the dataset default")
    parser.add_argument("--data-file", default=None, help="JSONL/CSV caption file for --dataset jsonl")
    parser.add_argument("--split", default="test")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--k", type=int, default=None,
                      help="filter top-k per query (default: the model's retrieval_k, 16 unless trained otherwise)")
    mode.add_argument("--exhaustive", action="store_true", help="fuse every pair (no filter)")
    mode.add_argument("--filter-only", action="store_true", help="rank by the ITC filter cosine alone")
    parser.add_argument("--score", choices=RETRIEVAL_SCORES, default=None,
                        help="itm+itc, itm or filter (= --filter-only); default: the model's retrieval_score")
    parser.add_argument("--alpha", type=finite_float_arg("--alpha", low=0.0), default=None,
                        help="weight of the cosine in --score itm+itc (default: the model's retrieval_alpha, else 1)")
    parser.add_argument("--alpha-sweep", default=None,
                        help="comma-separated alphas: with --score itm also report itm + alpha * cosine for each")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoding batch")
    parser.add_argument("--rerank-batch-size", type=int, default=256, help="pairs per fusion batch")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate on the first N images only")
    parser.add_argument("--synthetic-size", type=int, default=128, help="render size of --dataset synthetic")
    parser.add_argument("--shift", choices=SHIFTS, default=None,
                        help="evaluate on shifted images: rotate90, color (fixed jitter) or rescale (x0.5)")
    parser.add_argument("--compositional", action="store_true",
                        help="instead of --dataset: the compositional benchmark (issue #14): filter / ITM / ITM+alpha*ITC "
                             "on the pairs (Winoground) and single-edit views, bootstrap CIs, edited-caption retrieval")
    parser.add_argument("--sources", nargs="+", default=["ucm_test", "rsicd_test"],
                        help="with --compositional: sources (ucm_test, rsicd_test; ucm_val is the development view "
                             "for recipe choices); reported separately and pooled")
    parser.add_argument("--n-boot", type=int, default=2000, help="with --compositional: bootstrap resamples (seeded)")
    parser.add_argument("--output", default=None, help="write the result JSON here")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every argument, before the model or any data loads: a wrong flag costs a second, not a model load."""
    if args.score == "itm" and args.alpha not in (None, 0.0):
        raise UsageError("--alpha only applies with --score itm+itc")
    if args.alpha_sweep:
        try:
            args.alpha_sweep_values = [check_finite("--alpha-sweep", float(a), low=0.0) for a in args.alpha_sweep.split(",")]
        except ValueError as error:
            raise UsageError(f"--alpha-sweep={args.alpha_sweep!r}: {error} (comma-separated numbers >= 0)") from None
        if args.score is None:
            args.score = "itm"  # the sweep adds a * cosine to the ITM score itself
    else:
        args.alpha_sweep_values = None
    for flag, value, low in (("--k", args.k, 1), ("--batch-size", args.batch_size, 1),
                             ("--rerank-batch-size", args.rerank_batch_size, 1), ("--max-images", args.max_images, 1),
                             ("--synthetic-size", args.synthetic_size, 16)):
        if value is not None and value < low:
            raise UsageError(f"{flag}={value} must be >= {low}")
    if not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model} is not a folder")
    if not args.compositional and (args.dataset is None) == (args.cv_run is None):
        raise UsageError("give exactly one of --dataset or --cv-run")
    if args.cv_run is not None and not Path(args.cv_run).is_dir():
        raise UsageError(f"--cv-run {args.cv_run} is not a folder")
    if args.dataset is not None:
        if args.dataset not in ("synthetic", "jsonl") and canonical_benchmark(args.dataset) is None:
            raise UsageError(f"unknown --dataset {args.dataset!r}; known: {['synthetic', 'jsonl', *sorted(BENCHMARKS)]}")
        if args.dataset == "jsonl" and not args.data_file:
            raise UsageError("--dataset jsonl needs --data-file (a JSONL/CSV caption file)")
    for flag, value, want in (("--data-dir", args.data_dir, "folder"), ("--image-dir", args.image_dir, "folder"),
                              ("--data-file", args.data_file, "file")):
        if value is not None and not (Path(value).is_dir() if want == "folder" else Path(value).is_file()):
            raise UsageError(f"{flag} {value} does not exist (expected a {want})")


def main(argv: Sequence[str] | None = None) -> int:
    """`mtgfe-eval`: parse, check every argument, load model + processor + split, evaluate, print a table,
    write JSON. Argument and input errors: one line on stderr, exit status 2; Ctrl-C: 130."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except UsageError as error:
        sys.stderr.write(f"mtgfe-eval: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nmtgfe-eval: interrupted (Ctrl-C); nothing was written, run the same command again\n")
        return 130


def _run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.compositional:
        return compositional_main(args)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    try:
        if args.cv_run is not None:
            dataset, args.dataset, args.split = held_out_fold(args.cv_run)
        else:
            dataset = load_eval_dataset(args.dataset, args.split, args.data_dir, args.image_dir, args.data_file,
                                        args.max_images, args.synthetic_size)
    except (FileNotFoundError, ValueError, KeyError) as error:  # data loaders name the file / split / dataset
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        raise UsageError(f"cannot load --dataset {args.dataset} --split {args.split}: {message}") from None
    try:
        model = MTGFEModel.from_pretrained(args.model).to(accelerator.device).eval()
        processor = MTGFEProcessor.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise UsageError(f"--model {args.model}: cannot load the model/processor: {str(error).splitlines()[0]}") from None
    report = evaluate_model(
        model,
        processor,
        dataset,
        k=args.k,
        exhaustive=args.exhaustive,
        filter_only=args.filter_only,
        score=args.score,
        alpha=args.alpha,
        batch_size=args.batch_size,
        rerank_batch_size=args.rerank_batch_size,
        accelerator=accelerator,
        dataset_name=args.dataset,
        split=args.split,
        model_path=str(Path(args.model).resolve()),
        output=args.output,
        progress=not args.no_progress,
        shift=args.shift,
        alpha_sweep=args.alpha_sweep_values,
    )
    accelerator.print(format_table(report))
    for value, rules in report.get("alpha_sweep", {}).items():
        accelerator.print(f"alpha {value}: mR {rules[metrics.HEADLINE_RULE]['mR']:.2f} ({metrics.HEADLINE_RULE} ties)")
    if args.output:
        accelerator.print(f"wrote {args.output}")
    return 0


def compositional_main(args) -> int:
    """`mtgfe-eval --compositional`: `compositional_eval.evaluate_compositional`, table, JSON."""
    if args.dataset is not None or args.cv_run is not None:
        raise UsageError("--compositional uses its own test sources (--sources), not --dataset/--cv-run")
    model = MTGFEModel.from_pretrained(args.model).eval()
    processor = MTGFEProcessor.from_pretrained(args.model)
    report = evaluate_compositional(model, processor, sources=args.sources, data_dir=args.data_dir, k=args.k,
                                    alpha=args.alpha, n_boot=args.n_boot, model_path=str(Path(args.model).resolve()),
                                    max_gallery=args.max_images)
    print(format_compositional(report))
    if args.output:
        atomic_write_json(args.output, report)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def __getattr__(name: str):
    """Old names kept importable (with a DeprecationWarning): see `_MOVED`."""
    return deprecated_attribute(__name__, name, _MOVED)
