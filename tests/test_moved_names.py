"""Names that moved in the split of issue #12 still import from their old modules, with a warning.

Why: user scripts and notebooks import from the old paths (`from mtgfe.training.train import main`);
those keep working for a deprecation period, point to the new place, and return the very same object.
Also: the one benchmark registry accepts every alias that data loading or the cards accepted before.
"""

from __future__ import annotations

import importlib

import pytest

from mtgfe.training.benchmarks import canonical_benchmark


MOVED = [
    ("mtgfe.training.train", "main", "mtgfe.training.cli", "main"),
    ("mtgfe.training.train", "build_parser", "mtgfe.training.cli", "build_parser"),
    ("mtgfe.training.train", "train_recipe", "mtgfe.training.cli", "train_recipe"),
    ("mtgfe.training.train", "prerequisite_config", "mtgfe.training.cli", "prerequisite_config"),
    ("mtgfe.training.train", "DEFAULT_RECIPE", "mtgfe.training.cli", "DEFAULT_RECIPE"),
    ("mtgfe.training.train", "STAGE_SHARED_KEYS", "mtgfe.training.cli", "STAGE_SHARED_KEYS"),
    ("mtgfe.training.train", "load_cv", "mtgfe.training.cv", "load_cv"),
    ("mtgfe.training.train", "load_split", "mtgfe.training.loading", "load_config_split"),
    ("mtgfe.training.train", "load_or_build_backbone_cache", "mtgfe.training.backbone_cache",
     "load_or_build_backbone_cache"),
    ("mtgfe.training.train", "STATE_FILE", "mtgfe.training.checkpointing", "STATE_FILE"),
    ("mtgfe.training.train", "LOG_FILE", "mtgfe.training.checkpointing", "LOG_FILE"),
    ("mtgfe.training.train", "MetricsLog", "mtgfe.training.checkpointing", "MetricsLog"),
    ("mtgfe.training.train", "list_checkpoints", "mtgfe.training.checkpointing", "list_checkpoints"),
    ("mtgfe.training.train", "save_checkpoint", "mtgfe.training.checkpointing", "save_checkpoint"),
    ("mtgfe.training.train", "save_pretrained_atomic", "mtgfe.training.checkpointing", "save_pretrained_atomic"),
    ("mtgfe.training.evaluation", "RECALL_KEYS", "mtgfe.training.metrics", "RECALL_KEYS"),
    ("mtgfe.training.evaluation", "HEADLINE_RULE", "mtgfe.training.metrics", "HEADLINE_RULE"),
    ("mtgfe.training.evaluation", "_captions", "mtgfe.training.evaluation", "flatten_captions"),
    ("mtgfe.training.evaluation", "_image_sources", "mtgfe.training.evaluation", "dataset_image_sources"),
    ("mtgfe.training.data", "IMAGE_EXTENSIONS", "modeling_mtgfe.retrieval", "IMAGE_EXTENSIONS"),
    ("mtgfe.training.data", "BENCHMARKS", "mtgfe.training.benchmarks", "BENCHMARKS"),
    ("mtgfe.hub_cards.cards", "BENCHMARKS", "mtgfe.hub_cards.benchmarks", "BENCHMARKS"),
    ("mtgfe.hub_cards.cards", "BenchmarkInfo", "mtgfe.hub_cards.benchmarks", "BenchmarkInfo"),
    ("mtgfe.hub_cards.cards", "benchmark_info", "mtgfe.hub_cards.benchmarks", "benchmark_info"),
]


@pytest.mark.parametrize("old_module, name, new_module, new_name", MOVED, ids=[f"{m}.{n}" for m, n, _, _ in MOVED])
def test_old_path_warns_and_returns_the_new_object(old_module, name, new_module, new_name):
    module = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{new_module}.{new_name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new_module), new_name)


def test_from_import_of_an_old_name_works():
    with pytest.warns(DeprecationWarning):
        from mtgfe.training.train import main, train_recipe  # noqa: F401
    with pytest.warns(DeprecationWarning):
        from mtgfe.training.train import load_cv  # noqa: F401


def test_unknown_names_still_raise_attribute_error():
    import mtgfe.training.train as train_module

    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        train_module.not_a_name  # noqa: B018


def test_write_json_is_deprecated_but_still_writes(tmp_path):
    import json

    from mtgfe.training.evaluation import write_json

    with pytest.warns(DeprecationWarning, match="atomic_write_json"):
        write_json({"a": 1}, tmp_path / "x" / "r.json")
    assert json.loads((tmp_path / "x" / "r.json").read_text()) == {"a": 1}


# Every spelling that data loading (`data._ALIASES`, exact lower case) or the cards (`cards._ALIASES`,
# punctuation ignored) accepted before the registries were merged.
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
    from mtgfe.training.data import load_rs_benchmark

    a = load_rs_benchmark("UCM-Captions", data_dir, split="test", view="images", require_images=False)
    b = load_rs_benchmark("ucm", data_dir, split="test", view="images", require_images=False)
    assert a["filename"] == b["filename"] and len(a) > 0
