"""Shared test fixtures: offline mode, the shared data folder, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.paths import shared_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The library finds benchmark data only through an explicit data_dir or $MTGFE_DATA_DIR (it guesses no
# folder); tests run in a checkout with the data beside it, so they name it here, for subprocesses too.
if "MTGFE_DATA_DIR" not in os.environ and shared_data_dir().is_dir():
    os.environ["MTGFE_DATA_DIR"] = str(shared_data_dir())

@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared benchmark data not found at {path}")
    return path


@pytest.fixture()
def tiny_config():
    from modeling_mtgfe import MTGFEConfig

    return MTGFEConfig.from_preset("tiny")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
