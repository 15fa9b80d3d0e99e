"""The one benchmark registry (`mtgfe.data.registry`) knows every spelling of each benchmark.

Data loading and the Hub cards each had an alias table before they were merged into one registry; every
spelling either accepted must still resolve, to the same key, in both places.
"""

from __future__ import annotations

import pytest

from mtgfe.data.registry import canonical_benchmark

# Every spelling that data loading (exact lower case) or the cards (punctuation ignored) accepted before
# the registries were merged.
OLD_ALIASES = {
    "ucm": "ucm", "UCM": "ucm", "ucm_captions": "ucm", "ucm-captions": "ucm", "UCM-Captions": "ucm",
    "ucmerced": "ucm", "UC Merced Captions": "ucm", "sydney": "sydney", "sydney_captions": "sydney",
    "sydney-captions": "sydney", "Sydney-Captions": "sydney", "rsicd": "rsicd", "RSICD": "rsicd",
    "rsitmd": "rsitmd",
}


@pytest.mark.parametrize("alias, key", sorted(OLD_ALIASES.items()))
def test_one_registry_keeps_every_alias(alias, key):
    from mtgfe.hub_cards import benchmark_info

    assert canonical_benchmark(alias) == key
    assert benchmark_info(alias).key == key
    assert canonical_benchmark("coco") is None and benchmark_info("coco") is None


def test_data_loading_accepts_a_card_alias(data_dir):
    from mtgfe.data.annotations import load_rs_benchmark

    a = load_rs_benchmark("UCM-Captions", data_dir, split="test", view="images", require_images=False)
    b = load_rs_benchmark("ucm", data_dir, split="test", view="images", require_images=False)
    assert a["filename"] == b["filename"] and len(a) > 0
