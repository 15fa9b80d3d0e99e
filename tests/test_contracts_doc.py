"""docs/CONTRACTS.md names only things that exist: every backticked `modeling_mtgfe.…` / `mtgfe.…` reference
resolves (longest importable module prefix, then attributes)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"`((?:modeling_mtgfe|mtgfe)(?:\.\w+)+)")


def references() -> list[str]:
    return sorted(set(REFERENCE.findall((ROOT / "docs" / "CONTRACTS.md").read_text(encoding="utf-8"))))


def resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)  # AttributeError names the missing piece
        return obj
    raise ModuleNotFoundError(dotted)


def test_contracts_has_references():
    assert len(references()) > 40


@pytest.mark.parametrize("dotted", references())
def test_contracts_reference_exists(dotted):
    resolve(dotted)
