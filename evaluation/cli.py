"""Command lines of `mtgfe.evaluation`: `mtgfe-eval` (`main`), `mtgfe-cv` (`cv_main`) and the `pointing`
subcommand (`pointing_main`, `python -m mtgfe.evaluation.cli pointing`).

Only argument parsing, checks and printing live here; the work is `retrieval.evaluate_model`,
`compositional.evaluation.evaluate_compositional` and `cv.summarize`, which take plain arguments. This
module sits on the entry layer (docs/LAYOUT.md): `--cv-run` reads a training run's config, which the
library modules below it never import.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Sequence

import torch
from accelerate import Accelerator

from modeling_mtgfe import MTGFEModel
from modeling_mtgfe.configuration_mtgfe import MAX_RETRIEVAL_ALPHA, RETRIEVAL_SCORES
from mtgfe.data.registry import BENCHMARKS, canonical_benchmark
from mtgfe.processing import MTGFEProcessor
from mtgfe.training.config import ConfigError, load_config
from mtgfe.training.splits import load_cv
from mtgfe.utils.entrypoints import run_subcommand
from mtgfe.utils.io import UnsafePickleError, atomic_write_json, pickles_refused
from mtgfe.utils.validation import check_finite, finite_float_arg

from . import metrics
from .compositional.evaluation import evaluate_compositional, format_compositional
from .compositional.generation import COMPOSITIONAL_VERSION, SOURCES, VIEWS, generate_items, items_hash, write_jsonl
from .cv import format_summary, summarize
from .pointing import evaluate_pointing, format_pointing_table
from .retrieval import SHIFTS, evaluate_model, format_table, load_eval_dataset


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
    parser.add_argument("--data-dir", default=None, help="benchmark data folder (default: $MTGFE_DATA_DIR; one of the two is needed for a benchmark)")
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
    parser.add_argument("--alpha", type=finite_float_arg("--alpha", low=0.0, high=MAX_RETRIEVAL_ALPHA), default=None,
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
                        help="instead of --dataset: the compositional benchmark: filter / ITM / ITM+alpha*ITC "
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
            args.alpha_sweep_values = [check_finite("--alpha-sweep", float(a), low=0.0, high=MAX_RETRIEVAL_ALPHA)
                                       for a in args.alpha_sweep.split(",")]
        except ValueError as error:
            raise UsageError(f"--alpha-sweep={args.alpha_sweep!r}: {error} (comma-separated numbers in "
                             f"[0, {MAX_RETRIEVAL_ALPHA:g}])") from None
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
        with pickles_refused(f"--model {args.model}"):
            model = MTGFEModel.from_pretrained(args.model).to(accelerator.device).eval()
        processor = MTGFEProcessor.from_pretrained(args.model)
    except UnsafePickleError as error:
        raise UsageError(str(error)) from None
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
    try:
        with pickles_refused(f"--model {args.model}"):
            model = MTGFEModel.from_pretrained(args.model).eval()
    except UnsafePickleError as error:
        raise UsageError(str(error)) from None
    processor = MTGFEProcessor.from_pretrained(args.model)
    report = evaluate_compositional(model, processor, sources=args.sources, data_dir=args.data_dir, k=args.k,
                                    alpha=args.alpha, n_boot=args.n_boot, model_path=str(Path(args.model).resolve()),
                                    max_gallery=args.max_images)
    print(format_compositional(report))
    if args.output:
        atomic_write_json(args.output, report)
        print(f"wrote {args.output}")
    return 0


def cv_main(argv: Sequence[str] | None = None) -> int:
    """`mtgfe-cv DIR...`: table of the fold runs' held-out metrics and mean ± std over folds."""
    parser = argparse.ArgumentParser(prog="mtgfe-cv", description="Summarise a k-fold CV (data.cv) over its fold runs.")
    parser.add_argument("folders", nargs="+", help="output_dir of each fold run (globs are expanded)")
    parser.add_argument("--which", choices=("final", "best"), default="final",
                        help="final: end-of-run eval (default, unbiased); best: the best in-loop eval (optimistic)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    folders = [p for pattern in args.folders for p in (sorted(glob.glob(pattern)) or [pattern])]
    try:
        summary = summarize(folders, args.which)
    except (FileNotFoundError, ValueError) as error:
        sys.stderr.write(f"mtgfe-cv: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nmtgfe-cv: interrupted (Ctrl-C); nothing was written, run the same command again\n")
        return 130
    sys.stdout.write(format_summary(summary) + "\n")
    if args.json:
        atomic_write_json(args.json, summary)
    return 0


def compositional_items_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtgfe.evaluation.cli compositional-items",
                                     description="Write the compositional benchmark items of one source and view as JSONL.")
    parser.add_argument("--source", choices=sorted(SOURCES), required=True)
    parser.add_argument("--view", choices=VIEWS, default="pairs")
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    items = generate_items(args.source, args.view, args.data_dir)
    write_jsonl(items, args.out)
    print(f"{len(items)} items, version {COMPOSITIONAL_VERSION}, hash {items_hash(items)} -> {args.out}")
    return 0


def pointing_main(argv: Sequence[str] | None = None) -> int:
    """`python -m mtgfe.evaluation.cli pointing`: `pointing.evaluate_pointing`, table, JSON."""
    parser = argparse.ArgumentParser(prog="python -m mtgfe.evaluation.cli pointing",
                                     description="Synthetic pointing game: fusion grounding map vs dual map vs priors.")
    parser.add_argument("--model", required=True, help="folder saved by save_pretrained (model + processor)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="synthetic split of the scenes (val to choose --layer, test to report)")
    parser.add_argument("--scenes", type=int, default=200, help="scenes 0..N-1 of the split")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of the synthetic world")
    parser.add_argument("--layer", default="default",
                        help="fusion layer(s) of the map: an index, a comma list, 'all', or 'default'")
    parser.add_argument("--output", default=None, help="write the report(s) as JSON")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        sys.stderr.write(f"pointing: --scenes={args.scenes} must be >= 1\n")
        return 2
    try:
        model = MTGFEModel.from_pretrained(args.model).eval()
        processor = MTGFEProcessor.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"pointing: --model {args.model}: cannot load the model/processor: {str(error).splitlines()[0]}\n")
        return 2
    num_layers = len(model.fusion_encoder)
    try:
        layers = ([None] if args.layer == "default" else list(range(num_layers)) if args.layer == "all"
                  else [int(v) for v in args.layer.split(",")])
        reports = [evaluate_pointing(model, processor, num_scenes=args.scenes, seed=args.seed, split=args.split,
                                     layer=layer) for layer in layers]
    except ValueError as error:
        sys.stderr.write(f"pointing: --layer {args.layer}: {error}\n")
        return 2
    for report in reports:
        print(format_pointing_table(report))
    if args.output:
        atomic_write_json(args.output, reports if len(reports) > 1 else reports[0])
        print(f"wrote {args.output}")
    return 0


COMMANDS = {"eval": main, "cv": cv_main, "compositional-items": compositional_items_main, "pointing": pointing_main}


if __name__ == "__main__":  # `python -m mtgfe.evaluation.cli {eval,cv,compositional-items,pointing} ...`
    raise SystemExit(run_subcommand("mtgfe.evaluation.cli", COMMANDS))
