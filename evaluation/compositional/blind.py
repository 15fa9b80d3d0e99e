"""The blind check of the compositional benchmark (SugarCrepe's lesson): a text-only model that never sees
the image, trained on edits of *train* captions, must score near chance on each kept type of test edits.

Why its own module: the benchmark generator (`compositional`) must not depend on the model that audits it,
and a type this text-only model solves is dropped from the certified set (`CERTIFIED_SINGLE`).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from typing import Sequence

from mtgfe.data.annotations import normalize_caption

from . import rules as R
from .generation import BLIND_TRAIN, CERTIFIED_SINGLE, COMPOSITIONAL_VERSION, SINGLE_TYPES, generate_items, group_scores, items_hash, load_source_captions, train_captions_of


_DIM = 1 << 18


def text_features(text: str) -> dict[int, float]:
    """Hashed 1-3-gram counts of a caption (with sentence boundary marks)."""
    toks = ["<s>", *R.tokenize(normalize_caption(text)), "</s>"]
    feats: dict[int, float] = defaultdict(float)
    for n in (1, 2, 3):
        for i in range(len(toks) - n + 1):
            gram = " ".join(toks[i:i + n])
            feats[int(hashlib.md5(gram.encode()).hexdigest()[:8], 16) % _DIM] += 1.0
    return feats


class BlindModel:
    """Pairwise logistic regression on hashed n-grams: s(caption) = w . phi(caption).

    Trained to rank the true caption over its negative from text alone (x = phi(c) - phi(n), both
    orders, L2), with numpy full-batch gradient descent; deterministic.
    """

    def __init__(self, l2: float = 1e-3, steps: int = 300, lr: float = 0.5):
        self.l2, self.steps, self.lr = l2, steps, lr
        self.w = None

    def _diff(self, pairs):
        import numpy as np

        rows, cols, vals = [], [], []
        for r, (c, n) in enumerate(pairs):
            d = defaultdict(float)
            for k, v in text_features(c).items():
                d[k] += v
            for k, v in text_features(n).items():
                d[k] -= v
            for k, v in d.items():
                if v:
                    rows.append(r), cols.append(k), vals.append(v)
        return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(vals, dtype=np.float64)

    def fit(self, pairs: Sequence[tuple[str, str]]) -> "BlindModel":
        import numpy as np

        rows, cols, vals = self._diff(pairs)
        n = len(pairs)
        # Both orders: (c - n, 1) and (n - c, 0) == logistic on margins with labels +-1.
        w = np.zeros(_DIM)
        m = np.zeros(_DIM)
        v2 = np.zeros(_DIM)
        for t in range(1, self.steps + 1):
            margin = np.bincount(rows, weights=vals * w[cols], minlength=n)
            g_row = -1.0 / (1.0 + np.exp(np.clip(margin, -50, 50)))  # d/dm log(1+e^-m)
            grad = np.bincount(cols, weights=vals * g_row[rows], minlength=_DIM) / n + self.l2 * w
            m = 0.9 * m + 0.1 * grad
            v2 = 0.999 * v2 + 0.001 * grad * grad
            w -= self.lr * 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v2 / (1 - 0.999 ** t)) + 1e-8)
        self.w = w
        return self

    def score(self, text: str) -> float:
        return float(sum(v * self.w[k] for k, v in text_features(text).items()))


def _accuracy(model_score, items) -> float:
    if not items:
        return float("nan")
    return sum(model_score(it["caption"]) > model_score(it["negative"]) for it in items) / len(items)


def _binomial_ci(k: int, n: int) -> list[float] | None:
    """95% Wilson interval of k successes out of n."""
    if not n:
        return None
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def blind_training_items(test_source: str, data_dir=None) -> tuple[list[dict], int]:
    """Single edits of the train source of ``test_source`` with every test string removed.

    An item is removed when its caption or negative (normalised) is a caption of *any* test source
    or the negative of a test single-edit item, so no test caption feeds the blind model.
    Returns ``(items, n_removed)``.
    """
    train = generate_items(BLIND_TRAIN[test_source], "single", data_dir, require_images=False)
    banned = set()
    for src in BLIND_TRAIN:
        for _, _, caps in load_source_captions(src, data_dir, require_images=False):
            banned.update(normalize_caption(c) for c in caps)
        banned.update(normalize_caption(it["negative"]) for it in generate_items(src, "single", data_dir, False))
    clean = [it for it in train if normalize_caption(it["caption"]) not in banned
             and normalize_caption(it["negative"]) not in banned]
    return clean, len(train) - len(clean)


def blind_check(data_dir=None, test_sources: Sequence[str] = tuple(BLIND_TRAIN), threshold: float = 0.6,
                min_items: int = 10) -> dict:
    """Train a text-only `BlindModel` per test source on single edits of its train source, evaluate it.

    UCM test is checked by a model trained on UCM train edits, RSICD test by one trained on RSICD
    train edits (`BLIND_TRAIN`), test strings removed (`blind_training_items`). Reports per test
    source and type: the single-edit accuracy (chance 0.5) with a 95% interval, a word-frequency
    prior baseline (prefer the caption whose edited word is more frequent in train; ties count
    half), ``solvable`` (accuracy above ``threshold`` or below ``1 - threshold``: either way a
    text-only cue exists) and ``certified`` (at least ``min_items`` items and not solvable: the
    types `CERTIFIED_SINGLE` lists). For the pairs view: the Winoground scores of the same model (0 by
    construction) and, for contrast, the one-sided accuracy on image a alone.
    """
    report = {"version": COMPOSITIONAL_VERSION, "model": "pairwise logistic regression on hashed 1-3-grams "
              "(numpy, Adam, 300 full-batch steps, L2 1e-3)", "threshold": threshold, "sources": {}}
    for src in test_sources:
        clean, removed = blind_training_items(src, data_dir)
        model = BlindModel().fit([(it["caption"], it["negative"]) for it in clean])
        single = generate_items(src, "single", data_dir, require_images=False)
        pairs = generate_items(src, "pairs", data_dir, require_images=False)
        freq = R.count_words(train_captions_of(src, data_dir))
        per_type = {}
        for typ in SINGLE_TYPES:
            sel = [it for it in single if it["type"] == typ]
            wins = sum(model.score(it["caption"]) > model.score(it["negative"]) for it in sel)
            prior = []
            for it in sel:
                ft, fn = freq.get(it["word_true"].split()[0], 0), freq.get(it["word_neg"].split()[0], 0)
                prior.append(1.0 if ft > fn else 0.5 if ft == fn else 0.0)
            acc = wins / len(sel) if sel else float("nan")
            per_type[typ] = {
                "n": len(sel), "blind_accuracy": acc, "blind_ci95": _binomial_ci(wins, len(sel)),
                "frequency_prior_accuracy": sum(prior) / len(prior) if prior else float("nan"),
                "solvable": bool(sel) and (acc > threshold or acc < 1 - threshold),
                "certified": len(sel) >= min_items and 1 - threshold <= acc <= threshold,
            }
        pair_scores: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(int))
        for it in pairs:
            sa, sb = model.score(it["caption"]), model.score(it["negative"])
            for name, ok in group_scores(sa, sb, sa, sb).items():  # s(image, caption) ignores the image
                pair_scores[it["type"]][name] += ok
            pair_scores[it["type"]]["n"] += 1
            pair_scores[it["type"]]["image_a_only_correct"] += sa > sb
        report["sources"][src] = {
            "train_source": BLIND_TRAIN[src], "train_items": len(clean),
            "train_items_removed_for_test_overlap": removed,
            "train_accuracy": _accuracy(model.score, clean),
            "single": per_type, "single_hash": items_hash(single), "pairs_hash": items_hash(pairs),
            "pairs": {t: {k: (v / d["n"] if k != "n" else v) for k, v in d.items()} for t, d in pair_scores.items()},
        }
    return report
