"""Shared pieces of the training tests: the small synthetic run, its metrics log, exact-resume comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# Small and quick: 48 scenes (3 batches of 16 per epoch), a handful of val images.
BASE = ["--config", "synthetic_tiny", "--set", "data.synthetic.train_scenes=48", "data.synthetic.val_scenes=8",
        "data.synthetic.render_size=48", "log.progress_bar=false", "eval.batch_size=8"]


def records(folder: Path, kind: str = "train") -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread. Why: (1) bit-exact comparisons: multi-threaded CPU kernels reduce in a
    varying order (two identical 2-thread runs differ by ~1e-6 in the loss after a few steps);
    (2) speed: on 2 shared cores, 2 OpenMP threads per process slowed these tiny runs ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The frozen-backbone cache switched on, with two stored MVJRC views.
CACHE = ["freeze.vision=true", "data.backbone_cache.enabled=true", "data.backbone_cache.num_views=2"]


def compare_runs(full: Path, resumed: Path, from_step: int) -> None:
    """Steps after `from_step` saw the same batches, losses and lr, and the final weights are bit-identical:
    the exact-resume claim, checked the same way by every resume test."""
    a = {r["step"]: r for r in records(full)}
    b = {r["step"]: r for r in records(resumed)}
    assert sorted(b) == [s for s in sorted(a) if s > from_step] or sorted(b) == sorted(a)
    for step in (s for s in sorted(a) if s > from_step):
        assert b[step]["sample_ids"] == a[step]["sample_ids"], f"data order differs at step {step}"
        for key in ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_mvjrc", "lr"):
            assert b[step][key] == pytest.approx(a[step][key], abs=1e-6), (step, key)
    from safetensors.torch import load_file

    x, y = load_file(full / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert x.keys() == y.keys()
    assert all(torch.equal(x[k], y[k]) for k in x)
