"""Fresh Python processes for tests where import order or the absence of the package matters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.helpers.paths import REPO_ROOT

# Installed first in the child process: any import of the package's own names fails there.
BLOCK_PACKAGE = """
import importlib.abc, sys
class _BlockMtgfe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_mtgfe", "mtgfe"):
            raise ModuleNotFoundError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, _BlockMtgfe())
try:
    import modeling_mtgfe  # noqa: F401
    raise SystemExit("the package is still importable")
except ModuleNotFoundError:
    pass
"""


def run_isolated(code: str, tmp_path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules_cache"))
    script = BLOCK_PACKAGE + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


# Prepended to a fresh process's code: a trust-remote-code prompt fails the run instead of waiting for input.
NO_PROMPT = """
import builtins
def _no_prompt(*args, **kwargs):
    raise SystemExit("PROMPTED for trust_remote_code")
builtins.input = _no_prompt
"""


def run_fresh(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter from the repository root, with the package importable as installed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", NO_PROMPT + textwrap.dedent(code)], cwd=REPO_ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
