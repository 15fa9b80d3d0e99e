"""`mtgfe-train`: the command line, the default recipe and two-stage recipes.

    mtgfe-train --config synthetic_tiny --set optim.lr=1e-4 --set max_steps=20
    python -m mtgfe.training.cli --config training/configs/ucm_small.yaml
    accelerate launch --multi_gpu --num_processes 2 -m mtgfe.training.cli --config ...   # 2-process DDP

Why apart from train.py: `train(cfg)` is the library entry point (one config, one run); what a user
types is a different concern: argument parsing, exit codes for config errors, and recipes that need a
stage 1 trained first (`train_recipe`, which the demo uses too).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from mtgfe.utils.io import FileFormatError

from .checkpointing import list_checkpoints
from .config import ConfigError, TrainConfig, load_config
from .train import train


# The recipe `mtgfe-train` runs without --config: the best one measured on UCM (two-stage, alpha by CV).
DEFAULT_RECIPE = "ucm_fusion"

# Overrides that describe the data and the machine, not the model: they apply to a prerequisite stage too
# (except data.tokenizer: a stage 2 reads its tokenizer from the stage-1 folder).
STAGE_SHARED_KEYS = ("data.", "seed=", "num_threads=", "mixed_precision=", "overwrite=")


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


def build_parser() -> argparse.ArgumentParser:
    """The `mtgfe-train` arguments: a config (file or shipped name), `--set` overrides, `--print-config`."""
    parser = argparse.ArgumentParser(
        prog="mtgfe-train",
        description="Train MTGFE (ITC + ITM + MLM + MVJRC). Configs: see mtgfe/training/configs/*.yaml.",
    )
    parser.add_argument("--config", default=DEFAULT_RECIPE,
                        help="YAML/JSON config file, or the name of a shipped config (e.g. synthetic_tiny); default: "
                             f"{DEFAULT_RECIPE}, the best UCM recipe found (experiments/README.md)")
    parser.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a config value by its dotted key, e.g. --set optim.lr=1e-4 max_steps=100")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser


def resume_hint(config: str, overrides: Sequence[str], output_dir: str) -> str:
    """The line printed on Ctrl-C: the last checkpoint and the exact command that continues from it."""
    checkpoints = list_checkpoints(Path(output_dir))
    if not checkpoints:
        return (f"no checkpoint was written yet in {output_dir} (checkpoint.save_every sets how often); "
                "start again with --set overwrite=true")
    kept = [item for item in overrides if not item.startswith(("checkpoint.resume_from=", "overwrite="))]
    command = ["mtgfe-train", "--config", config, "--set", *kept, "checkpoint.resume_from=latest"]
    return f"last checkpoint {checkpoints[-1]}; resume with: {shlex.join(command)}"


def main(argv: Sequence[str] | None = None) -> int:
    """`mtgfe-train`: parse, build a validated `TrainConfig`, train. Config errors exit with status 2
    (one line, no traceback), Ctrl-C with 130 and the command that resumes."""
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
    stage1 = None
    try:
        stage1 = prerequisite_config(cfg, overrides)
        summary = train_recipe(cfg, overrides)
    except ConfigError as error:
        sys.stderr.write(f"mtgfe-train: config error: {error}\n")
        return 2
    except FileFormatError as error:
        sys.stderr.write(f"mtgfe-train: {error}\n")
        return 2
    except KeyboardInterrupt:
        if stage1 is not None and not Path(cfg.model.pretrained).is_dir():  # stopped in stage 1 of a recipe
            shared = [item for item in overrides if item.startswith(STAGE_SHARED_KEYS)]
            hint = resume_hint(cfg.model.pretrained_recipe, [*shared, f"output_dir={stage1.output_dir}"],
                               stage1.output_dir)
            hint += "; then run the same mtgfe-train command again for stage 2"
        else:
            hint = resume_hint(args.config, overrides, cfg.output_dir)
        sys.stderr.write(f"\nmtgfe-train: interrupted (Ctrl-C); {hint}\n")
        return 130
    if summary and int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(json.dumps({k: summary[k] for k in ("steps", "final_dir", "best")}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
