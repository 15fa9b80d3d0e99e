"""Perturbation negatives for training (issue #14 deliverable 3): edited *train* captions.

A perturbation negative is a caption of the batch with one meaning-changing edit (count, colour,
spatial relation, or a colour-binding swap), made with the benchmark's own edit rules
(`compositional_rules`), so it stays grammatical. Two levers use the same negatives:

* `model.itm_perturbation_negatives` (ALBEF side): each edit is an extra ITM negative pair
  (the row's own image, the edited caption), label 0.
* `model.itc_perturbation_negatives` (NegCLIP-style dual encoder): each edit is an extra ITC text
  column, a negative for the row's image only (image -> text direction; it has no image of its own).

Leakage guard: a `CaptionPerturber` is built from the training split's captions and refuses to edit
any caption that is not one of them (`ValueError`), so a test or validation caption can never be the
source of a negative; edits that are themselves real training captions are dropped (not surely false).
Replacement words come from closed lists (number words, colour classes, opposites), not from any
test data. Randomness is a pure function of (seed, epoch, index), like the rest of the collator, so
the ITM and ITC runs with the same seed see exactly the same negatives.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from . import compositional_rules as R
from .collate import sample_rng
from .data import normalize_caption

PERTURB_TYPES = ("count", "colour", "spatial", "binding")
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


class CaptionPerturber:
    """Edited-caption negatives for batches of training rows.

    Args:
        train_captions: every caption of the training split (the only captions it will edit).
        rate: expected number of negatives per row (`floor(rate)` each, one more with probability
            `rate - floor(rate)`); rows without any applicable edit get none.
        seed: the run's seed.
        types: edit types tried (in a random order per negative).
    """

    def __init__(self, train_captions: Iterable[str], rate: float, seed: int = 0,
                 types: Sequence[str] = PERTURB_TYPES):
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        unknown = set(types) - set(PERTURB_TYPES)
        if unknown:
            raise ValueError(f"unknown perturbation types {sorted(unknown)}; known: {PERTURB_TYPES}")
        self.train = frozenset(normalize_caption(c) for c in train_captions)
        self.rate = float(rate)
        self.seed = int(seed)
        self.types = tuple(types)

    def negatives(self, caption: str, rng: np.random.Generator) -> list[str]:
        """Up to `rate` distinct edits of one training caption."""
        if normalize_caption(caption) not in self.train:
            raise ValueError(f"refusing to perturb a caption that is not a training caption: {caption!r}")
        n = math.floor(self.rate) + int(rng.random() < self.rate - math.floor(self.rate))
        out: list[str] = []
        for _ in range(n):
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
            for edit in self.negatives(row["caption"], rng):
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


__all__ = ["CaptionPerturber", "PERTURB_TYPES", "edit_caption"]
