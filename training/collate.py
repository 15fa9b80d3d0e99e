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

import hashlib
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from safetensors import safe_open
from safetensors.torch import save_file

from mtgfe.processing import load_image
from mtgfe.utils.io import FileFormatError, atomic_path


TRAIN_COLUMNS = ("image", "caption", "image_id", "caption_id")
# Purposes mixed into the seed so the caption draw and the two views use independent streams.
_CAPTION_DRAW, _BASE_VIEW, _MVJRC_VIEW, _CACHE_SLOTS, _CACHE_RENDER = 0, 1, 2, 3, 4
CACHE_FORMAT = 1  # bump when the cache layout or the slot rendering changes: old files then miss


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

    def __init__(self, dataset, captions_per_image: int | None = 1, seed: int = 0, load_images: bool = True):
        missing = [c for c in TRAIN_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"the training dataset lacks column(s) {missing}; expected the captions view "
                f"({list(TRAIN_COLUMNS)}), got {dataset.column_names}"
            )
        if captions_per_image is not None and captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1 or None, got {captions_per_image}")
        # load_images=False (cached backbone tokens): skip decoding an image per row that nobody reads
        self.dataset = dataset.select_columns([c for c in TRAIN_COLUMNS if load_images or c != "image"])
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
        perturber: `perturbation.CaptionPerturber`, or None.
        grounding: `grounding.GroundingTargets` (adds `grounding_cells`), or None; may be attached later (the
            trainer builds the collator before the model that fixes the token grid).
    """

    def __init__(
        self,
        processor,
        seed: int,
        base_transform: Callable | None = None,
        mvjrc_transform: Callable | None = None,
        max_length: int = 40,
        perturber: Callable | None = None,
        grounding=None,
    ):
        self.processor = processor
        self.seed = int(seed)
        self.base_transform = base_transform
        self.mvjrc_transform = mvjrc_transform
        self.max_length = max_length
        self.perturber = perturber  # training/perturbation.CaptionPerturber: edited-caption negatives
        self.grounding = grounding

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        negatives = []
        if self.perturber is not None:  # may append partner rows (swap quads) before the batch is built
            rows, negatives = self.perturber.expand(rows)
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
        if self.perturber is not None:
            batch.update(self.perturber.encode(negatives, self.processor, self.max_length))
        if self.grounding is not None:
            batch["grounding_cells"] = self.grounding.encode(rows)
        return batch


# ------------------------------------------------------------------------------------------ backbone cache
def image_sources(dataset) -> tuple[list[Any], list[int]]:
    """`(sources, image_ids)`: one encoded source (path or bytes) per distinct `image_id` of a captions
    view, in increasing id order, without decoding any image."""
    from datasets import Image as ImageFeature

    raw = dataset.cast_column("image", ImageFeature(decode=False)).select_columns(["image", "image_id"])
    seen: dict[int, Any] = {}
    for item, image_id in zip(raw["image"], raw["image_id"]):
        if int(image_id) in seen:
            continue
        source = item.get("bytes") if item.get("bytes") is not None else item.get("path")
        if source is None:
            raise ValueError(f"training image {image_id} has neither bytes nor a path")
        seen[int(image_id)] = source
    ids = sorted(seen)
    return [seen[i] for i in ids], ids


def render_cache_slot(image, slot: int, image_key: int, view_transform, cache_seed: int):
    """The PIL view stored in cache slot `slot` of one image: slot 0 is the image itself (the processor
    resizes it, exactly as at evaluation), slot j >= 1 an MVJRC-policy view drawn from
    (cache_seed, image_key, j). Public so tests can feed the same views as pixels."""
    if slot == 0:
        return image
    rng = np.random.default_rng(np.random.SeedSequence([int(cache_seed), int(image_key), int(slot), _CACHE_RENDER]))
    return view_transform.view(image, caption=None, rng=rng)


def cache_fingerprint(sources: Sequence[Any], image_size: int, view_config: dict, num_views: int, cache_seed: int,
                      vision_model) -> str:
    """Hash naming a cache file: images, size, view policy, slots, seed and the backbone's weights.

    Anything that changes a cached token changes the hash, so a stale cache can never be reused;
    anything else (loss weights, lr, run seed) does not, so ablations share one file.
    """
    import hashlib

    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "image_size": image_size, "views": view_config,
                              "num_views": num_views, "seed": cache_seed}, sort_keys=True, default=str).encode())
    for source in sources:
        digest.update(source if isinstance(source, bytes) else str(source).encode())
        digest.update(b"\0")
    for name, tensor in sorted(vision_model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


class BackboneCache:
    """Backbone tokens of every training image in `1 + num_views` slots: `tokens` `(N_images, S, T, D)`.

    `row_of[image_id]` is the row of an image. Built by `build` (or loaded from `dir`), read by
    `CachedTrainCollator`.
    """

    def __init__(self, tokens: torch.Tensor, image_ids: Sequence[int]):
        if tokens.dim() != 4 or tokens.shape[0] != len(image_ids):
            raise ValueError(f"cache tokens must be (images, slots, tokens, dim) with {len(image_ids)} images, "
                             f"got {tuple(tokens.shape)}")
        self.tokens = tokens
        self.image_ids = [int(i) for i in image_ids]
        self.row_of = {image_id: row for row, image_id in enumerate(self.image_ids)}

    @property
    def num_slots(self) -> int:
        return self.tokens.shape[1]

    @classmethod
    @torch.no_grad()
    def build(cls, model, processor, sources: Sequence[Any], image_ids: Sequence[int], view_transform,
              num_views: int, cache_seed: int = 0, batch_size: int = 32, dtype: torch.dtype = torch.float16,
              progress: bool = True) -> "BackboneCache":
        """Encode every image's slots with `model`'s backbone (eval mode, no grad, batched).

        `model`: `MTGFEForPreTraining` or `MTGFEModel` (anything with `.mtgfe` or
        `backbone_hidden_states`). The backbone's train/eval mode is restored afterwards.
        """
        from tqdm.auto import tqdm

        base = getattr(model, "mtgfe", model)
        vision = base.vision_model
        was_training = vision.training
        vision.eval()
        param = next(vision.parameters())
        slots = 1 + num_views
        jobs = [(row, slot) for row in range(len(sources)) for slot in range(slots)]
        tokens = None
        try:
            for start in tqdm(range(0, len(jobs), batch_size), desc="caching backbone tokens", unit="batch",
                              disable=not progress):
                chunk = jobs[start:start + batch_size]
                images, decoded = [], {}
                for row, slot in chunk:
                    if row not in decoded:
                        decoded = {row: load_image(sources[row])}  # jobs are grouped by image
                    images.append(render_cache_slot(decoded[row], slot, image_ids[row], view_transform, cache_seed))
                pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
                hidden = base.backbone_hidden_states(pixels.to(device=param.device, dtype=param.dtype)).to("cpu", dtype)
                if tokens is None:
                    tokens = torch.empty((len(sources), slots, *hidden.shape[1:]), dtype=dtype)
                for (row, slot), value in zip(chunk, hidden):
                    tokens[row, slot] = value
        finally:
            vision.train(was_training)
        return cls(tokens, image_ids)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """safetensors, written atomically (`atomic_path`): a concurrent reader sees all or nothing."""
        tokens = self.tokens.contiguous()
        meta = {"image_ids": json.dumps(self.image_ids), "tokens_sha256": _tensor_sha256(tokens),
                **{k: str(v) for k, v in (metadata or {}).items()}}
        with atomic_path(path) as tmp:
            save_file({"tokens": tokens}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BackboneCache":
        """Read a saved cache; a truncated, unreadable or bit-flipped file raises `FileFormatError` naming it
        (safetensors has no checksum of its own: `tokens_sha256` in the metadata is checked here; caches
        written before it existed load unchecked)."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                image_ids = json.loads(meta["image_ids"])
                tokens = handle.get_tensor("tokens")
        except Exception as err:  # safetensors raises its own error types (header, truncation, missing key)
            raise FileFormatError(f"backbone cache {path} cannot be read ({type(err).__name__}: {err}); "
                                  "it is truncated or damaged") from err
        expected = meta.get("tokens_sha256")
        if expected is not None and _tensor_sha256(tokens) != expected:
            raise FileFormatError(f"backbone cache {path} fails its checksum (tokens_sha256): the file is damaged")
        return cls(tokens, image_ids)


def _tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (any dtype, bf16 included)."""
    data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(data.tobytes()).hexdigest()


def cache_slots(seed: int, epoch: int, index: int, num_slots: int, augment: bool) -> tuple[int, int]:
    """`(view1, view2)`: the two distinct cache slots a sample uses in an epoch, from (seed, epoch, index).

    View 1 (ITC/ITM/MLM) is any slot when augmenting, else the plain slot 0; view 2 (MVJRC) is a
    different slot drawn uniformly from the rest.
    """
    rng = sample_rng(seed, epoch, index, _CACHE_SLOTS)
    first = int(rng.integers(0, num_slots)) if augment else 0
    second = int(rng.integers(0, num_slots - 1))
    return first, second + (second >= first)


class CachedTrainCollator:
    """`TrainCollator` for a frozen backbone: rows → `vision_hidden_states` (+ `_view2` with MVJRC)
    looked up in a `BackboneCache` instead of pixels; captions, ids and `sample_index` as before.

    Rows need no decoded image (the dataset may drop the `image` column). `perturber` and `grounding` as in
    `TrainCollator`.
    """

    def __init__(self, processor, seed: int, cache: BackboneCache | None, augment: bool = True, mvjrc: bool = False,
                 max_length: int = 40, dtype: torch.dtype = torch.float32, perturber: Callable | None = None,
                 grounding=None):
        # `cache` may be attached later (the trainer builds the collator before the model that fills it)
        self.perturber = perturber
        self.grounding = grounding
        self.processor = processor
        self.seed = int(seed)
        self.cache = cache
        self.augment = augment
        self.mvjrc = mvjrc
        self.max_length = max_length
        self.dtype = dtype

    def slots(self, rows: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
        return [cache_slots(self.seed, row["epoch"], row["index"], self.cache.num_slots, self.augment) for row in rows]

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.cache is None:
            raise RuntimeError("CachedTrainCollator has no BackboneCache attached yet")
        if self.cache.num_slots < 2:
            raise ValueError("cached views need >= 2 slots per image (data.backbone_cache.num_views >= 1)")
        negatives = []
        if self.perturber is not None:  # may append partner rows (swap quads) before the batch is built
            rows, negatives = self.perturber.expand(rows)
        picks = self.slots(rows)
        image_rows = torch.tensor([self.cache.row_of[int(row["image_id"])] for row in rows])
        first = torch.tensor([p[0] for p in picks])
        encoded = self.processor(text=[row["caption"] for row in rows], max_length=self.max_length, return_tensors="pt")
        batch = {
            "vision_hidden_states": self.cache.tokens[image_rows, first].to(self.dtype),
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "image_ids": torch.tensor([row["image_id"] for row in rows], dtype=torch.long),
            "text_ids": torch.tensor([row["caption_id"] for row in rows], dtype=torch.long),
            "sample_index": torch.tensor([row["index"] for row in rows], dtype=torch.long),
        }
        if self.mvjrc:
            second = torch.tensor([p[1] for p in picks])
            batch["vision_hidden_states_view2"] = self.cache.tokens[image_rows, second].to(self.dtype)
        if self.perturber is not None:
            batch.update(self.perturber.encode(negatives, self.processor, self.max_length))
        if self.grounding is not None:
            batch["grounding_cells"] = self.grounding.encode(rows)
        return batch


__all__ = [
    "BackboneCache",
    "CachedTrainCollator",
    "EpochCaptionDataset",
    "TrainCollator",
    "cache_fingerprint",
    "cache_slots",
    "image_sources",
    "render_cache_slot",
    "sample_rng",
    "sample_seed_sequence",
]
