"""Tests for mtgfe.evaluation.metrics: the retrieval protocol and the tie rules (docs/METHOD.md §6, §6b)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mtgfe.evaluation.metrics import TIE_RULES, all_tie_rules, retrieval_metrics

# 3 images x 6 captions; captions 2i, 2i+1 belong to image i.
#            c0   c1   c2   c3   c4   c5
HAND = np.array(
    [
        [0.9, 0.1, 0.9, 0.9, 0.2, 0.3],  # img0
        [0.5, 0.1, 0.4, 0.5, 0.6, 0.7],  # img1
        [0.0, 0.8, 0.8, 0.1, 0.8, 0.8],  # img2
    ]
)
HAND_T2I = np.array([0, 0, 1, 1, 2, 2])
HAND_KS = (1, 2, 5)

# Worked by hand. Notation: a = candidates strictly above the best positive score s, g = candidates
# tied at s, t = positives among them; P(hit@K) = 0 if K <= a else 1 - C(g-t, K-a) / C(g, K-a).
#
# i2t
#   img0: positives c0 (.9), c1 (.1) -> s=.9, a=0, tied {c0,c2,c3}: g=3, t=1
#         K=1: 1 - C(2,1)/C(3,1) = 1/3   K=2: 1 - C(2,2)/C(3,2) = 2/3   K=5: 1
#         pessimistic rank a+g-t = 2 -> 0,0,1 ; optimistic rank a = 0 -> 1,1,1
#   img1: positives c2 (.4), c3 (.5) -> s=.5, above {c4 .6, c5 .7}: a=2, tied {c0,c3}: g=2, t=1
#         K=1: 0   K=2: 0   K=5: 1 ; pessimistic rank 3 -> 0,0,1 ; optimistic rank 2 -> 0,0,1
#   img2: positives c4, c5 (.8) -> s=.8, a=0, tied {c1,c2,c4,c5}: g=4, t=2
#         K=1: 1 - C(2,1)/C(4,1) = 1/2   K=2: 1 - C(2,2)/C(4,2) = 5/6   K=5: 1
#         pessimistic rank 2 -> 0,0,1 ; optimistic rank 0 -> 1,1,1
#   expected R@1 = (1/3 + 0 + 1/2)/3 = 5/18, R@2 = (2/3 + 0 + 5/6)/3 = 1/2, R@5 = 1
#   pessimistic 0, 0, 1 ; optimistic 2/3, 2/3, 1
# t2i (columns; one GT image each)
#   c0 GT0 [.9 .5 .0]: rank 0            c1 GT0 [.1 .1 .8]: a=1, g=2, t=1 -> K=1: 0, K=2: 1/2, K=5: 1
#   c2 GT1 [.9 .4 .8]: rank 2            c3 GT1 [.9 .5 .1]: rank 1
#   c4 GT2 [.2 .6 .8]: rank 0            c5 GT2 [.3 .7 .8]: rank 0
#   expected R@1 = 3/6, R@2 = (1 + 1/2 + 0 + 1 + 1 + 1)/6 = 3/4, R@5 = 1
#   pessimistic (c1 rank 2): 3/6, 4/6, 1 ; optimistic (c1 rank 1): 3/6, 5/6, 1
HAND_EXPECTED = {
    "expected": {"i2t": (5 / 18, 1 / 2, 1), "t2i": (1 / 2, 3 / 4, 1)},
    "pessimistic": {"i2t": (0, 0, 1), "t2i": (1 / 2, 4 / 6, 1)},
    "optimistic": {"i2t": (2 / 3, 2 / 3, 1), "t2i": (1 / 2, 5 / 6, 1)},
}


def _flat(rule_values):
    return [100 * v for d in ("i2t", "t2i") for v in rule_values[d]]


@pytest.mark.parametrize("rule", ["expected", "pessimistic", "optimistic"])
def test_hand_computed_case(rule):
    res = retrieval_metrics(HAND, HAND_T2I, ks=HAND_KS, tie_rule=rule)
    want = HAND_EXPECTED[rule]
    for direction in ("i2t", "t2i"):
        for k, v in zip(HAND_KS, want[direction]):
            assert res[f"{direction}_R@{k}"] == pytest.approx(100 * v, abs=1e-9), (direction, k)
    assert res["mR"] == pytest.approx(np.mean(_flat(want)), abs=1e-9)
    assert res["tie_rule"] == rule
    assert (res["num_images"], res["num_texts"]) == (3, 6)


def test_hand_case_tie_info():
    ties = retrieval_metrics(HAND, HAND_T2I, ks=HAND_KS)["ties"]
    # i2t: every image's best positive is tied with a negative; the hit flips for img0 and img2 at K=1, 2.
    assert ties["i2t_tied_frac"] == pytest.approx(1.0)
    assert ties["i2t_tie_dependent_frac@1"] == pytest.approx(2 / 3)
    assert ties["i2t_tie_dependent_frac@2"] == pytest.approx(2 / 3)
    assert ties["i2t_tie_dependent_frac@5"] == 0
    # t2i: only c1 is tied (with img1), and it matters only at K=2.
    assert ties["t2i_tied_frac"] == pytest.approx(1 / 6)
    assert ties["t2i_tie_dependent_frac@1"] == 0
    assert ties["t2i_tie_dependent_frac@2"] == pytest.approx(1 / 6)


def test_expected_equals_exhaustive_enumeration_of_tie_orders():
    """Average over *every* tie order of the hand case equals the closed form exactly.

    A jitter smaller than the smallest score gap, built from a caption permutation (major) and an
    image permutation (minor), orders each i2t row's ties by the caption permutation and each t2i
    column's ties by the image permutation; enumerating both covers all orders uniformly.
    """
    sums = None
    n = 0
    for pc in itertools.permutations(range(6)):
        for pi in itertools.permutations(range(3)):
            key = np.asarray(pc)[None, :] * 3 + np.asarray(pi)[:, None]  # 0..17, distinct
            res = retrieval_metrics(HAND + 1e-3 * key, HAND_T2I, ks=HAND_KS, tie_rule="optimistic")
            assert res["ties"]["i2t_tied_frac"] == 0 and res["ties"]["t2i_tied_frac"] == 0
            vals = np.array([res[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in HAND_KS])
            sums = vals if sums is None else sums + vals
            n += 1
    exact = retrieval_metrics(HAND, HAND_T2I, ks=HAND_KS)
    np.testing.assert_allclose(sums / n, [exact[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in HAND_KS], atol=1e-9)


def _tied_problem(seed, n_img=12, caps_per_img=5, levels=4):
    rng = np.random.default_rng(seed)
    txt2img = np.repeat(np.arange(n_img), caps_per_img)
    rng.shuffle(txt2img)
    scores = rng.integers(0, levels, size=(n_img, n_img * caps_per_img)).astype(np.float32)
    return scores, txt2img


def test_expected_matches_monte_carlo_over_random_tie_orders():
    scores, txt2img = _tied_problem(1, n_img=10, caps_per_img=4, levels=3)
    rng = np.random.default_rng(7)
    ks = (1, 3, 10)
    trials = 1500
    acc = np.zeros(6)
    for _ in range(trials):
        jitter = rng.random(scores.shape) * 0.5  # < 1 = the gap between integer levels
        res = retrieval_metrics(scores + jitter, txt2img, ks=ks, tie_rule="optimistic")
        acc += [res[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]
    mc = acc / trials
    exact = retrieval_metrics(scores, txt2img, ks=ks)
    want = [exact[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]
    # Std of one trial's recall is < 16 points (10 queries) -> SE over 1500 trials < 0.42; allow ~3.5 SE.
    np.testing.assert_allclose(mc, want, atol=1.5)
    assert exact["ties"]["i2t_tied_frac"] > 0.5  # the case really is about ties


@pytest.mark.parametrize("seed", range(5))
def test_bounds_and_monotone_in_k(seed):
    scores, txt2img = _tied_problem(seed, levels=3 + seed)
    ks = (1, 2, 3, 5, 10, 20, 60)
    res = all_tie_rules(scores, txt2img, ks=ks)
    assert list(res) == list(TIE_RULES)
    for d in ("i2t", "t2i"):
        for k in ks:
            lo, mid, hi = (res[r][f"{d}_R@{k}"] for r in ("pessimistic", "expected", "optimistic"))
            assert lo - 1e-9 <= mid <= hi + 1e-9
            assert lo - 1e-9 <= res["argsort"][f"{d}_R@{k}"] <= hi + 1e-9
        for rule in TIE_RULES:
            vals = [res[rule][f"{d}_R@{k}"] for k in ks]
            assert all(b >= a - 1e-9 for a, b in zip(vals, vals[1:])), (rule, d, vals)
            assert vals[-1] == pytest.approx(100.0)  # K >= number of candidates
    # all_tie_rules shares its work with, and agrees with, single-rule calls
    for rule in TIE_RULES:
        single = retrieval_metrics(scores, txt2img, ks=ks, tie_rule=rule)
        assert single == res[rule]


def test_perfect_scores_give_100_under_every_rule():
    txt2img = np.repeat(np.arange(7), 5)
    scores = (txt2img[None, :] == np.arange(7)[:, None]).astype(np.float32)
    for rule, res in all_tie_rules(scores, txt2img).items():
        assert res["mR"] == 100.0, rule
        assert all(v == 0 for v in res["ties"].values())


def _harma_itm_eval(scores_i2t, scores_t2i, txt2img, img2txt):
    """HarMA/PIR ``Retrieval.py::itm_eval`` (and ALBEF), copied loop for loop, returning the 6 recalls."""
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        rank = 1e20
        for i in img2txt[index]:
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    tr = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    ir = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    return tr + ir


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_argsort_rule_reproduces_field_code(dtype):
    rng = np.random.default_rng(3)
    n_img = 40
    txt2img = np.repeat(np.arange(n_img), 5)  # GaLR layout: captions 5i..5i+4
    scores = rng.integers(0, 6, size=(n_img, 5 * n_img)).astype(dtype)  # heavy ties
    img2txt = [list(range(5 * i, 5 * i + 5)) for i in range(n_img)]
    scores_t2i = np.ascontiguousarray(scores.T)  # ALBEF keeps a separate (N_txt, N_img) matrix
    want = _harma_itm_eval(scores, scores_t2i, txt2img, img2txt)
    for kwargs in ({}, {"scores_t2i": scores_t2i}, {"chunk_elements": 333}):
        res = retrieval_metrics(scores, txt2img, img2txt=img2txt, tie_rule="argsort", **kwargs)
        got = [res[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
        assert got == pytest.approx(want, abs=1e-12), kwargs
        assert res["mR"] == pytest.approx(np.mean(want))


def test_chunking_does_not_change_results():
    scores, txt2img = _tied_problem(11)
    a = all_tie_rules(scores, txt2img)
    b = all_tie_rules(scores, txt2img, chunk_elements=17)
    assert a == b


def test_separate_t2i_matrix_is_used_for_t2i_only():
    scores, txt2img = _tied_problem(4)
    other = np.random.default_rng(5).random(scores.T.shape)
    base = retrieval_metrics(scores, txt2img)
    mixed = retrieval_metrics(scores, txt2img, scores_t2i=other)
    ref = retrieval_metrics(other.T, txt2img)
    for k in (1, 5, 10):
        assert mixed[f"i2t_R@{k}"] == base[f"i2t_R@{k}"]
        assert mixed[f"t2i_R@{k}"] == ref[f"t2i_R@{k}"]


def test_torch_input_and_list_img2txt():
    import torch

    scores, txt2img = _tied_problem(2)
    img2txt = [np.nonzero(txt2img == i)[0].tolist() for i in range(scores.shape[0])]
    a = retrieval_metrics(scores, txt2img, tie_rule="argsort")
    b = retrieval_metrics(torch.from_numpy(scores), torch.from_numpy(txt2img), img2txt=img2txt, tie_rule="argsort")
    assert a == b
    c = retrieval_metrics(torch.from_numpy(scores).bfloat16(), txt2img)  # no numpy bf16: widened
    assert c == retrieval_metrics(scores, txt2img)  # small integers are exact in bf16


def test_rsicd_sized_matrix_is_fast():
    import time

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 1000, size=(1093, 5465)).astype(np.float32)
    txt2img = np.repeat(np.arange(1093), 5)
    t0 = time.perf_counter()
    retrieval_metrics(scores, txt2img)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s alone on 2 cores; slack for a shared machine


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(scores_i2t=np.zeros((3, 5)), txt2img=HAND_T2I), ValueError, r"scores_i2t has shape \(3, 5\).*txt2img has 6"),
        (dict(scores_i2t=np.zeros(6), txt2img=HAND_T2I), ValueError, r"scores_i2t must be 2-D"),
        (dict(scores_i2t=HAND, txt2img=[0, 0, 1, 1, 2, 3]), ValueError, r"txt2img\[5\] = 3 is out of range for 3 images"),
        (dict(scores_i2t=HAND, txt2img=[0, 0, 1, 1, 2, -1]), ValueError, r"txt2img\[5\] = -1"),
        (dict(scores_i2t=HAND, txt2img=[0, 0, 1, 1, 0, 0]), ValueError, r"txt2img gives no caption to image\(s\) \[2\]"),
        (dict(scores_i2t=HAND, txt2img=[0.5, 0, 1, 1, 2, 2]), TypeError, r"txt2img must hold integer"),
        (dict(scores_i2t=np.where(np.eye(3, 6) > 0, np.nan, HAND), txt2img=HAND_T2I), ValueError, r"scores_i2t contains 3 NaN.*\[0, 0\]"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, scores_t2i=np.zeros((3, 6))), ValueError, r"scores_t2i has shape \(3, 6\)"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, scores_t2i=np.full((6, 3), np.nan)), ValueError, r"scores_t2i contains"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, tie_rule="random"), ValueError, r"tie_rule must be one of"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, ks=(0, 5)), ValueError, r"ks must be positive"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, ks=()), ValueError, r"ks must name"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, ks=(1, 1)), ValueError, r"ks must not repeat"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, img2txt=[[0, 1], [2, 3]]), ValueError, r"img2txt has 2 entries"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, img2txt=[[0, 1], [2, 4], [3, 5]]), ValueError, r"img2txt\[1\] lists caption 4.*txt2img\[4\] = 2"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, img2txt=[[0, 1], [2, 3], [4]]), ValueError, r"caption 5 .*missing from img2txt\[2\]"),
        (dict(scores_i2t=HAND, txt2img=HAND_T2I, img2txt=[[0, 1], [2, 3], [4, 9]]), ValueError, r"img2txt\[2\] contains caption index 9"),
        (dict(scores_i2t=np.array([["a"] * 6] * 3), txt2img=HAND_T2I), TypeError, r"scores_i2t must hold real numbers"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        retrieval_metrics(**kwargs)


def test_filtered_scores_with_minus_inf_are_allowed():
    """Two-stage search leaves unscored pairs at a floor (ALBEF uses -100); -inf must work too."""
    scores = np.full((3, 6), -np.inf)
    scores[0, 0] = scores[1, 2] = scores[2, 4] = 1.0
    res = retrieval_metrics(scores, HAND_T2I, ks=(1,), tie_rule="pessimistic")
    assert res["i2t_R@1"] == 100.0
    assert res["t2i_R@1"] == 50.0  # odd captions sit in a 3-way tie at -inf under the pessimistic rule


def test_evaluate_module_matches_function():
    from mtgfe.evaluation.metrics import load_rs_recall_metric

    metric = load_rs_recall_metric()
    scores, txt2img = _tied_problem(8, n_img=9, caps_per_img=5, levels=4)
    refs = [np.nonzero(txt2img == i)[0].tolist() for i in range(scores.shape[0])]
    rows = scores.astype(np.float64).tolist()
    for rule in TIE_RULES:
        got = metric.compute(predictions=rows, references=refs, ks=[1, 5, 10], tie_rule=rule)
        assert got == retrieval_metrics(scores.astype(np.float64), txt2img, tie_rule=rule), rule
    # float32 ranking (what model code sorts) for the argsort rule, fed in two batches
    metric.add_batch(predictions=rows[:4], references=refs[:4])
    metric.add_batch(predictions=rows[4:], references=refs[4:])
    got = metric.compute(tie_rule="argsort", score_dtype="float32")
    assert got == retrieval_metrics(scores, txt2img, tie_rule="argsort")
    bad_refs = [[j for j in r if j != 44] for r in refs]
    with pytest.raises(ValueError, match=r"caption index\(es\) \[44\] belong to no image"):
        metric.compute(predictions=rows, references=bad_refs, ks=[1])
