"""`mtgfe-publish`: assemble a checkpoint into a Hub folder (`publish.assemble_hub_folder`) and upload it.

Argument parsing and messages only; the work takes plain arguments in `publish.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from mtgfe.utils.io import FileFormatError, read_yaml

from .publish import PublishError, assemble_hub_folder, upload_hub_folder


def _read_train_config(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"--train-config file not found: {path}")
    try:  # YAML is a superset of JSON; bounded: an alias bomb or a huge file is refused before it expands
        data = read_yaml(path, what="--train-config")
    except FileFormatError as error:
        raise ValueError(str(error)) from error
    if not isinstance(data, dict):
        raise ValueError(f"--train-config {path} must hold a mapping, got {type(data).__name__}.")
    return data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtgfe-publish",
        description="Assemble an mtgfe checkpoint into a self-contained Hub folder and upload it.",
    )
    parser.add_argument("model_dir", help="checkpoint folder (config.json, model.safetensors, processor files)")
    parser.add_argument("--repo-id", required=True, help="Hub repo, ORG/NAME")
    parser.add_argument("--eval", nargs="+", action="extend", default=[], metavar="JSON", help="evaluation JSON file(s) for the card")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    parser.add_argument("--commit-message", default="Upload MTGFE model")
    parser.add_argument("--dry-run", metavar="DIR", default=None, help="only write the folder to DIR (no network)")
    parser.add_argument("--base-model", action="append", default=[], help="Hub id the weights were initialised from")
    parser.add_argument("--train-config", default=None, help="training config (YAML/JSON) shown in the card")
    parser.add_argument("--license", default="apache-2.0")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(args.repo_id)
        if "/" not in args.repo_id:
            raise ValueError(f"--repo-id {args.repo_id!r} must be ORG/NAME (or USER/NAME).")
        options = dict(
            eval_results=args.eval or None,
            repo_id=args.repo_id,
            base_models=args.base_model,
            train_config=_read_train_config(args.train_config),
            license=args.license,
        )
        if args.dry_run:
            files = assemble_hub_folder(args.model_dir, args.dry_run, **options)
            print(f"dry run: {len(files)} files in {args.dry_run} (nothing uploaded):")
            for path in files:
                print(f"  {path.name}")
            return 0
        with tempfile.TemporaryDirectory(prefix="mtgfe-hub-") as folder:
            files = assemble_hub_folder(args.model_dir, folder, **options)
            info = upload_hub_folder(
                folder,
                args.repo_id,
                private=args.private,
                revision=args.revision,
                commit_message=args.commit_message,
            )
        print(f"uploaded {len(files)} files to {args.repo_id}: {getattr(info, 'commit_url', info)}")
        return 0
    except (PublishError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
