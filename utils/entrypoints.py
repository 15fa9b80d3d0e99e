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
from collections.abc import Callable, Mapping, Sequence

# console script -> "module:function" (pyproject's [project.scripts] point at the functions below)
TARGETS = {
    "mtgfe-train": "mtgfe.training.cli:main",
    "mtgfe-eval": "mtgfe.evaluation.cli:main",
    "mtgfe-cv": "mtgfe.evaluation.cli:cv_main",
    "mtgfe-index": "mtgfe.search.cli:index_main",
    "mtgfe-search": "mtgfe.search.cli:search_main",
    "mtgfe-publish": "mtgfe.hub_cards.cli:main",
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


def run_subcommand(prog: str, commands: Mapping[str, Callable[[Sequence[str]], int]],
                   argv: Sequence[str] | None = None) -> int:
    """`python -m PACKAGE.cli COMMAND ARGS...`: run `commands[COMMAND](ARGS)`.

    Why: every package keeps its command lines in one `cli.py`; the commands that have no console script
    (converters, the compositional item writer, sharded encoding) are reached through this one switch
    instead of a `__main__` block in each library module.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in commands:
        got = f" (got {args[0]!r})" if args else ""
        sys.stderr.write(f"usage: python -m {prog} {{{','.join(commands)}}} ARGS...{got}\n")
        return 2
    return commands[args[0]](args[1:])
