"""Every relative link in README.md, docs/*.md and the experiment READMEs names a file or folder that exists.

Why: the README and the docs point readers at experiment write-ups, configs and each other; files move
(the experiments and docs were reorganised more than once), and a dead link is found by a reader, not by
a test, unless this runs. Web links and in-page anchors are not checked (no network; anchors are cheap to
fix by hand)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

# [text](target) and ![alt](target); the target stops at whitespace or ')' (an optional "title" follows).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_BLOCK = re.compile(r"```.*?```", flags=re.S)
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
        *sorted((REPO_ROOT / "experiments").glob("**/README.md"))]


def relative_links(doc: Path) -> list[str]:
    """The link targets of `doc` outside code blocks that are paths in this repository."""
    text = CODE_BLOCK.sub("", doc.read_text(encoding="utf-8"))
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_pattern_finds_links_and_skips_web_links(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("[a](docs/A.md) ![img](images/b.jpg) [web](https://example.org) [here](#anchor)\n"
                   "[c](C.md#part \"title\")\n```\n[not](in/code.md)\n```\n")
    assert relative_links(doc) == ["docs/A.md", "images/b.jpg", "C.md#part"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(doc):
    links = relative_links(doc)
    missing = [t for t in links if not (doc.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{doc.relative_to(REPO_ROOT)} links to missing paths: {missing}"
    outside = [t for t in links if not (doc.parent / t.split("#", 1)[0]).resolve().is_relative_to(REPO_ROOT)]
    assert not outside, f"{doc.relative_to(REPO_ROOT)} links outside the repository: {outside}"
