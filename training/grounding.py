"""Grounding targets for rendered twins: which image-token cells each word of a twin caption names.

Why: the synthetic generator knows where every group of a scene lies, so for a caption of a twin row it can
say, token by token, which grid cells the named group covers. The auxiliary grounding loss
(`modeling_mtgfe.losses.grounding_loss`, weight `model.grounding_weight`) pulls fusion layer 0's
cross-attention of those tokens onto those cells. In the twin-recipe probes, ITM learned nothing positional
from mirrored twins without it (experiments/twin_recipe/README.md).

Which tokens: every token of each group phrase ("four red buildings", `synthetic_pairs.group_phrase`) that
names exactly one group of the scene and occurs exactly once in the caption. Which cells: the cells of the
`rows x cols` token grid that hold the centre of one of the group's objects (scene coordinates are
normalised to [0, 1], so the same targets hold at any render size). Only twin rows carry a scene (the
``scene`` column of `synthetic_twins.load_twin_rows`); ordinary rows get no target.

The targets are cells of the whole, unaugmented image: a crop or flip of the base view would move the objects
off them, so the training config refuses grounding with such a view (`config_schema`).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import torch

from mtgfe.evaluation.compositional.synthetic_pairs import group_phrase


def phrase_token_cells(scene: dict, caption: str, offsets: Sequence[tuple[int, int]],
                       grid: tuple[int, int]) -> list[tuple[int, list[int]]]:
    """`[(token index, sorted grid cells of its group's objects), ...]` for one caption of `scene`.

    `offsets`: the `(start, end)` character span of every token of the encoded caption (a fast tokenizer's
    `offset_mapping`; special and padding tokens have empty spans), so the indices are those of the model's
    input. `grid`: `(rows, cols)` of the image tokens, cell `r * cols + c` (row-major, as the backbone flattens).
    """
    rows, cols = grid
    phrases = [group_phrase(g) for g in scene["groups"]]
    targets = []
    for group, phrase in zip(scene["groups"], phrases):
        if phrases.count(phrase) != 1 or caption.count(phrase) != 1:
            continue  # two groups read alike, or the phrase is absent or repeated: no unambiguous target
        start = caption.index(phrase)
        end = start + len(phrase)
        cells = sorted({min(int(o["y"] * rows), rows - 1) * cols + min(int(o["x"] * cols), cols - 1)
                        for o in group["objects"]})
        targets += [(token, cells) for token, (a, b) in enumerate(offsets) if b > a and start <= a and b <= end]
    return targets


class GroundingTargets:
    """Batch rows -> `grounding_cells` `(B, max_length, rows * cols)` bool for `MTGFEForPreTraining.forward`.

    Args:
        tokenizer: the run's tokenizer (a fast one: the token spans come from its offset mapping); captions
            are encoded exactly as the processor encodes them (padding and truncation to `max_length`).
        grid: `(rows, cols)` of the model's image tokens at the training size (`token_grid`).
        max_length: caption length in tokens.
    """

    def __init__(self, tokenizer, grid: tuple[int, int], max_length: int):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"grounding targets need a fast tokenizer (token offsets); got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.grid = (int(grid[0]), int(grid[1]))
        self.max_length = int(max_length)

    def encode(self, rows: Sequence[dict[str, Any]]) -> torch.Tensor:
        cells = torch.zeros((len(rows), self.max_length, self.grid[0] * self.grid[1]), dtype=torch.bool)
        for i, row in enumerate(rows):
            scene = row.get("scene")
            if not scene:
                continue
            offsets = self.tokenizer(row["caption"], max_length=self.max_length, truncation=True,
                                     return_offsets_mapping=True)["offset_mapping"]
            for token, token_cells in phrase_token_cells(json.loads(scene), row["caption"], offsets, self.grid):
                cells[i, token, token_cells] = True
        return cells


@torch.no_grad()
def token_grid(model, image_size: int) -> tuple[int, int]:
    """`(rows, cols)` of the vision backbone's feature map at `image_size`: the grid the targets index.

    One forward of a blank image in eval mode (the backbone's mode is restored), so BatchNorm statistics and
    the random streams stay untouched. A backbone whose output is not a feature map (ViT: a token sequence
    with [CLS]) is refused: its tokens are no grid of cells.
    """
    base = getattr(model, "mtgfe", model)
    vision = base.vision_model
    param = next(vision.parameters())
    was_training = vision.training
    vision.eval()
    try:
        hidden = vision(pixel_values=torch.zeros((1, 3, image_size, image_size), device=param.device,
                                                 dtype=param.dtype)).last_hidden_state
    finally:
        vision.train(was_training)
    if hidden.dim() != 4:
        raise ValueError(f"grounding targets are grid cells: they need a convolutional backbone (a feature map), but "
                         f"vision_config.model_type={getattr(base.config.vision_config, 'model_type', '?')!r} gives "
                         f"a token sequence of shape {tuple(hidden.shape)}")
    return int(hidden.shape[2]), int(hidden.shape[3])


__all__ = ["GroundingTargets", "phrase_token_cells", "token_grid"]
