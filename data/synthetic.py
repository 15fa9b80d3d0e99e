"""A procedural, aerial-looking caption dataset for tests, demos and smoke training without downloads.

Each scene is a small scene graph (land cover, an optional river or coast, 1-4 groups of objects
with a kind, a count of 1-5 and a colour, and spatial relations between the groups) that is rendered
top-down with PIL and numpy and described by five template captions. Captions vary by count,
colour, relation and wording, not only by object class, so that telling scenes apart needs the
fine-grained alignment the fusion encoder is for; unmentioned clutter, texture noise, random scale,
rotation and colour jitter keep it from being trivial.

Everything is drawn from ``numpy.random.default_rng([seed, split_code, index])``: the same seed gives
byte-identical PNGs, scenes can be rendered in any order, and splits never share a random stream.
The ``scene`` column keeps the scene graph as JSON (object positions included) so that tests can
check captions and pixels against it.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, Value
from PIL import Image, ImageDraw
from transformers.utils import logging

from .annotations import ImageRecord, build_dataset, dataset_features


logger = logging.get_logger(__name__)

SPLIT_SIZES = {"train": 1200, "val": 150, "test": 150}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
CAPTIONS_PER_SCENE = 5

COLOURS = {
    "white": (235, 235, 230), "grey": (128, 128, 132), "black": (35, 35, 38), "red": (200, 40, 40),
    "blue": (40, 80, 200), "green": (40, 150, 60), "yellow": (230, 200, 40), "orange": (230, 120, 30),
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
# Vague quantifiers and the counts they may describe (tests hold captions to these ranges).
VAGUE_COUNTS = {"a few": (2, 3), "several": (3, 5), "many": (4, 5)}


@dataclass(frozen=True)
class _Kind:
    nouns: tuple[tuple[str, str], ...]  # (singular, plural) synonyms
    size: tuple[float, float]  # longest extent, fraction of the image side
    colours: tuple[str, ...]
    verbs: tuple[str, ...]
    on_water: bool = False


KINDS = {
    "plane": _Kind((("plane", "planes"), ("airplane", "airplanes"), ("aircraft", "aircraft")), (0.13, 0.19),
                   ("white", "grey", "red", "blue", "yellow"), ("parked", "standing", "")),
    "car": _Kind((("car", "cars"), ("vehicle", "vehicles")), (0.06, 0.08),
                 ("white", "black", "red", "blue", "yellow", "green"), ("parked", "")),
    "storage tank": _Kind((("storage tank", "storage tanks"), ("oil tank", "oil tanks"), ("tank", "tanks")),
                          (0.08, 0.13), ("white", "grey", "blue", "green", "red"), ("located", "standing", "")),
    "building": _Kind((("building", "buildings"), ("house", "houses")), (0.09, 0.16),
                      ("red", "grey", "white", "blue", "orange"), ("standing", "located", "built", "")),
    "boat": _Kind((("boat", "boats"), ("ship", "ships")), (0.08, 0.12),
                  ("white", "red", "yellow", "orange"), ("moored", "sailing", ""), on_water=True),
    "tree": _Kind((("tree", "trees"),), (0.05, 0.08), ("green",), ("growing", "planted", "")),
}
BACKGROUNDS = {  # base colour and the words captions use for it
    "grass": ((80, 135, 60), ("grassland", "meadow", "lawn", "green field")),
    "farmland": ((140, 150, 80), ("farmland", "cropland", "fields")),
    "sand": ((205, 185, 140), ("sandy land", "bare land", "desert")),
    "urban": ((118, 118, 122), ("paved area", "urban area", "concrete ground")),
}
_FARM_STRIPES = np.array([(120, 160, 70), (175, 155, 95), (95, 125, 55), (190, 180, 110)], dtype=np.float32)
WATER_RGB = np.array((40, 90, 140), dtype=np.float32)

RELATION_WORDS = {
    "left of": ("to the left of", "on the left side of", "west of"),
    "right of": ("to the right of", "on the right side of", "east of"),
    "above": ("above", "north of", "to the north of"),
    "below": ("below", "south of", "to the south of"),
    "upper left of": ("to the upper left of", "northwest of"),
    "upper right of": ("to the upper right of", "northeast of"),
    "lower left of": ("to the lower left of", "southwest of"),
    "lower right of": ("to the lower right of", "southeast of"),
    "near": ("near", "next to", "beside", "close to"),
    "around": ("around", "surrounding"),
    "surrounded by": ("surrounded by", "encircled by"),
    "river": ("along the river", "on the bank of the river", "beside the river"),
    "river_boat": ("on the river", "in the river"),
    "coast": ("along the coast", "near the sea"),
    "coast_boat": ("in the sea", "on the sea", "off the coast"),
}
INVERSE_RELATION = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
    "upper left of": "lower right of", "lower right of": "upper left of",
    "upper right of": "lower left of", "lower left of": "upper right of", "near": "near",
    "around": "surrounded by",
}


# ------------------------------------------------------------------------------------- scene graph


def _water_distance(points: np.ndarray, water: dict | None) -> np.ndarray:
    """Signed distance (image fractions) of (N, 2) points to the water edge; > 0 means in water."""
    if water is None:
        return np.full(len(points), -1.0)
    if water["type"] == "coast":
        axis, sign = {"left": (0, 1), "right": (0, -1), "top": (1, 1), "bottom": (1, -1)}[water["side"]]
        coord = points[:, axis] if sign > 0 else 1.0 - points[:, axis]
        other = points[:, 1 - axis]
        edge = water["edge"] + water["wobble"] * np.sin(2 * math.pi * 2 * other + water["phase"])
        return edge - coord
    line = np.asarray(water["points"], dtype=np.float64)
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0.0, 1.0)
    dist = np.sqrt(((points[:, None] - (a + t[..., None] * ab)) ** 2).sum(-1)).min(axis=1)
    return water["width"] / 2 - dist


def _sample_water(rng: np.random.Generator) -> dict | None:
    kind = rng.choice(["none", "river", "coast"], p=[0.55, 0.3, 0.15])
    if kind == "coast":
        return {"type": "coast", "side": str(rng.choice(["left", "right", "top", "bottom"])),
                "edge": float(rng.uniform(0.28, 0.4)), "wobble": float(rng.uniform(0.0, 0.04)),
                "phase": float(rng.uniform(0, 2 * math.pi))}
    if kind == "river":
        t = np.linspace(-0.1, 1.1, 13)
        offset = rng.uniform(0.3, 0.7) + rng.uniform(0.03, 0.08) * np.sin(2 * math.pi * rng.uniform(0.5, 1.5) * t
                                                                          + rng.uniform(0, 2 * math.pi))
        points = np.stack([t, offset], 1) if rng.random() < 0.5 else np.stack([offset, t], 1)
        return {"type": "river", "points": np.round(points, 4).tolist(), "width": float(rng.uniform(0.1, 0.16))}
    return None


def _colour_for(kind: str, background: str, rng: np.random.Generator) -> str:
    """A colour of the kind's palette that stands out from the ground it sits on."""
    ground = WATER_RGB if KINDS[kind].on_water else np.array(BACKGROUNDS[background][0], dtype=np.float32)
    options = [c for c in KINDS[kind].colours if np.linalg.norm(np.array(COLOURS[c]) - ground) > 70]
    return str(rng.choice(options or list(KINDS[kind].colours)))


def _group_centres(rng: np.random.Generator, scene: dict, on_water: bool) -> np.ndarray:
    """Candidate group centres on the right surface, those away from other groups first.

    Keeping groups apart makes the relations in the captions clear-cut.
    """
    points = rng.uniform(0.18, 0.82, (48, 2))
    wet = _water_distance(points, scene["water"]) > 0
    points = points[wet == on_water] if np.any(wet == on_water) else points
    centroids = np.array([[g["cx"], g["cy"]] for g in scene["groups"]]).reshape(-1, 2)
    if not len(centroids):
        return points
    gap = np.sqrt(((points[:, None] - centroids[None]) ** 2).sum(-1)).min(axis=1)
    return points[np.argsort(gap <= 0.3, kind="stable")]


def _candidate_positions(layout, count, size, rng, scene, anchor, on_water, centre):
    """Object centres of one group for one placement attempt, as an (N, 2) array."""
    if layout == "ring":
        radius = anchor["size"] * 0.5 + size * 0.75
        start = rng.uniform(0, 2 * math.pi)
        angles = start + 2 * math.pi * np.arange(count) / count + rng.normal(0, 0.1, count)
        return np.array([anchor["x"], anchor["y"]]) + radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    if layout == "along":
        line = np.asarray(scene["water"]["points"])
        start = rng.uniform(0.15, 0.85 - 0.12 * count)
        params = start + np.arange(count) * max(size * 1.3, 0.09)
        xy = np.stack([np.interp(params, np.linspace(0, 1, len(line)), line[:, k]) for k in (0, 1)], 1)
        if on_water:
            return xy + rng.normal(0, 0.01, xy.shape)
        normal = (line[-1] - line[0])[::-1] * np.array([1, -1])
        normal /= np.linalg.norm(normal)
        side = 1 if rng.random() < 0.5 else -1
        return xy + side * normal * (scene["water"]["width"] / 2 + size * 0.7)
    if layout == "row":
        direction = rng.uniform(0, math.pi)
        steps = (np.arange(count) - (count - 1) / 2) * size * 1.25
        return centre + steps[:, None] * np.array([math.cos(direction), math.sin(direction)])
    spread = size * (0.9 + 0.45 * count)
    return centre + rng.uniform(-spread, spread, (count, 2))


def _place_group(kind, count, layout, rng, scene, placed, anchor=None):
    """Places ``count`` objects without overlap on the right surface; None after 40 failed tries."""
    spec = KINDS[kind]
    centres = _group_centres(rng, scene, spec.on_water)
    for attempt in range(40):
        size = float(rng.uniform(*spec.size)) * scene["scale"]
        centre = centres[attempt % len(centres)]
        xy = _candidate_positions(layout, count, size, rng, scene, anchor, spec.on_water, centre)
        sizes = size * rng.uniform(0.9, 1.1, count)
        margin = sizes / 2 + 0.02
        if np.any(xy < margin[:, None]) or np.any(xy > 1 - margin[:, None]):
            continue
        wet = _water_distance(xy, scene["water"])
        if np.any(wet < sizes * 0.3) if spec.on_water else np.any(wet > -sizes * 0.45):
            continue
        others = np.array([[o["x"], o["y"], o["size"]] for o in placed]).reshape(-1, 3)
        together = np.concatenate([others, np.concatenate([xy, sizes[:, None]], 1)])
        gaps = np.sqrt(((together[:, None, :2] - together[None, :, :2]) ** 2).sum(-1))
        reach = (together[:, None, 2] + together[None, :, 2]) * 0.5
        np.fill_diagonal(gaps, np.inf)
        if np.any(gaps < reach):
            continue
        base_angle = rng.uniform(0, 360)
        aligned = layout == "row" or rng.random() < 0.5
        angles = base_angle + (rng.normal(0, 8, count) if aligned else rng.uniform(0, 360, count))
        return [{"x": round(float(x), 4), "y": round(float(y), 4), "size": round(float(s), 4),
                 "angle": round(float(a % 360), 2)} for (x, y), s, a in zip(xy, sizes, angles)]
    return None


def _relation(a: dict, b: dict) -> str:
    """Where group centroid ``a`` lies relative to ``b`` (image y grows downwards, north is up)."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if math.hypot(dx, dy) < 0.2:
        return "near"
    if abs(dx) >= 1.6 * abs(dy):
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= 1.6 * abs(dx):
        return "above" if dy < 0 else "below"
    if math.hypot(dx, dy) < 0.4:
        return "near"
    return f"{'upper' if dy < 0 else 'lower'} {'left' if dx < 0 else 'right'} of"


def sample_scene(rng: np.random.Generator) -> dict:
    """A random scene graph (JSON-serialisable): ground, water, object groups, relations, jitter."""
    scene = {"background": str(rng.choice(list(BACKGROUNDS))), "water": _sample_water(rng),
             "scale": round(float(rng.uniform(0.85, 1.2)), 3), "groups": [], "relations": []}
    kinds = [k for k in KINDS if scene["water"] is not None or not KINDS[k].on_water]
    n_groups = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.4, 0.3, 0.15]))
    placed: list[dict] = []
    for kind in rng.permutation(kinds)[:n_groups]:
        kind, count = str(kind), int(rng.integers(1, 6))
        anchors = [i for i, g in enumerate(scene["groups"])
                   if g["count"] == 1 and g["kind"] in ("building", "storage tank") and g["layout"] != "ring"]
        if KINDS[kind].on_water:
            layout = "along" if scene["water"]["type"] == "river" else "cluster"
        elif kind in ("tree", "car") and anchors and count >= 3 and rng.random() < 0.6:
            layout = "ring"
        elif scene["water"] and scene["water"]["type"] == "river" and rng.random() < 0.3:
            layout = "along"
        else:
            layout = "row" if count >= 3 and kind != "tree" and rng.random() < 0.3 else "cluster"
        anchor = scene["groups"][anchors[-1]] if layout == "ring" else None
        objects = _place_group(kind, count, layout, rng, scene, placed,
                               anchor["objects"][0] if anchor else None)
        if objects is None:
            continue
        placed += objects
        group = {"kind": kind, "count": count, "colour": _colour_for(kind, scene["background"], rng),
                 "layout": layout, "objects": objects,
                 "cx": round(float(np.mean([o["x"] for o in objects])), 4),
                 "cy": round(float(np.mean([o["y"] for o in objects])), 4)}
        index = len(scene["groups"])
        scene["groups"].append(group)
        if layout == "ring":
            scene["relations"].append([index, "around", anchors[-1]])
        elif index > 0:
            other = int(rng.integers(0, index))
            scene["relations"].append([index, _relation(group, scene["groups"][other]), other])
    if not scene["groups"]:  # every placement failed: extremely rare, fall back to one tree
        scene["groups"].append({"kind": "tree", "count": 1, "colour": "green", "layout": "cluster",
                                "objects": [{"x": 0.5, "y": 0.5, "size": 0.06, "angle": 0.0}], "cx": 0.5, "cy": 0.5})
        scene["water"] = None
    scene["jitter"] = {"gain": round(float(rng.uniform(0.88, 1.12)), 3),
                       "tint": np.round(rng.uniform(-0.05, 0.05, 3), 3).tolist(),
                       "noise": round(float(rng.uniform(2.0, 5.0)), 2), "seed": int(rng.integers(2**31))}
    return scene


# ------------------------------------------------------------------------------------- rendering


def _shapes(kind: str) -> list[tuple[list[tuple[float, float]], float]]:
    """Unit-size outlines (longest extent 1, pointing up) and the shade applied to the colour."""
    if kind == "plane":
        return [([(-0.06, -0.5), (0.06, -0.5), (0.06, 0.5), (-0.06, 0.5)], 1.0),
                ([(-0.5, 0.08), (0.0, -0.12), (0.5, 0.08), (0.5, 0.16), (-0.5, 0.16)], 1.0),
                ([(-0.2, 0.42), (0.2, 0.42), (0.2, 0.5), (-0.2, 0.5)], 1.0)]
    if kind == "car":
        return [([(-0.22, -0.5), (0.22, -0.5), (0.22, 0.5), (-0.22, 0.5)], 1.0),
                ([(-0.18, -0.4), (0.18, -0.4), (0.18, -0.22), (-0.18, -0.22)], 0.45)]
    if kind == "building":
        return [([(-0.35, -0.5), (0.35, -0.5), (0.35, 0.5), (-0.35, 0.5)], 0.75),
                ([(-0.3, -0.45), (0.3, -0.45), (0.3, 0.45), (-0.3, 0.45)], 1.0)]
    if kind == "boat":
        return [([(0.0, -0.5), (0.14, -0.22), (0.14, 0.5), (-0.14, 0.5), (-0.14, -0.22)], 1.0)]
    return []  # round kinds are drawn as ellipses


def _draw_object(draw: ImageDraw.ImageDraw, kind: str, obj: dict, rgb, side: int, offset: float = 0.0):
    """Draws one object; on an "L" canvas (the shadow mask) every part is drawn at full strength."""
    cx, cy, size = obj["x"] * side + offset, obj["y"] * side + offset, obj["size"] * side
    fill = None if rgb is None else tuple(int(v) for v in np.clip(rgb, 0, 255))

    def ink(shade: float):
        return 255 if draw.mode == "L" else tuple(int(v * shade) for v in fill)
    if kind in ("storage tank", "tree"):
        layers = [(0.5, 0.7), (0.36, 1.0)] if kind == "storage tank" else [(0.5, 0.8), (0.34, 1.0)]
        for radius, shade in layers:
            r = radius * size
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink(shade))
        return
    theta = math.radians(obj["angle"])
    cos, sin = math.cos(theta), math.sin(theta)
    for outline, shade in _shapes(kind):
        points = [(cx + size * (x * cos - y * sin), cy + size * (x * sin + y * cos)) for x, y in outline]
        draw.polygon(points, fill=ink(shade))


def _ground(scene: dict, side: int, rng: np.random.Generator) -> np.ndarray:
    """Land cover with low-frequency texture, water, and urban roads, as float (side, side, 3)."""
    yy, xx = (np.mgrid[0:side, 0:side] + 0.5) / side
    base = np.array(BACKGROUNDS[scene["background"]][0], dtype=np.float32)
    if scene["background"] == "farmland":
        angle, width = rng.uniform(0, math.pi), rng.uniform(0.08, 0.2)
        stripe = np.floor((xx * math.cos(angle) + yy * math.sin(angle)) / width).astype(int)
        image = _FARM_STRIPES[(stripe + rng.integers(4)) % len(_FARM_STRIPES)]
    else:
        image = np.broadcast_to(base, (side, side, 3)).astype(np.float32)
    coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(coarse, mode="F").resize((side, side), Image.BILINEAR))
    image = image * (1 + 0.08 * blotch[..., None])
    if scene["background"] == "urban":
        for axis in (0, 1):
            for pos in rng.uniform(0.1, 0.9, int(rng.integers(1, 3))):
                coord = (xx if axis else yy)
                image[np.abs(coord - pos) < 0.02] = (165, 165, 160)
    if scene["water"] is not None:
        alpha = _water_mask(scene["water"], side)[..., None]
        image = image * (1 - alpha) + alpha * WATER_RGB * (1 + 0.05 * blotch[..., None])
    return image


def _water_mask(water: dict, side: int) -> np.ndarray:
    """(side, side) float mask of the river or sea, drawn with PIL (the same shape `_water_distance` measures)."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if water["type"] == "river":
        points = [(x * side, y * side) for x, y in water["points"]]
        draw.line(points, fill=255, width=max(1, round(water["width"] * side)), joint="curve")
    else:
        along = np.linspace(0.0, 1.0, 33)
        edge = water["edge"] + water["wobble"] * np.sin(2 * math.pi * 2 * along + water["phase"])
        edge = edge if water["side"] in ("left", "top") else 1.0 - edge
        corner = 0.0 if water["side"] in ("left", "top") else 1.0
        curve = list(zip(edge, along)) if water["side"] in ("left", "right") else list(zip(along, edge))
        ends = [(corner, 1.0), (corner, 0.0)] if water["side"] in ("left", "right") else [(1.0, corner), (0.0, corner)]
        draw.polygon([(x * side, y * side) for x, y in curve + ends], fill=255)
    return np.asarray(mask, dtype=np.float32) / 255.0


def render_scene(scene: dict, image_size: int = 128) -> Image.Image:
    """Top-down RGB rendering of a scene graph; deterministic (texture noise seeded by the scene)."""
    rng = np.random.default_rng(scene["jitter"]["seed"])
    side = image_size
    image = Image.fromarray(np.clip(_ground(scene, side, rng), 0, 255).astype(np.uint8))
    shadow = Image.new("L", (side, side), 0)
    shadow_draw, draw = ImageDraw.Draw(shadow), ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):  # unmentioned clutter: bushes, rocks, patches
        x, y, r = rng.uniform(0, side, 2).tolist() + [float(rng.uniform(0.5, 2.0)) * side / 128]
        shade = tuple(int(v) for v in rng.uniform(40, 110, 3))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
    for group in scene["groups"]:
        colour = np.array(COLOURS[group["colour"]], dtype=np.float32)
        for obj in group["objects"]:
            _draw_object(shadow_draw, group["kind"], obj, None, side, offset=0.025 * side)
    pixels = np.asarray(image, dtype=np.float32) * (1 - 0.45 * np.asarray(shadow, np.float32)[..., None] / 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for group in scene["groups"]:
        colour = np.array(COLOURS[group["colour"]], dtype=np.float32)
        for obj in group["objects"]:
            _draw_object(draw, group["kind"], obj, colour + rng.normal(0, 8, 3), side)
    jitter = scene["jitter"]
    pixels = np.asarray(image, dtype=np.float32) * jitter["gain"] * (1 + np.asarray(jitter["tint"], np.float32))
    # Sensor grain at half resolution, shared by the channels: looks like texture, and keeps the PNGs
    # about 40% smaller than per-pixel RGB noise (the captions view stores each image 5 times).
    grain = rng.standard_normal((max(side // 2, 1),) * 2, dtype=np.float32) * np.float32(jitter["noise"])
    pixels += np.asarray(Image.fromarray(grain, mode="F").resize((side, side), Image.BILINEAR))[..., None]
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


# ------------------------------------------------------------------------------------- captions


def _count_phrase(count: int, rng: np.random.Generator, next_word: str) -> str:
    if count == 1:
        return "one" if rng.random() < 0.2 else _with_article(next_word).split()[0]
    vague = [w for w, (lo, hi) in VAGUE_COUNTS.items() if lo <= count <= hi]
    roll = rng.random()
    if vague and roll < 0.12:
        return str(rng.choice(vague))
    return str(count) if roll < 0.35 else NUMBER_WORDS[count]


def _noun_phrase(group: dict, rng: np.random.Generator, with_count: bool = True) -> str:
    singular, plural = KINDS[group["kind"]].nouns[int(rng.integers(len(KINDS[group["kind"]].nouns)))]
    noun = singular if group["count"] == 1 else plural
    show_colour = group["kind"] != "tree" or rng.random() < 0.3
    words = f"{group['colour']} {noun}" if show_colour and rng.random() < 0.8 else noun
    if not with_count:
        return f"the {words}"
    if group["layout"] == "row" and rng.random() < 0.5:
        return f"a row of {_count_phrase(group['count'], rng, words)} {words}"
    return f"{_count_phrase(group['count'], rng, words)} {words}"


def _verb(group: dict, rng: np.random.Generator) -> str:
    verb = str(rng.choice(KINDS[group["kind"]].verbs))
    if group["kind"] == "boat" and group["layout"] == "along":
        verb = "moored" if verb == "sailing" else verb
    return f" {verb}" if verb else ""


def _ground_phrase(scene: dict, rng: np.random.Generator) -> str:
    return str(rng.choice(BACKGROUNDS[scene["background"]][1]))


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _water_clause(scene: dict, group: dict, rng: np.random.Generator) -> str:
    """'along the river' / 'in the sea' for groups that the water places, else ''."""
    water = scene["water"]
    if water is None or (group["layout"] != "along" and not KINDS[group["kind"]].on_water):
        return ""
    key = water["type"] + ("_boat" if KINDS[group["kind"]].on_water else "")
    return " " + str(rng.choice(RELATION_WORDS[key]))


def _edge_clause(scene: dict, edge: list, rng: np.random.Generator, mentioned: set, invert: bool) -> str:
    subject, relation, obj = edge
    if invert:
        subject, obj, relation = obj, subject, INVERSE_RELATION[relation]
    first, second = scene["groups"][subject], scene["groups"][obj]
    left = _noun_phrase(first, rng, subject not in mentioned)
    right = _noun_phrase(second, rng, obj not in mentioned)
    mentioned.update((subject, obj))
    verb = _verb(first, rng) if relation not in ("surrounded by",) else ""
    return f"{left}{verb} {rng.choice(RELATION_WORDS[relation])} {right}"


def _caption_full(scene, rng):
    """Every group, joined by its relation: the most specific caption."""
    groups, mentioned = scene["groups"], set()
    if not scene["relations"]:
        group = groups[0]
        where = _water_clause(scene, group, rng) or f" on the {_ground_phrase(scene, rng)}"
        return f"{_noun_phrase(group, rng)}{_verb(group, rng)}{where}"
    clauses = [_edge_clause(scene, e, rng, mentioned, invert=bool(rng.random() < 0.3)) for e in scene["relations"]]
    return ", and ".join([", ".join(clauses[:-1]), clauses[-1]]) if len(clauses) > 1 else clauses[0]


def _caption_list(scene, rng):
    """'there are ... on the meadow': counts and colours without relations."""
    groups = [scene["groups"][i] for i in rng.permutation(len(scene["groups"]))]
    phrases = [_noun_phrase(g, rng) + _water_clause(scene, g, rng) for g in groups]
    listing = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    verb = "is" if listing.startswith(("a ", "an ", "one ")) else "are"
    return f"there {verb} {listing} on the {_ground_phrase(scene, rng)}"


def _caption_ground(scene, rng):
    """Ground first, then one relation or the groups."""
    ground = _ground_phrase(scene, rng)
    if scene["relations"]:
        edge = scene["relations"][int(rng.integers(len(scene["relations"])))]
        return f"{_with_article(ground)} with {_edge_clause(scene, edge, rng, set(), invert=bool(rng.random() < 0.5))}"
    group = scene["groups"][0]
    return f"{_with_article(ground)} with {_noun_phrase(group, rng)}{_water_clause(scene, group, rng)}"


def _caption_focus(scene, rng, place: bool = True):
    """One group and where it is: the least specific caption, as real datasets also have. `place=False`
    leaves out the ground or water ("a yellow car parked"), the way people type a search query."""
    group = scene["groups"][int(rng.integers(len(scene["groups"])))]
    where = (_water_clause(scene, group, rng) or f" on the {_ground_phrase(scene, rng)}") if place else ""
    return f"{_noun_phrase(group, rng)}{_verb(group, rng)}{where}"


_TEMPLATES = (_caption_full, _caption_list, _caption_ground, _caption_focus)


def _placeless_focus(scene, rng):
    return _caption_focus(scene, rng, place=False)


def describe_scene(scene: dict, rng: np.random.Generator, n: int = CAPTIONS_PER_SCENE,
                   placeless_focus: float = 0.0) -> list[str]:
    """``n`` distinct captions: the full description first, then varied templates and synonyms.

    ``placeless_focus``: probability that a one-group ("focus") caption leaves out its ground or water.
    Every other caption names a ground, water or a second group, so a model trained on them alone reads a
    place into a query that names none. 0 (the default) draws nothing extra: captions byte-identical to before.
    """
    captions: list[str] = []
    for _ in range(20 * n):
        template = _caption_full if not captions else _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
        if template is _caption_focus and placeless_focus > 0 and rng.random() < placeless_focus:
            template = _placeless_focus
        text = " ".join(template(scene, rng).split())
        text = text[0].upper() + text[1:] + ("." if rng.random() < 0.5 else "")
        if text not in captions:
            captions.append(text)
        if len(captions) == n:
            break
    while len(captions) < n:  # a one-object scene can run out of wordings: repeat, as real data does
        captions.append(captions[len(captions) % len(captions)])
    return captions


# ------------------------------------------------------------------------------------- dataset


def generate_scene(seed: int, split: str, index: int, image_size: int = 128,
                   placeless_focus: float = 0.0) -> tuple[dict, list[str], bytes]:
    """Scene graph, captions and PNG bytes of scene ``index`` of ``split``; pure function of its args
    (``placeless_focus`` changes captions only: same scene graph and pixels)."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    scene = sample_scene(rng)
    captions = describe_scene(scene, rng, placeless_focus=placeless_focus)
    buffer = io.BytesIO()
    render_scene(scene, image_size).save(buffer, format="PNG", compress_level=1)
    return scene, captions, buffer.getvalue()


def load_synthetic(
    split: str = "train",
    num_scenes: int | None = None,
    seed: int = 0,
    image_size: int = 128,
    view: str = "captions",
    placeless_focus: float = 0.0,
) -> Dataset:
    """The synthetic split in the standard schema plus a ``scene`` column (the scene graph as JSON).

    Images are embedded PNG bytes (``{"bytes", "path"}``), so the dataset needs no files and
    survives ``to_parquet``. Default sizes: train 1200, val 150, test 150 scenes, 5 captions each.
    ``placeless_focus``: see `describe_scene` (0: the captions of every earlier release).
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; allowed: {list(SPLIT_SIZES)}")
    dataset_features(view)  # validates the view before any scene is rendered
    num_scenes = SPLIT_SIZES[split] if num_scenes is None else num_scenes
    if not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"num_scenes must be a positive integer, got {num_scenes!r}")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    if not isinstance(placeless_focus, (int, float)) or not 0.0 <= placeless_focus <= 1.0:
        raise ValueError(f"placeless_focus must be a probability in [0, 1], got {placeless_focus!r}")
    records, images, scenes = [], [], []
    for index in range(num_scenes):
        scene, captions, png = generate_scene(seed, split, index, image_size, placeless_focus=placeless_focus)
        name = f"synthetic_{split}_{index:05d}.png"
        records.append(ImageRecord(name, tuple(captions)))
        images.append({"bytes": png, "path": name})
        scenes.append(json.dumps(scene, sort_keys=True))
    logger.info("synthetic %s: %d scenes at %dpx (seed %d)", split, num_scenes, image_size, seed)
    return build_dataset(records, view, images, extra_columns={"scene": (Value("string"), scenes)},
                         description=f"synthetic {split} split, seed {seed}, {image_size}px, {view} view"
                                     + (f", placeless focus captions {placeless_focus:g}" if placeless_focus else ""))
