"""Archive-scale coarse stage: build time, disk, peak RAM of a search process, latency, coarse recall.

What is real and what is synthetic (stated in the table too):

* Embeddings are **synthetic**: unit vectors of the small preset's width (256) around 1,000 random
  centres (clustered like real filter embeddings; uniform random vectors would be the worst case for IVF).
  Queries are perturbed gallery vectors (a query lies near its matches, as text queries do).
* The coarse stage is the package's own `ShortlistCoarse` (IVF-Flat, nlist = √N, nprobe 32, shortlist
  4,096, exact re-scoring from the memory-mapped `embeddings.npy`); recall@32 is against exact
  `coarse_topk` on the same vectors.
* Fusion tokens: the small preset's real size per item (64 × 384) stored as **float16**; only the first
  `--token-rows` items get tokens on disk (1M × 48 KiB = 49 GB does not fit the 64 GB shared disk with
  everything else); candidates are mapped into that subset (`row % token_rows`), so each query still
  reads 32 scattered token rows from a memory-mapped shard. Disk in the table = what a full index
  would take (embeddings + IVF + N × tokens), computed, with the measured subset noted.
* Query latency = text encoding + coarse + token gather + ITM of k = 32 candidates with the small
  preset (random init: speed does not depend on the weights), in a **separate process** whose VmHWM is
  the peak RAM; fp32 and bf16 (model and tokens cast to bfloat16).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python experiments/speed/bench_index_scale.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

DIM, TOKENS, HIDDEN = 256, 64, 384


def synthetic(n: int, seed: int, centres: np.ndarray, noise: float = 0.6, chunk: int = 100_000):
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + noise * rng.standard_normal((m, DIM)).astype(np.float32) / DIM**0.5
        yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(directory: Path, n: int, token_rows: int) -> dict:
    import torch
    from safetensors.torch import save_file

    from mtgfe.search.coarse_index import EMBEDDINGS_FILE, ShortlistCoarse, open_embeddings

    directory.mkdir(parents=True, exist_ok=True)
    centres = np.random.default_rng(0).standard_normal((1000, DIM)).astype(np.float32)
    t0 = time.perf_counter()
    mm = np.lib.format.open_memmap(directory / EMBEDDINGS_FILE, mode="w+", dtype=np.float32, shape=(n, DIM))
    row = 0
    for block in synthetic(n, 1, centres):
        mm[row : row + len(block)] = block
        row += len(block)
    mm.flush()
    del mm
    t_embed = time.perf_counter() - t0
    embeds = open_embeddings(directory / EMBEDDINGS_FILE)
    t0 = time.perf_counter()
    coarse = ShortlistCoarse(embeds)
    coarse.save(directory)
    t_ivf = time.perf_counter() - t0
    rows = min(n, token_rows)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(2)
    save_file({"image_tokens": torch.randn(rows, TOKENS, HIDDEN, generator=g).half()}, str(directory / "tokens.safetensors"))
    t_tok = time.perf_counter() - t0
    queries = np.concatenate(list(synthetic(64, 3, centres, noise=0.9)))
    np.save(directory / "queries.npy", queries)
    return {"build_embeddings_s": round(t_embed, 1), "build_ivf_s": round(t_ivf, 1), "write_tokens_s": round(t_tok, 1),
            "token_rows_on_disk": rows, "nlist": int(coarse.index.nlist)}


def worker(directory: Path, dtype_name: str, queries_n: int) -> dict:
    """One search process: open the index, run queries, report latencies and VmHWM."""
    import torch
    from safetensors import safe_open

    from modeling_mtgfe import MTGFEConfig, MTGFEModel
    from modeling_mtgfe.retrieval import coarse_topk
    from mtgfe.processing import load_default_tokenizer
    from mtgfe.search.coarse_index import EMBEDDINGS_FILE, ShortlistCoarse, open_embeddings

    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    embeds = open_embeddings(directory / EMBEDDINGS_FILE)
    coarse = ShortlistCoarse.open(directory, embeds, set())
    handle = safe_open(str(directory / "tokens.safetensors"), framework="pt")
    tokens = handle.get_slice("image_tokens")
    token_rows = tokens.get_shape()[0]
    torch.manual_seed(0)
    model = MTGFEModel(MTGFEConfig.from_preset("small")).eval().to(dtype)
    tokenizer = load_default_tokenizer()
    queries = torch.from_numpy(np.load(directory / "queries.npy"))[:queries_n]
    text = tokenizer(["two white planes parked near the terminal"], padding=True, truncation=True, return_tensors="pt")
    latencies, recalls, shortlists, coarse_times = [], [], [], []
    with torch.no_grad():
        for q in queries:
            t0 = time.perf_counter()
            feats = model.get_text_retrieval_features(text["input_ids"], text["attention_mask"])
            t1 = time.perf_counter()
            cands = coarse(q[None], 32)
            coarse_times.append(time.perf_counter() - t1)
            idx = cands.indices[0][:32]
            rows = sorted({int(r) % token_rows for r in idx})
            cand_tokens = torch.stack([tokens[r : r + 1][0] for r in rows]).to(dtype)
            model.compute_itm_scores(cand_tokens, feats.text_states, feats.attention_mask)
            latencies.append(time.perf_counter() - t0)
            shortlists.append(idx)
    # Peak RAM of the search itself, read before the exact scan below (which pages in every embedding).
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    for q, idx in zip(queries[:32], shortlists[:32]):
        exact = coarse_topk(q[None], embeds, 32).indices[0]
        recalls.append(len(set(idx.tolist()) & set(exact.tolist())) / len(exact))
    warm = latencies[2:] or latencies
    return {"dtype": dtype_name, "p50_ms": round(1000 * float(np.percentile(warm, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(warm, 95)), 1),
            "coarse_p50_ms": round(1000 * float(np.percentile(coarse_times[2:] or coarse_times, 50)), 1),
            "coarse_p95_ms": round(1000 * float(np.percentile(coarse_times[2:] or coarse_times, 95)), 1),
            "load_avg_1min": round(os.getloadavg()[0], 1), "peak_rss_gib": round(hwm_kb / 2**20, 2),
            "recall_at_32": round(float(np.mean(recalls)), 4), "queries": len(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--root", default="/tmp/mtgfe_bench_scale")
    parser.add_argument("--token-rows", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--worker", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--output", default=None)
    parser.add_argument("--skip-build", action="store_true", help="reuse the index folders of an earlier run")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker), args.dtype, args.queries)))
        return 0
    rows = []
    for n in args.sizes:
        directory = Path(args.root) / f"n{n}"
        if args.skip_build and (directory / "build.json").is_file():
            info = json.loads((directory / "build.json").read_text())
        else:
            info = build(directory, n, args.token_rows)
            (directory / "build.json").write_text(json.dumps(info))
        measured_disk = du(directory)
        token_bytes = TOKENS * HIDDEN * 2
        full_disk = measured_disk - info["token_rows_on_disk"] * token_bytes + n * token_bytes
        row = {"n": n, **info, "disk_measured_gb": round(measured_disk / 1e9, 3), "disk_full_gb": round(full_disk / 1e9, 2)}
        for dtype in ("float32", "bfloat16"):
            out = subprocess.run([sys.executable, __file__, "--worker", str(directory), "--dtype", dtype,
                                  "--queries", str(args.queries)], capture_output=True, text=True, check=True)
            row[dtype] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.output:
        from mtgfe.utils.io import atomic_write_json

        atomic_write_json(args.output, {"rows": rows, "machine": os.uname().nodename, "cpus": os.cpu_count()}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
