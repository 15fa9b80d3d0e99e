"""One way to load a split: the function the trainer, `mtgfe-eval` and the demo all call.

Why: each of them used to pick between the synthetic generator, a user's JSONL/CSV file and the RS
benchmarks on its own, with slightly different arguments (the demo ignored `image_dir`, evaluation the
synthetic render size of the run). `load_dataset_split` is that choice, written once, with plain
arguments; `mtgfe.training.splits.load_config_split` reads them from a `TrainConfig`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .annotations import load_caption_file, load_rs_benchmark
from .synthetic import load_synthetic


if TYPE_CHECKING:
    from datasets import Dataset


def load_dataset_split(
    name: str,
    split: str,
    view: str = "images",
    *,
    data_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    data_file: str | os.PathLike | None = None,
    max_images: int | None = None,
    synthetic_scenes: int | None = None,
    synthetic_seed: int = 0,
    synthetic_size: int = 128,
    synthetic_placeless_focus: float = 0.0,
) -> Dataset:
    """A split of `name`: `synthetic` (rendered scenes), `jsonl` (the user's JSONL/CSV `data_file`), or a
    benchmark name/alias (`load_rs_benchmark`). `view`: `captions` (training) or `images` (retrieval).
    `max_images` keeps the first N rows (images view: N images)."""
    if name == "synthetic":
        dataset = load_synthetic(split, num_scenes=synthetic_scenes, seed=synthetic_seed, image_size=synthetic_size,
                                 view=view, placeless_focus=synthetic_placeless_focus)
    elif name == "jsonl":
        if not data_file:
            raise ValueError("--dataset jsonl needs --data-file (a JSONL/CSV caption file)")
        dataset = load_caption_file(data_file, image_dir=image_dir, view=view)
    else:
        dataset = load_rs_benchmark(name, data_dir, split=split, view=view, image_dir=image_dir)
    if max_images is not None and max_images < len(dataset):
        dataset = dataset.select(range(max_images))
    return dataset
