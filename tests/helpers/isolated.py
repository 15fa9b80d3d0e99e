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


def remote_code_itm_logits(folder, pixel_values, input_ids, module: str, class_name: str, tmp_path) -> list[float]:
    """ITM logits of a saved folder loaded with `trust_remote_code` in a fresh process (the package importable
    or not, it reads the folder's own modeling file), after checking that `model.<module>` is `class_name`:
    a module that only lives in remote code must travel with the folder and give the same scores."""
    import json

    import torch

    torch.save({"pixel_values": pixel_values, "input_ids": input_ids}, f"{folder}/inputs.pt")
    result = run_isolated(
        f"""
        import torch
        from transformers import AutoModel
        folder = {str(folder)!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model.{module}).__name__ == {class_name!r}, type(model.{module})
        inputs = torch.load(folder + "/inputs.pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                        attention_mask=(inputs["input_ids"] != 0).long())
        print("LOGITS", out.itm_logits.flatten().tolist())
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOGITS"))
    return json.loads(line.split(" ", 1)[1])
