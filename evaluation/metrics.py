"""Recall@K and mR for image–text retrieval, with an explicit rule for tied scores.

Protocol (docs/METHOD.md §6, identical to GaLR ``acc_i2t2``/``acc_t2i2``, HarMA/PIR and ALBEF ``itm_eval``,
RemoteCLIP ``retrieval.py``):

* **i2t** — each image ranks all captions; it is a hit at K when *any* of its ground-truth captions is
  in the top K (the minimum rank over its captions).
* **t2i** — each caption ranks all images; exactly one image (its own) is ground truth. Identical
  caption strings attached to other images are *not* hits.
* **mR** — arithmetic mean of the six recalls (of all ``2 * len(ks)`` recalls for other ``ks``).
  All recalls are in percent.

Why a tie rule at all (docs/METHOD.md §6b): UCM-Captions and RSICD repeat many captions word for word, so
any model gives identical scores to identical text and R@1 depends on how tied scores are ordered.
Four rules are available:

``"expected"`` (default, the headline number)
    Exact expectation under a uniformly random order of tied candidates. For a query whose best
    positive scores ``s``, with ``a`` candidates strictly above ``s`` (necessarily negatives, since
    ``s`` is the largest positive score) and a tied group of ``g`` candidates at ``s`` holding ``t``
    positives, the first positive lands in the top K with probability 0 if ``K <= a`` and
    ``1 - C(g - t, K - a) / C(g, K - a)`` otherwise. Positives scoring below ``s`` never matter: the
    first positive in any ranking is in the tied group at ``s``.
``"pessimistic"`` / ``"optimistic"``
    Every tied negative ranks before / after the positives (rank ``a + g - t`` / ``a``). They bound
    ``"expected"``.
``"argsort"``
    What the field's code does: ``np.argsort(row)[::-1]`` with numpy's default (unstable,
    SIMD-dispatched) sort on the caller's dtype. Reproduces GaLR/HarMA/ALBEF bit for bit on the same
    numpy build, and is reported only for comparison with published numbers: its tie order is an
    implementation detail of numpy, not a property of the model.

The work is done row-chunk by row-chunk (``chunk_elements`` scores at a time), so a full RSICD matrix
(1,093 x 5,465) needs a few tens of MB and well under a second. Nothing here imports torch or
evaluate; ``load_rs_recall_metric`` imports ``evaluate`` lazily because that import alone costs
seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TIE_RULES: tuple[str, ...] = ("expected", "pessimistic", "optimistic", "argsort")
# The headline rule of every report (docs/METHOD.md section 6b) and the recall keys every table shows: here,
# beside the code that computes them, so evaluation, CV summaries and cards read one definition.
HEADLINE_RULE = "expected"
RECALL_KEYS: tuple[str, ...] = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR")
# Scores per chunk of the tie-aware ranking: 4M float32 = 16 MB, plus a few same-shaped bool masks. Not the
# same knob as `modeling_mtgfe.retrieval.DEFAULT_CHUNK_ELEMENTS` (torch matmul chunks, tuned for speed): this
# module stays numpy-only (no torch import) and that one is remote code, so neither can import the other.
DEFAULT_CHUNK_ELEMENTS = 1 << 22

__all__ = [
    "HEADLINE_RULE",
    "RECALL_KEYS",
    "TIE_RULES",
    "retrieval_metrics",
    "all_tie_rules",
    "load_rs_recall_metric",
    "rs_recall_metric_path",
]


# --------------------------------------------------------------------------------------- inputs
def _to_numpy_scores(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array / torch tensor / nested list to a 2-D real numpy array.

    The dtype is kept (float32 stays float32) because the ``"argsort"`` rule must sort exactly what
    the field's code sorts; only torch bfloat16 (no numpy equivalent) is widened to float32, and
    integer/bool scores to float64.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must hold real numbers, got complex dtype {arr.dtype}.")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(arr.shape)}.")
    if np.isnan(arr).any():
        rows, cols = np.nonzero(np.isnan(arr))
        raise ValueError(
            f"{name} contains {rows.size} NaN score(s), first at [{int(rows[0])}, {int(cols[0])}]; "
            "NaN has no rank. Fill filtered-out pairs with a finite low score or -inf instead."
        )
    return arr


def _to_index_array(x: Any, name: str) -> np.ndarray:
    """1-D int64 copy of an index sequence / tensor, rejecting floats that are not whole numbers."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one image index per caption), got shape {tuple(arr.shape)}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


def _validate_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one K.")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must be positive integers, got {k!r} in ks={ks!r}.")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must not repeat a K (it would weigh twice in mR), got ks={ks!r}.")
    return tuple(int(k) for k in ks)


@dataclass
class _Inputs:
    s_i2t: np.ndarray  # (N_img, N_txt)
    s_t2i: np.ndarray | None  # (N_txt, N_img) or None: use s_i2t.T
    txt2img: np.ndarray  # (N_txt,)
    ks: tuple[int, ...]

    @property
    def n_img(self) -> int:
        return self.s_i2t.shape[0]

    @property
    def n_txt(self) -> int:
        return self.s_i2t.shape[1]


def _prepare(scores_i2t, txt2img, img2txt, ks, scores_t2i) -> _Inputs:
    s = _to_numpy_scores(scores_i2t, "scores_i2t")
    t2i = _to_index_array(txt2img, "txt2img")
    n_img, n_txt = s.shape
    if t2i.shape[0] != n_txt:
        raise ValueError(
            f"scores_i2t has shape {tuple(s.shape)} but txt2img has {t2i.shape[0]} entries: "
            f"expected scores_i2t of shape (N_img, {t2i.shape[0]}) (one column per caption)."
        )
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"scores_i2t must have at least one image and one caption, got shape {tuple(s.shape)}.")
    bad = np.nonzero((t2i < 0) | (t2i >= n_img))[0]
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"txt2img[{j}] = {int(t2i[j])} is out of range for {n_img} images (scores_i2t rows); "
            f"{bad.size} entr{'y' if bad.size == 1 else 'ies'} out of range."
        )
    counts = np.bincount(t2i, minlength=n_img)
    orphans = np.nonzero(counts == 0)[0]
    if orphans.size:
        raise ValueError(
            f"txt2img gives no caption to image(s) {orphans[:10].tolist()}"
            f"{' ...' if orphans.size > 10 else ''} ({orphans.size} of {n_img}); an image without a "
            "ground-truth caption has no i2t rank. Drop those rows from scores_i2t."
        )
    if img2txt is not None:
        _check_img2txt(img2txt, t2i, n_img, n_txt)
    st = None
    if scores_t2i is not None:
        st = _to_numpy_scores(scores_t2i, "scores_t2i")
        if st.shape != (n_txt, n_img):
            raise ValueError(
                f"scores_t2i has shape {tuple(st.shape)}, expected (N_txt, N_img) = ({n_txt}, {n_img}) "
                "to match scores_i2t."
            )
    return _Inputs(s, st, t2i, _validate_ks(ks))


def _check_img2txt(img2txt, t2i: np.ndarray, n_img: int, n_txt: int) -> None:
    """``img2txt`` is accepted for ALBEF ``itm_eval`` compatibility but must agree with ``txt2img``.

    Every caption belongs to exactly one image in this protocol, so ``img2txt`` carries no extra
    information; a disagreement means the caller's bookkeeping is wrong, and silently picking one of
    the two would hide it.
    """
    if len(img2txt) != n_img:
        raise ValueError(f"img2txt has {len(img2txt)} entries but scores_i2t has {n_img} image rows.")
    seen = np.zeros(n_txt, dtype=bool)
    for i, caps in enumerate(img2txt):
        caps = _to_index_array(np.atleast_1d(np.asarray(caps)), f"img2txt[{i}]")
        for j in caps.tolist():
            if j < 0 or j >= n_txt:
                raise ValueError(f"img2txt[{i}] contains caption index {j}, out of range for {n_txt} captions.")
            if t2i[j] != i:
                raise ValueError(
                    f"img2txt[{i}] lists caption {j}, but txt2img[{j}] = {int(t2i[j])}: the two mappings disagree."
                )
            seen[j] = True
    if not seen.all():
        j = int(np.nonzero(~seen)[0][0])
        raise ValueError(f"caption {j} (txt2img[{j}] = {int(t2i[j])}) is missing from img2txt[{int(t2i[j])}].")


# ------------------------------------------------------------------------------------ per query
@dataclass
class _DirectionStats:
    """Per-query counts that every tie rule is a function of."""

    above: np.ndarray  # a: candidates strictly above the best positive score
    tied: np.ndarray  # g: candidates equal to the best positive score (positives included)
    tied_pos: np.ndarray  # t: positives equal to the best positive score (>= 1)
    argsort_rank: np.ndarray | None  # 0-based rank of the first positive under argsort[::-1]


def _direction_stats(
    scores: np.ndarray,
    query_label: np.ndarray,
    cand_label: np.ndarray,
    *,
    transpose: bool,
    want_argsort: bool,
    chunk_elements: int,
) -> _DirectionStats:
    """Counts for queries = rows of ``scores`` (or of ``scores.T`` when ``transpose``).

    Candidate ``c`` is positive for query ``q`` iff ``cand_label[c] == query_label[q]``.
    """
    n_q = scores.shape[1] if transpose else scores.shape[0]
    n_c = scores.shape[0] if transpose else scores.shape[1]
    rows = max(1, chunk_elements // max(n_c, 1))
    above = np.empty(n_q, dtype=np.int64)
    tied = np.empty(n_q, dtype=np.int64)
    tied_pos = np.empty(n_q, dtype=np.int64)
    ranks = np.empty(n_q, dtype=np.int64) if want_argsort else None
    cand_pos = np.arange(n_c, dtype=np.int64)
    for r0 in range(0, n_q, rows):
        r1 = min(n_q, r0 + rows)
        # A contiguous copy per chunk: comparisons are faster, and argsort sorts exactly the values
        # (and dtype) the field's per-row loop would.
        block = np.ascontiguousarray(scores[:, r0:r1].T if transpose else scores[r0:r1])
        pos = cand_label[None, :] == query_label[r0:r1, None]
        best = np.max(block, axis=1, where=pos, initial=-np.inf)[:, None]
        eq = block == best
        above[r0:r1] = np.count_nonzero(block > best, axis=1)
        tied[r0:r1] = np.count_nonzero(eq, axis=1)
        tied_pos[r0:r1] = np.count_nonzero(eq & pos, axis=1)
        if ranks is not None:
            order = np.argsort(block, axis=1)  # same call, per row, as np.argsort(score) in GaLR/HarMA
            inv = np.empty_like(order)
            np.put_along_axis(inv, order, np.broadcast_to(cand_pos, order.shape), axis=1)
            desc_rank = (n_c - 1) - inv  # position in order[::-1]
            ranks[r0:r1] = np.min(desc_rank, axis=1, where=pos, initial=n_c)
    return _DirectionStats(above, tied, tied_pos, ranks)


def _no_positive_in_first(m: np.ndarray, g: np.ndarray, t: np.ndarray) -> np.ndarray:
    """C(g - t, m) / C(g, m): probability that the first ``m`` slots of a uniformly shuffled group of
    ``g`` items holding ``t`` positives contain no positive. Computed as the running product
    prod_{i<m} (g - t - i) / (g - i), which stays in [0, 1] (no big binomials); it reaches 0 once
    ``i = g - t``, which also covers ``m > g``."""
    m = np.clip(m, 0, None)
    neg = g - t
    out = np.ones(m.shape, dtype=np.float64)
    if m.size == 0:
        return out
    steps = int(min(m.max(), neg.max() + 1))
    for i in range(steps):
        num = neg - i
        factor = np.where(num > 0, num / np.maximum(g - i, 1), 0.0)
        out = np.where(i < m, out * factor, out)
    return out


def _hit_rate(stats: _DirectionStats, k: int, rule: str) -> float:
    """Mean hit probability at ``k`` over queries, in percent."""
    a, g, t = stats.above, stats.tied, stats.tied_pos
    if rule == "optimistic":
        hits = (a < k).astype(np.float64)
    elif rule == "pessimistic":
        hits = (a + g - t < k).astype(np.float64)
    elif rule == "expected":
        m = k - a
        hits = np.where(m > 0, 1.0 - _no_positive_in_first(m, g, t), 0.0)
    elif rule == "argsort":
        hits = (stats.argsort_rank < k).astype(np.float64)
    else:  # pragma: no cover - rules are validated before
        raise ValueError(f"unknown tie_rule {rule!r}")
    return float(100.0 * hits.mean())


def _tie_info(name: str, stats: _DirectionStats, ks: tuple[int, ...]) -> dict[str, float]:
    """How much a direction's numbers depend on tie order.

    ``<dir>_tied_frac``: fraction of queries whose best positive shares its score with a negative.
    ``<dir>_tie_dependent_frac@K``: fraction of queries whose hit at K flips between the pessimistic
    and optimistic orders (0 means every rule agrees at that K).
    """
    a, g, t = stats.above, stats.tied, stats.tied_pos
    info = {f"{name}_tied_frac": float(np.mean(g > t))}
    for k in ks:
        info[f"{name}_tie_dependent_frac@{k}"] = float(np.mean((a < k) & (a + g - t >= k)))
    return info


def _compute_stats(inp: _Inputs, want_argsort: bool, chunk_elements: int):
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}.")
    img_ids = np.arange(inp.n_img, dtype=np.int64)
    i2t = _direction_stats(
        inp.s_i2t, img_ids, inp.txt2img, transpose=False, want_argsort=want_argsort, chunk_elements=chunk_elements
    )
    if inp.s_t2i is not None:
        t2i = _direction_stats(
            inp.s_t2i, inp.txt2img, img_ids, transpose=False, want_argsort=want_argsort, chunk_elements=chunk_elements
        )
    else:
        t2i = _direction_stats(
            inp.s_i2t, inp.txt2img, img_ids, transpose=True, want_argsort=want_argsort, chunk_elements=chunk_elements
        )
    return i2t, t2i


def _result(rule: str, i2t: _DirectionStats, t2i: _DirectionStats, inp: _Inputs, ties: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    recalls = []
    for name, stats in (("i2t", i2t), ("t2i", t2i)):
        for k in inp.ks:
            out[f"{name}_R@{k}"] = _hit_rate(stats, k, rule)
            recalls.append(out[f"{name}_R@{k}"])
    out["mR"] = float(np.mean(recalls))
    out["tie_rule"] = rule
    out["num_images"] = inp.n_img
    out["num_texts"] = inp.n_txt
    out["ties"] = dict(ties)
    return out


# ------------------------------------------------------------------------------------ public API
def retrieval_metrics(
    scores_i2t,
    txt2img,
    img2txt=None,
    ks: Sequence[int] = (1, 5, 10),
    tie_rule: str = "expected",
    *,
    scores_t2i=None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> dict[str, Any]:
    """Recall@K in both directions and mR, in percent, under one tie rule.

    Args:
        scores_i2t: ``(N_img, N_txt)`` numpy array or torch tensor, higher = better match.
        txt2img: ``(N_txt,)`` index of the ground-truth image of each caption.
        img2txt: optional list of caption-index lists per image (ALBEF ``itm_eval`` style); derived
            from ``txt2img`` when None and checked against it otherwise.
        ks: cut-offs K.
        tie_rule: one of :data:`TIE_RULES` (see the module docstring).
        scores_t2i: optional ``(N_txt, N_img)`` matrix for the t2i direction. Two-stage (top-k
            filtered) retrieval fills the two directions differently (ALBEF ``Retrieval.py``), so
            they can differ; by default t2i ranks the columns of ``scores_i2t``.
        chunk_elements: scores processed at once (memory bound), not a result-changing knob.

    Returns:
        ``{"i2t_R@K": .., "t2i_R@K": .., "mR": .., "tie_rule": rule, "num_images": N_img,
        "num_texts": N_txt, "ties": {"i2t_tied_frac": .., "i2t_tie_dependent_frac@K": .., ...}}``.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}.")
    inp = _prepare(scores_i2t, txt2img, img2txt, ks, scores_t2i)
    i2t, t2i = _compute_stats(inp, want_argsort=tie_rule == "argsort", chunk_elements=chunk_elements)
    ties = {**_tie_info("i2t", i2t, inp.ks), **_tie_info("t2i", t2i, inp.ks)}
    return _result(tie_rule, i2t, t2i, inp, ties)


def all_tie_rules(
    scores_i2t,
    txt2img,
    img2txt=None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    scores_t2i=None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> dict[str, dict[str, Any]]:
    """:func:`retrieval_metrics` under every rule in :data:`TIE_RULES`, scanning the scores once.

    Returns ``{rule: result}`` in the order of :data:`TIE_RULES`; every result carries the same
    ``ties`` info.
    """
    inp = _prepare(scores_i2t, txt2img, img2txt, ks, scores_t2i)
    i2t, t2i = _compute_stats(inp, want_argsort=True, chunk_elements=chunk_elements)
    ties = {**_tie_info("i2t", i2t, inp.ks), **_tie_info("t2i", t2i, inp.ks)}
    return {rule: _result(rule, i2t, t2i, inp, ties) for rule in TIE_RULES}


def rs_recall_metric_path() -> Path:
    """Folder of the ``evaluate`` module ``rs_recall`` shipped as package data.

    It is a folder of its own (``rs_recall/``, not a module of this package) because ``evaluate.load``
    takes a directory holding one script named like the directory.
    """
    from importlib.resources import files

    path = Path(str(files("mtgfe.evaluation") / "rs_recall"))
    script = path / "rs_recall.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"evaluate module script not found at {script}; is the package data "
            "'rs_recall/*.py' of mtgfe.evaluation installed?"
        )
    return path


def load_rs_recall_metric(**kwargs):
    """``evaluate.load`` of the bundled ``rs_recall`` metric (works offline: it is a local folder).

    Prefer :func:`retrieval_metrics` in code: it is the same computation without the 4-5 s
    ``import evaluate`` and without passing scores through Arrow.
    """
    import evaluate  # lazy: importing evaluate costs seconds

    return evaluate.load(str(rs_recall_metric_path()), **kwargs)
