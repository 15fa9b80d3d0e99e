"""Archive-scale coarse stage: IVF shortlist + exact re-scoring, mmap embeddings, delete.

FAISS is a test dependency (`make setup` installs faiss-cpu), so nothing here is skipped.
"""

from __future__ import annotations

import json

import faiss  # noqa: F401 - imported so a missing faiss-cpu fails loudly instead of skipping
import numpy as np
import pytest
import torch
from tests.helpers.retrieval import random_images, tiny_model, tiny_processor

from modeling_mtgfe.retrieval import coarse_topk
from mtgfe.search.coarse_index import (
    EMBEDDINGS_FILE,
    IVF_FILE,
    TOMBSTONES_FILE,
    ShortlistCoarse,
    exact_topk_rows,
    open_embeddings,
    write_embeddings,
)
from mtgfe.search.gallery_index import GalleryIndex

QUERY = "two white planes parked near the terminal"


def clustered(n, dim=32, clusters=40, seed=0):
    """Unit vectors around `clusters` centres: the structure IVF relies on (real embeddings are clustered too)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=g), dim=-1)
    x = centres[torch.randint(0, clusters, (n,), generator=g)] + 0.35 * torch.randn(n, dim, generator=g) / dim**0.5
    return torch.nn.functional.normalize(x, dim=-1)


def test_shortlist_recall_and_exact_order_given_the_shortlist():
    embeds = clustered(4000)
    embeds[123] = embeds[3000]  # an exact duplicate: a tie group of two
    queries = clustered(20, seed=1)
    queries[0] = embeds[3000]
    coarse = ShortlistCoarse(embeds, shortlist=512, nprobe=8)
    got, want = coarse(queries, 32), coarse_topk(queries, embeds, 32)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(got.indices, want.indices)])
    assert recall >= 0.95
    for a, sa, b, sb in zip(got.indices, got.scores, want.indices, want.scores):
        if set(b.tolist()) <= set(a.tolist()):  # the shortlist held the exact top-k: identical ranking
            assert a.tolist() == b.tolist()
            torch.testing.assert_close(sa, sb)
    assert got.indices[0][:2].tolist() == [123, 3000]  # tie kept whole, ascending row order


def test_exact_topk_rows_matches_coarse_topk_on_the_subset():
    embeds = clustered(300)
    rows = torch.tensor([250, 3, 17, 99, 100, 4])
    q = clustered(2, seed=3)
    got = exact_topk_rows(q, embeds, rows, 3)
    sub = coarse_topk(q, embeds[torch.sort(rows).values], 3)
    assert [g.tolist() for g in got.indices] == [torch.sort(rows).values[s].tolist() for s in sub.indices]


def test_embeddings_file_is_memory_mapped(tmp_path):
    x = clustered(50)
    write_embeddings(tmp_path, x)
    mapped = open_embeddings(tmp_path / EMBEDDINGS_FILE)
    assert torch.equal(mapped, x)
    assert isinstance(np.load(tmp_path / EMBEDDINGS_FILE, mmap_mode="r"), np.memmap)


@pytest.fixture(scope="module")
def parts():
    return tiny_model(), tiny_processor(), random_images(12, seed=9)


def test_index_load_maps_embeddings_and_delete_persists(parts, tmp_path):
    model, processor, images = parts
    index = GalleryIndex.build(model, processor, images, output_dir=tmp_path / "idx", progress=False, shard_size=5)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["embeddings_file"]["count"] == 12 and (tmp_path / "idx" / EMBEDDINGS_FILE).is_file()
    loaded = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor)
    eager = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor, mmap_embeddings=False)
    assert torch.equal(loaded.image_embeds, eager.image_embeds) and torch.equal(loaded.image_embeds, index.image_embeds)
    before = loaded.search(QUERY, k=12, top_k=12, score="itm")
    victim = before[0]["image"]
    assert loaded.delete([victim]) == 1 and loaded.delete([victim]) == 0
    assert (tmp_path / "idx" / TOMBSTONES_FILE).is_file()
    with pytest.raises(KeyError, match="nope"):
        loaded.delete(["nope"])
    after = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor).search(QUERY, k=12, top_k=11, score="itm")
    assert victim not in [h["image"] for h in after]
    assert [h["image"] for h in after] == [h["image"] for h in before if h["image"] != victim]
    assert loaded.live_count == 11


def test_ivf_path_in_the_index_matches_exact_and_survives_add_and_delete(parts, tmp_path):
    model, processor, images = parts
    index = GalleryIndex.build(model, processor, images, output_dir=tmp_path / "idx", progress=False)
    exact = index.search([QUERY, "a river"], k=6, top_k=6, score="itm")
    ivf = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor)
    ivf.coarse_min_items = 4  # force the archive-scale path on a small gallery
    ivf.coarse_options = {"shortlist": 12, "nprobe": 3}  # shortlist = whole gallery: must equal exact
    got = ivf.search([QUERY, "a river"], k=6, top_k=6, score="itm")
    assert [[h["image"] for h in q] for q in got] == [[h["image"] for h in q] for q in exact]
    ivf.coarse_options = {"shortlist": 8, "nprobe": 3}
    ivf.save(tmp_path / "idx")
    assert (tmp_path / "idx" / IVF_FILE).is_file()
    ivf.add(random_images(3, seed=11), progress=False)
    ivf.save(tmp_path / "idx")
    reopened = GalleryIndex.load(tmp_path / "idx", model=model, processor=processor)
    reopened.coarse_min_items, reopened.coarse_options = 4, {"shortlist": 8, "nprobe": 4}
    coarse = reopened._scale_coarse_fn()
    assert isinstance(coarse, ShortlistCoarse) and coarse.index.ntotal == 15
    hits = reopened.search(QUERY, k=5, top_k=5, score="filter")
    victim = hits[0]["image"]
    reopened.delete([victim])
    assert coarse.index.ntotal == 14
    assert victim not in [h["image"] for h in reopened.search(QUERY, k=5, top_k=5, score="filter")]
