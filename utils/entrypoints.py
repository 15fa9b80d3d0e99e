"""Console-script launchers: set the thread policy, then import and run the real entry point.

Thread waiting: on small CPU boxes torch's OpenMP threads spin after each op and starve the next matmul
(measured: a 5 ms text encode took 272 ms right after an image forward). `OMP_WAIT_POLICY=PASSIVE` fixes
it, but only when set before torch is first imported, and a library must not change its user's process
environment on import. So every console script in pyproject points here: this module imports nothing heavy,
sets the policy (unless the user did) and only then imports the module that holds `main` (which imports
torch at its top, like any other module). The target is named by string on purpose: resolving it is the
launcher's whole job, and it keeps this leaf free of torch.

`python -m mtgfe.training.demo` (no console script) calls `prefer_passive_omp()` under its `__main__` guard
before its imports.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

# console script -> "module:function" (pyproject's [project.scripts] point at the functions below)
TARGETS = {
    "mtgfe-train": "mtgfe.training.cli:main",
    "mtgfe-eval": "mtgfe.training.evaluation:main",
    "mtgfe-cv": "mtgfe.training.cv:main",
    "mtgfe-index": "mtgfe.search.cli:index_main",
    "mtgfe-search": "mtgfe.search.cli:search_main",
    "mtgfe-publish": "mtgfe.hub_cards.publish:main",
}


def prefer_passive_omp() -> None:
    """`OMP_WAIT_POLICY=PASSIVE` unless set; effective only when torch is not imported yet (module docstring)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def launch(script: str, argv: Sequence[str] | None = None) -> int:
    """Run console script `script` (a key of `TARGETS`) with `argv`, after `prefer_passive_omp()`."""
    prefer_passive_omp()
    module, _, function = TARGETS[script].partition(":")
    return getattr(importlib.import_module(module), function)(argv)


def mtgfe_train(argv: Sequence[str] | None = None) -> int:
    return launch("mtgfe-train", argv)


def mtgfe_eval(argv: Sequence[str] | None = None) -> int:
    return launch("mtgfe-eval", argv)


def mtgfe_cv(argv: Sequence[str] | None = None) -> int:
    return launch("mtgfe-cv", argv)


def mtgfe_index(argv: Sequence[str] | None = None) -> int:
    return launch("mtgfe-index", argv)


def mtgfe_search(argv: Sequence[str] | None = None) -> int:
    return launch("mtgfe-search", argv)


def mtgfe_publish(argv: Sequence[str] | None = None) -> int:
    return launch("mtgfe-publish", argv)
