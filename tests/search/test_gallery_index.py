"""GalleryIndex: build from folders / datasets / texts, persistence, resume, add, model checks."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers.retrieval import CAPTIONS, InterruptingProcessor, random_images, tiny_model, tiny_processor, write_images

from mtgfe.search.gallery_index import (
    BUILD_STATE_NAME,
    MANIFEST_NAME,
    GalleryIndex,
    IndexMismatchError,
    faiss_topk,
    list_image_files,
)
from modeling_mtgfe.retrieval import coarse_topk

QUERY = "two white planes parked near the terminal"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    paths = write_images(root / "images", 10, seed=5)
    return tiny_model(), tiny_processor(), root, paths


def all_tokens(index):
    return index.image_tokens[torch.arange(len(index))]


def test_folder_listing_is_recursive_and_sorted(parts):
    _, _, root, paths = parts
    (root / "images" / "notes.txt").write_text("not an image")
    listed = list_image_files(root / "images")
    assert sorted(map(str, listed)) == sorted(map(str, paths))
    assert any("sub" in p.parts for p in listed)
    assert all(p.suffix in {".png", ".jpg", ".tif"} for p in listed)


def test_save_load_round_trip(parts, tmp_path):
    model, processor, root, _ = parts
    built = GalleryIndex.build(model, processor, root / "images", output_dir=tmp_path / "idx", batch_size=4,
                               shard_size=4, progress=False)
    manifest = json.loads((tmp_path / "idx" / MANIFEST_NAME).read_text())
    assert manifest["count"] == 10 and manifest["embed_dim"] == model.config.embed_dim
    assert manifest["image_size"] == 32 and manifest["has_tokens"] and len(manifest["shards"]) == 3
    assert {"model", "model_config_hash", "created", "mtgfe_version", "items"} <= set(manifest)
    assert not (tmp_path / "idx" / BUILD_STATE_NAME).exists()
    loaded = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor)
    assert torch.equal(loaded.image_embeds, built.image_embeds)
    assert torch.equal(all_tokens(loaded), all_tokens(built))
    assert loaded.items == built.items
    assert loaded.search(QUERY, k=4, top_k=3) == built.search(QUERY, k=4, top_k=3)
    # A second save elsewhere rewrites everything; leftovers are never half-written temp files.
    loaded.save(tmp_path / "copy", shard_size=100)
    again = GalleryIndex.load(tmp_path / "copy", model=model, processor=processor)
    assert torch.equal(all_tokens(again), all_tokens(built))
    assert not [p for p in (tmp_path / "copy").iterdir() if ".tmp-" in p.name]


def test_loading_with_another_model_names_both(parts, tmp_path):
    model, processor, root, _ = parts
    model.save_pretrained(tmp_path / "model_a")
    model_a = type(model).from_pretrained(tmp_path / "model_a")
    other = tiny_model(seed=1)
    other.save_pretrained(tmp_path / "model_b")
    model_b = type(model).from_pretrained(tmp_path / "model_b")
    GalleryIndex.build(model_a, processor, root / "images", output_dir=tmp_path / "idx", progress=False)
    with pytest.raises(IndexMismatchError) as error:
        GalleryIndex.load(tmp_path / "idx", model=model_b)
    assert "model_a" in str(error.value) and "model_b" in str(error.value)
    index = GalleryIndex.load(tmp_path / "idx", model=model_a, processor=processor)
    with pytest.raises(IndexMismatchError):
        index.search(QUERY, model=model_b, processor=processor)




def test_resume_after_interruption_gives_the_one_pass_index(parts, tmp_path):
    model, processor, root, _ = parts
    one_pass = GalleryIndex.build(model, processor, root / "images", output_dir=tmp_path / "one", batch_size=2,
                                  shard_size=4, progress=False)
    with pytest.raises(KeyboardInterrupt):
        GalleryIndex.build(model, InterruptingProcessor(processor, 3), root / "images", output_dir=tmp_path / "two",
                           batch_size=2, shard_size=4, progress=False)
    state = json.loads((tmp_path / "two" / BUILD_STATE_NAME).read_text())
    assert len(state["shards"]) == 1  # 4 images committed; batch 3 was pending, batch 4 died
    with pytest.raises(FileExistsError, match="resume"):
        GalleryIndex.build(model, processor, root / "images", output_dir=tmp_path / "two", batch_size=2, shard_size=4)
    with pytest.raises(FileNotFoundError, match="--resume"):
        GalleryIndex.load(tmp_path / "two")
    resumed = GalleryIndex.build(model, processor, root / "images", output_dir=tmp_path / "two", batch_size=2,
                                 shard_size=4, resume=True, progress=False)
    assert resumed.items == one_pass.items
    assert torch.equal(resumed.image_embeds, one_pass.image_embeds)
    assert torch.equal(all_tokens(resumed), all_tokens(one_pass))
    reloaded = GalleryIndex.load(tmp_path / "two", model=model)
    assert torch.equal(reloaded.image_embeds, one_pass.image_embeds)
    with pytest.raises(FileExistsError, match="finished index"):
        GalleryIndex.build(model, processor, root / "images", output_dir=tmp_path / "two", resume=True)


def test_add_appends_and_saves_only_the_new_shard(parts, tmp_path):
    model, processor, root, paths = parts
    index = GalleryIndex.build(model, processor, [str(p) for p in paths[:6]], output_dir=tmp_path / "idx",
                               batch_size=4, shard_size=4, progress=False)
    shard_files = sorted(p.name for p in (tmp_path / "idx").glob("shard_*"))
    assert index.add([str(p) for p in paths[6:]], progress=False) == 4
    assert len(index) == 10 and index.image_embeds.shape[0] == 10
    index.save(tmp_path / "idx")
    assert set(shard_files) <= {p.name for p in (tmp_path / "idx").glob("shard_*")}
    reloaded = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor)
    assert [it["image"] for it in reloaded.items] == [str(p) for p in paths]
    full = GalleryIndex.build(model, processor, [str(p) for p in paths], batch_size=4, progress=False)
    torch.testing.assert_close(reloaded.image_embeds, full.image_embeds, atol=1e-5, rtol=0)
    # Adding a folder adds only files the index does not hold yet.
    folder_index = GalleryIndex.build(model, processor, root / "images", progress=False)
    assert folder_index.add(root / "images", progress=False) == 0


def test_unreadable_files_error_or_are_skipped_loudly(parts, tmp_path, caplog):
    model, processor, _, _ = parts
    write_images(tmp_path / "imgs", 3, nested=False)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png.*skip-unreadable"):
        GalleryIndex.build(model, processor, tmp_path / "imgs", progress=False)
    with caplog.at_level("WARNING"):
        index = GalleryIndex.build(model, processor, tmp_path / "imgs", skip_unreadable=True, progress=False)
    assert len(index) == 3
    assert [p.endswith("broken.png") for p in index.manifest["skipped"]] == [True]
    assert "broken.png" in caplog.text


def test_dataset_source_keeps_ids_and_captions(parts):
    from mtgfe.data.synthetic import load_synthetic

    model, processor, _, _ = parts
    dataset = load_synthetic("test", num_scenes=5, seed=0, image_size=32, view="images")
    index = GalleryIndex.build(model, processor, dataset, batch_size=2, progress=False)
    assert len(index) == 5
    assert index.items[0]["image"] == dataset[0]["filename"]
    assert index.items[0]["captions"] == dataset[0]["captions"]
    hits = index.search(dataset[2]["captions"][0], k=4, top_k=2)
    assert len(hits) == 2 and "captions" in hits[0]


def test_text_index_round_trip_and_image_queries(parts, tmp_path):
    model, processor, _, paths = parts
    index = GalleryIndex.build(model, processor, CAPTIONS + [CAPTIONS[0]], output_dir=tmp_path / "texts")
    assert index.kind == "texts" and index.text_features.num_distinct == len(CAPTIONS)
    loaded = GalleryIndex.load(tmp_path / "texts", model=model, processor=processor)
    hits = loaded.search([str(paths[0]), str(paths[1])], k=4, top_k=3)
    assert len(hits) == 2 and all(h["text"] in CAPTIONS for h in hits[0])
    assert hits == index.search([str(paths[0]), str(paths[1])], k=4, top_k=3)


def test_embeddings_only_index(parts):
    model, processor, root, paths = parts
    index = GalleryIndex.build(model, processor, random_images(6), keep_tokens=False, progress=False)
    assert index.image_tokens is None
    hits = index.search(QUERY, top_k=3, score="filter")
    assert [h["rank"] for h in hits] == [1, 2, 3]
    with pytest.raises(ValueError, match="no fusion tokens"):
        index.search(QUERY, k=4, top_k=3, score="itm")
    # A folder index without tokens re-encodes its k candidates from the files: same ranking as with tokens.
    lean = GalleryIndex.build(model, processor, root / "images", keep_tokens=False, progress=False)
    full = GalleryIndex.build(model, processor, root / "images", progress=False)
    got, want = lean.search(QUERY, k=4, top_k=3, score="itm"), full.search(QUERY, k=4, top_k=3, score="itm")
    assert [h["image"] for h in got] == [h["image"] for h in want]
    torch.testing.assert_close(torch.tensor([h["score"] for h in got]), torch.tensor([h["score"] for h in want]))


def test_faiss_coarse_stage_matches_torch():
    import faiss  # faiss-cpu is installed by `make setup` (CI too): no skip
    torch.manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(200, 16), dim=-1)
    embeds[50] = embeds[7]  # a tie
    queries = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    queries[0] = embeds[7]
    flat = faiss.IndexFlatIP(16)
    flat.add(embeds.numpy())
    got, want = faiss_topk(flat, queries, embeds, 5), coarse_topk(queries, embeds, 5)
    for a, b in zip(got.indices, want.indices):
        assert set(a.tolist()) == set(b.tolist())


class _NumpyFlatIP:
    """Stand-in for `faiss.IndexFlatIP` (same `search` contract) so the tie completion runs without faiss."""

    def __init__(self, embeds):
        self.embeds = embeds.numpy()

    def search(self, queries, k):
        import numpy as np

        sims = queries @ self.embeds.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, order, axis=1), order


def test_faiss_style_coarse_stage_completes_tie_groups():
    torch.manual_seed(0)
    embeds = torch.nn.functional.normalize(torch.randn(60, 8), dim=-1)
    embeds[20:40] = embeds[3]  # a tie group of 21 rows, longer than the 2k+8 probe
    queries = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    queries[0] = embeds[3]
    got = faiss_topk(_NumpyFlatIP(embeds), queries, embeds, 4)
    want = coarse_topk(queries, embeds, 4)
    for a, b in zip(got.indices, want.indices):
        assert set(a.tolist()) == set(b.tolist())
    assert len(got.indices[0]) == 21
