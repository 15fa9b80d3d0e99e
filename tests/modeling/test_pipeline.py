"""`rs-retrieval` pipeline: the three ways to load it, batched/image queries, and up-front errors."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.retrieval import CAPTIONS, random_images, tiny_model, tiny_processor, write_images
from tests.helpers.isolated import run_isolated
from transformers import pipeline

from mtgfe.search.gallery_index import GalleryIndex
from modeling_mtgfe.pipeline_mtgfe import MTGFERetrievalPipeline, register_pipeline, save_for_pipeline
from modeling_mtgfe.retrieval import encode_images, encode_texts, rank_candidates, rerank

QUERY = "two white planes parked near the terminal"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    register_pipeline()
    root = tmp_path_factory.mktemp("pipe")
    paths = write_images(root / "gallery", 8, seed=3)
    return tiny_model(), tiny_processor(), root, paths


@pytest.fixture(scope="module")
def pipe(parts):
    model, processor, _, _ = parts
    return pipeline("rs-retrieval", model=model, processor=processor)


def check_hits(hits, top_k):
    assert len(hits) == top_k
    assert [h["rank"] for h in hits] == list(range(1, top_k + 1))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all({"image", "score", "filter_score", "rank"} <= set(h) for h in hits)


def test_model_object_with_processor_matches_the_scoring_core(parts, pipe):
    model, processor, root, paths = parts
    assert isinstance(pipe, MTGFERetrievalPipeline)
    hits = pipe(QUERY, gallery=[str(p) for p in paths], top_k=3, k=5, score="itm")
    check_hits(hits, 3)
    # Same numbers as the core API used directly.
    feats = encode_images(model, processor, [str(p) for p in paths], progress=False)
    texts = encode_texts(model, processor, [QUERY])
    ranked = rank_candidates(rerank(model, feats, texts, k=5, direction="t2i"), 0, "t2i", texts)
    assert [h["index"] for h in hits] == [i for i, _, _ in ranked[:3]]
    assert [h["image"] for h in hits] == [str(paths[i]) for i, _, _ in ranked[:3]]
    torch.testing.assert_close(torch.tensor([h["score"] for h in hits]), torch.tensor([s for _, s, _ in ranked[:3]]))


def test_folder_index_pil_galleries_and_batched_queries(parts, pipe):
    model, processor, root, paths = parts
    batched = pipe([QUERY, "a green farmland with a river"], gallery=str(root / "gallery"), top_k=2, k=4)
    assert len(batched) == 2 and all(len(hits) == 2 for hits in batched)
    assert all(h["image"].startswith(str(root / "gallery")) for h in batched[0])
    index = GalleryIndex.build(model, processor, str(root / "gallery"), progress=False)
    from_index = pipe(QUERY, gallery=index, top_k=2, k=4)
    assert [h["image"] for h in from_index] == [h["image"] for h in batched[0]]
    lean = GalleryIndex.build(model, processor, str(root / "gallery"), keep_tokens=False, progress=False)
    assert [h["image"] for h in pipe(QUERY, gallery=lean, top_k=2, k=4)] == [h["image"] for h in from_index]
    pil = random_images(5, seed=9)
    hits = pipe(QUERY, gallery=pil, top_k=2, k=3, score="filter")
    assert all(h["score"] == h["filter_score"] for h in hits)
    assert hits[0]["image"] is pil[hits[0]["index"]]


def test_image_queries_rank_candidate_texts(parts, pipe):
    model, processor, _, paths = parts
    hits = pipe(str(paths[0]), candidates=CAPTIONS, top_k=3, k=4)
    check_hits([{"image": None, **h} for h in hits], 3)
    assert all(h["text"] in CAPTIONS for h in hits)
    text_index = GalleryIndex.build(model, processor, CAPTIONS)
    via_index = pipe(random_images(1)[0], gallery=text_index, top_k=2, k=3)
    assert all(h["text"] in CAPTIONS for h in via_index)


@pytest.mark.parametrize(
    "inputs, kwargs, message",
    [
        ("", {"gallery": ["x.png"]}, "empty or blank"),
        ([], {"gallery": ["x.png"]}, "No query"),
        (3.5, {"gallery": ["x.png"]}, "float"),
        (QUERY, {"gallery": []}, "gallery is empty"),
        (QUERY, {}, "need gallery"),
        (QUERY, {"gallery": ["missing.png"]}, "missing.png"),
        (QUERY, {"gallery": ["x.png"], "k": 2, "top_k": 5}, "k=2 is smaller than top_k=5"),
        ("/no/such/image.tif", {"candidates": CAPTIONS}, "/no/such/image.tif"),
        ([QUERY, {"image": "/no/such/image.tif"}], {"gallery": ["x.png"]}, "mixes text and image"),
    ],
)
def test_errors_are_raised_before_work(pipe, inputs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(inputs, **kwargs)


def test_empty_folder_and_model_without_processor(parts, tmp_path):
    model, processor, _, _ = parts
    (tmp_path / "empty").mkdir()
    pipe = pipeline("rs-retrieval", model=model, processor=processor)
    with pytest.raises(ValueError, match="holds no images"):
        pipe(QUERY, gallery=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="needs an MTGFEProcessor"):
        pipeline("rs-retrieval", model=tiny_model())
    # A model object loaded from a folder that has processor files finds them by itself.
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    from modeling_mtgfe import MTGFEModel

    loaded = MTGFEModel.from_pretrained(folder)
    assert pipeline("rs-retrieval", model=loaded).processor is not None


def test_saved_folder_with_package_installed(parts, tmp_path):
    model, processor, root, _ = parts
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    processor.save_pretrained(plain)
    expected = pipeline("rs-retrieval", model=model, processor=processor)(QUERY, gallery=str(root / "gallery"), top_k=3, k=4)
    pipe = pipeline("rs-retrieval", model=str(plain))
    got = pipe(QUERY, gallery=str(root / "gallery"), top_k=3, k=4)
    assert [h["image"] for h in got] == [h["image"] for h in expected]
    # A save_for_pipeline folder declares custom_pipelines; transformers then wants trust_remote_code=True even
    # with the package installed (the registered model classes still win).
    shipped = save_for_pipeline(model, processor, tmp_path / "shipped")
    config = json.loads((tmp_path / "shipped" / "config.json").read_text())
    assert config["custom_pipelines"]["rs-retrieval"]["impl"] == "pipeline_mtgfe.MTGFERetrievalPipeline"
    trusted = pipeline("rs-retrieval", model=shipped, trust_remote_code=True)
    assert [h["image"] for h in trusted(QUERY, gallery=str(root / "gallery"), top_k=3, k=4)] == [h["image"] for h in expected]


def test_remote_code_folder_without_the_package(parts, tmp_path):
    model, processor, root, _ = parts
    folder = tmp_path / "shipped"
    save_for_pipeline(model, processor, folder)
    expected = pipeline("rs-retrieval", model=model, processor=processor)(QUERY, gallery=str(root / "gallery"), top_k=3, k=4)
    result = run_isolated(
        f"""
        import json
        from transformers import pipeline
        pipe = pipeline(model={str(folder)!r}, trust_remote_code=True)
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        hits = pipe({QUERY!r}, gallery={str(root / "gallery")!r}, top_k=3, k=4)
        texts = pipe({str(next((root / "gallery").glob("*.png")))!r}, candidates={CAPTIONS!r}, top_k=2, k=3)
        print("HITS", json.dumps([[h["image"], h["score"]] for h in hits]))
        print("TEXTS", len(texts))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("HITS"))
    hits = json.loads(line.split(" ", 1)[1])
    assert [h[0] for h in hits] == [h["image"] for h in expected]
    torch.testing.assert_close(torch.tensor([h[1] for h in hits]), torch.tensor([h["score"] for h in expected]))
    assert "TEXTS 2" in result.stdout


def test_hits_carry_the_itm_score_apart_from_the_filter_cosine(parts, pipe):
    _, _, _, paths = parts
    gallery = [str(p) for p in paths]
    mixed = pipe(QUERY, gallery=gallery, top_k=3, k=5, score="itm+itc", alpha=2.0)
    for hit in mixed:
        assert 0.0 <= hit["itm_score"] <= 1.0
        assert hit["score"] == pytest.approx(hit["itm_score"] + 2.0 * hit["filter_score"], abs=1e-5)
    itm = pipe(QUERY, gallery=gallery, top_k=3, k=5, score="itm")
    assert all(hit["score"] == hit["itm_score"] for hit in itm)
    assert all("itm_score" not in hit for hit in pipe(QUERY, gallery=gallery, top_k=3, k=5, score="filter"))


def test_return_maps_gives_each_hit_the_grounding_map_of_its_stored_tokens(parts, pipe):
    model, processor, root, paths = parts
    index = GalleryIndex.build(model, processor, str(root / "gallery"), progress=False)
    hits = pipe(QUERY, gallery=index, top_k=3, k=5, return_maps=True)
    encoded = processor(text=[QUERY], return_tensors="pt")
    rows = torch.tensor([h["index"] for h in hits])
    expected = model.ground(index.image_tokens[rows], encoded["input_ids"], encoded["attention_mask"])
    for hit, query_map in zip(hits, expected.query_maps):
        assert hit["map"].shape == (4, 4) and hit["map_layer"] == expected.layer
        torch.testing.assert_close(hit["map"], query_map)
        words = [word for word, _ in hit["map_words"]]
        assert 1 <= len(words) <= 3 and all(word in processor.tokenizer.tokenize(QUERY) or word in QUERY for word in words)
        shares = [share for _, share in hit["map_words"]]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-6
    # an index without tokens re-encodes the hits' images: the same maps up to the stored tokens' precision
    lean = GalleryIndex.build(model, processor, str(root / "gallery"), keep_tokens=False, progress=False)
    lean_hits = pipe(QUERY, gallery=lean, top_k=3, k=5, return_maps=True)
    assert [h["index"] for h in lean_hits] == [h["index"] for h in hits]
    for a, b in zip(lean_hits, hits):
        assert torch.corrcoef(torch.stack([a["map"].flatten(), b["map"].flatten()]))[0, 1] > 0.99
    assert "map" not in pipe(QUERY, gallery=index, top_k=1, k=5)[0]
    # image queries: the map lies on the query image, one per caption hit
    image_hits = pipe(str(paths[0]), candidates=CAPTIONS, top_k=2, k=4, return_maps=True)
    assert all(h["map"].shape == (4, 4) for h in image_hits)
    with pytest.raises(ValueError, match="return_maps"):
        pipe(QUERY, gallery=index, return_maps="yes")
