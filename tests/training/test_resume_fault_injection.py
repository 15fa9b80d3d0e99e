"""Fault injection, training half: reused output folders, damaged checkpoint files, kill -9,
Ctrl-C. Every fault ends in one of two ways: a result bit-identical to an uninterrupted run (with
num_threads=1), or an error that names the damaged file / the conflicting run. Never a silent divergence.

One uninterrupted reference run (6 steps, checkpoints at 2, 4, 6) is shared by the module; each test
works on a copy. The kill -9 tests run the CLI in a subprocess and are marked `slow`.
The index half (gallery index files) is tests/search/test_index_fault_injection.py.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtgfe.training.cli import main

from tests.helpers.training import BASE, one_thread  # noqa: F401  (autouse: one intra-op thread)
from tests.helpers.paths import REPO_ROOT


REPO = REPO_ROOT
STEPS = 6
COMMON = [f"max_steps={STEPS}", "checkpoint.save_every=2", "checkpoint.keep_last=null", "eval.at_end=false",
          "num_threads=1"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A fixed tokenizer: a WordPiece trained per run is not reproducible across processes."""
    from mtgfe.processing import build_wordpiece_tokenizer
    from mtgfe.data.synthetic import load_synthetic

    folder = tmp_path_factory.mktemp("tokenizer")
    captions = load_synthetic("train", num_scenes=48, image_size=16)["caption"]
    build_wordpiece_tokenizer(captions, vocab_size=1000, model_max_length=40).save_pretrained(str(folder))
    return folder


def args(out: Path, tokenizer_dir: Path, *extra: str) -> list[str]:
    return BASE + [f"output_dir={out}", f"data.tokenizer={tokenizer_dir}", *COMMON, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer_dir):
    """The uninterrupted run every faulty run is compared with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(args(out, tokenizer_dir)) == 0
    torch.set_num_threads(before)
    return out


def copy_run(reference: Path, tmp_path: Path, keep_up_to: int | None = None) -> Path:
    """A copy of the reference run; with `keep_up_to`, as if it had been killed after that checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    if keep_up_to is not None:
        for step in range(keep_up_to + 2, STEPS + 1, 2):
            shutil.rmtree(out / f"checkpoint-{step}")
        shutil.rmtree(out / "final")
    return out


def same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert x.keys() == y.keys()
    different = [k for k in x if not torch.equal(x[k], y[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "train"]


# ------------------------------------------------------------------------------------------ reused folder
def test_a_fresh_run_into_a_used_folder_is_refused_before_any_work(reference, tmp_path, tokenizer_dir, capsys):
    out = copy_run(reference, tmp_path)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    metrics = (out / "metrics.jsonl").read_bytes()
    assert main(args(out, tokenizer_dir, "max_steps=8", "optim.lr=2e-4")) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "checkpoint.resume_from=latest" in err and "overwrite=true" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # nothing deleted, nothing written
    assert (out / "metrics.jsonl").read_bytes() == metrics


def test_overwrite_true_removes_the_old_run_first(reference, tmp_path, tokenizer_dir, caplog):
    out = copy_run(reference, tmp_path)
    assert main(args(out, tokenizer_dir, "max_steps=2", "overwrite=true")) == 0
    assert "removed the previous run's artefacts" in caplog.text and "checkpoint-6" in caplog.text
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # the old 4 and 6 are gone
    assert steps_logged(out) == [1, 2]


@pytest.mark.parametrize("extra", [
    ("batch_size=100000",),  # refused by the loader: too few rows for one batch
    ("batch_size=100000", "data.tokenizer=wordpiece"),  # ... after a tokenizer was trained for the new run
])
def test_overwrite_true_keeps_the_old_run_when_the_new_one_is_refused(reference, tmp_path, tokenizer_dir, capsys,
                                                                       extra):
    out = copy_run(reference, tmp_path)
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main(args(out, tokenizer_dir, "overwrite=true", *extra)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "too few for batch_size=100000" in err, err
    after = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # nothing removed, nothing written, nothing left behind


def test_resume_refuses_a_checkpoint_of_another_run(reference, tmp_path, tokenizer_dir, capsys):
    out = copy_run(reference, tmp_path)
    assert main(args(out, tokenizer_dir, "max_steps=20", "checkpoint.resume_from=latest")) == 2
    err = capsys.readouterr().err
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert "belongs to another run" in err and state["run_id"] in err and "max_steps: 6 -> 20" in err
    assert not (out / "checkpoint-20").exists()


def test_resuming_into_another_used_folder_is_refused(reference, tmp_path, tokenizer_dir, capsys):
    other = copy_run(reference, tmp_path)  # a folder holding a (different) run
    assert main(args(other, tokenizer_dir, f"checkpoint.resume_from={reference / 'checkpoint-4'}")) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_the_run_identity_ignores_knobs_that_do_not_change_the_run():
    from mtgfe.training.checkpointing import run_identity
    from mtgfe.training.config import load_config

    base = load_config("synthetic_tiny")
    same = load_config("synthetic_tiny", ["output_dir=/elsewhere", "overwrite=true", "num_threads=1", "eval.every=3",
                                          "log.every=5", "checkpoint.save_every=7", "checkpoint.resume_from=latest"])
    other = load_config("synthetic_tiny", ["optim.lr=3e-4"])
    assert run_identity(base)[0] == run_identity(same)[0] != run_identity(other)[0]


# ------------------------------------------------------------------------------------------ damaged checkpoint files
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 9] ^= 0x10  # near the end: inside the tensor / pickle payload, past any header
    path.write_bytes(bytes(data))


def _garble_json(path: Path) -> None:
    path.write_text(path.read_text()[:-20])


@pytest.mark.parametrize("name, damage", [
    ("trainer_state.json", _garble_json),
    ("model.safetensors", _truncate),
    ("model.safetensors", _flip),
    ("optimizer.bin", _truncate),
    ("optimizer.bin", _flip),
    ("random_states_0.pkl", _truncate),
    ("random_states_0.pkl", _flip),
    ("random_states_0.pkl", Path.unlink),
    ("processor/tokenizer.json", _truncate),
    ("processor/tokenizer_config.json", _flip),
])
def test_a_damaged_checkpoint_file_is_named_and_the_resume_refused(reference, tmp_path, tokenizer_dir, capsys,
                                                                   name, damage):
    out = copy_run(reference, tmp_path, keep_up_to=4)
    damage(out / "checkpoint-4" / name)
    assert main(args(out, tokenizer_dir, "checkpoint.resume_from=latest")) == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err, err
    assert not (out / "final").exists() and not (out / "checkpoint-6").exists()


def test_a_truncated_rng_state_without_a_manifest_is_still_caught(reference, tmp_path, tokenizer_dir, capsys):
    """accelerate's load_state swallows a damaged random_states_0.pkl; the pre-check loads it itself."""
    out = copy_run(reference, tmp_path, keep_up_to=4)
    state_file = out / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["files"]  # as if written before manifests existed
    state_file.write_text(json.dumps(state))
    _truncate(out / "checkpoint-4" / "random_states_0.pkl")
    assert main(args(out, tokenizer_dir, "checkpoint.resume_from=latest")) == 2
    err = capsys.readouterr().err
    assert "random_states_0.pkl cannot be loaded" in err and "allow_inexact_resume" in err


class _RunsCodeWhenUnpickled:
    """A pickle payload that would call `exec` if unpickled with `weights_only=False`."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('UNPICKLED').write_text('code ran')",))


def test_an_rng_state_holding_code_is_refused_without_unpickling_it(reference, tmp_path, tokenizer_dir, capsys,
                                                                    monkeypatch):
    """The RNG state is read as accelerate's `load_state` reads it (`weights_only=True`): an object that
    is not a tensor, array or plain container is refused, and its code never runs."""
    import torch

    out = copy_run(reference, tmp_path, keep_up_to=4)
    state_file = out / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["files"]  # no manifest: the pre-check's own load is what stands between the file and a resume
    state_file.write_text(json.dumps(state))
    torch.save({"random_state": _RunsCodeWhenUnpickled()}, out / "checkpoint-4" / "random_states_0.pkl")
    monkeypatch.chdir(tmp_path)
    assert main(args(out, tokenizer_dir, "checkpoint.resume_from=latest")) == 2
    err = capsys.readouterr().err
    assert "random_states_0.pkl cannot be loaded" in err
    assert not (tmp_path / "UNPICKLED").exists()


def _plant_payload_with_a_matching_manifest(checkpoint: Path, name: str, payload) -> None:
    """Replace `name` by a pickle holding `payload`, and record its new size and sha256 in the folder's own
    manifest, as someone who hands over the folder would: a hash stored beside a file proves nothing."""
    import hashlib

    torch.save(payload, checkpoint / name)
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    data = (checkpoint / name).read_bytes()
    state["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    state_file.write_text(json.dumps(state))


@pytest.mark.parametrize("name, extra", [
    ("optimizer.bin", ()),
    ("random_states_0.pkl", ()),
    ("random_states_0.pkl", ("checkpoint.allow_inexact_resume=true",)),  # skippable damage, but never code
    ("scheduler.bin", ()),  # a file accelerate would read although this trainer never writes it
])
def test_a_planted_pickle_payload_with_a_matching_manifest_never_runs(reference, tmp_path, tokenizer_dir, capsys,
                                                                      monkeypatch, name, extra):
    out = copy_run(reference, tmp_path, keep_up_to=4)
    _plant_payload_with_a_matching_manifest(out / "checkpoint-4", name, {"state": _RunsCodeWhenUnpickled()})
    monkeypatch.chdir(tmp_path)
    assert main(args(out, tokenizer_dir, "checkpoint.resume_from=latest", *extra)) == 2
    err = capsys.readouterr().err
    assert f"{name} cannot be loaded: it names objects other than tensors" in err and "(exec)" in err, err
    assert "Traceback" not in err and "allow_inexact_resume=true to resume" not in err
    assert not (tmp_path / "UNPICKLED").exists()
    assert not (out / "checkpoint-6").exists()


def test_accelerates_own_loader_refuses_code_too(tmp_path, monkeypatch):
    """`load_state` reads each file again with accelerate's `load`; it must also default to weights_only, or
    a file swapped after the pre-check would run. Guards against an accelerate upgrade changing that."""
    from accelerate.utils import load

    torch.save({"random_state": _RunsCodeWhenUnpickled()}, tmp_path / "random_states_0.pkl")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="Unsupported global"):
        load(tmp_path / "random_states_0.pkl")
    assert not (tmp_path / "UNPICKLED").exists()


def test_damaged_log_and_config_copy_do_not_change_the_resumed_result(reference, tmp_path, tokenizer_dir):
    """metrics.jsonl (a kill mid-append leaves half a line) and train_config.yaml are records, not state:
    the resume drops the broken line / rewrites the copy, and ends bit-identical."""
    out = copy_run(reference, tmp_path, keep_up_to=4)
    log = out / "metrics.jsonl"
    log.write_text(log.read_text() + '{"type": "train", "step": 5, "lo')
    (out / "train_config.yaml").write_text("model: [unclosed\n")
    assert main(args(out, tokenizer_dir, "checkpoint.resume_from=latest")) == 0
    assert steps_logged(out) == list(range(1, STEPS + 1))
    same_weights(reference, out)


def test_ctrl_c_prints_the_resume_command_and_it_resumes_exactly(reference, tmp_path, tokenizer_dir, capsys,
                                                                  monkeypatch):
    import mtgfe.training.checkpointing as checkpointing

    out = tmp_path / "run"
    real_save = checkpointing.save_checkpoint

    def save_then_ctrl_c(accelerator, output_dir, state, keep_last, processor):
        path = real_save(accelerator, output_dir, state, keep_last, processor)
        if state["step"] == 4:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_ctrl_c)
    assert main(args(out, tokenizer_dir)) == 130
    monkeypatch.setattr(checkpointing, "save_checkpoint", real_save)
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and str(out / "checkpoint-4") in line
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[0] == "mtgfe-train" and command[-1] == "checkpoint.resume_from=latest"
    assert main(command[1:]) == 0
    same_weights(reference, out)


def test_a_damaged_backbone_cache_is_named_and_rebuilt(tmp_path):
    from mtgfe.training.collate import BackboneCache
    from mtgfe.utils.io import FileFormatError

    path = tmp_path / "backbone.safetensors"
    BackboneCache(torch.randn(3, 2, 4, 5), [0, 1, 2]).save(path)
    assert torch.equal(BackboneCache.load(path).tokens, BackboneCache.load(path).tokens)
    good = path.read_bytes()
    for damage in (_truncate, _flip):
        path.write_bytes(good)
        damage(path)
        with pytest.raises(FileFormatError, match="backbone cache .*backbone.safetensors"):
            BackboneCache.load(path)


@pytest.mark.slow
def test_a_damaged_backbone_cache_is_rebuilt_to_the_same_result(tmp_path):
    from tests.helpers.training import CACHE

    cache_dir = tmp_path / "cache"
    common = [*CACHE, "views.base={}", f"data.backbone_cache.dir={cache_dir}", "max_steps=2", "eval.at_end=false",
              "data.tokenizer=default", "num_threads=1"]
    assert main(BASE + [f"output_dir={tmp_path / 'a'}", *common]) == 0
    (file,) = cache_dir.glob("backbone-*.safetensors")
    _flip(file)
    assert main(BASE + [f"output_dir={tmp_path / 'b'}", *common]) == 0
    same_weights(tmp_path / "a", tmp_path / "b")


# ------------------------------------------------------------------------------------------ kill -9
def _kill_when(out: Path, tokenizer_dir: Path, ready) -> None:
    """Start `mtgfe-train` in a subprocess and SIGKILL it as soon as `ready(out)` holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mtgfe.training.cli", *args(out, tokenizer_dir)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and not ready(out):
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _logged(out: Path, step: int) -> bool:
    try:
        return f'"step": {step},' in (out / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", ["checkpoint_boundary", "mid_step"])
def test_kill_9_then_resume_latest_is_bit_identical(reference, tmp_path, tokenizer_dir, kill_point):
    out = tmp_path / "run"
    if kill_point == "checkpoint_boundary":  # right as checkpoint-2 is published
        _kill_when(out, tokenizer_dir, lambda o: (o / "checkpoint-2" / "trainer_state.json").exists())
    else:  # between checkpoints: step 3 logged, checkpoint-4 not yet written
        _kill_when(out, tokenizer_dir, lambda o: _logged(o, 3))
    assert list(out.glob("checkpoint-*")), "killed before its first checkpoint"
    assert not (out / "final").exists(), "the run finished before the kill"
    assert main(args(out, tokenizer_dir, "checkpoint.resume_from=latest")) == 0
    assert steps_logged(out) == list(range(1, STEPS + 1))
    assert not list(out.glob(".tmp-*"))
    same_weights(reference, out)
