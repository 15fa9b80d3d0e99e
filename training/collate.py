"""From captions-view rows to model batches, with augmentation that is reproducible and resume-exact.

Two pieces:

* `EpochCaptionDataset` wraps a captions-view `datasets.Dataset` and fixes, per epoch, which caption
  rows are trained on: all of them, or `captions_per_image` captions drawn per image (UCM: 1,680
  images a step's worth each instead of 8,400 captions). It tags every item with its position in
  the epoch (`index`) and the epoch.
* `TrainCollator` decodes the images (RS-robust `load_image`), applies the base view and, when MVJRC
  is on, draws the second view, then runs the processor (fixed `max_length` padding).

Why randomness is derived, not drawn from global state: every random choice here is a function of
`(seed, epoch, index)` (`sample_seed_sequence`). Resuming in the middle of an epoch, changing
`num_workers`, or running on 2 processes then gives each sample exactly the augmentation it would have
had in an uninterrupted run, whatever happened to the global RNGs in between (the model's dropout,
MLM masking and negative sampling use the global torch RNG, which `accelerator.save_state` saves).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from mtgfe.processing import load_image


TRAIN_COLUMNS = ("image", "caption", "image_id", "caption_id")
# Purposes mixed into the seed so the caption draw and the two views use independent streams.
_CAPTION_DRAW, _BASE_VIEW, _MVJRC_VIEW = 0, 1, 2


def sample_seed_sequence(seed: int, epoch: int, index: int, purpose: int) -> np.random.SeedSequence:
    """The seed of one random decision: a pure function of (seed, epoch, sample index, purpose)."""
    return np.random.SeedSequence([int(seed), int(epoch), int(index), int(purpose)])


def sample_rng(seed: int, epoch: int, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(sample_seed_sequence(seed, epoch, index, purpose))


class EpochCaptionDataset(TorchDataset):
    """The caption rows of one epoch; `set_epoch(e)` redraws which captions are used.

    Args:
        dataset: captions view (`image`, `caption`, `image_id`, `caption_id`, ...).
        captions_per_image: `None` = every caption; `k` = up to k distinct captions per image, drawn
            per epoch from `(seed, epoch, image_id)`.
        seed: the run's seed.

    Items are dicts with the four training columns plus `index` (position within the epoch) and
    `epoch`. Index order follows the dataset (rows of image 0 first), the DataLoader shuffles.
    """

    def __init__(self, dataset, captions_per_image: int | None = 1, seed: int = 0):
        missing = [c for c in TRAIN_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"the training dataset lacks column(s) {missing}; expected the captions view "
                f"({list(TRAIN_COLUMNS)}), got {dataset.column_names}"
            )
        if captions_per_image is not None and captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1 or None, got {captions_per_image}")
        self.dataset = dataset.select_columns(list(TRAIN_COLUMNS))
        self.captions_per_image = captions_per_image
        self.seed = int(seed)
        image_ids = np.asarray(dataset["image_id"], dtype=np.int64)
        order = np.argsort(image_ids, kind="stable")
        ids, starts = np.unique(image_ids[order], return_index=True)
        self.image_ids = ids
        self.groups = np.split(order, starts[1:])  # row indices of each image, in dataset order
        self.epoch = -1
        self.rows = np.arange(len(image_ids))
        self.set_epoch(0)

    @property
    def num_images(self) -> int:
        return len(self.groups)

    @property
    def max_captions_per_image(self) -> int:
        """Largest number of rows one image contributes to an epoch (ITM needs batches larger than this)."""
        per_image = max(len(g) for g in self.groups)
        return per_image if self.captions_per_image is None else min(per_image, self.captions_per_image)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        self.epoch = int(epoch)
        if self.captions_per_image is None:
            self.rows = np.arange(sum(len(g) for g in self.groups))
            return
        k = self.captions_per_image
        picked = []
        for image_id, group in zip(self.image_ids, self.groups):
            if len(group) <= k:
                picked.append(group)
            else:
                rng = sample_rng(self.seed, self.epoch, int(image_id), _CAPTION_DRAW)
                picked.append(np.sort(rng.choice(group, size=k, replace=False)))
        self.rows = np.concatenate(picked)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.dataset[int(self.rows[index])])
        row["index"] = int(index)
        row["epoch"] = self.epoch
        return row


class TrainCollator:
    """Rows → `pixel_values`, `pixel_values_view2` (MVJRC on), `input_ids`, `attention_mask`,
    `image_ids`, `text_ids`, plus `sample_index` (the rows' epoch positions, for logging; not a model input).

    Args:
        processor: `MTGFEProcessor` (normalisation + tokenizer; pads captions to `max_length`).
        seed: the run's seed; with each row's `epoch` and `index` it seeds that row's views.
        base_transform: PIL → PIL base view (`views.BaseTransform`), or None for a plain resize.
        mvjrc_transform: the second-view transform (`views.MultiViewTransform`, one view), or None
            when MVJRC is off.
        max_length: caption length in tokens.
    """

    def __init__(
        self,
        processor,
        seed: int,
        base_transform: Callable | None = None,
        mvjrc_transform: Callable | None = None,
        max_length: int = 40,
    ):
        self.processor = processor
        self.seed = int(seed)
        self.base_transform = base_transform
        self.mvjrc_transform = mvjrc_transform
        self.max_length = max_length

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        base_views, second_views, captions = [], [], []
        for row in rows:
            image = load_image(row["image"])
            epoch, index = row["epoch"], row["index"]
            if self.base_transform is not None:
                base_views.append(self.base_transform(image, rng=sample_rng(self.seed, epoch, index, _BASE_VIEW)))
            else:
                base_views.append(image)
            if self.mvjrc_transform is not None:
                rng = sample_rng(self.seed, epoch, index, _MVJRC_VIEW)
                second_views.append(self.mvjrc_transform(image, caption=row["caption"], rng=rng)[0])
            captions.append(row["caption"])
        encoded = self.processor(images=base_views, text=captions, max_length=self.max_length, return_tensors="pt")
        batch = {
            "pixel_values": encoded["pixel_values"],
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "image_ids": torch.tensor([row["image_id"] for row in rows], dtype=torch.long),
            "text_ids": torch.tensor([row["caption_id"] for row in rows], dtype=torch.long),
            "sample_index": torch.tensor([row["index"] for row in rows], dtype=torch.long),
        }
        if self.mvjrc_transform is not None:
            image_processor = self.processor.image_processor
            batch["pixel_values_view2"] = image_processor(images=second_views, return_tensors="pt")["pixel_values"]
        return batch


__all__ = ["EpochCaptionDataset", "TrainCollator", "sample_rng", "sample_seed_sequence"]
