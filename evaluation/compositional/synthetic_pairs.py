"""Synthetic minimal pairs: scenes that differ in exactly one attribute.

A PIPELINE CHECK, NOT A BENCHMARK. The procedural generator (`synthetic.py`) controls every count,
colour and position, so binding is exact: for a base scene of the held-out *test* split (the same
scene graph as test scene ``index``, never a training seed) it builds a twin identical except for
one attribute, and a caption for each that names the attribute, so ``caption`` (true for ``image``)
and ``negative`` (true for ``image_b``) differ only by the edit:

* ``count``    one group loses objects:                "three red cars ..." / "one red car ..."
* ``colour``   one group changes colour:               "two white planes ..." / "two grey planes ..."
* ``spatial``  the scene is mirrored (left/right) or flipped (above/below), so two groups swap sides:
               "... to the left of ..." / "... to the right of ..."
* ``binding``  two groups of different kinds swap colours (both captions hold the same words):
               "two red cars and one white building" / "two white cars and one red building"

`evaluate_minimal_pairs` scores every item Winoground-style (`compositional.group_scores`: text,
image and group score) with the filter cosine, the ITM probability and ITM + alpha * cosine.

    ds = load_synthetic_pairs(num_items=40, seed=0, image_size=64)   # 40 items per type
    report = evaluate_minimal_pairs(model, processor, ds, alpha=1.0)
    report["per_type"]["binding"]["itm"]["group"]                   # % of items
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import torch
from datasets import Dataset, Features, Image as ImageFeature, Value
from PIL import Image, ImageOps

from modeling_mtgfe.retrieval import encode_images, encode_texts, score_pairs
from mtgfe.data.synthetic import (BACKGROUNDS, COLOURS, KINDS, NUMBER_WORDS, RELATION_WORDS, SPLIT_CODES, WATER_RGB,
                                  render_scene, sample_scene)

from .generation import group_scores

PAIR_TYPES = ("count", "colour", "spatial", "binding")
# Edits `edit_scene` can make: the held-out pair types, plus ``near`` (one group moved from beside another to
# far from it, or back), which the rendered training twins (`synthetic_twins`) use.
EDIT_TYPES = (*PAIR_TYPES, "near")
NEAR_DISTANCE, FAR_DISTANCE = 0.22, 0.45  # centroid distances (image fractions) of "next to" / "far from"
SCORERS = ("filter", "itm", "itm+itc")
SOURCE = "synthetic_test"
NOTE = "synthetic minimal pairs on held-out test scenes: a pipeline check, not a benchmark"
_MIRROR = {"left of": ("right of", "x"), "right of": ("left of", "x"), "above": ("below", "y"), "below": ("above", "y")}


def _noun(kind: str, count: int) -> str:
    singular, plural = KINDS[kind].nouns[0]
    return singular if count == 1 else plural


def group_phrase(group: dict, colour: str | None = None, count: int | None = None) -> str:
    count = group["count"] if count is None else count
    return f"{NUMBER_WORDS[count]} {colour or group['colour']} {_noun(group['kind'], count)}"


def _ground(scene: dict) -> str:
    return BACKGROUNDS[scene["background"]][1][0]


def _contrasting(kind: str, scene: dict) -> list[str]:
    ground = WATER_RGB if KINDS[kind].on_water else np.array(BACKGROUNDS[scene["background"]][0], dtype=np.float32)
    return [c for c in KINDS[kind].colours if np.linalg.norm(np.array(COLOURS[c]) - ground) > 70]


def _centroid(group: dict) -> None:
    group["cx"] = round(float(np.mean([o["x"] for o in group["objects"]])), 4)
    group["cy"] = round(float(np.mean([o["y"] for o in group["objects"]])), 4)


def _relation_of(a: dict, b: dict) -> str | None:
    """'left of' / 'right of' / 'above' / 'below' when clear-cut (one axis dominates, well apart), else None."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dx) >= 2.0 * abs(dy) and abs(dx) >= 0.25:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= 2.0 * abs(dx) and abs(dy) >= 0.25:
        return "above" if dy < 0 else "below"
    return None


def mirror_scene(scene: dict, axis: str) -> dict:
    """The scene graph mirrored left-right (``axis="x"``) or top-bottom (``"y"``); `render` flips the pixels."""
    twin = json.loads(json.dumps(scene))
    key = axis
    for group in twin["groups"]:
        for obj in group["objects"]:
            obj[key] = round(1.0 - obj[key], 4)
            obj["angle"] = round((-obj["angle"] if axis == "x" else 180.0 - obj["angle"]) % 360, 2)
        _centroid(group)
    water = twin["water"]
    if water and water["type"] == "river":
        k = 0 if axis == "x" else 1
        water["points"] = [[round(1.0 - p[0], 4), p[1]] if k == 0 else [p[0], round(1.0 - p[1], 4)]
                           for p in water["points"]]
    elif water:
        swap = {"x": {"left": "right", "right": "left"}, "y": {"top": "bottom", "bottom": "top"}}[axis]
        if water["side"] in swap:
            water["side"] = swap[water["side"]]
        else:  # the wobble runs along the mirrored axis
            water["phase"] = round((math.pi - water["phase"]) % (2 * math.pi), 6)
    twin["mirrored"] = axis
    return twin


def _near_edit(scene: dict, rng: np.random.Generator):
    """Move one group from beside another to far from it, or from far to beside: the relation twin.

    Only groups placed freely (``cluster`` / ``row`` on land) of scenes without water move (so no move can
    put an object into a river or the sea); a move keeps the objects' shapes and is accepted only inside the
    image margins and without overlap, as the generator places groups.
    """
    if scene["water"] is not None:
        return None
    groups = scene["groups"]
    movable = [i for i, g in enumerate(groups) if g["layout"] in ("cluster", "row") and not KINDS[g["kind"]].on_water
               and not any(r[1] == "around" and r[2] == i for r in scene["relations"])]
    options = []
    for i in movable:
        for j in range(len(groups)):
            if i == j:
                continue
            d = float(np.hypot(groups[i]["cx"] - groups[j]["cx"], groups[i]["cy"] - groups[j]["cy"]))
            if d <= NEAR_DISTANCE or d >= FAR_DISTANCE:
                options.append((i, j, d <= NEAR_DISTANCE))
    if not options:
        return None
    for k in rng.permutation(len(options)):
        i, j, was_near = options[int(k)]
        twin = _moved(scene, i, j, to_near=not was_near, rng=rng)
        if twin is None:
            continue
        words = ("next to", "far from") if was_near else ("far from", "next to")
        left, right = group_phrase(groups[i]), group_phrase(groups[j])
        return twin, f"{left} {words[0]} {right}", f"{left} {words[1]} {right}"
    return None


def _moved(scene: dict, i: int, j: int, to_near: bool, rng: np.random.Generator) -> dict | None:
    """`scene` with group i translated next to (or far from) group j, or None when no valid spot is found."""
    group, other = scene["groups"][i], scene["groups"][j]
    objects = np.array([[o["x"], o["y"]] for o in group["objects"]])
    sizes = np.array([o["size"] for o in group["objects"]])
    rest = np.array([[o["x"], o["y"], o["size"]] for k, g in enumerate(scene["groups"]) if k != i
                     for o in g["objects"]]).reshape(-1, 3)
    for _ in range(60):
        angle = rng.uniform(0, 2 * np.pi)
        radius = rng.uniform(0.12, NEAR_DISTANCE - 0.02) if to_near else rng.uniform(FAR_DISTANCE + 0.05, 0.9)
        centre = np.array([other["cx"], other["cy"]]) + radius * np.array([np.cos(angle), np.sin(angle)])
        xy = objects - objects.mean(0) + centre
        margin = sizes / 2 + 0.02
        if np.any(xy < margin[:, None]) or np.any(xy > 1 - margin[:, None]):
            continue
        gaps = np.sqrt(((xy[:, None] - rest[None, :, :2]) ** 2).sum(-1))
        if len(rest) and np.any(gaps < (sizes[:, None] + rest[None, :, 2]) * 0.5):
            continue
        twin = json.loads(json.dumps(scene))
        for obj, (x, y) in zip(twin["groups"][i]["objects"], xy):
            obj["x"], obj["y"] = round(float(x), 4), round(float(y), 4)
        _centroid(twin["groups"][i])
        g = twin["groups"][i]
        d = float(np.hypot(g["cx"] - other["cx"], g["cy"] - other["cy"]))
        if (d <= NEAR_DISTANCE) if to_near else (d >= FAR_DISTANCE):
            return twin
    return None


def _edit(scene: dict, typ: str, rng: np.random.Generator):
    """(twin scene, caption of the base, caption of the twin) or None when ``scene`` has no such edit."""
    groups, ground = scene["groups"], _ground(scene)
    twin = json.loads(json.dumps(scene))
    if typ == "count":
        options = [i for i, g in enumerate(groups) if g["count"] >= 2]
        if not options:
            return None
        i = options[int(rng.integers(len(options)))]
        new = int(rng.integers(1, groups[i]["count"]))
        twin["groups"][i]["count"], twin["groups"][i]["objects"] = new, twin["groups"][i]["objects"][:new]
        _centroid(twin["groups"][i])
        return twin, f"{group_phrase(groups[i])} on the {ground}", f"{group_phrase(groups[i], count=new)} on the {ground}"
    if typ == "colour":
        options = [(i, c) for i, g in enumerate(groups) for c in _contrasting(g["kind"], scene) if c != g["colour"]]
        if not options:
            return None
        i, colour = options[int(rng.integers(len(options)))]
        twin["groups"][i]["colour"] = colour
        return twin, f"{group_phrase(groups[i])} on the {ground}", f"{group_phrase(groups[i], colour=colour)} on the {ground}"
    if typ == "spatial":
        options = [(i, j, r) for i in range(len(groups)) for j in range(len(groups))
                   if i != j and (r := _relation_of(groups[i], groups[j]))]
        if not options:
            return None
        i, j, relation = options[int(rng.integers(len(options)))]
        flipped, axis = _MIRROR[relation]
        twin = mirror_scene(scene, axis)
        left, right = group_phrase(groups[i]), group_phrase(groups[j])
        return (twin, f"{left} {RELATION_WORDS[relation][0]} {right}",
                f"{left} {RELATION_WORDS[flipped][0]} {right}")
    if typ == "binding":
        options = [(i, j) for i in range(len(groups)) for j in range(i + 1, len(groups))
                   if groups[i]["colour"] != groups[j]["colour"]
                   and groups[j]["colour"] in _contrasting(groups[i]["kind"], scene)
                   and groups[i]["colour"] in _contrasting(groups[j]["kind"], scene)]
        if not options:
            return None
        i, j = options[int(rng.integers(len(options)))]
        a, b = groups[i], groups[j]
        twin["groups"][i]["colour"], twin["groups"][j]["colour"] = b["colour"], a["colour"]
        return (twin, f"{group_phrase(a)} and {group_phrase(b)}",
                f"{group_phrase(a, colour=b['colour'])} and {group_phrase(b, colour=a['colour'])}")
    if typ == "near":
        return _near_edit(scene, rng)
    raise ValueError(f"unknown pair type {typ!r}; allowed: {EDIT_TYPES}")


def edit_scene(scene: dict, typ: str, rng: np.random.Generator):
    """(twin scene, caption true for `scene`, caption true for the twin), or None when `scene` has no such
    edit. `typ`: one of `EDIT_TYPES`. The twin differs from `scene` in that one attribute only."""
    return _edit(scene, typ, rng)


def render(scene: dict, image_size: int) -> Image.Image:
    """`synthetic.render_scene`, with a mirrored twin drawn as the exact pixel mirror of its base."""
    if "mirrored" not in scene:
        return render_scene(scene, image_size)
    base = render_scene(mirror_scene(scene, scene["mirrored"]), image_size)
    return ImageOps.mirror(base) if scene["mirrored"] == "x" else ImageOps.flip(base)


def generate_pairs(num_items: int = 40, seed: int = 0, types=PAIR_TYPES, max_scenes: int = 2000) -> list[dict]:
    """Up to ``num_items`` minimal pairs per type from held-out test scenes 0, 1, 2, ... (deterministic).

    Each item: ``scene`` / ``scene_b`` (graphs), ``caption`` (true for scene a), ``negative`` (true
    for scene b), ``type``, ``base_index``. Which of base and twin is "a" is drawn per item, so
    neither caption side is systematically the edited one.
    """
    items: list[dict] = []
    counts = dict.fromkeys(types, 0)
    for index in range(max_scenes):
        if all(n >= num_items for n in counts.values()):
            break
        scene = sample_scene(np.random.default_rng([seed, SPLIT_CODES["test"], index]))
        for code, typ in enumerate(types):
            if counts[typ] >= num_items:
                continue
            rng = np.random.default_rng([seed, SPLIT_CODES["test"], index, 101 + code])
            edit = edit_scene(scene, typ, rng)
            if edit is None:
                continue
            twin, caption_base, caption_twin = edit
            if rng.random() < 0.5:
                pair = (scene, twin, caption_base, caption_twin)
            else:
                pair = (twin, scene, caption_twin, caption_base)
            items.append({"item_id": f"{SOURCE}-{typ}-{index:05d}", "type": typ, "source": SOURCE,
                          "base_index": index, "scene": pair[0], "scene_b": pair[1],
                          "caption": pair[2], "negative": pair[3]})
            counts[typ] += 1
    return items


def render_png(scene: dict, image_size: int) -> bytes:
    """`render` as PNG bytes (fast compression: datasets embed them)."""
    buffer = io.BytesIO()
    render(scene, image_size).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def load_synthetic_pairs(num_items: int = 40, seed: int = 0, image_size: int = 64, types=PAIR_TYPES) -> Dataset:
    """`generate_pairs` as a `datasets.Dataset` with the real benchmark's pair fields: ``image``,
    ``image_b``, ``caption`` (true for ``image``), ``negative`` (true for ``image_b``), ``type``,
    ``source`` (``"synthetic_test"``), ``item_id``, plus ``scene`` / ``scene_b`` (JSON graphs)."""
    items = generate_pairs(num_items, seed, types)
    features = Features({"image": ImageFeature(), "image_b": ImageFeature(),
                         **{k: Value("string") for k in ("caption", "negative", "type", "source", "item_id",
                                                         "scene", "scene_b")}})
    columns = {
        "image": [{"bytes": render_png(it["scene"], image_size), "path": f"{it['item_id']}_a.png"} for it in items],
        "image_b": [{"bytes": render_png(it["scene_b"], image_size), "path": f"{it['item_id']}_b.png"} for it in items],
        **{k: [it[k] for it in items] for k in ("caption", "negative", "type", "source", "item_id")},
        "scene": [json.dumps(it["scene"], sort_keys=True) for it in items],
        "scene_b": [json.dumps(it["scene_b"], sort_keys=True) for it in items],
    }
    return Dataset.from_dict(columns, features=features)


@torch.no_grad()
def pair_scores(model, processor, dataset, alpha: float = 1.0) -> dict[str, torch.Tensor]:
    """``{scorer: (N, 2, 2)}`` with ``[n, x, y]`` = score(image x, caption y) of item n (x, y: 0 = a, 1 = b)."""
    n = len(dataset)
    images = encode_images(model, processor, list(dataset["image"]) + list(dataset["image_b"]), progress=False)
    texts = encode_texts(model, processor, list(dataset["caption"]) + list(dataset["negative"]), progress=False)
    item = torch.arange(n)
    img = torch.stack([item, item + n], 1)[:, :, None].expand(n, 2, 2).reshape(-1)
    txt = texts.inverse[torch.stack([item, item + n], 1)[:, None, :].expand(n, 2, 2).reshape(-1)]
    cosine = (images.embeds[img] * texts.embeds[txt]).sum(-1).view(n, 2, 2)
    itm = score_pairs(model, img, txt, texts, image_tokens=images.tokens).float().view(n, 2, 2)
    return {"filter": cosine, "itm": itm, "itm+itc": itm + alpha * cosine}


def evaluate_minimal_pairs(model, processor, dataset, alpha: float = 1.0) -> dict:
    """Winoground text / image / group scores (%) per type and overall, for each of `SCORERS`."""
    scores = pair_scores(model, processor, dataset, alpha)
    types = list(dataset["type"])
    per_item = {name: [group_scores(*(float(v) for v in s.reshape(4))) for s in table]
                for name, table in scores.items()}

    def summary(rows):
        rows = list(rows)
        return {"text": 100.0 * np.mean([r["group_accuracy"] for r in rows]),
                "image": 100.0 * np.mean([r["image_score"] for r in rows]),
                "group": 100.0 * np.mean([r["both"] for r in rows]), "n": len(rows)}

    report = {"note": NOTE, "source": SOURCE, "alpha": alpha, "per_type": {}, "overall": {}}
    for typ in dict.fromkeys(types):
        report["per_type"][typ] = {name: summary(r for r, t in zip(rows, types) if t == typ)
                                   for name, rows in per_item.items()}
    report["overall"] = {name: summary(rows) for name, rows in per_item.items()}
    return report


def format_pairs_table(report: dict) -> str:
    """Plain-text table: one row per type, group score (text / image) per scorer."""
    lines = [f"{'type':9s} {'n':>4s}  " + "  ".join(f"{s:>20s}" for s in SCORERS), f"{'':15s}" + "  ".join(
        f"{'group (text/image)':>20s}" for _ in SCORERS)]
    for typ, row in [*report["per_type"].items(), ("overall", report["overall"])]:
        n = next(iter(row.values()))["n"]
        cells = [f"{row[s]['group']:6.1f} ({row[s]['text']:5.1f}/{row[s]['image']:5.1f})" for s in SCORERS]
        lines.append(f"{typ:9s} {n:4d}  " + "  ".join(f"{c:>20s}" for c in cells))
    return "\n".join(lines)


__all__ = ["EDIT_TYPES", "NOTE", "PAIR_TYPES", "SCORERS", "edit_scene", "group_phrase", "mirror_scene", "evaluate_minimal_pairs", "format_pairs_table", "generate_pairs",
           "load_synthetic_pairs", "pair_scores", "render", "render_png"]
