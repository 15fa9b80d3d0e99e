"""The one registry of the RS benchmarks: their names and aliases, and where their files live.

Why a module of its own: data loading (`data.load_rs_benchmark`) and the Hub cards
(`mtgfe.hub_cards.benchmark_info`) each kept a table of benchmark names with different aliases, so a
name one accepted the other rejected. Both now resolve names with `canonical_benchmark`; the card
facts (pretty names, citations) stay with the cards, keyed by the same canonical keys. Standard
library only, so the cards can import it without pulling in `datasets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class BenchmarkLayout:
    """Where a benchmark's files live below the data folder and which layouts give which splits."""

    image_dirs: tuple[str, ...]
    sources: dict[str, dict[str, tuple[str, ...]]]  # layout -> split -> annotation files
    retrieval: dict[str, str]  # split -> layout of the retrieval convention ("derived": see below)


def _amfmn(folder: str, splits: Sequence[str]) -> dict[str, tuple[str, ...]]:
    base = f"{folder}/annotations/amfmn_txt"
    return {s: (f"{base}/{s}_caps.txt", f"{base}/{s}_filename.txt") for s in splits}


def _per_split(pattern: str, splits: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return {s: (pattern.format(split=s),) for s in splits}


_SPLITS = ("train", "val", "test")
_UCM_KARPATHY = "ucm_captions/annotations/karpathy_json/dataset_ucm_modified.json"
_SYDNEY_KARPATHY = "sydney_captions/annotations/karpathy_json/dataset_sydney_modified.json"

BENCHMARKS: dict[str, BenchmarkLayout] = {
    "ucm": BenchmarkLayout(
        image_dirs=("ucm_captions/images/jpeg_q95",),
        sources={"karpathy": {s: (_UCM_KARPATHY,) for s in _SPLITS}},
        retrieval=dict.fromkeys(_SPLITS, "karpathy"),
    ),
    "sydney": BenchmarkLayout(
        image_dirs=("sydney_captions/images/tif_original_samples",),
        sources={
            "karpathy": {s: (_SYDNEY_KARPATHY,) for s in _SPLITS},
            "coco": _per_split("sydney_captions/annotations/coco_json/{split}_sydney.json", _SPLITS),
        },
        retrieval=dict.fromkeys(_SPLITS, "karpathy"),
    ),
    "rsicd": BenchmarkLayout(
        image_dirs=("rsicd/images/retrieval_test",),
        sources={
            "amfmn": _amfmn("rsicd", ("train", "test")),
            # rsicd_train.json is not shipped (>= 4 MiB); it is used when a user adds it.
            "harma": _per_split("rsicd/annotations/harma_json/rsicd_{split}.json", _SPLITS),
            "coco": _per_split("rsicd/annotations/coco_json/captions_{split}2017.json", ("val", "test")),
        },
        retrieval={"train": "derived", "val": "harma", "test": "harma"},
    ),
    "rsitmd": BenchmarkLayout(
        image_dirs=("rsitmd/images",),
        sources={
            "amfmn": _amfmn("rsitmd", ("train", "test")),
            "harma": _per_split("rsitmd/annotations/harma_json/rsitmd_{split}.json", _SPLITS),
        },
        retrieval=dict.fromkeys(_SPLITS, "harma"),
    ),
}
# Every spelling a user or an evaluation JSON may use, compared after `normalize_benchmark_name`
# ("UCM-Captions", "ucm_captions" and "ucmcaptions" are one name). The union of the two tables that
# data loading and the Hub cards used to keep apart: every alias that worked in either works in both.
ALIASES = {
    "ucm": "ucm", "ucmcaptions": "ucm", "ucmerced": "ucm", "ucmercedcaptions": "ucm",
    "sydney": "sydney", "sydneycaptions": "sydney",
    "rsicd": "rsicd",
    "rsitmd": "rsitmd",
}  # fmt: skip


def normalize_benchmark_name(name: str) -> str:
    """Lower case, only letters and digits: the form `ALIASES` is keyed by."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def canonical_benchmark(name: str) -> str | None:
    """The registry key (`ucm`, `sydney`, `rsicd`, `rsitmd`) of a benchmark name or alias, else None."""
    return ALIASES.get(normalize_benchmark_name(name))
