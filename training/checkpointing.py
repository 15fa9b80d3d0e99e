"""Checkpoints, final/best model folders and the metrics log of a training run.

Why a module of its own: this is the part of the trainer that touches the file system, and its rules
are about crash safety, not about training. Every folder (`checkpoint-N/`, `best/`, `final/`) is
written to a temp sibling and renamed into place, so a run killed mid-save leaves the previous folder
intact and `resume_from: latest` never picks a half-written one; single files go through
`mtgfe.utils.io`. `metrics.jsonl` is append-only, and a resumed run first drops the records logged
after its checkpoint (those steps are run again).
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import shutil
from pathlib import Path

from mtgfe.utils.io import atomic_write_json, atomic_write_text, read_json

from .config import ConfigError, TrainConfig


STATE_FILE = "trainer_state.json"
PROCESSOR_DIR = "processor"  # inside each checkpoint: the exact tokenizer the run trains with
LOG_FILE = "metrics.jsonl"


def _atomic_dir(final: Path) -> Path:
    """The temp sibling a folder is written to before `_publish` renames it into place."""
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
        atomic_write_json(tmp / STATE_FILE, state, indent=2)
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
    """The checkpoint folder to resume from (`checkpoint.resume_from`: a folder, or `latest`), or None."""
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
            atomic_write_json(tmp / name, payload, indent=2)
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
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.is_file():
            self.path.unlink()
        want_tb = cfg.log.tensorboard
        if want_tb is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard is not a dependency
            except ImportError:
                if want_tb:
                    raise ConfigError("log.tensorboard=true but tensorboard is not installed (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(str(Path(cfg.output_dir) / "tensorboard"))

    def write(self, record: dict) -> None:
        """Append one record (a JSON line; its numbers also as TensorBoard scalars). Main process only."""
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


def read_trainer_state(checkpoint: Path) -> dict:
    """The loop position saved beside a checkpoint (`trainer_state.json`); a damaged file names itself."""
    return read_json(Path(checkpoint) / STATE_FILE, what="trainer state")
