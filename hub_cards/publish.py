"""Publish an mtgfe checkpoint to the Hugging Face Hub as a self-contained, remote-code model repo.

Why an explicit assembly step: a training output folder also holds optimizer/scheduler state, RNG
states, intermediate checkpoints and sometimes data; uploading the folder as is would publish all of
it (and pickles that run code on load). :func:`assemble_hub_folder` therefore *re-saves* the model and
processor from the checkpoint into a fresh folder (safetensors weights, ``config.json`` with
``auto_map`` and ``custom_pipelines``, flat remote code, processor files), renders the model card from
the evaluation JSON, and copies only names on an allow-list (:data:`ALLOWED_PATTERNS`). The same list
is handed to ``upload_folder(allow_patterns=...)`` and checked with
``huggingface_hub.utils.filter_repo_objects``, so the dry run shows exactly what an upload sends.

CLI (``mtgfe-publish``)::

    mtgfe-publish runs/ucm --repo-id org/mtgfe-ucm --eval runs/ucm/eval_test.json --dry-run hub_out/
    HF_TOKEN=... mtgfe-publish runs/ucm --repo-id org/mtgfe-ucm --eval runs/ucm/eval_test.json --private
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modeling_mtgfe import MTGFEForPreTraining, MTGFEModel
from modeling_mtgfe.pipeline_mtgfe import save_for_pipeline
from mtgfe.processing import MTGFEProcessor

from .cards import render_model_card

logger = logging.getLogger(__name__)

__all__ = ["ALLOWED_PATTERNS", "PublishError", "assemble_hub_folder", "main", "upload_hub_folder"]

# Everything a published MTGFE repo may contain; nothing else is copied or uploaded. Patterns are
# fnmatch-style, as `upload_folder(allow_patterns=...)` and `filter_repo_objects` read them.
ALLOWED_PATTERNS: list[str] = [
    "README.md",
    # model
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    # processor (processor_config.json nests the image processor; the pipeline save also writes it alone)
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    # flat remote code (docs/CONTRACTS.md: the files that travel as Hub remote code)
    "configuration_*.py",
    "modeling_*.py",
    "losses.py",
    "retrieval.py",
    "retrieval_features.py",
    "grounding.py",
    "pipeline_mtgfe.py",
    "image_processing_mtgfe.py",
    "image_decoding.py",
    "processing_mtgfe.py",
]

# What `model_dir` must hold: the model is reloaded from it, so these are needed, not just nice to have.
_PROCESSOR_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


class PublishError(RuntimeError):
    """Publishing failed for a reason the user can act on (offline mode, no token, Hub refusal)."""


# ------------------------------------------------------------------------------------- checks
def _check_model_dir(model_dir: Path) -> dict[str, Any]:
    """Refuse a folder that cannot yield a complete repo, naming every missing piece."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir {model_dir} is not a directory.")
    missing = []
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        missing.append("config.json (the model config)")
    if not any((model_dir / name).is_file() for name in _WEIGHT_FILES):
        pickled = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pth"))
        hint = (
            f" (found only pickled weights {pickled}: reload them in a trusted session and save with "
            "save_pretrained, which writes safetensors)"
            if pickled
            else ""
        )
        missing.append(f"model.safetensors or model.safetensors.index.json (the weights){hint}")
    missing += [f"{name} (the processor)" for name in _PROCESSOR_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir} is not a complete mtgfe checkpoint; missing: " + "; ".join(missing) + ". Save the model and "
            "its MTGFEProcessor there with save_pretrained (the trainer's final output folder has both)."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from error
    if config.get("model_type") != "mtgfe":
        raise ValueError(f"{config_path} has model_type={config.get('model_type')!r}; mtgfe-publish publishes 'mtgfe' models.")
    return config


def _relative_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _allowed(names: Sequence[str]) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects

    return sorted(filter_repo_objects(names, allow_patterns=ALLOWED_PATTERNS))


def _verify_folder(out_dir: Path) -> list[str]:
    """Re-check the written folder the way `upload_folder` will select it."""
    files = _relative_files(out_dir)
    rogue = sorted(set(files) - set(_allowed(files)) | {f for f in files if "/" in f})
    if rogue:
        raise RuntimeError(f"{out_dir} holds files outside the allow-list: {rogue}")
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    problems = []
    if "AutoModel" not in (config.get("auto_map") or {}):
        problems.append("config.json has no auto_map['AutoModel'] (remote code would not load)")
    if "rs-retrieval" not in (config.get("custom_pipelines") or {}):
        problems.append("config.json has no custom_pipelines['rs-retrieval']")
    for name in ("README.md", "modeling_mtgfe.py", "configuration_mtgfe.py", "pipeline_mtgfe.py", *_PROCESSOR_FILES):
        if name not in files:
            problems.append(f"{name} was not written")
    if not any(name in files for name in _WEIGHT_FILES):
        problems.append("no safetensors weights were written")
    if problems:
        raise RuntimeError(f"The assembled folder {out_dir} is incomplete: " + "; ".join(problems))
    return files


# ------------------------------------------------------------------------------------ assembly
def assemble_hub_folder(
    model_dir: str | Path,
    out_dir: str | Path,
    eval_results: Any = None,
    repo_id: str | None = None,
    *,
    base_models: Sequence[str] = (),
    train_config: Mapping[str, Any] | None = None,
    reproduce_commands: Sequence[str] = (),
    license: str = "apache-2.0",
    **card_kwargs: Any,
) -> list[Path]:
    """Build the folder that gets uploaded: re-saved weights, config, processor, remote code, model card.

    Args:
        model_dir: an mtgfe checkpoint folder (config.json, safetensors weights, processor files). Other files
            in it (optimizer.bin, scheduler.pt, rng states, data) are never read or copied.
        out_dir: destination; must not exist or be empty, so stale files cannot ride along.
        eval_results: evaluation JSON(s) (dicts or paths, schema in `mtgfe.hub_cards.cards`) for the card.
        repo_id: the Hub id the card names (usage snippet, model-index name).
        base_models, train_config, reproduce_commands, license, card_kwargs: passed to `render_model_card`.

    Returns:
        The files written, sorted.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = _check_model_dir(model_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"out_dir {out_dir} exists and is not an empty folder; choose a new one.")
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError("out_dir must differ from model_dir.")

    # Reload and re-save rather than copy: the result is exactly what save_pretrained writes today
    # (safetensors, current auto_map, current remote code), whatever else the training folder holds.
    model_class = MTGFEModel if "MTGFEModel" in (config.get("architectures") or []) else MTGFEForPreTraining
    model = model_class.from_pretrained(model_dir).eval()
    processor = MTGFEProcessor.from_pretrained(model_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mtgfe-publish-") as staging:
        staging = Path(staging)
        save_for_pipeline(model, processor, staging)
        produced = _relative_files(staging)
        keep = set(_allowed([f for f in produced if "/" not in f]))
        skipped = sorted(set(produced) - keep)
        if skipped:
            logger.info("Not publishing files outside the allow-list: %s", skipped)
        for name in sorted(keep):
            shutil.copy2(staging / name, out_dir / name)

    card = render_model_card(
        out_dir,
        eval_results=eval_results,
        repo_id=repo_id,
        base_models=base_models,
        train_config=train_config,
        reproduce_commands=reproduce_commands,
        license=license,
        **card_kwargs,
    )
    card.save(out_dir / "README.md")
    files = _verify_folder(out_dir)
    logger.info("Assembled %d files for the Hub in %s", len(files), out_dir)
    return [out_dir / name for name in files]


# -------------------------------------------------------------------------------------- upload
def upload_hub_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload MTGFE model",
    token: str | None = None,
):
    """Create the repo if needed and upload `folder` (allow-listed files only); returns the `CommitInfo`.

    The token comes from `token`, else `HF_TOKEN` or the stored `hf auth login` token (huggingface_hub's
    usual lookup).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message,
            revision=revision,
            allow_patterns=ALLOWED_PATTERNS,
        )
    except OfflineModeIsEnabled as error:
        raise PublishError(
            f"Cannot publish to {repo_id}: Hugging Face Hub offline mode is enabled (HF_HUB_OFFLINE=1). Unset "
            "HF_HUB_OFFLINE to upload, or pass --dry-run DIR to only write the folder."
        ) from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = (
            " Set HF_TOKEN to a token with write access, or run `hf auth login`."
            if status in (401, 403)
            else ""
        )
        raise PublishError(f"The Hub refused the upload to {repo_id} (HTTP {status}): {error}.{hint}") from error
