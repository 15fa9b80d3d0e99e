"""Closed vocabularies and token rules of the compositional benchmark (`mtgfe.evaluation.compositional.generation`).

Everything here is pure and deterministic: a tokeniser that keeps character spans (so an edit
rewrites only the edited words of the real caption and leaves spacing, case and punctuation
byte-identical), the closed word lists per edit type, the equivalence classes that make a
difference *not* count as a change of meaning, English agreement helpers (plural nouns,
``is``/``are``), and the edit sites of the single-edit view (where a caption can be edited and the
token replacements that keep it grammatical).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

# Lowercase words, digit runs and single punctuation marks; punctuation is its own token.
_TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")

TYPES = ("count", "colour", "spatial", "binding", "object")

# --------------------------------------------------------------------------------------------
# Counts. "a"/"an"/"one" are the count 1; vague quantifiers ("some", "many", "several", "a lot",
# "numerous", "few") are NOT counts: a caption with "many" is true of an image with two or ten.
# Digits are not used: no caption of UCM or RSICD test writes a count as a digit.
# --------------------------------------------------------------------------------------------
NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
VAGUE_QUANTIFIERS = frozenset({"some", "many", "several", "few", "numerous", "lots", "much", "multiple"})
# "one" in these contexts is not a count of objects ("one side of", "one by one", "one another").
_NOT_COUNT_AFTER = frozenset({"of", "by", "another", "side", "end", "corner", "after", "is", "are", "and", ".", "sides", "lines", "rows", "parts", "pieces", "kinds", "types", "different"})

# --------------------------------------------------------------------------------------------
# Colours: single words only. grey/gray (and silver) are one colour; "dark"/"light" are shades,
# not colours, so "dark|black" is no colour change and "dark" is not in the list.
# --------------------------------------------------------------------------------------------
COLOURS = ("white", "black", "red", "green", "blue", "yellow", "grey", "gray", "brown",
           "orange", "purple", "pink", "beige", "golden")
_COLOUR_CLASS = {"gray": "grey", "silver": "grey", "golden": "yellow"}

# --------------------------------------------------------------------------------------------
# Spatial relations: only asymmetric ones, as opposite pairs (an edit swaps a word for its
# opposite). Symmetric relations ("near", "beside", "next to", "around") are never swapped.
# "in front of" <-> "behind" is the one multi-word swap.
# --------------------------------------------------------------------------------------------
SPATIAL_OPPOSITES = {
    "left": "right", "right": "left", "above": "below", "below": "above", "over": "under",
    "under": "over", "top": "bottom", "bottom": "top", "upper": "lower", "lower": "upper",
    "inside": "outside", "outside": "inside", "north": "south", "south": "north",
    "east": "west", "west": "east", "behind": "in front of",
}
SYMMETRIC_RELATIONS = frozenset({"near", "beside", "besides", "next", "around", "alongside", "by", "between", "across"})
# For the pairs view a pair of relation words must be one of these opposites (or near|far).
SPATIAL_PAIR_WORDS = {**{k: v for k, v in SPATIAL_OPPOSITES.items() if " " not in v}, "near": "far", "far": "near"}

# Binding swaps the colours of two "COLOUR NOUN" phrases of one caption (colours are the only
# attribute class closed enough to swap safely).

# --------------------------------------------------------------------------------------------
# Object nouns of remote-sensing captions: singular -> plural. Object replacement swaps one for
# another of the same number; counts pluralise with this table.
# --------------------------------------------------------------------------------------------
RS_NOUNS = {
    "airplane": "airplanes", "plane": "planes", "aircraft": "aircrafts", "building": "buildings",
    "house": "houses", "car": "cars", "ship": "ships", "boat": "boats", "tree": "trees",
    "road": "roads", "runway": "runways", "bridge": "bridges", "tank": "tanks", "court": "courts",
    "field": "fields", "pond": "ponds", "lake": "lakes", "river": "rivers", "pool": "pools",
    "villa": "villas", "church": "churches", "factory": "factories", "parking": None,
    "playground": "playgrounds", "track": "tracks", "railway": "railways", "viaduct": "viaducts",
    "lane": "lanes", "island": "islands", "stadium": "stadiums", "truck": "trucks",
    "container": "containers", "vehicle": "vehicles", "highway": "highways", "square": "squares",
    "intersection": "intersections", "overpass": "overpasses", "tower": "towers",
    "mountain": "mountains", "bunker": "bunkers", "pier": "piers", "dock": "docks",
}
RS_NOUNS = {k: v for k, v in RS_NOUNS.items() if v}
_PLURAL_TO_SINGULAR = {v: k for k, v in RS_NOUNS.items()}
# Nouns that are not replaced as objects (too generic to make a visually checkable edit).
OBJECT_NOUNS = tuple(RS_NOUNS) + tuple(RS_NOUNS.values())

AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has"}


def tokenize(text: str) -> list[str]:
    """Lowercase word/digit tokens; each punctuation mark is a token of its own."""
    return _TOKEN.findall(text.lower())


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) of `tokenize`, with character offsets into ``text``."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text.lower())]


def apply_replacements(text: str, spans: Sequence[tuple[str, int, int]], repl: dict[int, str | None]) -> str:
    """``text`` with token ``i`` replaced by ``repl[i]`` (keeping a capital first letter), rest byte-identical."""
    out, last = [], 0
    for i in sorted(repl):
        _, start, end = spans[i]
        new = repl[i]
        if new is None:  # delete the token and the space before it ("in front of" -> "behind")
            start = max(last, spans[i - 1][2] if i else 0)
            new = ""
        elif text[start:start + 1].isupper():
            new = new[:1].upper() + new[1:]
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)


def colour_class(word: str) -> str:
    return _COLOUR_CLASS.get(word, word)


def token_type(a: str, b: str) -> str | None:
    """The edit type of a one-token difference ``a`` -> ``b`` that changes meaning, else None.

    count: two number words of different value (a|an|one are all 1, so a|one is no change);
    colour: two colours of different class (grey|gray is no change); spatial: an opposite pair
    (left|right, above|below, over|under, top|bottom, upper|lower, inside|outside, north|south,
    east|west, near|far). Vague quantifiers and symmetric relations never qualify.
    """
    if a in NUMBER_WORDS and b in NUMBER_WORDS:
        return "count" if NUMBER_WORDS[a] != NUMBER_WORDS[b] else None
    if a in COLOURS and b in COLOURS:
        return "colour" if colour_class(a) != colour_class(b) else None
    if SPATIAL_PAIR_WORDS.get(a) == b:
        return "spatial"
    return None


def singular_of(word: str) -> str | None:
    """Singular of a plural noun by the RS table or the regular -s/-es/-ies rules, else None."""
    if word in _PLURAL_TO_SINGULAR:
        return _PLURAL_TO_SINGULAR[word]
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz" or word.endswith(("ches", "shes")):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return None


def _plural_forms(word: str) -> set[str]:
    forms = {word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word in RS_NOUNS:
        forms.add(RS_NOUNS[word])
    return forms


def is_agreement_pair(a: str, b: str) -> bool:
    """True when ``a``/``b`` differ only by grammatical agreement: is|are, was|were, has|have,
    or a noun in singular and plural (plane|planes, factory|factories)."""
    if AGREEMENT.get(a) == b:
        return True
    return b in _plural_forms(a) or a in _plural_forms(b)


def article_for(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def count_words(texts: Iterable[str]) -> dict[str, int]:
    """Token frequencies of ``texts`` (the frequency table that replacement words are drawn from)."""
    counts: dict[str, int] = {}
    for text in texts:
        for tok in tokenize(text):
            counts[tok] = counts.get(tok, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# Edit sites of the single-edit view: where a caption can be edited, and how
# --------------------------------------------------------------------------------------------


def is_word(tok: str | None) -> bool:
    return tok is not None and tok.isalpha()


def count_sites(toks: Sequence[str]):
    """Editable count words: ``(pos, value, noun_pos)``; the noun is at pos+1 or pos+2 (one adjective)."""
    sites = []
    for p, w in enumerate(toks):
        if w not in NUMBER_WORDS:
            continue
        nxt = toks[p + 1] if p + 1 < len(toks) else None
        if not is_word(nxt) or nxt in _NOT_COUNT_AFTER or nxt in NUMBER_WORDS:
            continue
        value = NUMBER_WORDS[w]
        nouns = RS_NOUNS if value == 1 else _PLURAL_TO_SINGULAR
        noun_pos = next((q for q in (p + 1, p + 2) if q < len(toks) and toks[q] in nouns), None)
        if value == 1 and noun_pos is None:
            continue  # "a" is a count only in front of a countable RS noun
        if value >= 2 and noun_pos is None and w == "one":
            continue
        sites.append((p, value, noun_pos))
    return sites


def count_context(toks, noun_pos):
    if noun_pos is None:
        return ""
    noun = toks[noun_pos]
    # The noun phrase after the count: "baseball field" and "football field" have different priors.
    lemma = _PLURAL_TO_SINGULAR.get(toks[noun_pos], toks[noun_pos])
    return f"{toks[noun_pos - 1]} {lemma}" if toks[noun_pos - 1] not in NUMBER_WORDS else lemma


def count_edit(toks, site, new_value: int, new_word: str | None = None):
    """Token replacements turning the count at ``site`` into ``new_value``, agreement fixed; None if
    that cannot be made grammatical."""
    p, value, noun_pos = site
    repl: dict[int, str] = {}
    if (value == 1) == (new_value == 1):
        if new_value == 1:
            return None
        repl[p] = new_word
        return repl
    if noun_pos is None:
        return None
    noun = toks[noun_pos]
    if new_value == 1:
        repl[noun_pos] = _PLURAL_TO_SINGULAR[noun]
        repl[p] = article_for(toks[p + 1] if noun_pos == p + 2 else repl[noun_pos])
    else:
        repl[noun_pos] = RS_NOUNS[noun]
        repl[p] = new_word
    prev = toks[p - 1] if p else ""
    if prev in DETERMINERS or (new_value == 1 and prev in ("between", "among", "amongst")):
        return None  # "the two roads", "between two roads" have no grammatical one-road form by a swap
    # Agreement. "there is a plane": the verb before the count. A sentence-initial count is the
    # subject: its verb is the first is/are/was/were/has/have after the noun, and without one (a
    # lexical verb: "two bridges link ...") the edit is skipped. Elsewhere the noun is an object.
    if prev in AGREEMENT:
        repl[p - 1] = AGREEMENT[prev]
    elif prev == "and":
        pass  # "buildings and a field are ...": a compound subject is plural either way
    elif p == 0 or prev == ",":
        verb = next((q for q in range(noun_pos + 1, len(toks)) if toks[q] in AGREEMENT), None)
        if verb is None or any(toks[q] in ("and", ",", "which", "that") for q in range(noun_pos + 1, verb)) \
                and verb != noun_pos + 1:
            return None
        repl[verb] = AGREEMENT[toks[verb]]
    return repl


DETERMINERS = frozenset({"the", "these", "those", "its", "their", "his", "her", "our"})


def colour_sites(toks):
    return [p for p, w in enumerate(toks) if w in COLOURS and p + 1 < len(toks) and is_word(toks[p + 1])
            and toks[p + 1] not in COLOURS and toks[p + 1] != "and"]


OBJECT_CLASSES = [
    {"airplane", "plane", "aircraft"}, {"house", "villa", "building"}, {"car", "vehicle", "truck"},
    {"road", "highway", "lane", "intersection"}, {"ship", "boat"}, {"pond", "lake", "pool"},
    {"pier", "dock"}, {"railway", "track"}, {"bridge", "viaduct", "overpass"}, {"field", "playground"},
    {"square"}, {"stadium"}, {"tower"}, {"mountain"}, {"bunker"}, {"island"}, {"river"}, {"tree"},
    {"church"}, {"factory"}, {"runway"}, {"tank", "container"}, {"court"},
]
OBJECT_CLASS = {w: i for i, c in enumerate(OBJECT_CLASSES) for w in c}
COMPOUND_MODIFIERS = frozenset({
    "storage", "tennis", "basketball", "baseball", "football", "soccer", "parking", "golf", "oil",
    "swimming", "railway", "train", "race", "running", "sports", "car", "water", "bus", "traffic",
    "apron", "cross", "mobile", "residential", "industrial", "ball",
})


def object_class(word):
    return OBJECT_CLASS.get(_PLURAL_TO_SINGULAR.get(word, word))


def object_sites(toks):
    sites = []
    for p, w in enumerate(toks):
        if w not in OBJECT_NOUNS or object_class(w) is None:
            continue
        prev = toks[p - 1] if p else ""
        nxt = toks[p + 1] if p + 1 < len(toks) else ""
        if prev in COMPOUND_MODIFIERS or (is_word(nxt) and nxt in OBJECT_NOUNS) or nxt in ("lot", "side", "court"):
            continue
        sites.append(p)
    return sites


def object_context(toks, p):
    """The word after an object noun (its verb or preposition: "boats *docked*", "cars *parked*")."""
    return toks[p + 1] if p + 1 < len(toks) else ""


def spatial_sites(toks):
    sites = []
    for p, w in enumerate(toks):
        prev = toks[p - 1] if p else ""
        nxt = toks[p + 1] if p + 1 < len(toks) else ""
        if w == "in" and toks[p + 1:p + 3] == ["front", "of"]:
            sites.append((p, 3, "behind"))
        elif w in SPATIAL_OPPOSITES and w != "front":
            if w in ("over", "under") and nxt not in ("the", "a", "an"):
                continue
            if w in ("top", "bottom") and prev == "on":
                continue  # "on top of" has no "on bottom of"
            if w in ("left", "right") and nxt not in ("side", "corner", "of", "", ".", ",", "part", "bank", "edge") \
                    and prev not in ("the", "upper", "lower", "bottom", "top"):
                continue  # "right" as "correct", "left" as a verb
            sites.append((p, 1, SPATIAL_OPPOSITES[w]))
    return sites


def binding_site(toks):
    sites = colour_sites(toks)
    for i, p in enumerate(sites):
        for q in sites[i + 1:]:
            if q > p + 1 and colour_class(toks[p]) != colour_class(toks[q]) and toks[p + 1] != toks[q + 1]:
                return p, q
    return None
