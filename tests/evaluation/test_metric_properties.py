"""Hypothesis property tests: the tie-aware retrieval metric and `coarse_topk`, each against brute force.

* `mtgfe.evaluation.metrics.retrieval_metrics` on tiny integer-valued score matrices (many ties): the
  ``expected`` rule equals the average of the hit indicator over *every* ordering of the candidates that
  is consistent with the scores (enumerated with `itertools.permutations`, <= 6 candidates), and
  ``pessimistic`` / ``optimistic`` equal the minimum / maximum over those orderings; recall never decreases
  with K, is 100 once K reaches the number of candidates, and does not depend on the order of the
  gallery, on chunking, or on passing ``scores_t2i = scores_i2t.T`` explicitly.
* `modeling_mtgfe.retrieval.coarse_topk` with ``gallery_embeds = I`` so the cosine matrix is exactly the
  integer score matrix: the candidates are the brute-force top-k set plus the whole tie group at the k-th
  score, in (descending score, ascending index) order, identically for every chunk size.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling_mtgfe.retrieval import coarse_topk
from mtgfe.evaluation.metrics import TIE_RULES, all_tie_rules, retrieval_metrics

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXACT_RULES = ("expected", "pessimistic", "optimistic")
DIRECTIONS = ("i2t", "t2i")


# ------------------------------------------------------------------------------------- strategies
@st.composite
def retrieval_problems(draw, max_images: int = 4, max_texts: int = 6, levels: int = 3, min_captions: int = 1):
    """(scores_i2t, txt2img): every image has >= min_captions captions, captions shuffled, scores in
    {0..levels-1} (so ties are the rule, not the exception)."""
    n_img = draw(st.integers(1, min(max_images, max_texts // min_captions)))
    n_txt = draw(st.integers(min_captions * n_img, max_texts))
    n_extra = n_txt - min_captions * n_img
    extra = draw(st.lists(st.integers(0, n_img - 1), min_size=n_extra, max_size=n_extra))
    txt2img = draw(st.permutations(list(range(n_img)) * min_captions + extra))
    flat = draw(st.lists(st.integers(0, levels - 1), min_size=n_img * n_txt, max_size=n_img * n_txt))
    scores = np.asarray(flat, dtype=np.float64).reshape(n_img, n_txt)
    return scores, np.asarray(txt2img, dtype=np.int64)


# ------------------------------------------------------------------------------------- brute force
def _orderings_consistent_with(row: np.ndarray):
    """Every ranking (best first) a uniformly random tie order can produce; each is equally likely."""
    for perm in itertools.permutations(range(len(row))):
        if all(row[perm[i]] >= row[perm[i + 1]] for i in range(len(perm) - 1)):
            yield perm


def _brute_hits(row: np.ndarray, positives: set[int], k: int) -> list[int]:
    """Hit indicator at K (any positive within the first K) for each consistent ordering."""
    return [int(any(c in positives for c in perm[:k])) for perm in _orderings_consistent_with(row)]


def _brute_recalls(scores: np.ndarray, txt2img: np.ndarray, ks) -> dict[str, dict[str, float]]:
    """{rule: {"i2t_R@K": percent, ...}} by enumeration; expectation is exact (Fractions)."""
    n_img, n_txt = scores.shape
    queries = {
        "i2t": [(scores[i], {j for j in range(n_txt) if txt2img[j] == i}) for i in range(n_img)],
        # t2i: one ground-truth image per caption; other images' identical captions are not hits
        "t2i": [(scores[:, j], {int(txt2img[j])}) for j in range(n_txt)],
    }
    out: dict[str, dict[str, float]] = {rule: {} for rule in EXACT_RULES}
    for d, qs in queries.items():
        for k in ks:
            per_query = [_brute_hits(row, pos, k) for row, pos in qs]
            exp = sum(Fraction(sum(h), len(h)) for h in per_query) / len(qs)
            out["expected"][f"{d}_R@{k}"] = float(100 * exp)
            out["pessimistic"][f"{d}_R@{k}"] = 100 * sum(min(h) for h in per_query) / len(qs)
            out["optimistic"][f"{d}_R@{k}"] = 100 * sum(max(h) for h in per_query) / len(qs)
    return out


def _recalls(result: dict, ks) -> list[float]:
    return [result[f"{d}_R@{k}"] for d in DIRECTIONS for k in ks]


# ------------------------------------------------------------------------------------- metric
@SETTINGS
@given(problem=retrieval_problems())
def test_tie_rules_equal_brute_force_over_all_tie_orders(problem):
    scores, txt2img = problem
    ks = tuple(range(1, scores.shape[1] + 1))  # every K up to the number of captions
    brute = _brute_recalls(scores, txt2img, ks)
    res = all_tie_rules(scores, txt2img, ks=ks)
    for rule in EXACT_RULES:
        for key, want in brute[rule].items():
            assert res[rule][key] == pytest.approx(want, abs=1e-9), (rule, key, scores.tolist(), txt2img.tolist())
        # mR is the mean of all 2 * len(ks) recalls
        assert res[rule]["mR"] == pytest.approx(float(np.mean(list(brute[rule].values()))), abs=1e-9)


@SETTINGS
@given(problem=retrieval_problems(max_images=5, max_texts=12, levels=4))
def test_recall_is_monotone_in_k_bounded_by_the_tie_rules_and_100_at_n(problem):
    scores, txt2img = problem
    n_img, n_txt = scores.shape
    ks = tuple(range(1, n_txt + 3))
    res = all_tie_rules(scores, txt2img, ks=ks)
    for d, n_cand in (("i2t", n_txt), ("t2i", n_img)):
        for rule in TIE_RULES:
            vals = [res[rule][f"{d}_R@{k}"] for k in ks]
            assert all(b >= a - 1e-9 for a, b in zip(vals, vals[1:])), (rule, d, vals)
            assert all(0.0 <= v <= 100.0 + 1e-9 for v in vals)
            for k in ks:
                if k >= n_cand:
                    assert res[rule][f"{d}_R@{k}"] == pytest.approx(100.0), (rule, d, k)
        for k in ks:
            lo, mid, hi = (res[r][f"{d}_R@{k}"] for r in ("pessimistic", "expected", "optimistic"))
            assert lo - 1e-9 <= mid <= hi + 1e-9
            assert lo - 1e-9 <= res["argsort"][f"{d}_R@{k}"] <= hi + 1e-9  # argsort is one tie order


@SETTINGS
@given(problem=retrieval_problems(max_images=5, max_texts=10, levels=3), data=st.data())
def test_recall_is_invariant_under_permuting_images_and_captions(problem, data):
    scores, txt2img = problem
    n_img, n_txt = scores.shape
    ks = tuple(sorted({1, 2, 3, n_txt}))
    img_perm = np.asarray(data.draw(st.permutations(range(n_img)), label="img_perm"))  # new image i = old img_perm[i]
    txt_perm = np.asarray(data.draw(st.permutations(range(n_txt)), label="txt_perm"))  # new caption j = old txt_perm[j]
    old_to_new_img = np.argsort(img_perm)
    permuted_scores = scores[img_perm][:, txt_perm]
    permuted_txt2img = old_to_new_img[txt2img[txt_perm]]
    for rule in EXACT_RULES:  # argsort is excluded: its tie order is numpy's, position-dependent by design
        a = retrieval_metrics(scores, txt2img, ks=ks, tie_rule=rule)
        b = retrieval_metrics(permuted_scores, permuted_txt2img, ks=ks, tie_rule=rule)
        assert _recalls(a, ks) == pytest.approx(_recalls(b, ks), abs=1e-9), rule
        assert a["mR"] == pytest.approx(b["mR"], abs=1e-9)
        assert a["ties"] == pytest.approx(b["ties"], abs=1e-12)


@SETTINGS
@given(problem=retrieval_problems(max_images=5, max_texts=10, levels=3), data=st.data())
def test_chunking_and_explicit_t2i_matrix_change_nothing(problem, data):
    scores, txt2img = problem
    ks = (1, 2, 5)
    chunk = data.draw(st.integers(1, scores.size + 1), label="chunk_elements")
    reference = all_tie_rules(scores, txt2img, ks=ks)
    assert all_tie_rules(scores, txt2img, ks=ks, chunk_elements=chunk) == reference
    assert all_tie_rules(scores, txt2img, ks=ks, scores_t2i=scores.T.copy(), chunk_elements=chunk) == reference
    img2txt = [np.nonzero(txt2img == i)[0].tolist() for i in range(scores.shape[0])]
    assert all_tie_rules(scores, txt2img, img2txt, ks=ks) == reference  # ALBEF-style mapping, same answer


@SETTINGS
@given(problem=retrieval_problems(max_images=3, max_texts=6, levels=3, min_captions=2))
def test_an_image_is_a_hit_when_any_of_its_captions_is_in_the_top_k(problem):
    """Every image has 2+ captions; its i2t hit is "some caption within the first K" (brute force, all
    orders), while in t2i each caption has exactly its own image as ground truth."""
    scores, txt2img = problem
    n_img, n_txt = scores.shape
    assert np.bincount(txt2img, minlength=n_img).min() >= 2
    ks = tuple(range(1, n_txt + 1))
    res = all_tie_rules(scores, txt2img, ks=ks)
    brute = _brute_recalls(scores, txt2img, ks)
    for rule in EXACT_RULES:
        for k in ks:
            assert res[rule][f"i2t_R@{k}"] == pytest.approx(brute[rule][f"i2t_R@{k}"], abs=1e-9), (rule, k)
    # a caption only helps its own image: giving image 0's captions the top score in row 0 makes
    # image 0 a hit at K=1 under every rule, and changes no other image's i2t outcome
    boosted = scores.copy()
    boosted[0, txt2img == 0] = scores.max() + 1
    after = all_tie_rules(boosted, txt2img, ks=(1,))
    for rule in EXACT_RULES:
        others = [h for row, h in enumerate(_per_image_hit_at_1(scores, txt2img, rule)) if row != 0]
        assert after[rule]["i2t_R@1"] == pytest.approx(100 * (1 + sum(others)) / n_img, abs=1e-9), rule


def _per_image_hit_at_1(scores, txt2img, rule):
    out = []
    for i in range(scores.shape[0]):
        h = _brute_hits(scores[i], {j for j in range(scores.shape[1]) if txt2img[j] == i}, 1)
        out.append({"expected": sum(h) / len(h), "pessimistic": min(h), "optimistic": max(h)}[rule])
    return out


# ------------------------------------------------------------------------------------- coarse_topk
@st.composite
def topk_problems(draw, max_queries: int = 4, max_gallery: int = 8, levels: int = 3):
    """Integer scores (Q, D) over D distinct gallery rows, optionally expanded by an inverse map to N rows."""
    q = draw(st.integers(1, max_queries))
    d = draw(st.integers(1, max_gallery))
    flat = draw(st.lists(st.integers(-levels + 1, levels - 1), min_size=q * d, max_size=q * d))
    scores = torch.tensor(flat, dtype=torch.float32).reshape(q, d)
    inverse = None
    if draw(st.booleans()):
        n = draw(st.integers(1, 2 * max_gallery))
        inverse = torch.tensor(draw(st.lists(st.integers(0, d - 1), min_size=n, max_size=n)), dtype=torch.long)
    size = d if inverse is None else int(inverse.shape[0])
    k = draw(st.one_of(st.none(), st.integers(1, size + 2)))
    return scores, inverse, k


def _expanded(scores: torch.Tensor, inverse: torch.Tensor | None) -> torch.Tensor:
    return scores if inverse is None else scores[:, inverse]


def _brute_topk_with_ties(row: list[float], k: int | None) -> list[int]:
    """Every index scoring >= the k-th largest score, by descending score then ascending index."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    if k is None or k >= len(row):
        return order
    kth = row[order[k - 1]]
    return [j for j in order if row[j] >= kth]


def _call(scores, inverse, k, **kwargs):
    # gallery = identity, so `query @ gallery.T` is the score matrix, bit-exactly (integers in float32)
    gallery = torch.eye(scores.shape[1])
    return coarse_topk(scores, gallery, k, gallery_inverse=inverse, **kwargs)


@SETTINGS
@given(problem=topk_problems())
def test_coarse_topk_keeps_exactly_the_brute_force_top_k_and_its_tie_group(problem):
    scores, inverse, k = problem
    sims = _expanded(scores, inverse)
    got = _call(scores, inverse, k)
    assert len(got) == scores.shape[0]
    for q in range(scores.shape[0]):
        row = sims[q].tolist()
        want = _brute_topk_with_ties(row, k)
        assert got.indices[q].tolist() == want, (row, k)
        assert got.indices[q].dtype == torch.int64
        assert got.scores[q].tolist() == [row[j] for j in want]
        assert len(want) >= min(k or len(row), len(row))  # never fewer than k
    assert got.num_pairs == sum(len(_brute_topk_with_ties(sims[q].tolist(), k)) for q in range(sims.shape[0]))


@SETTINGS
@given(problem=topk_problems(), data=st.data())
def test_coarse_topk_is_the_same_for_every_chunk_size(problem, data):
    scores, inverse, k = problem
    size = scores.shape[1] if inverse is None else int(inverse.shape[0])
    chunk = data.draw(st.integers(1, scores.shape[0] * size + 1), label="chunk_elements")
    keep_ties = data.draw(st.booleans(), label="keep_ties")
    whole = _call(scores, inverse, k, keep_ties=keep_ties)
    chunked = _call(scores, inverse, k, keep_ties=keep_ties, chunk_elements=chunk)
    assert len(whole) == len(chunked)
    for a, b, sa, sb in zip(whole.indices, chunked.indices, whole.scores, chunked.scores):
        if keep_ties:  # deterministic contract: identical lists
            assert a.tolist() == b.tolist() and sa.tolist() == sb.tolist()
        else:  # which members of a cut tie group survive is torch.topk's choice; scores must agree
            assert sa.tolist() == sb.tolist()


@SETTINGS
@given(problem=topk_problems())
def test_coarse_topk_without_ties_keeps_k_items_from_the_top(problem):
    scores, inverse, k = problem
    sims = _expanded(scores, inverse)
    got = _call(scores, inverse, k, keep_ties=False)
    for q in range(scores.shape[0]):
        row = sims[q].tolist()
        n = len(row)
        kk = n if k is None else min(k, n)
        idx = got.indices[q].tolist()
        assert len(idx) == kk and len(set(idx)) == kk
        assert got.scores[q].tolist() == [row[j] for j in idx]
        kth = sorted(row, reverse=True)[kk - 1]
        assert {j for j in range(n) if row[j] > kth} <= set(idx)  # everything strictly above the cut is in
        assert all(row[j] >= kth for j in idx)
        # best first, ties by ascending index
        assert idx == sorted(idx, key=lambda j: (-row[j], j))
