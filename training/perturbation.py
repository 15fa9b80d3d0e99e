"""Perturbation negatives for training: edited *train* captions.

A perturbation negative is a caption of the batch with one meaning-changing edit (count, colour,
spatial relation, or a colour-binding swap), made with the benchmark's own edit rules
(`compositional_rules`), so it stays grammatical. Two levers use the same negatives:

* `model.itm_perturbation_negatives` (ALBEF side): each edit is an extra ITM negative pair
  (the row's own image, the edited caption), label 0.
* `model.itc_perturbation_negatives` (NegCLIP-style dual encoder): each edit is an extra ITC text
  column, a negative for the row's image only (image -> text direction; it has no image of its own).

Where the negatives come from (`model.perturbation_source`):

* ``edits`` (default): rule edits of the row's caption. Cheap and plentiful, but an edit is usually a
  *rarer* sentence than its source, so a text-only model can learn to spot edits (the blind
  check), and the ITM head does: trained on edits it scores "three planes" below "two planes" for every
  image (experiments/compositional/README.md).
* ``pairs``: *swap quads* of real training data. A row (image A, caption a) whose caption has a
  *partner* b, i.e. a training caption of another image B that differs from a by one meaning-changing
  word (`compositional.caption_pairs`, the benchmark's own pair rule; B does not own a, A does not own
  b), brings the partner row (B, b) into the batch as an ordinary positive, and gets two negatives:
  (A, b) and (B, a). Every caption of a quad is a positive once and a negative once, so a text-only
  score cancels exactly, quad by quad: the only way to rank the quad right is to read the images.
  Rows without a partner get nothing. The batch grows by the partner rows (about 7 of 32 on UCM).
* ``pairs+edits``: swap quads, and rule edits for the rows without a partner.
* ``twins``: swap quads of *rendered* twins (synthetic data only, `synthetic_twins`): a row of training scene
  A brings the two rows (A, a) and (A', a') of one of A's twin quads, where A' is a rendering of A with one
  attribute changed and a / a' the captions true for A / A'; the negatives are (A, a') and (A', a). The
  same balance as ``pairs``, but every scene can start a quad and the partner image differs from A in
  exactly the named attribute. The batch grows by two rows per quad.

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
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mtgfe.data.annotations import normalize_caption
from mtgfe.evaluation.compositional import rules as R
from mtgfe.evaluation.compositional.generation import caption_pairs

from .collate import sample_rng

PERTURB_TYPES = ("count", "colour", "spatial", "binding")
PERTURBATION_SOURCES = ("edits", "pairs", "pairs+edits", "twins")
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


class PartnerIndex:
    """Partners of each training caption (`compositional.caption_pairs`) and the dataset rows holding them.

    Args:
        image_ids, captions: the training split, one row per caption (`image_ids[r]` owns `captions[r]`).
    """

    def __init__(self, image_ids: Sequence[int], captions: Sequence[str], near: bool = True):
        if len(image_ids) != len(captions):
            raise ValueError(f"image_ids has {len(image_ids)} rows but captions has {len(captions)}")
        self.image_of_row = [int(i) for i in image_ids]
        self.owners: dict[str, set[int]] = defaultdict(set)
        self.rows_of: dict[str, list[int]] = defaultdict(list)
        for row, (image, text) in enumerate(zip(self.image_of_row, captions)):
            key = normalize_caption(text)
            self.owners[key].add(image)
            self.rows_of[key].append(row)
        self.partners: dict[str, list[str]] = defaultdict(list)
        for ka, kb, _ in caption_pairs(self.owners, near):
            self.partners[ka].append(kb)
            self.partners[kb].append(ka)

    def candidates(self, caption: str, image_id: int) -> list[int]:
        """Dataset rows (B, b) that can complete a swap quad with the row (image_id, caption): b is a
        partner of the caption, B does not own the caption and image_id does not own b (the data's own
        account of what is surely false)."""
        ka = normalize_caption(caption)
        if int(image_id) not in self.owners.get(ka, ()):
            raise ValueError(f"image {image_id} does not own the caption {caption!r} in the training split")
        out = []
        for kb in self.partners.get(ka, ()):
            if int(image_id) in self.owners[kb]:
                continue
            out += [r for r in self.rows_of[kb] if self.image_of_row[r] not in self.owners[ka]]
        return out

    def images_with_partners(self) -> int:
        """How many training images can start a quad (reported in the training log)."""
        return len({image for key in self.partners for image in self.owners[key]})


# Epoch positions of partner rows brought into a batch: past any real position, so their random draws
# (cache slots, views) never coincide with an ordinary row's.
PARTNER_INDEX_OFFSET = 1 << 40
TWIN_INDEX_OFFSET = 2 << 40  # twin rows (source ``twins``): past the partner rows' positions too


class CaptionPerturber:
    """Perturbation negatives for batches of training rows (module docstring).

    Args:
        train_captions: every caption of the training split (the only captions it will edit).
        rate: ``edits``: expected number of edits per row (`floor(rate)` each, one more with probability
            `rate - floor(rate)`); rows without any applicable edit get none. ``pairs``: the probability
            that a row with a partner starts a swap quad (capped at 1).
        seed: the run's seed.
        types: edit types tried (in a random order per negative).
        source: where negatives come from, one of `PERTURBATION_SOURCES`.
        dataset: the training split (rows with `image_id`, `caption`, `caption_id` and, for collators that
            decode images, `image`); needed by the ``pairs`` sources, which fetch partner rows from it.
        twins: `synthetic_twins.TwinQuads` of the training scenes; needed by (and only by) the ``twins`` source.
    """

    def __init__(self, train_captions: Iterable[str], rate: float, seed: int = 0,
                 types: Sequence[str] = PERTURB_TYPES, source: str = "edits", dataset=None, twins=None):
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        if source not in PERTURBATION_SOURCES:
            raise ValueError(f"unknown perturbation source {source!r}; known: {PERTURBATION_SOURCES}")
        unknown = set(types) - set(PERTURB_TYPES)
        if unknown:
            raise ValueError(f"unknown perturbation types {sorted(unknown)}; known: {PERTURB_TYPES}")
        self.train = frozenset(normalize_caption(c) for c in train_captions)
        self.rate = float(rate)
        self.seed = int(seed)
        self.types = tuple(types)
        self.source = source
        self.dataset = dataset
        self.partners = None
        self.twins = twins
        if (source == "twins") != (twins is not None):
            raise ValueError("rendered twins (twins=...) go with perturbation source 'twins', and only with it; "
                             f"got source {source!r} and twins={'given' if twins is not None else None}")
        if source in ("pairs", "pairs+edits"):
            if dataset is None:
                raise ValueError(f"perturbation source {source!r} needs the training dataset (partner rows come from it)")
            self.partners = PartnerIndex(dataset["image_id"], dataset["caption"])
            if set(self.partners.owners) != self.train:
                raise ValueError("the dataset's captions are not the training captions this perturber was built from")

    def negatives(self, caption: str, rng: np.random.Generator) -> list[str]:
        """Up to `rate` distinct rule edits of one training caption."""
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

    def expand(self, rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        """`(rows + partner rows, [(batch row, negative caption), ...])`.

        ``edits``: no new rows. ``pairs``: each row that starts a swap quad appends its partner row (B, b)
        and adds the negatives (A, b) and (B, a). ``twins``: each row that starts a quad appends (A, a) and
        (A', a') and adds the negatives (A, a') and (A', a). Pure function of (seed, epoch, index) per row."""
        originals, rows = list(rows), list(rows)  # partner rows go after the originals, never expanded themselves
        negatives: list[tuple[int, str]] = []
        for i, row in enumerate(originals):
            rng = sample_rng(self.seed, row["epoch"], row["index"], _PERTURB)
            if self.source == "twins":
                quads = self.twins.quads_of.get(int(row["image_id"]), ())
                if quads and rng.random() < min(self.rate, 1.0):
                    q = quads[int(rng.integers(len(quads)))]
                    first = len(rows)
                    for k, twin_row in enumerate(self.twins.quad(q)):
                        rows.append({**twin_row, "epoch": row["epoch"], "index": TWIN_INDEX_OFFSET + 2 * q + k})
                    negatives += [(first, rows[first + 1]["caption"]), (first + 1, rows[first]["caption"])]
                continue
            if self.source != "edits":
                cands = self.partners.candidates(row["caption"], row["image_id"])
                if cands and rng.random() < min(self.rate, 1.0):
                    r = cands[int(rng.integers(len(cands)))]
                    partner = dict(self.dataset[r])
                    partner.update(epoch=row["epoch"], index=PARTNER_INDEX_OFFSET + r)
                    rows.append(partner)
                    negatives += [(i, partner["caption"]), (len(rows) - 1, row["caption"])]
                    continue
                if self.source == "pairs":
                    continue
            negatives += [(i, edit) for edit in self.negatives(row["caption"], rng)]
        return rows, negatives

    @staticmethod
    def encode(negatives: Sequence[tuple[int, str]], processor, max_length: int) -> dict:
        """`perturbed_input_ids`, `perturbed_attention_mask` `(P, T)` and `perturbed_rows` `(P,)` (the
        batch row whose image each negative belongs to); P may be 0."""
        if negatives:
            enc = processor(text=[text for _, text in negatives], max_length=max_length, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
        else:
            ids = torch.zeros((0, max_length), dtype=torch.long)
            mask = torch.zeros((0, max_length), dtype=torch.long)
        return {"perturbed_input_ids": ids, "perturbed_attention_mask": mask,
                "perturbed_rows": torch.tensor([owner for owner, _ in negatives], dtype=torch.long)}


__all__ = ["CaptionPerturber", "PartnerIndex", "PERTURB_TYPES", "PERTURBATION_SOURCES", "TWIN_INDEX_OFFSET", "edit_caption"]
