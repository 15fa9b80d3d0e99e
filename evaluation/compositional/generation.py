"""A blind-proof compositional benchmark built from real remote-sensing captions.

Two views of the same question: does a model see *within-class detail* (counts, colours, spatial
relations, which attribute goes with which object) or does it read a caption as a bag of words?

* ``view="pairs"`` (primary, Winoground-style, real data only): two captions of two *different*
  images whose token sequences differ by exactly one meaning-changing word of one type (count,
  colour, spatial), or (``kind="near"``) by that word plus at most two agreement-only tokens
  (``is|are``, ``plane|planes``, ``a|the``), e.g. "an airplane is parked" / "two airplanes are
  parked". An item scores (`group_accuracy`) when image a prefers caption a over caption b AND image
  b prefers caption b over caption a. A text-only score s(c) gives s(c_a) > s(c_b) for both images,
  so it scores on at most one side: its group accuracy is exactly 0 (ties count as failures). The
  benchmark is blind-proof by construction, not by hope.
* ``view="single"`` (secondary, SugarCrepe-style): one real image, its real caption and an edited
  negative (count with agreement fixed, colour, asymmetric spatial swap, attribute binding swap,
  object replacement). Replacement words are drawn from the words seen *in the same context* in
  train captions, with probability proportional to their train frequency, and every edit direction
  (u -> v vs v -> u in the same context) is subsampled to appear equally often as truth and as
  negative, so word and bigram frequency priors cancel. `blind_check` measures what is left.

Determinism: no global random state; every draw is seeded by a hash of (source, caption string,
type). Items carry ids and the whole list has a content hash (`items_hash`), recorded with
`COMPOSITIONAL_VERSION` in every results file. Rules: ``experiments/compositional/README.md``.

CLI: ``python -m mtgfe.evaluation.cli compositional-items --source ucm_test --view pairs --out items.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

from datasets import Dataset, DatasetInfo, Features, Image, Value

from mtgfe.data.annotations import load_rs_benchmark, normalize_caption

from . import rules as R

COMPOSITIONAL_VERSION = "1.0"
VIEWS = ("pairs", "single")
# source name -> (benchmark, split) of its captions, and (benchmark, split) of the train captions
# whose frequencies the single-edit replacements are drawn from.
SOURCES = {
    "ucm_test": (("ucm", "test"), ("ucm", "train")),
    # The development view: recipe choices (negatives, rates, alpha) are made here, never on a test source.
    "ucm_val": (("ucm", "val"), ("ucm", "train")),
    "ucm_train": (("ucm", "train"), ("ucm", "train")),
    "rsicd_test": (("rsicd", "test"), ("rsicd", "train")),
    # RSICD train has no shipped images: annotations only, for the blind model's training.
    "rsicd_train": (("rsicd", "train"), ("rsicd", "train")),
}
# The train source whose single edits train the blind model for each test source.
BLIND_TRAIN = {"ucm_test": "ucm_train", "rsicd_test": "rsicd_train"}
PAIR_TYPES = ("count", "colour", "spatial")
# Single-edit types that passed the blind check (experiments/compositional/blind_check.json: at least 10
# items and text-only accuracy within [0.4, 0.6]). `load_compositional(view="single")` keeps only
# these unless asked for all; the others stay available for inspection and training.
CERTIFIED_SINGLE = {
    "ucm_test": ("count", "colour"),
    "rsicd_test": ("colour",),
}
SINGLE_TYPES = R.TYPES
MAX_AGREEMENT_EXTRAS = 2
# Keep only single edits whose new 3-grams all occur in train captions (`_Frequencies.attested`).
ATTESTED_ONLY = True
_ARTICLES = frozenset({"a", "an", "the"})


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _natural_key(name: str):
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@lru_cache(maxsize=None)
def _load_images(bench: str, split: str, data_dir: str | None, require_images: bool):
    """((filename, path or None, captions), ...) of one split, via the public loader."""
    ds = load_rs_benchmark(bench, data_dir=data_dir, split=split, view="images", require_images=require_images)
    paths = [None] * len(ds)
    if require_images:
        paths = [row["path"] for row in ds.cast_column("image", Image(decode=False))["image"]]
    return tuple((f, p, tuple(c)) for f, p, c in zip(ds["filename"], paths, ds["captions"]))


def load_source_captions(source: str, data_dir=None, require_images: bool = True):
    """The images of a source as ``(filename, path, captions)`` tuples (path None without images)."""
    _check(source, SOURCES, "source")
    bench, split = SOURCES[source][0]
    return _load_images(bench, split, None if data_dir is None else str(data_dir), require_images)


def train_captions_of(source: str, data_dir=None) -> list[str]:
    """Train captions whose word frequencies drive the single-edit replacements of ``source``."""
    bench, split = SOURCES[source][1]
    records = _load_images(bench, split, None if data_dir is None else str(data_dir), False)
    return [c for _, _, caps in records for c in caps]


def _caption_index(images):
    """normalised caption -> (representative raw text, sorted image filenames, filename -> path)."""
    owners: dict[str, set[str]] = defaultdict(set)
    raw: dict[str, tuple] = {}
    paths = {}
    for filename, path, caps in images:
        paths[filename] = path
        for text in caps:
            key = normalize_caption(text)
            owners[key].add(filename)
            cand = (_natural_key(filename), text)
            if key not in raw or cand < raw[key]:
                raw[key] = cand
    return {k: (raw[k][1], sorted(v, key=_natural_key)) for k, v in owners.items()}, paths


def _hash(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Pairs view
# --------------------------------------------------------------------------------------------


def classify_pair(tokens_a: Sequence[str], tokens_b: Sequence[str], near: bool = True):
    """``(type, word_a, word_b, kind)`` when two token sequences form a pair item, else None.

    ``kind="exact"``: the sequences differ at one position only and that difference changes
    meaning (`compositional_rules.token_type`). ``kind="near"``: besides that one position they
    differ at up to `MAX_AGREEMENT_EXTRAS` positions that are grammatical agreement or articles only.
    Sequences of different length never pair.
    """
    if len(tokens_a) != len(tokens_b):
        return None
    diff = [i for i, (a, b) in enumerate(zip(tokens_a, tokens_b)) if a != b]
    if not diff or len(diff) > 1 + (MAX_AGREEMENT_EXTRAS if near else 0):
        return None
    typed = [(i, R.token_type(tokens_a[i], tokens_b[i])) for i in diff]
    edits = [(i, t) for i, t in typed if t is not None]
    if len(edits) != 1:
        return None
    pos, kind_type = edits[0]
    for i in diff:
        if i == pos:
            continue
        a, b = tokens_a[i], tokens_b[i]
        if not (R.is_agreement_pair(a, b) or (a in _ARTICLES and b in _ARTICLES)):
            return None
    return kind_type, tokens_a[pos], tokens_b[pos], "exact" if len(diff) == 1 else "near"


def caption_pairs(keys: Iterable[str], near: bool = True):
    """Yield ``(key_a, key_b, classify_pair(...))`` for every unordered pair of distinct normalised
    captions that forms a pair item (same length, one meaning-changing word; see `classify_pair`).

    Shared by the benchmark's pairs view and the training-side pair negatives
    (`mtgfe.training.perturbation.PartnerIndex`), so both use one definition of "a pair".
    """
    keys = sorted(keys)
    tokens = {k: R.tokenize(k) for k in keys}
    by_len: dict[int, list[str]] = defaultdict(list)
    for k in keys:
        by_len[len(tokens[k])].append(k)
    for bucket in by_len.values():
        for i, ka in enumerate(bucket):
            for kb in bucket[i + 1:]:
                found = classify_pair(tokens[ka], tokens[kb], near)
                if found is not None:
                    yield ka, kb, found


def generate_pairs(source: str, data_dir=None, near: bool = True, require_images: bool = True) -> list[dict]:
    """Pair items of a source, one per unordered pair of distinct (normalised) caption strings.

    Image a is the first image (natural filename order) that has caption a and not caption b, and
    image b likewise; a caption pair whose captions share all their images is dropped. ``n_image_pairs``
    records how many (image a, image b) combinations the caption pair stands for.
    """
    index, paths = _caption_index(load_source_captions(source, data_dir, require_images))
    items = []
    for ka, kb, (typ, wa, wb, kind) in caption_pairs(index, near):
        owners_a, owners_b = set(index[ka][1]), set(index[kb][1])
        only_a = sorted(owners_a - owners_b, key=_natural_key)
        only_b = sorted(owners_b - owners_a, key=_natural_key)
        if not only_a or not only_b:
            continue
        items.append({
            "item_id": _hash(source, "pairs", ka, kb)[:16],
            "source": source, "view": "pairs", "type": typ, "kind": kind,
            "filename": only_a[0], "caption": index[ka][0],
            "filename_b": only_b[0], "negative": index[kb][0],
            "word_true": wa, "word_neg": wb,
            "n_image_pairs": len(only_a) * len(only_b),
            "image": paths[only_a[0]], "image_b": paths[only_b[0]],
        })
    items.sort(key=lambda it: (PAIR_TYPES.index(it["type"]), it["item_id"]))
    return items


def raw_one_word_counts(source: str, data_dir=None, vocab: dict[str, Iterable[str]] | None = None) -> dict:
    """Sanity numbers: exact one-token differences between captions of different images,
    counted over caption *instances* (every image pair, repeats included), before any meaning filter.

    ``vocab`` maps a type to its word set (default: numbers plus vague quantifiers for count, all
    colours plus "dark" for colour), so both words in the type's set is all that is asked.
    """
    vocab = vocab or {
        "count": set(R.NUMBER_WORDS) | set(R.VAGUE_QUANTIFIERS),
        "colour": set(R.COLOURS) | {"dark"},
    }
    images = load_source_captions(source, data_dir, require_images=False)
    caps = [(f, R.tokenize(normalize_caption(c))) for f, _, cs in images for c in cs]
    slots: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for f, t in caps:
        for k in range(len(t)):
            slots[(tuple(t[:k]), tuple(t[k + 1:]))].append((f, t[k]))
    counts = {typ: 0 for typ in vocab}
    for members in slots.values():
        for i, (fa, wa) in enumerate(members):
            for fb, wb in members[i + 1:]:
                if fa == fb or wa == wb:
                    continue
                for typ, words in vocab.items():
                    if wa in words and wb in words:
                        counts[typ] += 1
    return counts


# --------------------------------------------------------------------------------------------
# Single-edit view
# --------------------------------------------------------------------------------------------


class _Frequencies:
    """Frequencies of words at editable sites of train captions, per type and context."""

    def __init__(self, texts: Iterable[str]):
        self.table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.trigrams: dict[tuple[str, ...], int] = defaultdict(int)
        for text in texts:
            toks = R.tokenize(text)
            padded = ["<s>", *toks, "</s>"]
            for i in range(len(padded) - 2):
                self.trigrams[tuple(padded[i:i + 3])] += 1
            for p, value, noun_pos in R.count_sites(toks):
                self.table[("count", R.count_context(toks, noun_pos))][str(value)] += 1
            for p in R.colour_sites(toks):
                self.table[("colour", toks[p + 1])][R.colour_class(toks[p])] += 1
            for p in R.object_sites(toks):
                self.table[("object", R.object_context(toks, p))][toks[p]] += 1

    def attested(self, text: str, original: str) -> bool:
        """Every 3-gram of ``text`` that is new with respect to ``original`` occurs in train captions.

        A negative built only from attested 3-grams is locally as fluent as a real caption, so a
        text-only model cannot tell it by novelty ("houses docked at the harbor").
        """
        before = ["<s>", *R.tokenize(original), "</s>"]
        after = ["<s>", *R.tokenize(text), "</s>"]
        old = {tuple(before[i:i + 3]) for i in range(len(before) - 2)}
        return all(self.trigrams.get(g, 0) > 0 for g in (tuple(after[i:i + 3]) for i in range(len(after) - 2))
                   if g not in old)

    def draw(self, typ: str, context: str, exclude: Callable[[str], bool], rng: random.Random) -> str | None:
        options = sorted((w, n) for w, n in self.table.get((typ, context), {}).items() if not exclude(w))
        if not options:
            return None
        return rng.choices([w for w, _ in options], weights=[n for _, n in options])[0]


_COUNT_WORD = {v: w for w, v in R.NUMBER_WORDS.items() if w not in ("a", "an")}


def _single_candidates(key: str, text: str, freq: _Frequencies, source: str):
    """Every edit of one caption: ``(type, negative, word_true, word_neg, balance_key)``."""
    spans = R.token_spans(text)
    toks = [t for t, _, _ in spans]
    out = []

    def rng_for(typ):
        return random.Random(int(_hash(COMPOSITIONAL_VERSION, source, key, typ)[:16], 16))

    rng = rng_for("count")
    sites = R.count_sites(toks)
    if sites:
        site = sites[rng.randrange(len(sites))]
        p, value, noun_pos = site
        ctx = R.count_context(toks, noun_pos)
        new = freq.draw("count", ctx, lambda v: v == str(value), rng)
        if new is not None:
            new_word = _COUNT_WORD[int(new)]
            repl = R.count_edit(toks, site, int(new), new_word)
            if repl:
                neg = R.apply_replacements(text, spans, repl)
                out.append(("count", neg, toks[p], repl[p], ("count", ctx, str(value), new)))

    rng = rng_for("colour")
    sites = R.colour_sites(toks)
    if sites:
        p = sites[rng.randrange(len(sites))]
        ctx = toks[p + 1]
        new = freq.draw("colour", ctx, lambda c: c == R.colour_class(toks[p]), rng)
        if new is not None:
            neg = R.apply_replacements(text, spans, {p: new})
            out.append(("colour", neg, toks[p], new, ("colour", ctx, R.colour_class(toks[p]), new)))

    rng = rng_for("spatial")
    sites = R.spatial_sites(toks)
    if sites:
        p, width, new = sites[rng.randrange(len(sites))]
        repl = {p: new, **{q: None for q in range(p + 1, p + width)}}
        neg = R.apply_replacements(text, spans, repl)
        old = " ".join(toks[p:p + width])
        out.append(("spatial", neg, old, new, ("spatial", "", old, new)))

    site = R.binding_site(toks)
    if site:
        p, q = site
        neg = R.apply_replacements(text, spans, {p: toks[q], q: toks[p]})
        out.append(("binding", neg, f"{toks[p]} {toks[p + 1]}", f"{toks[q]} {toks[p + 1]}", None))

    rng = rng_for("object")
    sites = R.object_sites(toks)
    if sites:
        p = sites[rng.randrange(len(sites))]
        ctx = R.object_context(toks, p)
        plural = toks[p] in R._PLURAL_TO_SINGULAR
        present = {R.object_class(t) for t in toks}  # "buildings ... near a building": no real change
        new = freq.draw("object", ctx, lambda w: R.object_class(w) in present
                        or (w in R._PLURAL_TO_SINGULAR) != plural, rng)
        if new is not None:
            neg = R.apply_replacements(text, spans, {p: new})
            out.append(("object", neg, toks[p], new, ("object", ctx, toks[p], new)))
    return out


def balance_directions(items: list[dict]) -> list[dict]:
    """Keep, per (type, context, unordered word pair), as many u->v items as v->u items.

    The kept ones are the first by item id (deterministic). Items without a balance key (binding:
    the negative has the same words) are kept as they are.
    """
    groups: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    kept = []
    for it in items:
        bk = it.pop("_balance")
        if bk is None:
            kept.append(it)
            continue
        typ, ctx, u, v = bk
        groups[(typ, ctx, *sorted((u, v)))][(u, v)].append(it)
    for key, dirs in groups.items():
        a, b = key[2], key[3]
        forward, backward = dirs.get((a, b), []), dirs.get((b, a), [])
        n = min(len(forward), len(backward))
        for side in (forward, backward):
            kept.extend(sorted(side, key=lambda it: it["item_id"])[:n])
    return kept


def generate_single(source: str, data_dir=None, require_images: bool = True, balance: bool = True) -> list[dict]:
    """Single-edit items of a source: one per (distinct normalised caption, type) that has an edit.

    The image is the first image (natural order) holding the caption.
    """
    index, paths = _caption_index(load_source_captions(source, data_dir, require_images))
    freq = _Frequencies(train_captions_of(source, data_dir))
    items = []
    for key in sorted(index):
        text, owners = index[key]
        for typ, neg, w_true, w_neg, bk in _single_candidates(key, text, freq, source):
            if normalize_caption(neg) in index:
                continue  # the negative is itself a real caption of this source: not surely false
            if ATTESTED_ONLY and not freq.attested(neg, text):
                continue  # a new 3-gram never seen in train: a blind model would spot the edit
            items.append({
                "item_id": _hash(source, "single", key, typ)[:16], "source": source, "view": "single",
                "type": typ, "kind": "single", "filename": owners[0], "caption": text, "negative": neg,
                "word_true": w_true, "word_neg": w_neg, "image": paths[owners[0]], "_balance": bk,
            })
    if balance:
        items = balance_directions(items)
    else:
        for it in items:
            it.pop("_balance")
    items.sort(key=lambda it: (SINGLE_TYPES.index(it["type"]), it["item_id"]))
    return items


# --------------------------------------------------------------------------------------------
# Public API: items, hash, dataset, scoring
# --------------------------------------------------------------------------------------------


def generate_items(source: str, view: str = "pairs", data_dir=None, require_images: bool = True) -> list[dict]:
    """The items of one source and view as JSON-able dicts (``image``/``image_b``: file paths)."""
    _check(view, VIEWS, "view")
    if view == "pairs":
        return generate_pairs(source, data_dir, require_images=require_images)
    return generate_single(source, data_dir, require_images=require_images)


_HASHED_FIELDS = ("item_id", "source", "view", "type", "kind", "filename", "filename_b", "caption", "negative",
                  "word_true", "word_neg")


def items_hash(items: Sequence[dict]) -> str:
    """Stable content hash of items (paths excluded, so it is the same on every machine)."""
    canon = [{k: it.get(k) for k in _HASHED_FIELDS} for it in items]
    blob = json.dumps([COMPOSITIONAL_VERSION, canon], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _features(view: str, with_image: bool) -> Features:
    cols: dict = {"image": Image()} if with_image else {}
    cols.update({k: Value("string") for k in ("caption", "negative", "type", "source", "kind", "item_id",
                                              "filename", "word_true", "word_neg")})
    if view == "pairs":
        if with_image:
            cols["image_b"] = Image()
        cols.update(filename_b=Value("string"), n_image_pairs=Value("int64"))
    return Features(cols)


def load_compositional(source: str, view: str = "pairs", data_dir=None, require_images: bool = True,
                       certified_only: bool = True) -> Dataset:
    """The items of ``source`` (``ucm_test``, ``ucm_train``, ``rsicd_test``) and ``view`` as a `datasets.Dataset`.

    Columns: ``image`` (lazy, path-backed `Image`), ``caption`` (true for ``image``), ``negative``
    (false for ``image``; in the pairs view the true caption of ``image_b``), ``type``, ``source``,
    ``kind``, ``item_id``, ``filename``, ``word_true``, ``word_neg``; pairs add ``image_b``,
    ``filename_b`` and ``n_image_pairs``. ``info.description`` carries the version and `items_hash`
    (of the rows returned). With ``certified_only`` (default) the single view of a test source keeps
    only the types in `CERTIFIED_SINGLE` (those a text-only model cannot solve); train sources and
    the pairs view are never filtered.
    """
    items = generate_items(source, view, data_dir, require_images)
    if view == "single" and certified_only and source in CERTIFIED_SINGLE:
        items = [it for it in items if it["type"] in CERTIFIED_SINGLE[source]]
    features = _features(view, require_images)
    columns = {name: [it.get(name) for it in items] for name in features}
    desc = f"mtgfe compositional {COMPOSITIONAL_VERSION} {source} {view} hash={items_hash(items)}"
    return Dataset.from_dict(columns, features=features, info=DatasetInfo(description=desc, features=features))


def group_scores(s_aa: float, s_ab: float, s_ba: float, s_bb: float) -> dict[str, bool]:
    """Winoground scores of one pair item from ``s_xy`` = score(image x, caption y).

    ``group_accuracy`` (the item score; Winoground's *text score*): each image prefers its
    own caption. ``image_score``: each caption prefers its own image. ``both``: the two together
    (Winoground's *group score*). Ties fail. A text-only scorer has s_aa == s_ba and s_ab == s_bb,
    so ``group_accuracy`` needs s_a > s_b and s_b > s_a at once: it is never met.
    """
    text = s_aa > s_ab and s_bb > s_ba
    image = s_aa > s_ba and s_bb > s_ab
    return {"group_accuracy": text, "image_score": image, "both": text and image}


def write_jsonl(items: Sequence[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for it in items:
            handle.write(json.dumps(it, ensure_ascii=False) + "\n")
    return path


def count_table(sources: Sequence[str] = ("ucm_test", "rsicd_test", "ucm_train"), data_dir=None) -> dict:
    """Items per view/source/type (+ exact vs near pairs, distinct caption vs image pairs), and hashes."""
    table = {"version": COMPOSITIONAL_VERSION, "pairs": {}, "single": {}, "hashes": {}}
    for source in sources:
        for view in VIEWS:
            items = generate_items(source, view, data_dir, require_images=False)
            types = PAIR_TYPES if view == "pairs" else SINGLE_TYPES
            row = {t: sum(it["type"] == t for it in items) for t in types}
            if view == "pairs":
                row["by_kind"] = {k: {t: sum(it["type"] == t and it["kind"] == k for it in items) for t in types}
                                  for k in ("exact", "near")}
                row["image_pairs"] = {t: sum(it["n_image_pairs"] for it in items if it["type"] == t) for t in types}
            row["total"] = len(items)
            table[view][source] = row
            table["hashes"][f"{source}/{view}"] = items_hash(items)
    return table


def _check(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")


# --------------------------------------------------------------------------------------------
# Blind check: a text-only model that never sees an image
# --------------------------------------------------------------------------------------------

def json_safe(obj):
    """``obj`` with NaN floats as None (strict JSON)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    return obj
