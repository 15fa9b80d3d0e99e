"""Held-out minimal pairs of a model trained with the packaged recipe (`mtgfe-train --config synthetic_twins`).

The probe's held-out set, scored the package's way: `generate_pairs` (count, colour, spatial, binding) on
the test split of generator seed 1, plus `side` pairs from the same scenes (`synthetic_twins.side_edit`),
Winoground text / image / group per type and scorer (`evaluate_minimal_pairs`). Writes the report as JSON.

    mtgfe-train --config synthetic_twins --set num_threads=1
    .venv/bin/python experiments/twin_recipe/packaged_check.py outputs/synthetic_twins/final \
        --out experiments/twin_recipe/packaged_check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from datasets import Dataset, concatenate_datasets

from modeling_mtgfe import MTGFEModel
from mtgfe.data.synthetic import SPLIT_CODES, sample_scene
from mtgfe.evaluation.compositional.synthetic_pairs import (evaluate_minimal_pairs, format_pairs_table,
                                                            load_synthetic_pairs, render_png)
from mtgfe.processing import MTGFEProcessor
from mtgfe.training.synthetic_twins import side_edit


def side_pairs(num_items: int, seed: int, image_size: int, features) -> Dataset:
    """`side` pairs from test scenes 0, 1, 2, ... of generator `seed` (the probe's draw: stream 999)."""
    items = []
    for index in range(2000):
        if len(items) >= num_items:
            break
        scene = sample_scene(np.random.default_rng([seed, SPLIT_CODES["test"], index]))
        edit = side_edit(scene, np.random.default_rng([seed, SPLIT_CODES["test"], index, 999]))
        if edit:
            items.append((scene, *edit))
    return Dataset.from_dict({
        "image": [{"bytes": render_png(s, image_size), "path": f"side{i}_a.png"} for i, (s, *_) in enumerate(items)],
        "image_b": [{"bytes": render_png(t, image_size), "path": f"side{i}_b.png"} for i, (_, t, *_) in enumerate(items)],
        "caption": [c for *_, c, _ in items], "negative": [d for *_, d in items], "type": ["side"] * len(items),
        "source": ["synthetic_test"] * len(items), "item_id": [f"side{i}" for i in range(len(items))],
        "scene": [json.dumps(s, sort_keys=True) for s, *_ in items],
        "scene_b": [json.dumps(t, sort_keys=True) for _, t, *_ in items],
    }, features=features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a saved model folder (with its processor), e.g. outputs/synthetic_twins/final")
    parser.add_argument("--items", type=int, default=200, help="pairs per type")
    parser.add_argument("--seed", type=int, default=1, help="generator seed of the held-out test scenes")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default=None, help="JSON report")
    args = parser.parse_args()
    model = MTGFEModel.from_pretrained(args.model).eval()
    processor = MTGFEProcessor.from_pretrained(args.model)
    pairs = load_synthetic_pairs(num_items=args.items, seed=args.seed, image_size=args.image_size)
    pairs = concatenate_datasets([pairs, side_pairs(args.items, args.seed, args.image_size, pairs.features)])
    report = evaluate_minimal_pairs(model, processor, pairs, alpha=1.0)
    print(format_pairs_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "items": args.items, "seed": args.seed,
                                              **report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
