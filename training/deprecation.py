"""Module-level `__getattr__` support for names that moved (issue #12's module split).

Why: scripts, notebooks and the results/ code import names from the modules where they used to live
(`from mtgfe.training.train import main`). Each old module keeps a `{old name: (new module, new
name)}` table and delegates its `__getattr__` here, so the old import keeps working, warns once per
use with a `DeprecationWarning` naming the new place, and nothing is defined twice.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping


def deprecated_attribute(module: str, name: str, moved: Mapping[str, tuple[str, str]]):
    """The value of `name` from its new module, with a DeprecationWarning; AttributeError otherwise."""
    if name not in moved:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_module, new_name = moved[name]
    warnings.warn(f"{module}.{name} moved to {new_module}.{new_name}; import it from there "
                  "(the old path will be removed)", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(new_module), new_name)
