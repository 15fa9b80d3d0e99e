"""Retrieval evaluation of an MTGFE model on an images-view split: filtered, exhaustive or filter-only.

The scoring itself is `modeling_mtgfe.retrieval` (encode each image and distinct caption once, coarse
top-k by filter cosine with whole tie groups kept, ITM re-rank of every distinct candidate pair once);
this module only feeds it a dataset, spreads the work over processes and turns the score matrices
into the field's numbers with `mtgfe.evaluation.metrics`:

* `mtgfe-eval --model DIR --dataset ucm --split test --k 16` (filtered), `--exhaustive` (every pair,
  the "no filter" row), `--filter-only` (ITC cosine alone, no fusion: the dual-encoder baseline row);
* the headline numbers use the expected tie rule (docs/METHOD.md §6b); pessimistic, optimistic and argsort
  variants are reported beside them, because UCM/RSICD repeat captions and R@1 depends on tie order.

Across processes (`accelerate launch -m mtgfe.evaluation.cli eval ...`): images are encoded in shards
and gathered; every rank encodes the captions (cheap, and identical captions must share one encoding for
exact ties); the re-rank queries (images for i2t, distinct captions for t2i) are split between ranks,
each rank fuses the pairs of its queries, and the score rows are gathered. Memory is bounded by the
retrieval module's chunking and by fusing candidate pairs in `batch_size` groups.
"""

from __future__ import annotations

import os
import time
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

from mtgfe.data.loading import load_dataset_split
from mtgfe.data.views import apply_colour

from . import metrics
from .metrics import TIE_RULES, all_tie_rules


logger = logging.get_logger(__name__)

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
    because analyses (experiments/ucm/ceilings.py) encode the same images in the same order.
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


# ------------------------------------------------------------------------------------------ data
def load_eval_dataset(name: str, split: str, data_dir: str | None = None, image_dir: str | None = None,
                      data_file: str | None = None, max_images: int | None = None, synthetic_size: int = 128,
                      synthetic_scenes: int | None = None, synthetic_seed: int = 0):
    """The images view of a split: a benchmark, the synthetic data, or a user's JSONL/CSV file
    (`loading.load_dataset_split`, the loader the trainer and the demo use too)."""
    return load_dataset_split(name, split, "images", data_dir=data_dir, image_dir=image_dir, data_file=data_file,
                              max_images=max_images, synthetic_scenes=synthetic_scenes,
                              synthetic_seed=synthetic_seed, synthetic_size=synthetic_size)
