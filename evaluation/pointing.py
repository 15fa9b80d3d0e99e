"""Synthetic pointing game: does a grounding map's peak fall on the group the phrase names?

A PIPELINE CHECK ON RENDERED SCENES, NOT A BENCHMARK. The procedural generator (`mtgfe.data.synthetic`)
knows where every object is, so for each group of a held-out scene the phrase that names it
(`synthetic_pairs.group_phrase`: "two red cars") has exact target cells: the grid cells its objects' boxes
(centre ± size / 2) overlap. A map *hits* when its highest cell is one of them (the pointing game of Zhang et
al. 2016, on the model's token grid). Phrases are **bound** when the scene holds another group of the same
kind or the same colour ("the red car" beside a blue car and a red building): there the words must be
bound to each other, and a map that follows one word alone lands on the wrong group.

Maps compared, all on the same grid:

* `fusion`: `MTGFEModel.ground` (Grad-CAM of a fusion layer's cross-attention, whole-query map);
* `dual`: what a dual encoder can say: the cosine of the query's filter embedding with every backbone grid
  token through `vision_proj` (the projection the filter's global vector goes through);
* `centre`: the cell holding the image centre; `random`: a uniformly random cell, scored by its exact
  expectation (target cells / all cells), so it needs no seed.

    report = evaluate_pointing(model, processor, num_scenes=200, split="test")
    print(format_pointing_table(report))
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from modeling_mtgfe.grounding import ground_pairs, grounding_grid
from modeling_mtgfe.retrieval import encode_texts, pixel_values_of, retrieval_base
from mtgfe.data.synthetic import SPLIT_CODES, render_scene, sample_scene

from .compositional.synthetic_pairs import group_phrase

MAPS = ("fusion", "dual", "centre", "random")
NOTE = "synthetic pointing game on held-out scenes: a pipeline check, not a benchmark"


def group_cells(group: dict, grid: tuple[int, int]) -> list[int]:
    """Row-major cells of a `(rows, cols)` grid overlapped by the boxes (centre ± size / 2) of the group's objects."""
    rows, cols = grid
    cells = set()
    for obj in group["objects"]:
        half = obj["size"] / 2
        r0, r1 = (min(max(int(math.floor(v * rows)), 0), rows - 1) for v in (obj["y"] - half, obj["y"] + half))
        c0, c1 = (min(max(int(math.floor(v * cols)), 0), cols - 1) for v in (obj["x"] - half, obj["x"] + half))
        cells.update(r * cols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1))
    return sorted(cells)


def is_bound(scene: dict, index: int) -> bool:
    """Another group of the scene shares the kind or the colour of group `index`."""
    group = scene["groups"][index]
    return any(other["kind"] == group["kind"] or other["colour"] == group["colour"]
               for j, other in enumerate(scene["groups"]) if j != index)


def pointing_items(num_scenes: int = 200, seed: int = 0, split: str = "test") -> list[dict]:
    """One item per group of scenes `0..num_scenes-1` of `split` (generator `seed`) whose phrase is unique in
    its scene: `{"scene_index", "scene", "group", "phrase", "bound"}`. Deterministic."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}.")
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"num_scenes must be a positive integer, got {num_scenes!r}.")
    items = []
    for index in range(num_scenes):
        scene = sample_scene(np.random.default_rng([seed, SPLIT_CODES[split], index]))
        phrases = [group_phrase(g) for g in scene["groups"]]
        for g, phrase in enumerate(phrases):
            if phrases.count(phrase) == 1:
                items.append({"scene_index": index, "scene": scene, "group": g, "phrase": phrase,
                              "bound": is_bound(scene, g)})
    return items


def peak_cells(maps: torch.Tensor) -> torch.Tensor:
    """Row-major index of each map's highest cell, `(N, rows, cols)` → `(N,)` (ties: the first)."""
    return maps.flatten(1).argmax(1)


@torch.no_grad()
def dual_maps(model, pixel_values: torch.Tensor, text_embeds: torch.Tensor,
              image_grid_size: tuple[int, int] | None = None) -> torch.Tensor:
    """`(N, rows, cols)`: cosine of each text's filter embedding `text_embeds[n]` with every backbone grid token
    of image `n` through `vision_proj`: the dual encoder's own map, with no fusion."""
    base = retrieval_base(model)
    hidden = base.backbone_hidden_states(pixel_values)
    grid, leading = grounding_grid(hidden.shape[1], image_grid_size)
    tokens = F.normalize(base.vision_proj(hidden[:, leading:]).float(), dim=-1)
    sims = (tokens * F.normalize(text_embeds.float(), dim=-1)[:, None]).sum(-1)
    return sims.view(-1, *grid)


def score_maps(maps: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """`(N,)` bool: the peak of map n is one of `targets[n]`."""
    peaks = peak_cells(maps).tolist()
    return torch.tensor([peak in set(cells) for peak, cells in zip(peaks, targets)])


def _summary(hits: torch.Tensor, bound: torch.Tensor) -> dict:
    hits = hits.float()
    return {"all": round(100 * float(hits.mean()), 1),
            "bound": round(100 * float(hits[bound].mean()), 1) if bound.any() else None,
            "unbound": round(100 * float(hits[~bound].mean()), 1) if (~bound).any() else None}


def evaluate_pointing(model, processor, num_scenes: int = 200, seed: int = 0, split: str = "test",
                      layer: int | None = None, batch_size: int = 32) -> dict:
    """Pointing accuracy (% of phrases) of the fusion map, the dual map and the centre / random priors.

    Scenes are rendered at the processor's size and encoded once; the fusion map reads the same fusion
    tokens a gallery index would store. Returns `{"maps": {name: {"all", "bound", "unbound"}}, "n",
    "n_bound", "layer", "grid", "split", "seed", "num_scenes", "note"}`.
    """
    base = retrieval_base(model)
    items = pointing_items(num_scenes, seed, split)
    if not items:
        raise ValueError(f"No scene of {split!r} (seed {seed}) in the first {num_scenes} has a uniquely named group.")
    size = processor.image_processor.size
    side = int(size.get("height", size.get("shortest_edge", 64)))
    device = next(base.parameters()).device
    dtype = next(base.parameters()).dtype
    scenes = {item["scene_index"]: item["scene"] for item in items}
    texts = encode_texts(model, processor, [item["phrase"] for item in items])
    fusion, dual = [], []
    grid = None
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        chunk_scenes = sorted({item["scene_index"] for item in chunk})
        local = {index: i for i, index in enumerate(chunk_scenes)}
        images = [render_scene(scenes[index], side) for index in chunk_scenes]
        pixels = pixel_values_of(processor, images).to(device=device, dtype=dtype)
        with torch.no_grad():
            features = base.get_image_retrieval_features(pixels)
        image_index = torch.tensor([local[item["scene_index"]] for item in chunk], device=device)
        text_rows = texts.inverse[start:start + len(chunk)]
        out = ground_pairs(base, features.image_tokens, texts.states.to(device), texts.attention_mask.to(device),
                           image_index=image_index, text_index=text_rows.to(device), layer=layer)
        grid, layer = out.grid, out.layer
        fusion.append(out.query_maps.cpu())
        dual.append(dual_maps(base, pixels[image_index], texts.embeds[text_rows].to(device), grid).cpu())
    targets = [group_cells(item["scene"]["groups"][item["group"]], grid) for item in items]
    bound = torch.tensor([item["bound"] for item in items])
    rows, cols = grid
    centre = torch.zeros(len(items), rows, cols)
    centre[:, rows // 2, cols // 2] = 1.0
    random_hits = torch.tensor([len(cells) / (rows * cols) for cells in targets])
    report_maps = {
        "fusion": _summary(score_maps(torch.cat(fusion), targets), bound),
        "dual": _summary(score_maps(torch.cat(dual), targets), bound),
        "centre": _summary(score_maps(centre, targets), bound),
        "random": _summary(random_hits, bound),
    }
    return {"maps": report_maps, "n": len(items), "n_bound": int(bound.sum()), "layer": layer, "grid": list(grid),
            "split": split, "seed": seed, "num_scenes": num_scenes, "note": NOTE}


def format_pointing_table(report: dict) -> str:
    """A plain-text table: one row per map, % hits on all / bound / unbound phrases."""
    def cell(value):
        return "   -" if value is None else f"{value:5.1f}"
    lines = [f"{report['note']}; {report['n']} phrases ({report['n_bound']} bound), grid "
             f"{report['grid'][0]}x{report['grid'][1]}, fusion layer {report['layer']}",
             f"{'map':8s} {'all':>6s} {'bound':>6s} {'unbound':>7s}"]
    for name in MAPS:
        row = report["maps"][name]
        lines.append(f"{name:8s} {cell(row['all']):>6s} {cell(row['bound']):>6s} {cell(row['unbound']):>7s}")
    return "\n".join(lines)


__all__ = ["MAPS", "NOTE", "dual_maps", "evaluate_pointing", "format_pointing_table", "group_cells", "is_bound",
           "peak_cells", "pointing_items", "score_maps"]
