"""Retrieval benchmarks for mtgfe (prints tables; no pass/fail). See experiments/speed/README.md.

(a) filtered (k = 8, 16, 32, 64) vs exhaustive re-ranking on a model + dataset: wall time, fusion passes,
    speed-up, mR change; plus re-encoding candidates instead of caching tokens.
(b) ITM scoring throughput (pairs/s): mtgfe's pair scorer vs transformers' BlipForImageTextRetrieval
    (use_itm_head=True) at the same text width / heads / depth and image-token count (random weights).
(c) text-query latency vs gallery size with synthetic filter embeddings and k = 32 re-ranking.
(d) peak memory (ru_maxrss deltas in fresh processes, tracemalloc for Python objects) of index
    building and search.

    python experiments/speed/bench_retrieval.py --quick
    python experiments/speed/bench_retrieval.py --model runs/ucm          # UCM test split
    python experiments/speed/bench_retrieval.py --model runs/ucm --synthetic 200
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

# Before torch loads libgomp: with the default (spinning) OpenMP wait policy, threads left spinning after
# an aten parallel region (e.g. an activation over a conv feature map) starve the next MKL GEMM on this
# 2-core machine: a 3-layer text encode measured 272 ms instead of 5 ms right after an EfficientNet
# forward (README "OpenMP wait policy"). Override with OMP_WAIT_POLICY=ACTIVE to see it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("bench_retrieval")


# ----------------------------------------------------------------------------------------------- setup
def make_processor(config, captions=None):
    """MTGFEProcessor sized for the model: the bundled BERT tokenizer when the vocab matches, else WordPiece."""
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, build_wordpiece_tokenizer, load_default_tokenizer

    size = int(config.image_size)
    try:
        tokenizer = load_default_tokenizer()
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError("vocabulary larger than the model's")
    except (ImportError, FileNotFoundError, ValueError):
        tokenizer = build_wordpiece_tokenizer(captions or ["a plane", "a harbor with boats"], vocab_size=500)
    return MTGFEProcessor(MTGFEImageProcessor(size={"height": size, "width": size}), tokenizer)


def load_model(model_dir: str | None, preset: str):
    from transformers import AutoModel, AutoProcessor

    import modeling_mtgfe  # noqa: F401 - registers the Auto classes
    from modeling_mtgfe import MTGFEConfig, MTGFEModel

    if model_dir:
        model = AutoModel.from_pretrained(model_dir).eval()
        try:
            processor = AutoProcessor.from_pretrained(model_dir)
        except (OSError, ValueError, TypeError):
            processor = make_processor(model.config)
        return model, processor, model_dir
    torch.manual_seed(0)
    model = MTGFEModel(MTGFEConfig.from_preset(preset)).eval()
    return model, make_processor(model.config), f"random-init {preset} preset"


def load_data(args, image_size: int):
    from mtgfe.data.synthetic import load_synthetic

    if args.synthetic:
        return load_synthetic("test", num_scenes=args.synthetic, seed=0, image_size=max(16, image_size), view="images"), \
            f"synthetic test ({args.synthetic} scenes)"
    from mtgfe.data.annotations import load_rs_benchmark

    return load_rs_benchmark(args.dataset, split="test", view="images"), f"{args.dataset} test"


def timed(fn, *a, **kw):
    start = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - start


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n### {title}\n")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------- (a)
def bench_filtered_vs_exhaustive(args) -> None:
    from modeling_mtgfe.retrieval import encode_images, encode_texts, rerank
    from mtgfe.evaluation.metrics import retrieval_metrics

    model, processor, name = load_model(args.model, args.preset_a)
    dataset, data_name = load_data(args, model.config.image_size)
    images = list(dataset["image"])
    captions, txt2img = [], []
    for i, caps in enumerate(dataset["captions"]):
        captions.extend(caps)
        txt2img.extend([i] * len(caps))
    if not args.model:
        processor = make_processor(model.config, captions)
    image_feats, t_img = timed(encode_images, model, processor, images, batch_size=32, progress=False)
    text_feats, t_txt = timed(encode_texts, model, processor, captions)
    print(f"\n(a) model: {name}; data: {data_name}: {len(images)} images, {len(captions)} captions "
          f"({text_feats.num_distinct} distinct); encoding {t_img:.2f}s images + {t_txt:.2f}s texts"
          + ("" if args.model else "  [random weights: mR is chance level, timings are valid]"))
    ks = [k for k in args.ks if k < max(len(images), text_feats.num_distinct)]
    runs = []
    for k in [*ks, None]:
        result, seconds = timed(rerank, model, image_feats, text_feats, k=k, direction="both", batch_size=256)
        metrics = retrieval_metrics(result.scores_i2t, txt2img, scores_t2i=result.scores_t2i)
        runs.append((k, seconds, result.stats["fusion_passes"], metrics["mR"]))
    if ks:
        k_lean = ks[min(1, len(ks) - 1)]
        lean = type(image_feats)(embeds=image_feats.embeds, tokens=None)
        result, seconds = timed(rerank, model, lean, text_feats, k=k_lean, images=images, processor=processor,
                                cache_tokens=False)
        metrics = retrieval_metrics(result.scores_i2t, txt2img, scores_t2i=result.scores_t2i)
        lean_row = (f"{k_lean} re-encode", seconds, result.stats["fusion_passes"], metrics["mR"],
                    result.stats["images_encoded"])
    full_time, full_passes, full_mr = runs[-1][1], runs[-1][2], runs[-1][3]
    rows = [[("exhaustive" if k is None else k), round(s, 3), p, f"{full_passes / max(p, 1):.1f}×",
             f"{full_time / s:.1f}×", round(mr, 2), f"{mr - full_mr:+.2f}", ""] for k, s, p, mr in runs]
    if ks:
        rows.insert(min(1, len(ks) - 1) + 1, [lean_row[0], round(lean_row[1], 3), lean_row[2],
                                              f"{full_passes / max(lean_row[2], 1):.1f}×", f"{full_time / lean_row[1]:.1f}×",
                                              round(lean_row[3], 2), f"{lean_row[3] - full_mr:+.2f}",
                                              f"{lean_row[4]} images re-encoded"])
    table("(a) filtered vs exhaustive re-ranking (both directions, score=itm, tie rule: expected)",
          ["k", "wall s", "fusion passes", "fewer passes", "speed-up", "mR", "ΔmR vs exhaustive", "note"], rows)


# ----------------------------------------------------------------------------------------------- (b)
def _blip(config, num_image_tokens: int, text_layers: int):
    from transformers import BlipConfig, BlipForImageTextRetrieval

    text = config.text_config
    hidden = text.hidden_size
    patch = 16
    side = patch * max(1, round((num_image_tokens - 1) ** 0.5))
    blip_config = BlipConfig(
        text_config=dict(vocab_size=text.vocab_size, hidden_size=hidden, num_hidden_layers=text_layers,
                         num_attention_heads=text.num_attention_heads, intermediate_size=text.intermediate_size,
                         encoder_hidden_size=hidden, max_position_embeddings=text.max_position_embeddings),
        vision_config=dict(hidden_size=hidden, num_hidden_layers=BLIP_VISION_LAYERS, num_attention_heads=text.num_attention_heads,
                           intermediate_size=text.intermediate_size, image_size=side, patch_size=patch),
        image_text_hidden_size=config.embed_dim,
    )
    torch.manual_seed(0)
    return BlipForImageTextRetrieval(blip_config).eval(), side


BLIP_VISION_LAYERS = 4  # a small ViT: BLIP re-encodes the image for every pair, so its depth matters


def bench_itm_throughput(args) -> None:
    from modeling_mtgfe.retrieval import TextFeatures, score_pairs

    model, processor, name = load_model(None, args.preset_b)
    config = model.config
    base = model
    n_img, k = args.itm_images, args.itm_k
    with torch.no_grad():
        dummy = torch.zeros(1, 3, config.image_size, config.image_size)
        num_tokens = base.get_image_retrieval_features(dummy).image_tokens.shape[1]
    hidden = config.text_config.hidden_size
    length = args.text_len
    torch.manual_seed(0)
    tokens = torch.randn(n_img, num_tokens, hidden)
    m_txt = n_img * k  # distinct captions, every pair distinct (i2t: k per image)
    input_ids = torch.randint(1000, 2000, (m_txt, length))
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        states = base.encode_text(input_ids, mask)
    feats = TextFeatures(embeds=torch.zeros(m_txt, config.embed_dim), states=states, attention_mask=mask,
                         inverse=torch.arange(m_txt))
    pair_image = torch.arange(n_img).repeat_interleave(k)
    pair_text = torch.arange(m_txt)
    pairs = n_img * k
    rows = []

    def rate(fn, repeats=2):
        fn()  # warm-up
        best = min(timed(fn)[1] for _ in range(repeats))
        return pairs / best, best

    with torch.no_grad():
        r, s = rate(lambda: score_pairs(model, pair_image, pair_text, feats, image_tokens=tokens, batch_size=256))
        rows.append(["mtgfe score_pairs: cached tokens, K/V once per image, candidates batched", config.num_fusion_layers, round(r), round(s, 3)])

        def per_pair_kv():
            for start in range(0, pairs, 256):
                sl = slice(start, start + 256)
                model.compute_itm_scores(tokens[pair_image[sl]], states[pair_text[sl]], mask[pair_text[sl]])

        r, s = rate(per_pair_kv)
        rows.append(["mtgfe compute_itm_scores, K/V recomputed per pair", config.num_fusion_layers, round(r), round(s, 3)])

        for layers, label in ((config.num_fusion_layers, "fusion depth"), (config.text_config.num_hidden_layers, "full text depth")):
            blip, side = _blip(config, num_tokens, layers)
            image_embeds = torch.randn(n_img, num_tokens, hidden)

            def blip_cached():
                for start in range(0, pairs, 256):
                    sl = slice(start, start + 256)
                    emb = image_embeds[pair_image[sl]]
                    out = blip.text_encoder(input_ids=input_ids[pair_text[sl]], attention_mask=mask[pair_text[sl]],
                                            encoder_hidden_states=emb,
                                            encoder_attention_mask=torch.ones(emb.shape[:2], dtype=torch.long))
                    blip.itm_head(out.last_hidden_state[:, 0]).softmax(-1)

            r, s = rate(blip_cached, repeats=1)
            rows.append([f"BLIP text_encoder+itm_head, vision cached ({label})", layers, round(r), round(s, 3)])
            pixels = torch.randn(n_img, 3, side, side)
            chunk = 64

            def blip_full():
                for start in range(0, pairs, chunk):
                    sl = slice(start, start + chunk)
                    blip(input_ids=input_ids[pair_text[sl]], attention_mask=mask[pair_text[sl]],
                         pixel_values=pixels[pair_image[sl]], use_itm_head=True)

            if label == "fusion depth" or not args.quick:
                r, s = rate(blip_full, repeats=1)
                rows.append([f"BLIP forward(use_itm_head=True), vision per pair ({label}, ViT {BLIP_VISION_LAYERS}L)",
                             layers, round(r), round(s, 3)])
            del blip
    print(f"\n(b) {args.preset_b} preset widths: H={hidden}, heads={config.text_config.num_attention_heads}, "
          f"{num_tokens} image tokens, {length} text tokens; {n_img} images × {k} candidates = {pairs} pairs; "
          f"{torch.get_num_threads()} threads")
    table("(b) ITM scoring throughput", ["scorer", "layers run per pair", "pairs/s", "s per run"], rows)


# ----------------------------------------------------------------------------------------------- (c)
class PooledTokens:
    """Stand-in token store for huge galleries: row r returns pool[r % P] (a gather, like a memory-mapped read)."""

    def __init__(self, pool: torch.Tensor, size: int):
        self.pool, self.size = pool, size

    def __len__(self):
        return self.size

    def __getitem__(self, rows):
        return self.pool[torch.as_tensor(rows) % self.pool.shape[0]]


class PooledImages:
    """Gallery "files" for the re-encoding variant: row r is image r % P (decoding cost included)."""

    def __init__(self, images):
        self.images = images

    def __getitem__(self, row):
        return self.images[int(row) % len(self.images)]


def _latency_reencode(args, model, processor, embeds, queries, size) -> list:
    """Same search, but the k candidate images are re-encoded instead of read from cached tokens."""
    from PIL import Image

    from modeling_mtgfe.retrieval import ImageFeatures, coarse_topk, encode_texts, score_candidates

    generator = torch.Generator().manual_seed(0)
    side = int(model.config.image_size)
    pool = [Image.fromarray(torch.randint(0, 256, (side, side, 3), generator=generator, dtype=torch.uint8).numpy())
            for _ in range(16)]
    feats = ImageFeatures(embeds=embeds, tokens=None)
    totals, fusion = [], []
    for i, query in enumerate(queries[:3]):
        t0 = time.perf_counter()
        text = encode_texts(model, processor, [query])
        cands = coarse_topk(text.embeds, embeds, args.k_latency)
        t2 = time.perf_counter()
        score_candidates(model, feats, text, candidates_t2i=cands, score="itm+itc", alpha=1.0, build_matrices=False,
                         cache_tokens=False, images=PooledImages(pool), processor=processor)
        t3 = time.perf_counter()
        if i:
            totals.append((t3 - t0) * 1000)
            fusion.append((t3 - t2) * 1000)
    return [f"{size:,} re-encode", "", "", round(sum(fusion) / len(fusion), 1), round(sum(totals) / len(totals), 1), "",
            args.k_latency, "no" if sum(totals) / len(totals) >= 100 else "yes"]


def bench_latency(args) -> None:
    from modeling_mtgfe.retrieval import ImageFeatures, coarse_topk, encode_texts, score_candidates

    model, processor, name = load_model(None, args.preset_c)
    config = model.config
    with torch.no_grad():
        dummy = torch.zeros(1, 3, config.image_size, config.image_size)
        num_tokens = model.get_image_retrieval_features(dummy).image_tokens.shape[1]
    torch.manual_seed(0)
    pool = torch.randn(256, num_tokens, config.text_config.hidden_size)
    queries = ["two white planes parked near the terminal", "a green farmland with a river next to a road",
               "many cars in a parking lot near buildings", "a harbor with several white boats",
               "dense residential area with many trees"]
    rows = []
    for size in args.sizes:
        embeds = torch.nn.functional.normalize(torch.randn(size, config.embed_dim), dim=-1)
        feats = ImageFeatures(embeds=embeds, tokens=PooledTokens(pool, size))
        times = {"text": [], "coarse": [], "fusion": [], "total": [], "bf16": []}
        for autocast in (False, True):
            for i, query in enumerate(queries * args.latency_repeats):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    t0 = time.perf_counter()
                    text = encode_texts(model, processor, [query])
                    t1 = time.perf_counter()
                    cands = coarse_topk(text.embeds, embeds, args.k_latency)
                    t2 = time.perf_counter()
                    result = score_candidates(model, feats, text, candidates_t2i=cands, score="itm+itc", alpha=1.0,
                                              build_matrices=False)
                    t3 = time.perf_counter()
                if i == 0:
                    continue  # warm-up
                if autocast:
                    times["bf16"].append((t3 - t0) * 1000)
                    continue
                for key, value in (("text", t1 - t0), ("coarse", t2 - t1), ("fusion", t3 - t2), ("total", t3 - t0)):
                    times[key].append(value * 1000)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append([f"{size:,}", round(med["text"], 1), round(med["coarse"], 1), round(med["fusion"], 1),
                     round(med["total"], 1), round(med["bf16"], 1), result.stats["fusion_passes"],
                     "yes" if med["total"] < 100 else "no"])
        if size == args.sizes[0]:
            rows.append(_latency_reencode(args, model, processor, embeds, queries, size))
        del embeds, feats
        gc.collect()
    print(f"\n(c) {args.preset_c} preset ({name}), k={args.k_latency}, {num_tokens} image tokens, random filter embeddings "
          f"(embed_dim {config.embed_dim}); tokens gathered from a pool (see README); median of "
          f"{len(queries) * args.latency_repeats - 1} queries, one query per call")
    table("(c) text-query latency vs gallery size (ms)",
          ["gallery", "encode text", "coarse top-k", "re-rank (K/V + fusion)", "total", "total, bf16 autocast",
           "fusion passes", "fp32 < 100 ms"], rows)


# ----------------------------------------------------------------------------------------------- (d)
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so each step's own peak is visible (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_since(rss_before: float) -> float:
    """Peak resident growth since `rss_before`: VmHWM after a reset, else the lifetime ru_maxrss."""
    hwm = _status_mb("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return hwm - rss_before


def _memory_child(preset: str, n_images: int, keep_tokens: bool, queue) -> None:
    torch.set_num_threads(2)
    logging.disable(logging.WARNING)
    from mtgfe.search.gallery_index import GalleryIndex
    from mtgfe.data.synthetic import load_synthetic

    model, processor, _ = load_model(None, preset)
    dataset = load_synthetic("test", num_scenes=n_images, seed=0, image_size=max(16, model.config.image_size), view="images")
    images = list(dataset["image"])
    captions = [c for caps in dataset["captions"] for c in caps[:1]]
    gc.collect()
    _reset_peak()
    before = _status_mb("VmRSS") or 0.0
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        index, t_build = timed(GalleryIndex.build, model, processor, images, output_dir=tmp, batch_size=16,
                               keep_tokens=keep_tokens, progress=False)
        _, py_build = tracemalloc.get_traced_memory()
        build_peak = _peak_since(before)
        del index
        gc.collect()
        tracemalloc.reset_peak()
        _reset_peak()
        before = _status_mb("VmRSS") or 0.0
        loaded = GalleryIndex.load(tmp, model=model, processor=processor)
        _, t_search = timed(loaded.search, captions[:8], k=32, top_k=5, score="itm+itc" if keep_tokens else "filter")
        _, py_search = tracemalloc.get_traced_memory()
        search_peak = _peak_since(before)
        disk = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
    queue.put(dict(build_rss=build_peak, search_rss=search_peak, py_build=py_build / 2**20,
                   py_search=py_search / 2**20, disk=disk, t_build=t_build, t_search=t_search / 8))


def bench_memory(args) -> None:
    ctx = mp.get_context("spawn")
    rows = []
    for keep_tokens in (True, False):
        queue = ctx.Queue()
        proc = ctx.Process(target=_memory_child, args=(args.preset_d, args.memory_images, keep_tokens, queue))
        proc.start()
        result = queue.get(timeout=1800)
        proc.join()
        rows.append(["tokens" if keep_tokens else "embeddings only", args.memory_images, round(result["build_rss"], 1),
                     round(result["py_build"], 2), round(result["search_rss"], 1), round(result["py_search"], 2),
                     round(result["disk"], 2), round(result["t_build"], 2), round(result["t_search"] * 1000, 1)])
    print(f"\n(d) {args.preset_d} preset, synthetic images; RSS = peak resident growth during the step (VmHWM reset before it), "
          "Python = tracemalloc peak (Python objects only; torch tensors are not traced)")
    table("(d) peak memory of index building and search (MiB)",
          ["index", "images", "build RSS Δ", "build Python", "search RSS Δ", "search Python", "on disk", "build s",
           "search ms/query"], rows)


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="trained model folder for (a); default: random-init preset")
    parser.add_argument("--dataset", default="ucm", help="benchmark for (a) via load_rs_benchmark (test split)")
    parser.add_argument("--synthetic", type=int, default=None, help="use N synthetic test scenes for (a)")
    parser.add_argument("--ks", default="8,16,32,64")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--sections", default="abcd", help="which sections to run, e.g. 'bc'")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, fewer repeats (~2 min)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    args.ks = [int(k) for k in args.ks.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.preset_a, args.preset_b, args.preset_c, args.preset_d = "small", "small", "small", "small"
    args.itm_images, args.itm_k, args.text_len = 16, 32, 16
    args.k_latency, args.latency_repeats, args.memory_images = 32, 3, 256
    if args.quick:
        if args.synthetic is None and args.model is None:
            args.synthetic = 60
        args.preset_a = "tiny" if args.model is None else "small"
        args.ks = [k for k in args.ks if k <= 16] or args.ks[:1]
        args.sizes = [s for s in args.sizes if s <= 10000] or args.sizes[:1]
        args.itm_images, args.latency_repeats, args.memory_images = 8, 1, 64
    print(f"# mtgfe retrieval benchmark ({'quick' if args.quick else 'full'}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs visible, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    sections = {"a": bench_filtered_vs_exhaustive, "b": bench_itm_throughput, "c": bench_latency, "d": bench_memory}
    for key in args.sections:
        start = time.perf_counter()
        sections[key](args)
        print(f"\n[section {key}: {time.perf_counter() - start:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
