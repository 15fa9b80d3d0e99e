"""Rendered twins of *training* scenes: balanced swap quads whose two images differ in one attribute.

Why: the generator's captions of a scene state its layout, colours and counts, but nothing in an ordinary
batch forces the fusion encoder to read *where* things are or *which object wears which colour*: a caption
and a wrong image rarely differ in just that. The generator controls every attribute, so for a training
scene A it renders a twin A' that differs in exactly one of them, and writes for each the caption that is
true for it and false for the other (`evaluation.compositional.synthetic_pairs.edit_scene`, the held-out minimal pairs' own
edits, plus the ``near`` relation):

* ``count``    one group loses objects:                "three red cars on the meadow" / "one red car on ..."
* ``colour``   one group changes colour:               "two white planes ..." / "two grey planes ..."
* ``spatial``  the scene is mirrored (left/right) or flipped (above/below), so two groups swap sides
* ``binding``  two groups of different kinds swap colours (both captions hold the same words)
* ``near``     one group moves from beside another to far from it (or back): "... next to ..." / "... far from ..."
* ``side``     the scene is mirrored (or flipped), and the captions name where one group lies:
               "four red buildings on the left side" / "... on the right side" (or top / bottom side)

A twin quad is two rows, (A, a) and (A', a'), that `perturbation.CaptionPerturber` (source ``twins``) brings
into a batch beside a row of scene A, with the negatives (A, a') and (A', a): each caption is a positive
once and a negative once, so a text-only score cancels quad by quad (the ``pairs`` source's balance), and
ITM (and NegCLIP ITC columns of the dual baseline) can only lower the loss by reading the images.

Leakage: twins are edits of the *train* split's scenes (``[seed, SPLIT_CODES["train"], index]``), drawn
from their own streams; validation and test scenes (other split codes) are never touched, and
`evaluation_scene_keys` lets tests check that no twin equals an evaluation scene.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
from datasets import Dataset, Value

from .collate import image_sources
from mtgfe.data.annotations import ImageRecord, build_dataset, normalize_caption
from mtgfe.data.synthetic import SPLIT_CODES, sample_scene
from mtgfe.evaluation.compositional.synthetic_pairs import EDIT_TYPES, edit_scene, group_phrase, mirror_scene, render_png

TWIN_TYPES = (*EDIT_TYPES, "side")  # new types go last: a type's position seeds its draws (`generate_twins`)
# Image ids of twin images: far above any scene index, so a twin never shares an id (ITC positives, cache
# rows) with a training image.
TWIN_IMAGE_ID_OFFSET = 1 << 30
_TWIN_STREAM = 7  # purpose id mixed into the twin streams (sample_scene uses the bare [seed, split, index])


_OTHER_SIDE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def side_edit(scene: dict, rng: np.random.Generator) -> tuple[dict, str, str] | None:
    """The ``side`` twin: one group clearly on one side (centre below 0.4 or above 0.6 on an axis), the scene
    mirrored across that axis, and the captions "{group} on the left side" / "... on the right side" (top /
    bottom for a vertical flip). None when no group is off-centre, or none reads unambiguously.

    Why: a one-group curriculum for layout. It names a single group and a single place, so ITM has to read
    just one thing from where that group's tokens are, where a ``spatial`` twin needs two groups and their
    relation; in the twin-recipe probes side twins left chance first (about step 300) and spatial twins
    followed. The twin is the exact pixel mirror of the scene (`render` draws the mirrored graph), so nothing
    but position tells the two images apart. A group whose phrase another group shares is never named: the
    caption would be true of both images.
    """
    phrases = [group_phrase(g) for g in scene["groups"]]
    options = []
    for group, phrase in zip(scene["groups"], phrases):
        if phrases.count(phrase) != 1:
            continue
        if group["cx"] < 0.4 or group["cx"] > 0.6:
            options.append((phrase, "x", "left" if group["cx"] < 0.5 else "right"))
        if group["cy"] < 0.4 or group["cy"] > 0.6:
            options.append((phrase, "y", "top" if group["cy"] < 0.5 else "bottom"))
    if not options:
        return None
    phrase, axis, side = options[int(rng.integers(len(options)))]
    return mirror_scene(scene, axis), f"{phrase} on the {side} side", f"{phrase} on the {_OTHER_SIDE[side]} side"


def generate_twins(num_scenes: int, types: Sequence[str] = TWIN_TYPES, per_scene: int = 1, seed: int = 0,
                   twin_seed: int = 0) -> list[dict]:
    """Twins of training scenes ``0 .. num_scenes - 1`` of generator seed `seed` (deterministic).

    Up to `per_scene` distinct twins per scene and type (a scene without a site for a type gets none).
    Each item: ``base_index`` (the training scene, i.e. its image id), ``type``, ``scene``, ``twin``,
    ``caption`` (true for the scene), ``twin_caption`` (true for the twin).
    """
    unknown = sorted(set(types) - set(TWIN_TYPES))
    if unknown or not types:
        raise ValueError(f"twin types {list(types)!r}: need one or more of {TWIN_TYPES}")
    if not isinstance(per_scene, int) or per_scene < 1:
        raise ValueError(f"per_scene={per_scene!r} must be an int >= 1")
    split = SPLIT_CODES["train"]
    items = []
    for index in range(num_scenes):
        scene = sample_scene(np.random.default_rng([seed, split, index]))
        for typ in types:
            code = TWIN_TYPES.index(typ)
            seen = set()
            for k in range(per_scene):
                rng = np.random.default_rng([seed, split, index, _TWIN_STREAM, code, k, twin_seed])
                edit = side_edit(scene, rng) if typ == "side" else edit_scene(scene, typ, rng)
                if edit is None:
                    break  # no site: the other draws would find none either
                twin, caption, twin_caption = edit
                key = json.dumps(twin, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                items.append({"base_index": index, "type": typ, "scene": scene, "twin": twin,
                              "caption": caption, "twin_caption": twin_caption})
    return items


def load_twin_rows(train_rows: Dataset, types: Sequence[str], per_scene: int = 1, seed: int = 0,
                   twin_seed: int = 0, image_size: int = 128) -> Dataset:
    """The twin quads of a synthetic training split as a captions-view dataset: rows ``2q`` (A, a) and
    ``2q + 1`` (A', a') of quad q.

    `train_rows`: the captions view of `load_synthetic("train", seed=seed, image_size=image_size)`, scene i
    with image id i. Base rows reuse their scene's image id and PNG (byte-identical to the training image);
    twins get image id ``TWIN_IMAGE_ID_OFFSET + q`` and their own rendering at `image_size`. Caption ids
    follow the training captions' ids for the same sentence, so an identical caption is never drawn as an
    ITM negative of an image that has it. Extra columns: ``quad``, ``type``, ``scene`` (JSON).
    """
    sources, ids = image_sources(train_rows)
    if ids != list(range(len(ids))):
        raise ValueError(f"twins need the synthetic training split (image ids 0..n-1, one per scene); got ids "
                         f"{ids[:3]}... ({len(ids)} images)")
    items = generate_twins(len(ids), types, per_scene, seed, twin_seed)
    if not items:
        raise ValueError(f"no training scene has a twin of types {list(types)}")
    records, images, image_ids, quads, kinds, scenes = [], [], [], [], [], []
    for q, item in enumerate(items):
        base = item["base_index"]
        for side, (scene, caption) in enumerate(((item["scene"], item["caption"]), (item["twin"], item["twin_caption"]))):
            name = f"synthetic_train_{base:05d}" + (f"_twin{q:06d}.png" if side else ".png")
            records.append(ImageRecord(name, (caption,)))
            source = sources[base] if side == 0 else render_png(scene, image_size)
            images.append({"bytes": source, "path": name} if isinstance(source, bytes) else source)
            image_ids.append(base if side == 0 else TWIN_IMAGE_ID_OFFSET + q)
            quads.append(q)
            kinds.append(item["type"])
            scenes.append(json.dumps(scene, sort_keys=True))
    rows = build_dataset(records, "captions", images, image_ids=image_ids,
                         extra_columns={"quad": (Value("int64"), quads), "type": (Value("string"), kinds),
                                        "scene": (Value("string"), scenes)},
                         description=f"synthetic train twins {list(types)}, seed {seed}/{twin_seed}, {image_size}px")
    caption_ids = {normalize_caption(t): int(i) for t, i in zip(train_rows["caption"], train_rows["caption_id"])}
    next_id = max(caption_ids.values(), default=-1) + 1
    new_ids = []
    for text in rows["caption"]:  # the training rows' id for a sentence they have, new ids after theirs
        key = normalize_caption(text)
        if key not in caption_ids:
            caption_ids[key], next_id = next_id, next_id + 1
        new_ids.append(caption_ids[key])
    return rows.remove_columns("caption_id").add_column("caption_id", new_ids)


def evaluation_scene_keys(seed: int, val_scenes: int, test_scenes: int, pairs: Sequence[dict] = ()) -> set[str]:
    """JSON keys of every evaluation scene graph: val and test scenes, and the held-out minimal pairs."""
    keys = set()
    for split, n in (("val", val_scenes), ("test", test_scenes)):
        for index in range(n):
            keys.add(json.dumps(sample_scene(np.random.default_rng([seed, SPLIT_CODES[split], index])), sort_keys=True))
    for item in pairs:
        keys.update(json.dumps(item[k], sort_keys=True) for k in ("scene", "scene_b"))
    return keys


class TwinQuads:
    """Twin quads of each training image, for `perturbation.CaptionPerturber` (source ``twins``).

    Args:
        rows: `load_twin_rows` output (possibly without the ``image`` column, for cached backbone tokens).
    """

    def __init__(self, rows: Dataset):
        self.rows = rows
        quad_ids = rows["quad"]
        if len(quad_ids) % 2 or quad_ids[0::2] != quad_ids[1::2]:
            raise ValueError("twin rows must come in quads: rows 2q (scene) and 2q + 1 (twin) of quad q")
        self.quads_of: dict[int, list[int]] = {}
        for q, image_id in enumerate(rows["image_id"][0::2]):
            self.quads_of.setdefault(int(image_id), []).append(q)

    def __len__(self) -> int:
        return len(self.rows) // 2

    def quad(self, q: int) -> tuple[dict, dict]:
        return dict(self.rows[2 * q]), dict(self.rows[2 * q + 1])


__all__ = ["TWIN_IMAGE_ID_OFFSET", "TWIN_TYPES", "TwinQuads", "evaluation_scene_keys",
           "generate_twins", "load_twin_rows", "side_edit"]
