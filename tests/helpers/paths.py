"""Where the repository and the shared benchmark data are, for tests in any folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """`shared/data` beside the repo (CI clones get it too), or $MTGFE_DATA_DIR."""
    if os.environ.get("MTGFE_DATA_DIR"):
        return Path(os.environ["MTGFE_DATA_DIR"])
    return REPO_ROOT.parent / "shared" / "data"
