"""Sharded encoding: 2 processes (torchrun, gloo on CPU) + `datasets` sharding, a killed
worker's rerun, and the merge equal to encoding in one process, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from datasets import Dataset, Features, Image, Sequence, Value
from tests.helpers.retrieval import random_images, tiny_model, tiny_processor

from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.search.sharded_encode import PARTS_DIR, encode_shard, merge_parts

CHUNK = 3


def _dataset(n=11):
    features = Features({"image": Image(), "captions": Sequence(Value("string")), "image_id": Value("int64"),
                         "filename": Value("string")})
    return Dataset.from_dict({"image": random_images(n, seed=4), "captions": [[f"caption {i}"] for i in range(n)],
                              "image_id": list(range(n)), "filename": [f"img_{i:02d}.png" for i in range(n)]},
                             features=features)


def test_two_process_encoding_survives_a_killed_worker_bit_identically(tmp_path):
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = _dataset()
    data.save_to_disk(str(tmp_path / "data"))

    # Reference: both ranks' shards encoded one after the other in this process, then merged.
    for rank in range(2):
        encode_shard(model, processor, data, rank, 2, tmp_path / "ref", chunk_size=CHUNK)
    ref = merge_parts(model, processor, len(data), 2, tmp_path / "ref", chunk_size=CHUNK)
    assert [it["id"] for it in ref.items] == data["filename"]  # contiguous shards in rank order = dataset order

    # Worker 1 "killed" after one chunk, then the real 2-process run (torchrun, gloo) finishes the job.
    assert encode_shard(model, processor, data, 1, 2, tmp_path / "run", chunk_size=CHUNK, stop_after_chunks=1) == 1
    assert len(list((tmp_path / "run" / PARTS_DIR).glob("*.safetensors"))) == 1
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "mtgfe.search.cli", "sharded-encode", "--model", str(tmp_path / "model"), "--dataset-dir",
           str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--chunk-size", str(CHUNK), "--backend", "gloo"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = GalleryIndex.load(tmp_path / "run", model=model, processor=processor, mmap_embeddings=False)
    assert [it["id"] for it in merged.items] == [it["id"] for it in ref.items]
    assert torch.equal(merged.image_embeds, ref.image_embeds)
    assert torch.equal(merged.image_tokens[torch.arange(len(merged))], ref.image_tokens[torch.arange(len(ref))])
    single = GalleryIndex.build(model, processor, data, progress=False)
    torch.testing.assert_close(merged.image_embeds, single.image_embeds)  # batching differs: equal up to float noise
