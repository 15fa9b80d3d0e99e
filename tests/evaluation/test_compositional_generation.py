"""Compositional benchmark generation: real UCM annotations from shared/data, no model weights."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mtgfe.evaluation.cli import compositional_items_main
from mtgfe.evaluation.compositional import generation as C
from mtgfe.evaluation.compositional import rules as R
from mtgfe.evaluation.compositional.blind import blind_training_items
from mtgfe.data.annotations import normalize_caption


@pytest.fixture(scope="module")
def ucm(data_dir):
    """Items of UCM test (both views) and UCM train single edits, generated once, annotations only."""
    return {
        "pairs": C.generate_items("ucm_test", "pairs", data_dir, require_images=False),
        "single": C.generate_items("ucm_test", "single", data_dir, require_images=False),
        "train_single": C.generate_items("ucm_train", "single", data_dir, require_images=False),
    }


def test_generation_is_deterministic_and_hash_stable(ucm, data_dir):
    C._load_images.cache_clear()  # regenerate from the files, not from the cache
    again = C.generate_items("ucm_test", "pairs", data_dir, require_images=False)
    assert again == ucm["pairs"]
    assert C.items_hash(again) == C.items_hash(ucm["pairs"])
    single = C.generate_items("ucm_test", "single", data_dir, require_images=False)
    assert C.items_hash(single) == C.items_hash(ucm["single"])
    # The hash sees content: changing one negative changes it.
    edited = [dict(it) for it in single]
    edited[0]["negative"] += " x"
    assert C.items_hash(edited) != C.items_hash(single)
    # `count_table` (what experiments/compositional/counts.json records) carries these very hashes.
    table = C.count_table(sources=("ucm_test",), data_dir=data_dir)
    assert table["version"] == C.COMPOSITIONAL_VERSION
    assert table["hashes"]["ucm_test/pairs"] == C.items_hash(ucm["pairs"])
    assert table["hashes"]["ucm_test/single"] == C.items_hash(ucm["single"])


def test_pairs_differ_by_exactly_the_allowed_tokens_and_images(ucm, data_dir):
    pairs = ucm["pairs"]
    assert pairs and {it["type"] for it in pairs} <= set(C.PAIR_TYPES)
    owners = {}
    for filename, _, caps in C.load_source_captions("ucm_test", data_dir, require_images=False):
        for c in caps:
            owners.setdefault(normalize_caption(c), set()).add(filename)
    for it in pairs:
        a, b = R.tokenize(normalize_caption(it["caption"])), R.tokenize(normalize_caption(it["negative"]))
        assert len(a) == len(b)
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        edits = [i for i in diff if R.token_type(a[i], b[i]) == it["type"]]
        assert len(edits) == 1 and (a[edits[0]], b[edits[0]]) == (it["word_true"], it["word_neg"])
        extras = [i for i in diff if i != edits[0]]
        assert (it["kind"] == "exact") == (not extras) and len(extras) <= C.MAX_AGREEMENT_EXTRAS
        assert all(R.is_agreement_pair(a[i], b[i]) or {a[i], b[i]} <= {"a", "an", "the"} for i in extras)
        # Two different images; each holds its own caption and not the other one.
        assert it["filename"] != it["filename_b"]
        assert it["filename"] in owners[normalize_caption(it["caption"])]
        assert it["filename_b"] in owners[normalize_caption(it["negative"])]
        assert it["filename"] not in owners[normalize_caption(it["negative"])]
        assert it["filename_b"] not in owners[normalize_caption(it["caption"])]
    keys = [frozenset((normalize_caption(it["caption"]), normalize_caption(it["negative"]))) for it in pairs]
    assert len(keys) == len(set(keys)), "one item per unordered caption-string pair"


def test_pair_rules_reject_meaning_preserving_and_vague_differences():
    t = R.tokenize
    assert C.classify_pair(t("two planes are parked"), t("three planes are parked")) == ("count", "two", "three", "exact")
    assert C.classify_pair(t("an airplane is parked"), t("two airplanes are parked"))[3] == "near"
    assert C.classify_pair(t("an airplane is parked"), t("two airplanes are parked"), near=False) is None
    for a, b in [("grey roofs", "gray roofs"), ("many cars", "two cars"), ("some cars", "many cars"),
                 ("a plane", "one plane"), ("dark river", "black river"), ("near a road", "beside a road"),
                 ("two white planes", "three red planes")]:
        assert C.classify_pair(t(a), t(b)) is None, (a, b)
    assert C.classify_pair(t("on the left side"), t("on the right side"))[0] == "spatial"


def test_single_edits_change_only_the_intended_words(ucm):
    items = ucm["single"] + ucm["train_single"]
    assert {it["type"] for it in items} >= {"count", "colour"}
    for it in items:
        a, b = R.tokenize(it["caption"]), R.tokenize(it["negative"])
        assert normalize_caption(it["caption"]) != normalize_caption(it["negative"])
        if it["type"] == "binding":
            assert Counter(a) == Counter(b)
            continue
        if it["type"] == "spatial" and "front" in (it["word_true"] + it["word_neg"]).split():
            continue
        assert len(a) == len(b)
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if it["type"] == "count":
            edit = [i for i in diff if a[i] in R.NUMBER_WORDS and b[i] in R.NUMBER_WORDS]
            assert len(edit) == 1 and R.NUMBER_WORDS[a[edit[0]]] != R.NUMBER_WORDS[b[edit[0]]]
            assert all(R.is_agreement_pair(a[i], b[i]) for i in diff if i != edit[0])
        else:
            assert len(diff) == 1 and (a[diff[0]], b[diff[0]]) == (it["word_true"], it["word_neg"])
        # Outside the edited words the caption is byte-identical (case, spacing, punctuation).
        seps = [R._TOKEN.split(x.lower()) for x in (it["caption"], it["negative"])]
        assert seps[0] == seps[1]
        same = [i for i in range(len(a)) if i not in diff]
        spans_a, spans_b = R.token_spans(it["caption"]), R.token_spans(it["negative"])
        assert [it["caption"][spans_a[i][1]:spans_a[i][2]] for i in same] == \
            [it["negative"][spans_b[i][1]:spans_b[i][2]] for i in same]


def test_count_edits_keep_plural_agreement():
    spans = R.token_spans("There is a white airplane at the airport .")
    toks = [t for t, _, _ in spans]
    site = R.count_sites(toks)[0]
    out = R.apply_replacements("There is a white airplane at the airport .", spans, R.count_edit(toks, site, 3, "three"))
    assert out == "There are three white airplanes at the airport ."
    text = "Two airplanes are stopped at the airport ."
    spans = R.token_spans(text)
    toks = [t for t, _, _ in spans]
    out = R.apply_replacements(text, spans, R.count_edit(toks, R.count_sites(toks)[0], 1))
    assert out == "An airplane is stopped at the airport ."
    # A subject without an is/are/has verb ("two bridges link ...") cannot be made singular by swaps.
    toks = R.tokenize("two bridges link two sides of the river .")
    assert R.count_edit(toks, R.count_sites(toks)[0], 1) is None
    # "the two roads" has no one-road form by a word swap.
    toks = R.tokenize("cars on the two roads .")
    assert R.count_edit(toks, R.count_sites(toks)[0], 1) is None


def test_no_symmetric_relation_is_swapped_and_spatial_swaps_are_opposites():
    for rel in sorted(R.SYMMETRIC_RELATIONS):
        assert rel not in R.SPATIAL_OPPOSITES
        assert not R.spatial_sites(R.tokenize(f"a house {rel} the road ."))
    sites = R.spatial_sites(R.tokenize("a car in front of the house ."))
    assert sites == [(2, 3, "behind")]
    text = "a car in front of the house ."
    spans = R.token_spans(text)
    assert R.apply_replacements(text, spans, {2: "behind", 3: None, 4: None}) == "a car behind the house ."
    for word, opposite in R.SPATIAL_OPPOSITES.items():
        assert R.SPATIAL_OPPOSITES.get(opposite, "in front of" if word == "behind" else None) in (word, "in front of")


def test_direction_balance(ucm, data_dir):
    for items in (ucm["single"], ucm["train_single"], C.generate_items("rsicd_test", "single", data_dir, False)):
        for typ in ("count", "colour", "object", "spatial"):
            sel = [it for it in items if it["type"] == typ]
            if typ == "count":
                key = lambda it: (R.NUMBER_WORDS[it["word_true"]], R.NUMBER_WORDS[it["word_neg"]])
            elif typ == "colour":
                key = lambda it: (R.colour_class(it["word_true"]), R.colour_class(it["word_neg"]))
            else:
                key = lambda it: (it["word_true"], it["word_neg"])
            directions = Counter(key(it) for it in sel)
            for (u, v), n in directions.items():
                assert directions[(v, u)] == n, (typ, u, v)


def test_balance_directions_subsamples_the_majority_direction():
    def item(i, u, v):
        return {"item_id": f"{i:04d}", "_balance": ("colour", "roofs", u, v)}

    items = [item(i, "red", "blue") for i in range(5)] + [item(10 + i, "blue", "red") for i in range(2)]
    kept = C.balance_directions(items)
    assert sorted(it["item_id"] for it in kept) == ["0000", "0001", "0010", "0011"]


def test_blind_scorer_scores_zero_on_pairs(ucm):
    """Any text-only scorer s(image, caption) = f(caption) has group accuracy exactly 0."""
    def text_only(caption):
        return len(caption) + sum(map(ord, caption)) % 7  # arbitrary, image never looked at

    assert ucm["pairs"]
    for it in ucm["pairs"]:
        sa, sb = text_only(it["caption"]), text_only(it["negative"])
        scores = C.group_scores(s_aa=sa, s_ab=sb, s_ba=sa, s_bb=sb)
        assert not scores["group_accuracy"] and not scores["image_score"] and not scores["both"]
    # An image-aware scorer can score.
    assert C.group_scores(1.0, 0.0, 0.0, 1.0) == {"group_accuracy": True, "image_score": True, "both": True}


def test_load_compositional_returns_the_fields(data_dir):
    ds = C.load_compositional("ucm_test", "pairs", data_dir)
    for col in ("image", "image_b", "caption", "negative", "type", "source", "item_id", "filename", "filename_b"):
        assert col in ds.column_names
    assert ds.features["image"].__class__.__name__ == "Image"
    assert set(ds["source"]) == {"ucm_test"} and C.COMPOSITIONAL_VERSION in ds.info.description
    row = ds.cast_column("image", type(ds.features["image"])(decode=False))[0]
    assert Path(row["image"]["path"]).is_file()
    single = C.load_compositional("ucm_test", "single", data_dir)
    assert set(single["type"]) <= set(C.CERTIFIED_SINGLE["ucm_test"]) and "image_b" not in single.column_names
    every = C.load_compositional("ucm_test", "single", data_dir, require_images=False, certified_only=False)
    assert len(every) >= len(single) and "image" not in every.column_names


def test_no_test_caption_feeds_the_blind_model(data_dir):
    train, removed = blind_training_items("ucm_test", data_dir)
    test_strings = set()
    for src in C.BLIND_TRAIN:
        for _, _, caps in C.load_source_captions(src, data_dir, require_images=False):
            test_strings.update(normalize_caption(c) for c in caps)
    assert train and removed > 0  # UCM repeats captions across splits: some had to go
    for it in train:
        assert it["source"] == "ucm_train"
        assert normalize_caption(it["caption"]) not in test_strings
        assert normalize_caption(it["negative"]) not in test_strings


@pytest.mark.slow
def test_blind_check_certifies_exactly_the_listed_types(data_dir):
    """The text-only blind check, run now (about a minute on one thread), certifies the single-edit types
    `CERTIFIED_SINGLE` lists and scores 0 on the count/colour pairs, whose two captions are the same text."""
    from mtgfe.evaluation.compositional.blind import blind_check

    report = blind_check(data_dir)
    assert report["version"] == C.COMPOSITIONAL_VERSION
    for src, certified in C.CERTIFIED_SINGLE.items():
        per_type = report["sources"][src]["single"]
        assert sorted(t for t, r in per_type.items() if r["certified"]) == sorted(certified)
        for name in ("count", "colour"):
            for score in ("group_accuracy", "image_score", "both"):
                assert report["sources"][src]["pairs"][name][score] == 0.0


def test_cli_writes_jsonl(tmp_path, data_dir):
    out = tmp_path / "x.jsonl"
    assert compositional_items_main(["--source", "ucm_test", "--view", "pairs", "--out", str(out),
                                     "--data-dir", str(data_dir)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {"caption", "negative", "type", "image", "image_b"} <= set(rows[0])


def test_ucm_val_is_a_development_source_disjoint_from_train_and_test(data_dir):
    """Recipe choices are made on ucm_val pairs: its images must be neither training nor test images."""
    val = C.generate_items("ucm_val", "pairs", data_dir, require_images=False)
    assert len(val) >= 20 and {it["type"] for it in val} <= set(C.PAIR_TYPES)
    names = {src: {f for f, _, _ in C.load_source_captions(src, data_dir, require_images=False)}
             for src in ("ucm_val", "ucm_test", "ucm_train")}
    assert not names["ucm_val"] & names["ucm_test"] and not names["ucm_val"] & names["ucm_train"]
    assert {it["filename"] for it in val} | {it["filename_b"] for it in val} <= names["ucm_val"]
