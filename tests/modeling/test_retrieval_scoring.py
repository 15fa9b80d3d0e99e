"""Two-stage scoring core (`modeling_mtgfe.retrieval`): exactness, ties, pass accounting."""

from __future__ import annotations

import pytest
import torch
from tests.helpers.retrieval import CAPTIONS, random_images, tiny_model, tiny_processor

from modeling_mtgfe.retrieval import (
    coarse_topk,
    encode_images,
    encode_texts,
    exhaustive_itm,
    rank_candidates,
    rerank,
)

# Duplicates on purpose: an exact repeat and a case variant (same token ids with a lowercasing tokenizer).
TEXTS = CAPTIONS + [CAPTIONS[0], CAPTIONS[2].upper(), CAPTIONS[0]]


@pytest.fixture(scope="module")
def setup():
    model, processor = tiny_model(), tiny_processor()
    images = random_images(9, seed=1)
    image_feats = encode_images(model, processor, images, batch_size=4, progress=False)
    text_feats = encode_texts(model, processor, TEXTS, batch_size=3)
    return model, processor, images, image_feats, text_feats


def reference_itm(model, image_feats, text_feats) -> torch.Tensor:
    """Every pair through the model's own `compute_itm_scores`, one call: (N_img, N_txt) over input texts."""
    n_img, n_txt = len(image_feats), text_feats.num_distinct
    with torch.no_grad():
        scores = model.compute_itm_scores(
            image_feats.tokens,
            text_feats.states,
            text_feats.attention_mask,
            image_index=torch.arange(n_img).repeat_interleave(n_txt),
            text_index=torch.arange(n_txt).repeat(n_img),
        )
    return scores.view(n_img, n_txt)[:, text_feats.inverse]


def test_encode_shapes_and_dedupe(setup):
    model, _, images, image_feats, text_feats = setup
    assert image_feats.embeds.shape == (9, model.config.embed_dim)
    assert image_feats.embeds.dtype == torch.float32
    assert image_feats.tokens.shape[0] == 9 and image_feats.tokens.shape[2] == model.config.text_config.hidden_size
    assert len(text_feats) == len(TEXTS)
    assert text_feats.num_distinct == len(CAPTIONS)  # exact repeat and case variant collapse
    assert text_feats.inverse[6] == text_feats.inverse[0] == text_feats.inverse[8]
    assert text_feats.inverse[7] == text_feats.inverse[2]


def assert_same_ranking(scores: torch.Tensor, reference: torch.Tensor, margin: float = 1e-5) -> None:
    """Every ordering the reference is sure about (gap > margin, far above float noise) is kept, per row."""
    for row, ref in zip(scores, reference):
        surely_above = (ref[:, None] - ref[None, :]) > margin
        assert (row[:, None] > row[None, :])[surely_above].all()


def test_k_equal_n_is_the_exhaustive_itm_ranking(setup):
    """k >= N fuses every pair once and reproduces the model's own exhaustive ITM matrix.

    Scores are compared to float noise, not bitwise: MKL may round the same product differently for
    other batch shapes or memory alignment, so only "one score per distinct pair" is exact by construction.
    """
    model, _, _, image_feats, text_feats = setup
    reference = reference_itm(model, image_feats, text_feats)
    exhaustive = exhaustive_itm(model, image_feats, text_feats, batch_size=5)
    assert exhaustive.stats["fusion_passes"] == 9 * text_feats.num_distinct
    for k in (None, len(TEXTS), 1000):
        for trim in (False, True):
            result = rerank(model, image_feats, text_feats, k=k, batch_size=5, trim_batches=trim)
            assert result.stats["fusion_passes"] == 9 * text_feats.num_distinct
            assert torch.isfinite(result.scores_i2t).all() and torch.isfinite(result.scores_t2i).all()
            torch.testing.assert_close(result.scores_i2t, reference, atol=1e-6, rtol=0)
            torch.testing.assert_close(result.scores_t2i, reference.t(), atol=1e-6, rtol=0)
            assert_same_ranking(result.scores_i2t, reference)
            assert_same_ranking(result.scores_t2i, reference.t())
    assert_same_ranking(exhaustive.scores_i2t, reference)


def test_identical_captions_score_bit_identically(setup):
    model, _, _, image_feats, text_feats = setup
    result = rerank(model, image_feats, text_feats, k=4, direction="both", score="itm+itc", alpha=0.5)
    for a, b in ((0, 6), (0, 8), (2, 7)):
        assert torch.equal(result.scores_i2t[:, a], result.scores_i2t[:, b])
        assert torch.equal(result.scores_t2i[a], result.scores_t2i[b])


def test_filtered_scores_match_exhaustive_at_candidates(setup):
    model, _, _, image_feats, text_feats = setup
    reference = reference_itm(model, image_feats, text_feats)
    result = rerank(model, image_feats, text_feats, k=3)
    finite = torch.isfinite(result.scores_i2t)
    torch.testing.assert_close(result.scores_i2t[finite], reference[finite], atol=1e-6, rtol=0)
    assert torch.isneginf(result.scores_i2t[~finite]).all()
    # each distinct pair fused once, both directions together, bounded by k*(N_img + N_distinct)
    assert result.stats["fusion_passes"] == result.pair_image.numel()
    assert result.stats["fusion_passes"] <= result.stats["pairs_requested"]
    assert result.stats["kv_computed"] <= 9


def test_itm_plus_itc_and_fill_value(setup):
    model, _, _, image_feats, text_feats = setup
    plain = rerank(model, image_feats, text_feats, k=3, direction="i2t", fill_value=-100.0)
    mixed = rerank(model, image_feats, text_feats, k=3, direction="i2t", score="itm+itc", alpha=2.0)
    assert plain.scores_t2i is None and (plain.scores_i2t == -100.0).any()
    cos = image_feats.embeds @ text_feats.embeds[text_feats.inverse].t()
    mask = plain.scores_i2t > -100
    torch.testing.assert_close(mixed.scores_i2t[mask], plain.scores_i2t[mask] + 2.0 * cos[mask])


def test_reencoding_candidates_matches_cached_tokens(setup):
    model, processor, images, image_feats, text_feats = setup
    cached = rerank(model, image_feats, text_feats, k=3)
    lean = encode_images(model, processor, images, keep_tokens=False, progress=False)
    assert lean.tokens is None
    with pytest.raises(ValueError, match="re-encode"):
        rerank(model, lean, text_feats, k=3)
    reencoded = rerank(model, lean, text_feats, k=3, images=images, processor=processor)
    torch.testing.assert_close(reencoded.scores_i2t, cached.scores_i2t, atol=1e-6, rtol=0)
    assert reencoded.stats["images_encoded"] == reencoded.stats["kv_computed"] > 0


def test_coarse_topk_keeps_whole_tie_groups():
    gallery = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with_ties = coarse_topk(query, gallery, k=2)
    assert with_ties.indices[0].tolist() == [0, 1, 2, 3]  # tie group {1,2,3} at rank 2 kept whole
    assert with_ties.indices[1].tolist() == [4, 1, 2, 3]
    without = coarse_topk(query, gallery, k=2, keep_ties=False)
    assert [len(ix) for ix in without.indices] == [2, 2]
    assert with_ties.num_pairs == 8


def test_coarse_topk_duplicates_via_inverse_are_exact_ties_and_chunking_is_invisible():
    torch.manual_seed(0)
    gallery = torch.nn.functional.normalize(torch.randn(7, 8), dim=-1)
    inverse = torch.tensor([0, 1, 2, 3, 4, 5, 6, 3, 3, 0])
    query = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    full = coarse_topk(query, gallery, k=4, gallery_inverse=inverse)
    chunked = coarse_topk(query, gallery, k=4, gallery_inverse=inverse, chunk_elements=10)
    for a, b, sa in zip(full.indices, chunked.indices, full.scores):
        assert torch.equal(a, b)
        assert (sa[:-1] >= sa[1:]).all()
        members = set(a.tolist())
        for group in ({0, 9}, {3, 7, 8}):  # duplicates come and go together
            assert group <= members or not (group & members)


def test_rank_candidates_orders_by_final_then_filter(setup):
    model, _, _, image_feats, text_feats = setup
    result = rerank(model, image_feats, text_feats, k=4, direction="t2i")
    ranked = rank_candidates(result, 0, "t2i", text_feats)
    assert len(ranked) >= 4
    scores = [s for _, s, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    assert {i for i, _, _ in ranked} == set(result.candidates_t2i.indices[int(text_feats.inverse[0])].tolist())


def test_errors_name_the_problem(setup):
    model, processor, _, image_feats, text_feats = setup
    with pytest.raises(ValueError, match="direction"):
        rerank(model, image_feats, text_feats, direction="sideways")
    with pytest.raises(ValueError, match="score"):
        rerank(model, image_feats, text_feats, score="bm25")
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        encode_texts(model, processor, ["fine", "  "])
    with pytest.raises(ValueError, match="k must be"):
        coarse_topk(image_feats.embeds, image_feats.embeds, k=0)
    with pytest.raises(ValueError, match="width"):
        coarse_topk(image_feats.embeds, torch.zeros(3, 5), k=1)


# ------------------------------------------------------------------------------------ one source of truth
def test_pair_scoring_goes_through_the_models_itm_method(setup, monkeypatch):
    """score_pairs does not re-implement the ITM reduction: every fused batch is scored by compute_itm_scores."""
    model, _, _, image_feats, text_feats = setup
    calls = []
    original = type(model).compute_itm_scores

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("image_key_values") is not None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "compute_itm_scores", counting)
    result = rerank(model, image_feats, text_feats, k=3, batch_size=4)
    assert calls and all(calls)  # precomputed K/V, one projection per image group
    assert result.pair_itm.min() >= 0 and result.pair_itm.max() <= 1


def test_constants_have_one_definition():
    import modeling_mtgfe.pipeline_mtgfe as pipeline_module
    import modeling_mtgfe.retrieval as retrieval
    from modeling_mtgfe.configuration_mtgfe import RETRIEVAL_SCORES
    from mtgfe.search import gallery_index

    assert pipeline_module.SEARCH_SCORES is RETRIEVAL_SCORES
    assert set(retrieval.SCORES) == set(RETRIEVAL_SCORES) - {"filter"}
    assert gallery_index.IMAGE_EXTENSIONS is retrieval.IMAGE_EXTENSIONS is pipeline_module.IMAGE_EXTENSIONS
    from PIL import features

    assert len(set(retrieval.IMAGE_EXTENSIONS)) == len(retrieval.IMAGE_EXTENSIONS) == 9 + features.check("avif")
    assert retrieval.DEFAULT_CHUNK_ELEMENTS == 1 << 24
    # every ending is one the decoder reads
    assert features.check("webp") and features.check("jpg_2000")


def test_model_features_have_one_return_type(setup):
    from modeling_mtgfe import MTGFEImageFeatures, MTGFETextFeatures

    model, processor, images, _, _ = setup
    pixel_values = processor.image_processor(images=images[:2], return_tensors="pt")["pixel_values"]
    text = processor(text=TEXTS[:2], return_tensors="pt")
    with torch.no_grad():
        embeds = model.get_image_features(pixel_values)
        features = model.get_image_retrieval_features(pixel_values)
        text_embeds = model.get_text_features(text["input_ids"], text["attention_mask"])
        text_features = model.get_text_retrieval_features(text["input_ids"], text["attention_mask"])
    assert isinstance(embeds, torch.Tensor) and isinstance(features, MTGFEImageFeatures)
    assert isinstance(text_embeds, torch.Tensor) and isinstance(text_features, MTGFETextFeatures)
    torch.testing.assert_close(embeds, features.image_embeds)
    torch.testing.assert_close(text_embeds, text_features.text_embeds)
