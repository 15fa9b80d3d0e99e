"""docs/SECURITY.md cites a test for each line: every cited test file and test function exists."""

from __future__ import annotations

import re

from tests.helpers.paths import REPO_ROOT


def test_every_test_the_security_note_cites_exists():
    text = (REPO_ROOT / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`", text)
    # `::name` right after a cited file name (same cell) refers to that file too
    follow_ups = re.findall(r"`(tests/[\w/]+\.py)::\w+`((?:, `::\w+`)+)", text)
    assert len(cited) >= 8
    missing = []
    for path, name in cited:
        file = REPO_ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name and not re.search(rf"^def {name[2:]}\(", file.read_text(encoding="utf-8"), re.M):
            missing.append(path + name)
    for path, more in follow_ups:
        source = (REPO_ROOT / path).read_text(encoding="utf-8")
        missing += [path + n for n in re.findall(r"::\w+", more) if not re.search(rf"^def {n[2:]}\(", source, re.M)]
    assert not missing, f"docs/SECURITY.md cites tests that do not exist: {missing}"
