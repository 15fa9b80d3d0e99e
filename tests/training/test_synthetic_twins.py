"""Rendered twins of training scenes as balanced swap quads (`data.synthetic.twins`, perturbation source `twins`)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mtgfe.training.cli import main
from mtgfe.training.config import ConfigError, load_config
from mtgfe.training.perturbation import TWIN_INDEX_OFFSET, CaptionPerturber
from mtgfe.data.synthetic import BACKGROUNDS, KINDS, NUMBER_WORDS, RELATION_WORDS, load_synthetic
from mtgfe.evaluation.compositional.synthetic_pairs import FAR_DISTANCE, NEAR_DISTANCE, generate_pairs
from mtgfe.training.synthetic_twins import (TWIN_IMAGE_ID_OFFSET, TWIN_TYPES, TwinQuads, evaluation_scene_keys,
                                            generate_twins, load_twin_rows)

from tests.helpers.training import BASE, compare_runs, one_thread, records  # noqa: F401  (autouse: one intra-op thread)

N_SCENES = 60


@pytest.fixture(scope="module")
def twins():
    return generate_twins(N_SCENES, TWIN_TYPES)


# ------------------------------------------------------------------ an independent oracle of caption truth
def _phrase(group: dict) -> str:
    singular, plural = KINDS[group["kind"]].nouns[0]
    return f"{NUMBER_WORDS[group['count']]} {group['colour']} {singular if group['count'] == 1 else plural}"


def true_captions(scene: dict) -> set[str]:
    """Every sentence of the twin templates that the scene graph makes true (relations from the object
    positions, counts from the objects themselves, not from the group's own bookkeeping)."""
    groups = [dict(g, count=len(g["objects"]), cx=np.mean([o["x"] for o in g["objects"]]),
                   cy=np.mean([o["y"] for o in g["objects"]])) for g in scene["groups"]]
    ground = BACKGROUNDS[scene["background"]][1][0]
    out = {f"{_phrase(g)} on the {ground}" for g in groups}
    for g in groups:  # side captions: the group's centre clearly off the middle
        for side, off in (("left", g["cx"] < 0.4), ("right", g["cx"] > 0.6), ("top", g["cy"] < 0.4),
                          ("bottom", g["cy"] > 0.6)):
            if off:
                out.add(f"{_phrase(g)} on the {side} side")
    for i, a in enumerate(groups):
        for j, b in enumerate(groups):
            if i == j:
                continue
            out.add(f"{_phrase(a)} and {_phrase(b)}")
            dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
            if abs(dx) >= 2 * abs(dy) and abs(dx) >= 0.25:
                out.add(f"{_phrase(a)} {RELATION_WORDS['left of' if dx < 0 else 'right of'][0]} {_phrase(b)}")
            if abs(dy) >= 2 * abs(dx) and abs(dy) >= 0.25:
                out.add(f"{_phrase(a)} {RELATION_WORDS['above' if dy < 0 else 'below'][0]} {_phrase(b)}")
            distance = np.hypot(dx, dy)
            if distance <= NEAR_DISTANCE:
                out.add(f"{_phrase(a)} next to {_phrase(b)}")
            if distance >= FAR_DISTANCE:
                out.add(f"{_phrase(a)} far from {_phrase(b)}")
    return out


def test_every_type_is_made_and_captions_are_true_for_their_image_only(twins):
    assert set(Counter(t["type"] for t in twins)) == set(TWIN_TYPES)
    assert min(Counter(t["type"] for t in twins).values()) >= 10
    for t in twins:
        base, twin = true_captions(t["scene"]), true_captions(t["twin"])
        assert t["caption"] in base and t["twin_caption"] in twin, t
        assert t["caption"] not in twin and t["twin_caption"] not in base, t


def _objects(scene, group):
    return [(o["x"], o["y"]) for o in scene["groups"][group]["objects"]]


def test_twins_differ_in_exactly_the_named_attribute(twins):
    """Scene-graph diff: everything but the named attribute is identical (ground, water, jitter, the other
    groups, and within the edited group every other field)."""
    for t in twins:
        a, b, typ = t["scene"], t["twin"], t["type"]
        mirror = typ in ("spatial", "side")
        moved = ("groups", "mirrored") + (("water",) if mirror else ())  # a mirror mirrors the river too
        assert {k: v for k, v in a.items() if k not in moved} == {k: v for k, v in b.items() if k not in moved}
        assert len(a["groups"]) == len(b["groups"])
        changed = [i for i, (g, h) in enumerate(zip(a["groups"], b["groups"])) if g != h]
        if mirror:
            axis = b["mirrored"]
            k = 0 if axis == "x" else 1
            for g, h in zip(a["groups"], b["groups"]):
                assert [g[f] for f in ("kind", "count", "colour")] == [h[f] for f in ("kind", "count", "colour")]
                for o, p in zip(g["objects"], h["objects"]):
                    assert (p["x"], p["y"])[k] == pytest.approx(1 - (o["x"], o["y"])[k], abs=1e-4)
                    assert (p["x"], p["y"])[1 - k] == (o["x"], o["y"])[1 - k] and p["size"] == o["size"]
            continue
        assert "mirrored" not in b
        fields = {f for i in changed for f in a["groups"][i] if a["groups"][i][f] != b["groups"][i][f]}
        if typ == "count":
            (i,) = changed
            assert fields <= {"count", "objects", "cx", "cy"} and b["groups"][i]["count"] < a["groups"][i]["count"]
            assert b["groups"][i]["objects"] == a["groups"][i]["objects"][: b["groups"][i]["count"]]
        elif typ == "colour":
            (i,) = changed
            assert fields == {"colour"}
        elif typ == "binding":
            i, j = changed
            assert fields == {"colour"}
            assert (b["groups"][i]["colour"], b["groups"][j]["colour"]) == (a["groups"][j]["colour"], a["groups"][i]["colour"])
        elif typ == "near":
            (i,) = changed
            assert fields <= {"objects", "cx", "cy"}
            shift = np.subtract(_objects(b, i), _objects(a, i))  # one translation of the whole group
            assert np.allclose(shift, shift[0], atol=2e-4) and np.abs(shift[0]).max() > 0.05
            assert [(o["size"], o["angle"]) for o in a["groups"][i]["objects"]] == \
                   [(o["size"], o["angle"]) for o in b["groups"][i]["objects"]]


def test_twins_are_deterministic_and_come_from_training_scenes_only(twins):
    assert generate_twins(N_SCENES, TWIN_TYPES) == twins
    other = generate_twins(N_SCENES, TWIN_TYPES, twin_seed=1)
    assert other != twins and {t["base_index"] for t in other} <= set(range(N_SCENES))
    train = load_synthetic("train", num_scenes=N_SCENES, image_size=32)
    scenes = [json.loads(s) for s in train["scene"][::5]]  # one row per caption, 5 captions per scene
    assert all(t["scene"] == scenes[t["base_index"]] for t in twins)  # the base is the training scene itself
    # no base and no twin equals any validation or test scene, or a held-out minimal pair's scene
    evaluation = evaluation_scene_keys(0, 150, 150, generate_pairs(num_items=60, seed=0))
    ours = {json.dumps(t[k], sort_keys=True) for t in twins for k in ("scene", "twin")}
    assert len(evaluation) > 300 and not ours & evaluation
    with pytest.raises(ValueError, match="twin types"):
        generate_twins(4, ["rotation"])
    with pytest.raises(ValueError, match="per_scene"):
        generate_twins(4, ["count"], per_scene=0)


@pytest.fixture(scope="module")
def twin_data():
    train = load_synthetic("train", num_scenes=24, image_size=32)
    return train, load_twin_rows(train, list(TWIN_TYPES), per_scene=2, image_size=32)


def test_twin_rows_share_the_base_image_and_give_twins_their_own(twin_data):
    train, rows = twin_data
    assert len(rows) % 2 == 0 and rows["quad"][0::2] == rows["quad"][1::2]
    raw = train.cast_column("image", type(train.features["image"])(decode=False))
    png = {i: im["bytes"] for i, im in zip(raw["image_id"], raw["image"])}
    raw_rows = rows.cast_column("image", type(rows.features["image"])(decode=False))
    for k in range(0, len(rows), 2):
        base, twin = raw_rows[k], raw_rows[k + 1]
        assert base["image_id"] < 24 and base["image"]["bytes"] == png[base["image_id"]]  # byte-identical
        assert twin["image_id"] == TWIN_IMAGE_ID_OFFSET + base["quad"] and twin["image"]["bytes"] != base["image"]["bytes"]
    ids = {normalize: i for normalize, i in zip(map(str.lower, train["caption"]), train["caption_id"])}
    for text, cid in zip(rows["caption"], rows["caption_id"]):  # a sentence the training rows have keeps its id
        assert ids.get(text, cid) == cid
    assert min(c for t, c in zip(rows["caption"], rows["caption_id"]) if t not in ids) > max(train["caption_id"])


def test_quads_are_exactly_balanced_and_deterministic(twin_data):
    train, rows = twin_data
    perturber = CaptionPerturber(train["caption"], rate=1.0, seed=0, source="twins", twins=TwinQuads(rows))
    batch = [{**train[i], "epoch": 0, "index": i} for i in range(0, len(train), 5)]
    out, negatives = perturber.expand(batch)
    added = out[len(batch):]
    assert out[: len(batch)] == batch and len(added) == 2 * len(batch) - 2 * sum(
        not perturber.twins.quads_of.get(r["image_id"]) for r in batch)
    assert all(r["index"] >= TWIN_INDEX_OFFSET for r in added)
    assert len(negatives) == len(added)
    for k in range(0, len(added), 2):  # each quad: (A, a), (A', a') positives; (A, a'), (A', a) negatives
        a, b = added[k], added[k + 1]
        assert a["quad"] == b["quad"] and a["image_id"] < TWIN_IMAGE_ID_OFFSET <= b["image_id"]
        first = len(batch) + k
        assert negatives[k] == (first, b["caption"]) and negatives[k + 1] == (first + 1, a["caption"])
        assert any(r["image_id"] == a["image_id"] for r in batch)  # brought by a row of its own scene
    # text-only balance: every caption is a positive exactly as often as a negative
    assert Counter(t for _, t in negatives) == Counter(r["caption"] for r in added)
    assert perturber.expand(batch) == (out, negatives)
    with pytest.raises(ValueError, match="perturbation source 'twins'"):
        CaptionPerturber(train["caption"], rate=1.0, source="twins")
    with pytest.raises(ValueError, match="perturbation source 'twins'"):
        CaptionPerturber(train["caption"], rate=1.0, source="edits", twins=TwinQuads(rows))


TWINS = ["data.synthetic.twins.types=[count,colour,spatial,binding,near]", "model.perturbation_source=twins",
         "model.itm_perturbation_negatives=1.0", "model.itc_perturbation_negatives=1.0", "views.base.hflip=false",
         "views.mvjrc={rot90_p: 0, hflip_p: 0, vflip_p: 0}"]


def test_config_turns_twins_on_only_with_safe_views():
    cfg = load_config("synthetic_tiny", TWINS)
    assert cfg.data.synthetic.twins.types == ["count", "colour", "spatial", "binding", "near"]
    # a view that mirrors an image turns "left of" false: refused, naming the setting
    with pytest.raises(ConfigError, match=r"views\.base\.hflip=false"):
        load_config("synthetic_tiny", [t for t in TWINS if not t.startswith("views.base")])
    with pytest.raises(ConfigError, match=r"views\.mvjrc\.hflip_p=0, views\.mvjrc\.rot90_p=0, views\.mvjrc\.vflip_p=0"):
        load_config("synthetic_tiny", [t for t in TWINS if not t.startswith("views.mvjrc")])
    with pytest.raises(ConfigError, match=r"views\.mvjrc\.rot90_p=0"):  # cached views use the mvjrc policy
        load_config("synthetic_tiny", [*TWINS[:-1], "views.base={}", "freeze.vision=true",
                                       "data.backbone_cache.enabled=true", "model.mvjrc_weight=0",
                                       "views.mvjrc={hflip_p: 0, vflip_p: 0}"])
    assert load_config("synthetic_tiny", [*TWINS[:-1], "model.mvjrc_weight=0"])  # no MVJRC view, no mvjrc flips
    with pytest.raises(ConfigError, match=r"twins.types\[0\]=.rotation. is not one of"):
        load_config("synthetic_tiny", [*TWINS, "data.synthetic.twins.types=[rotation]"])
    with pytest.raises(ConfigError, match="perturbation_source=twins"):
        load_config("synthetic_tiny", [*TWINS, "model.perturbation_source=pairs"])
    with pytest.raises(ConfigError, match="perturbation_source=twins"):
        load_config("synthetic_tiny", ["model.perturbation_source=twins", "model.itm_perturbation_negatives=1"])
    with pytest.raises(ConfigError, match="itc_perturbation_negatives"):
        load_config("synthetic_tiny", [*TWINS, "model.itm_perturbation_negatives=0", "model.itc_perturbation_negatives=0"])
    with pytest.raises(ConfigError, match="data.dataset=synthetic"):
        load_config("ucm_fusion", [*TWINS, "model.mvjrc_weight=0"])
    with pytest.raises(ConfigError, match="data.cv"):
        load_config("synthetic_tiny", [*TWINS, "data.cv.folds=3"])
    with pytest.raises(ConfigError, match="per_scene"):
        load_config("synthetic_tiny", [*TWINS, "data.synthetic.twins.per_scene=0"])


def test_twins_train_with_pixels_for_itm_and_as_negclip_columns(tmp_path):
    """A tiny end-to-end run with twins in ITM and ITC (pixels), and the dual baseline with twins as NegCLIP
    columns only: both train, and twin rows are in the batches."""
    common = [*TWINS, "max_steps=2", "log.sample_ids=true", "eval.at_end=false", "model.mlm_weight=0",
              "model.mvjrc_weight=0"]
    assert main(BASE + [f"output_dir={tmp_path / 'fusion'}", *common]) == 0
    log = records(tmp_path / "fusion")
    assert all(0 < r["loss_itm"] < 5 and 0 < r["loss_itc"] < 10 for r in log)
    ids = [i for r in log for x in r["sample_ids"] for i in (x if isinstance(x, list) else [x])]
    assert any(i >= TWIN_INDEX_OFFSET for i in ids)
    dual = [*common, "model.itm_weight=0", "model.itm_perturbation_negatives=0"]
    assert main(BASE + [f"output_dir={tmp_path / 'dual'}", *dual]) == 0
    dual_log = records(tmp_path / "dual")
    assert all(r.get("loss_itm") is None and 0 < r["loss_itc"] < 10 for r in dual_log), dual_log


def test_twins_train_on_cached_tokens_and_resume_exactly(tmp_path):
    """Twin images get their own cache rows (looked up by image id), and a resumed run draws the same quads."""
    common = [*TWINS[:-1], "views.mvjrc={rot90_p: 0, hflip_p: 0, vflip_p: 0}", "views.base={}", "freeze.vision=true",
              "data.backbone_cache.enabled=true", "data.backbone_cache.num_views=2",
              f"data.backbone_cache.dir={tmp_path / 'cache'}", "max_steps=4", "log.sample_ids=true",
              "eval.at_end=false", "checkpoint.keep_last=null", "checkpoint.save_every=2"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(BASE + [f"output_dir={full}", *common]) == 0
    log = records(full)
    ids = [i for r in log for x in r["sample_ids"] for i in (x if isinstance(x, list) else [x])]
    assert any(i >= TWIN_INDEX_OFFSET for i in ids)
    assert all(0 < r["loss_itm"] < 5 for r in log)
    assert main(BASE + [f"output_dir={resumed}", *common, f"checkpoint.resume_from={full / 'checkpoint-2'}"]) == 0
    compare_runs(full, resumed, from_step=2)


def test_side_twins_are_pixel_mirrors_named_by_one_group(twins):
    """`side`: one unambiguously named group, clearly on the side the caption says; the twin is the exact pixel
    mirror, so only position tells the images apart. Adding the type changed no other type's twins."""
    from mtgfe.evaluation.compositional.synthetic_pairs import group_phrase, mirror_scene, render

    side = [t for t in twins if t["type"] == "side"]
    assert len(side) >= 20
    for t in side:
        axis = t["twin"]["mirrored"]
        assert t["twin"] == mirror_scene(t["scene"], axis)
        words, twin_words = t["caption"].split(), t["twin_caption"].split()
        assert words[:-2] == twin_words[:-2] and words[-1] == twin_words[-1] == "side"
        assert {words[-2], twin_words[-2]} == ({"left", "right"} if axis == "x" else {"top", "bottom"})
        phrases = [group_phrase(g) for g in t["scene"]["groups"]]
        assert phrases.count(" ".join(words[:-4])) == 1  # "<phrase> on the <side> side"
    for t in side[:3]:
        base, twin = np.asarray(render(t["scene"], 32)), np.asarray(render(t["twin"], 32))
        flipped = base[:, ::-1] if t["twin"]["mirrored"] == "x" else base[::-1]
        assert np.array_equal(twin, flipped)
    others = [t for t in twins if t["type"] != "side"]
    assert generate_twins(N_SCENES, [t for t in TWIN_TYPES if t != "side"]) == others
    assert load_config("synthetic_tiny", [*TWINS, "data.synthetic.twins.types=[side,spatial]"])
