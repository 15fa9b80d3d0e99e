"""Perturbation negatives for training (issue #14 deliverable 3): edited *train* captions.

A perturbation negative is a caption of the batch with one meaning-changing edit (count, colour,
spatial relation, or a colour-binding swap), made with the benchmark's own edit rules
(`compositional_rules`), so it stays grammatical. Two levers use the same negatives:

* `model.itm_perturbation_negatives` (ALBEF side): each edit is an extra ITM negative pair
  (the row's own image, the edited caption), label 0.
* `model.itc_perturbation_negatives` (NegCLIP-style dual encoder): each edit is an extra ITC text
  column, a negative for the row's image only (image -> text direction; it has no image of its own).

Where the negatives come from (`model.perturbation_source`):

* ``edits`` (default): rule edits of the row's caption. Cheap and plentiful, but an edit is usually a
  *rarer* sentence than its source, so a text-only model can learn to spot edits (issue #14's blind
  check): the ITM head can lower them without looking at the image.
* ``pairs``: *partner captions*: real training captions of another image that differ from one of the
  row image's own captions by exactly one meaning-changing word (`compositional.caption_pairs`, the
  benchmark's own pair rule), e.g. "four planes ..." for an image described as "two planes ...". Each
  partner is a positive of its own image and a negative of this one, so any text-only preference
  cancels over the epoch: the only way to lower its score here is to read the image. Rows whose image
  has no partner get no negative.
* ``pairs+edits``: partners first, rule edits to fill the rate (and for rows without a partner).

Leakage guard: a `CaptionPerturber` is built from the training split's captions and refuses to edit
any caption that is not one of them (`ValueError`), so a test or validation caption can never be the
source of a negative; edits that are themselves real training captions are dropped (not surely false).
Replacement words come from closed lists (number words, colour classes, opposites), not from any
test data. Randomness is a pure function of (seed, epoch, index), like the rest of the collator, so
the ITM and ITC runs with the same seed see exactly the same negatives.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import compositional_rules as R
from .collate import sample_rng
from .compositional import caption_pairs
from .data import normalize_caption

PERTURB_TYPES = ("count", "colour", "spatial", "binding")
PERTURBATION_SOURCES = ("edits", "pairs", "pairs+edits")
_PERTURB = 5  # purpose id of the seed stream (collate.py uses 0-4)
_NUMBER_FOR = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_COLOUR_CHOICES = tuple(sorted({R.colour_class(c) for c in R.COLOURS}))


def edit_caption(text: str, typ: str, rng: np.random.Generator) -> str | None:
    """One edit of type `typ` of `text` (site and replacement drawn from `rng`), or None if none applies."""
    spans = R.token_spans(text)
    toks = [t for t, _, _ in spans]
    if typ == "count":
        sites = R.count_sites(toks)
        if not sites:
            return None
        site = sites[int(rng.integers(len(sites)))]
        options = [v for v in (1, *_NUMBER_FOR) if v != site[1]]
        for value in rng.permutation(options):
            repl = R.count_edit(toks, site, int(value), _NUMBER_FOR.get(int(value)))
            if repl:
                return R.apply_replacements(text, spans, repl)
        return None
    if typ == "colour":
        sites = R.colour_sites(toks)
        if not sites:
            return None
        p = sites[int(rng.integers(len(sites)))]
        options = [c for c in _COLOUR_CHOICES if c != R.colour_class(toks[p])]
        return R.apply_replacements(text, spans, {p: options[int(rng.integers(len(options)))]})
    if typ == "spatial":
        sites = R.spatial_sites(toks)
        if not sites:
            return None
        p, width, new = sites[int(rng.integers(len(sites)))]
        return R.apply_replacements(text, spans, {p: new, **{q: None for q in range(p + 1, p + width)}})
    if typ == "binding":
        site = R.binding_site(toks)
        if not site:
            return None
        p, q = site
        return R.apply_replacements(text, spans, {p: toks[q], q: toks[p]})
    raise ValueError(f"unknown perturbation type {typ!r}; known: {PERTURB_TYPES}")


def partner_captions(image_ids: Sequence[int], captions: Sequence[str], near: bool = True) -> dict[int, list[str]]:
    """image id -> its partner captions (sorted): training captions of *other* images that differ from
    one of this image's captions by one meaning-changing word, and that are not captions of this image
    themselves (so never a false negative by the data's own account).

    `image_ids[i]` owns `captions[i]` (one row per caption, as in the training split). Partners are
    returned as written in the data (the first spelling seen), not in normalised form: a negative
    without the final " ." that every positive has would be a text-only cue."""
    if len(image_ids) != len(captions):
        raise ValueError(f"image_ids has {len(image_ids)} rows but captions has {len(captions)}")
    owners: dict[str, set[int]] = defaultdict(set)
    spelling: dict[str, str] = {}
    for image, text in zip(image_ids, captions):
        key = normalize_caption(text)
        owners[key].add(int(image))
        spelling.setdefault(key, text)
    partners: dict[int, set[str]] = defaultdict(set)
    for ka, kb, _ in caption_pairs(owners, near):
        for image in owners[ka] - owners[kb]:
            partners[image].add(spelling[kb])
        for image in owners[kb] - owners[ka]:
            partners[image].add(spelling[ka])
    return {image: sorted(texts) for image, texts in sorted(partners.items())}


class CaptionPerturber:
    """Edited-caption negatives for batches of training rows.

    Args:
        train_captions: every caption of the training split (the only captions it will edit).
        rate: expected number of negatives per row (`floor(rate)` each, one more with probability
            `rate - floor(rate)`); rows without any applicable edit get none.
        seed: the run's seed.
        types: edit types tried (in a random order per negative).
        source: where negatives come from, one of `PERTURBATION_SOURCES` (module docstring).
        partners: image id -> partner captions (`partner_captions` of the training split); needed by the
            ``pairs`` sources, which then need each row's ``image_id``.
    """

    def __init__(self, train_captions: Iterable[str], rate: float, seed: int = 0,
                 types: Sequence[str] = PERTURB_TYPES, source: str = "edits",
                 partners: Mapping[int, Sequence[str]] | None = None):
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        if source not in PERTURBATION_SOURCES:
            raise ValueError(f"unknown perturbation source {source!r}; known: {PERTURBATION_SOURCES}")
        if source != "edits" and partners is None:
            raise ValueError(f"perturbation source {source!r} needs partners (partner_captions of the train split)")
        unknown = set(types) - set(PERTURB_TYPES)
        if unknown:
            raise ValueError(f"unknown perturbation types {sorted(unknown)}; known: {PERTURB_TYPES}")
        self.train = frozenset(normalize_caption(c) for c in train_captions)
        self.rate = float(rate)
        self.seed = int(seed)
        self.types = tuple(types)
        self.source = source
        self.partners = {int(k): list(v) for k, v in (partners or {}).items()}
        unknown_partners = {normalize_caption(t) for texts in self.partners.values() for t in texts} - self.train
        if unknown_partners:
            raise ValueError(f"partner captions must be training captions; not in the train split: "
                             f"{sorted(unknown_partners)[:3]}")

    def negatives(self, caption: str, rng: np.random.Generator, image_id: int | None = None) -> list[str]:
        """Up to `rate` distinct negatives for one training row (its caption and, for the ``pairs``
        sources, its image's partner captions)."""
        if normalize_caption(caption) not in self.train:
            raise ValueError(f"refusing to perturb a caption that is not a training caption: {caption!r}")
        n = math.floor(self.rate) + int(rng.random() < self.rate - math.floor(self.rate))
        out: list[str] = []
        if self.source != "edits":
            if image_id is None:
                raise ValueError(f"perturbation source {self.source!r} needs the row's image_id")
            mine = self.partners.get(int(image_id), [])
            take = min(n, len(mine))
            out += [mine[int(i)] for i in rng.choice(len(mine), size=take, replace=False)] if take else []
            if self.source == "pairs":
                return out
        for _ in range(n - len(out)):
            for typ in rng.permutation(self.types):
                edit = edit_caption(caption, str(typ), rng)
                if edit is None or edit in out or normalize_caption(edit) in self.train:
                    continue  # no site, a duplicate, or itself a real caption (not surely false)
                out.append(edit)
                break
        return out

    def __call__(self, rows: Sequence[dict[str, Any]], processor, max_length: int) -> dict:
        """`perturbed_input_ids`, `perturbed_attention_mask` `(P, T)` and `perturbed_rows` `(P,)` (the
        batch row whose image each negative belongs to); P may be 0."""
        texts, owners = [], []
        for i, row in enumerate(rows):
            rng = sample_rng(self.seed, row["epoch"], row["index"], _PERTURB)
            for edit in self.negatives(row["caption"], rng, row.get("image_id")):
                texts.append(edit)
                owners.append(i)
        if texts:
            enc = processor(text=texts, max_length=max_length, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
        else:
            ids = torch.zeros((0, max_length), dtype=torch.long)
            mask = torch.zeros((0, max_length), dtype=torch.long)
        return {"perturbed_input_ids": ids, "perturbed_attention_mask": mask,
                "perturbed_rows": torch.tensor(owners, dtype=torch.long)}


__all__ = ["CaptionPerturber", "PERTURB_TYPES", "PERTURBATION_SOURCES", "edit_caption", "partner_captions"]
