"""Checkpoints, final/best model folders and the metrics log of a training run.

Why a module of its own: this is the part of the trainer that touches the file system, and its rules
are about crash safety, not about training. Every folder (`checkpoint-N/`, `best/`, `final/`) is
written to a temp sibling and renamed into place, so a run killed mid-save leaves the previous folder
intact and `resume_from: latest` never picks a half-written one; single files go through
`mtgfe.utils.io`. `metrics.jsonl` is append-only, and a resumed run first drops the records logged
after its checkpoint (those steps are run again).

Every checkpoint carries the run's identity (`run_identity`: a hash of the config fields that decide
the trajectory) and a manifest of its files (size + sha256), both in `trainer_state.json`. A resume
checks both before loading anything (`verify_checkpoint`): a checkpoint of another run, or one with a
truncated, missing or bit-flipped file, is refused with an error naming the run hashes / the file.
accelerate's `load_state` would otherwise swallow a damaged RNG state and resume inexactly. The manifest
only catches accidents: whoever hands over a folder can rewrite it. What stops a hostile folder is that no
file of it is ever unpickled: every pickle-format file is read first with `weights_only=True` and an
explicit allow-list (`load_state_file`), and one naming anything else is refused, naming the file.
A fresh run never starts in a folder holding another run's artefacts (`check_output_dir`), unless
`overwrite: true`, which removes them once the new run has passed every check (`remove_run_artefacts`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging as std_logging
import os
import shutil
from pathlib import Path

from transformers.utils import logging

from mtgfe.utils.io import FileFormatError, atomic_write_json, atomic_write_text, read_json, unsafe_pickle_global

from .config import ConfigError, TrainConfig


STATE_FILE = "trainer_state.json"
PROCESSOR_DIR = "processor"  # inside each checkpoint: the exact tokenizer the run trains with
LOG_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.yaml"

logger = logging.get_logger(__name__)

# Config keys that do NOT define a run (`run_identity` leaves them out): where it is written, whether to
# resume or overwrite, checkpoint cadence, logging, evaluation (it runs inside `fork_rng` and never changes
# the trajectory), and machine knobs that change speed, not the run (threads, loader workers). Everything
# else (model, data, views, optim, schedule, seed, batch, run length, precision, freezing) is the run.
RUN_IDENTITY_EXCLUDED = ("output_dir", "overwrite", "num_threads", "data.num_workers", "checkpoint", "eval", "log")
# What a fresh run refuses to start over (and `overwrite: true` removes): another run's artefacts.
RUN_ARTEFACTS = ("checkpoint-*", ".tmp-checkpoint-*", ".old-checkpoint-*", "final", "best", ".tmp-final",
                 ".tmp-best", LOG_FILE, "eval", "tensorboard", "tokenizer", CONFIG_FILE, "cv_folds.json")
# Files `accelerator.load_state` needs from a single-process checkpoint (plus random_states_{rank}.pkl per rank).
REQUIRED_STATE_FILES = ("model.safetensors", "optimizer.bin", "random_states_0.pkl")


class CheckpointError(ConfigError):
    """A checkpoint cannot be resumed exactly: another run's, or a file is missing or damaged (named)."""


# ------------------------------------------------------------------------------------------ run identity
def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: node}


def run_identity(cfg: TrainConfig) -> tuple[str, dict]:
    """`(run_id, fields)`: the dotted config fields that define the run (all but `RUN_IDENTITY_EXCLUDED`)
    and the first 16 hex digits of the sha256 of their canonical JSON."""
    flat = _flatten(cfg.to_dict())
    fields = {key: value for key, value in sorted(flat.items())
              if not any(key == ex or key.startswith(ex + ".") for ex in RUN_IDENTITY_EXCLUDED)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
    return digest, fields


def _differing_keys(saved: dict, current: dict) -> list[str]:
    return sorted(key for key in set(saved) | set(current) if saved.get(key, "<unset>") != current.get(key, "<unset>"))


# ------------------------------------------------------------------------------------------ output folder
def run_artefacts(output_dir: Path) -> list[Path]:
    """Artefacts of a run already in `output_dir` (checkpoints, final/, best/, metrics, ...)."""
    found: list[Path] = []
    for pattern in RUN_ARTEFACTS:
        found += sorted(Path(output_dir).glob(pattern))
    return found


def check_output_dir(cfg: TrainConfig) -> list[Path]:
    """A fresh run (no checkpoint to resume) refuses a folder that holds another run's work. With
    `overwrite: true` it returns that run's artefacts instead, for `remove_run_artefacts` to delete once the
    new run has passed every check: a run that is refused (a bad batch size for its data, a missing
    tokenizer) must not have removed the run it was going to replace. Deletes and writes nothing."""
    output_dir = Path(cfg.output_dir)
    found = run_artefacts(output_dir)
    work = [p for p in found if p.name.startswith(("checkpoint-", "final", "best", LOG_FILE))]
    if not work:
        return found
    if not cfg.overwrite:
        names = ", ".join(p.name for p in work[:6]) + (", ..." if len(work) > 6 else "")
        if cfg.checkpoint.resume_from == "latest":
            raise ConfigError(
                f"checkpoint.resume_from=latest but output_dir={str(output_dir)!r} has no checkpoint to resume, only "
                f"another run's artefacts ({names}); start over with --set overwrite=true or pick another output_dir")
        raise ConfigError(
            f"output_dir={str(output_dir)!r} already holds a training run ({names}); a fresh run there would "
            "delete or mix with its work. Continue it with --set checkpoint.resume_from=latest, start over with "
            "--set overwrite=true (removes that run's checkpoints, final/, best/, metrics), or pick another output_dir")
    return found


def remove_run_artefacts(output_dir: Path, found: list[Path]) -> None:
    """Delete what `check_output_dir` found (main process only; call it after every check has passed)."""
    removed = []
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    if removed:
        logger.warning("overwrite=true: removed the previous run's artefacts from %s: %s", output_dir, ", ".join(removed))


# ------------------------------------------------------------------------------------------ integrity
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: Path) -> dict:
    """`{relative path: {"size", "sha256"}}` of every file under `folder` but the state file itself."""
    folder = Path(folder)
    return {str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != STATE_FILE}


# What a checkpoint's pickle-format files (optimizer.bin, random_states_N.pkl, ...) may construct when read:
# tensors and plain containers (torch's weights-only unpickler) plus the numpy pieces of the numpy RNG state.
# Nothing else: a hand-made file naming any other callable (`exec`, `os.system`) is refused, never run.
def _numpy_rng_globals() -> list:
    import codecs

    import numpy as np

    allowed = [np.ndarray(0).__reduce__()[0], np.ndarray, np.dtype, codecs.encode]  # [0]: numpy's _reconstruct
    allowed += [getattr(np.dtypes, name) for name in ("UInt32DType",) if hasattr(getattr(np, "dtypes", None), name)]
    return allowed


def load_state_file(path: Path, mmap: bool = False):
    """A pickle-format checkpoint file read without running code: `torch.load(weights_only=True)` with the
    explicit allow-list above, on CPU. Raises whatever torch raises; callers name the file."""
    import torch

    with torch.serialization.safe_globals(_numpy_rng_globals()):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


# Pickle-format files accelerate's `load_state` may read from a checkpoint folder (the model itself is
# safetensors). Each is read here first with `load_state_file`, so a file holding code is named and refused
# before accelerate opens it, whichever of its own loaders (and `weights_only` defaults) it would use.
PICKLED_STATE_PATTERNS = ("optimizer*.bin", "scheduler*.bin", "sampler*.bin", "dl_state_dict*.bin", "scaler.pt",
                          "pytorch_model*.bin", "random_states_*.pkl", "custom_checkpoint_*.pkl")


UNSAFE_STATE = "it names objects other than tensors, arrays and plain containers"


def _unloadable_state_file(path: Path) -> str | None:
    """Why a pickle-format state file cannot be read safely (it is damaged, or names code), or None."""
    try:
        states = load_state_file(path, mmap=True)
    except Exception as err:  # noqa: BLE001  any failure to read means "do not resume from it"; named below
        name = unsafe_pickle_global(err)
        if name is not None:
            return f"cannot be loaded: {UNSAFE_STATE} ({name}); refused without unpickling it"
        return f"cannot be loaded ({type(err).__name__}: {str(err)[:160]})"
    if path.name.startswith("random_states_"):
        return _missing_rng_states(states)
    return None


def _missing_rng_states(states) -> str | None:
    """Why `random_states_N.pkl` cannot restore the RNGs, or None. accelerate's `load_state` catches every
    error here and logs at INFO, so a damaged file would resume silently with the wrong random streams."""
    if not isinstance(states, dict):
        return f"holds a {type(states).__name__}, not the RNG states"
    missing = [k for k in ("random_state", "numpy_random_seed", "torch_manual_seed") if k not in states]
    return f"lacks the RNG states {missing}" if missing else None


def verify_checkpoint(checkpoint: Path, cfg: TrainConfig, num_processes: int = 1) -> dict:
    """Check a checkpoint before `load_state` touches it; returns its trainer state.

    Refuses (`CheckpointError`) a checkpoint of another run (names both run hashes and the differing
    keys), a damaged `trainer_state.json`, and any file that is missing, truncated or changed since it was
    written (size + sha256 from the manifest). With `checkpoint.allow_inexact_resume: true` a damaged
    RNG state (`random_states_*.pkl`) only warns: the resume then continues, but not bit-exactly.
    """
    checkpoint = Path(checkpoint)
    try:
        saved = read_trainer_state(checkpoint)
    except FileFormatError as error:
        raise CheckpointError(f"cannot resume from {checkpoint}: {error}") from None
    run_id, fields = run_identity(cfg)
    if "run_id" in saved:
        if saved["run_id"] != run_id:
            diff = _differing_keys(saved.get("run_config", {}), fields)
            shown = "; ".join(f"{k}: {saved.get('run_config', {}).get(k, '<unset>')!r} -> {fields.get(k, '<unset>')!r}"
                              for k in diff[:8])
            raise CheckpointError(
                f"{checkpoint} belongs to another run (run {saved['run_id']}, this config is run {run_id}); "
                f"differing keys: {shown or '(unknown)'}. Resume with the config it was trained with "
                f"({checkpoint.parent / CONFIG_FILE}), or start a new run in another output_dir")
    else:
        logger.warning("%s has no run identity (written by an older mtgfe-train): cannot check it is this run's", checkpoint)
    required = [*REQUIRED_STATE_FILES[:2], *(f"random_states_{rank}.pkl" for rank in range(num_processes))]
    problems: list[tuple[str, str]] = []
    for name in required:
        if not (checkpoint / name).is_file():
            problems.append((name, "is missing"))
    for name, expected in saved.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            problems.append((name, "is missing"))
        elif path.stat().st_size != expected["size"]:
            problems.append((name, f"has {path.stat().st_size} bytes, {expected['size']} were written (truncated?)"))
        elif _sha256(path) != expected["sha256"]:
            problems.append((name, "fails its sha256 check (changed or damaged since it was written)"))
    # Every pickle-format file is read now, safely: a damaged RNG state (which accelerate's load_state would
    # swallow) or a file that names code is refused here, naming it, before load_state opens anything.
    pickled = sorted({path for pattern in PICKLED_STATE_PATTERNS for path in checkpoint.glob(pattern)})
    for path in pickled:
        if path.is_file() and not any(n == path.name for n, _ in problems):
            why = _unloadable_state_file(path)
            if why:
                problems.append((path.name, why))
    problems = list(dict.fromkeys(problems))
    if not problems:
        return saved
    text = "; ".join(f"{checkpoint / name} {why}" for name, why in problems)
    # A damaged RNG state may be skipped on request; one that names code never is (it was not written by us).
    only_rng = all(name.startswith("random_states_") and UNSAFE_STATE not in why for name, why in problems)
    if only_rng and cfg.checkpoint.allow_inexact_resume:
        logger.warning("%s. checkpoint.allow_inexact_resume=true: resuming WITHOUT the saved RNG state; the run "
                       "continues but is no longer an exact continuation", text)
        return saved
    hint = (" (set checkpoint.allow_inexact_resume=true to resume anyway, not exactly)" if only_rng
            else "; resume from an earlier checkpoint (checkpoint.resume_from=<folder>)")
    raise CheckpointError(f"cannot resume exactly from {checkpoint}: {text}{hint}")


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
        state = {**state, "files": file_manifest(tmp)}  # sizes + sha256, checked before a resume loads them
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
            # Drop what the interrupted run logged after its checkpoint: those steps are redone. A line that
            # does not parse (a kill mid-append leaves a partial last line) is dropped with a warning: the
            # log is a record of the run, not its state, so it never blocks a resume.
            kept, bad = [], []
            text = self.path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    step = record.get("step", 0)
                    keep = step <= resume_step
                except (json.JSONDecodeError, AttributeError, TypeError):
                    bad.append(number)
                    continue
                if keep:
                    kept.append(line)
            if bad:
                logger.warning("%s: dropped %d damaged line(s) (line %s) while resuming", self.path, len(bad),
                               ", ".join(map(str, bad[:5])))
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
