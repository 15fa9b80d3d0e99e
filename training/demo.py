"""`make demo`: the main job end to end — train, index held-out images, search by text, report.

    python -m mtgfe.training.demo                                  # built-in synthetic scenes (default)
    python -m mtgfe.training.demo --data ucm --data-dir DATA_DIR      # or set $MTGFE_DATA_DIR

Steps (each one a library call that the CLIs use too):
1. train a model with the project's own trainer (`synthetic_demo` config, or the two-stage `ucm_fusion`
   recipe for UCM: stage 1 `ucm_dual_finetune` first);
2. write the held-out images to a folder and index it (`GalleryIndex.build`, the `mtgfe-index` path);
3. run a few text queries through the two-stage search; the filter's top-k and the re-ranked top-k are
   kept side by side (synthetic: queries the generator can draw, each hit checked against its scene
   graph for kind / colour / count);
4. evaluate the held-out split filtered (top-k) and exhaustively and print R@K / mR side by side;
   synthetic also scores held-out minimal pairs (`evaluation.compositional.synthetic_pairs`: count, colour, spatial,
   binding) with the filter, ITM and ITM + alpha * ITC;
5. write `results.html` (both top-k lists per query, the tables) and `summary.json` (the numbers and the
   demo's pass/fail checks: held-out mR >= 30, the example queries' re-ranked hits match, and ITM alone
   tells held-out spatial minimal pairs apart).

Synthetic-data numbers only show that the pipeline learns; they are never benchmark results.
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m mtgfe.training.demo`: the thread policy must be set before torch loads
    from mtgfe.utils.entrypoints import prefer_passive_omp

    prefer_passive_omp()

import argparse
import html
import io
import json
import logging
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Sequence

from PIL import Image

from modeling_mtgfe import MTGFEModel
from mtgfe.data.loading import load_dataset_split
from mtgfe.evaluation.compositional.synthetic_pairs import NOTE as PAIRS_NOTE, SCORERS, evaluate_minimal_pairs, \
    format_pairs_table, load_synthetic_pairs
from mtgfe.evaluation.retrieval import evaluate_model, format_table
from mtgfe.processing import MTGFEProcessor
from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.search.report_html import write_html
from mtgfe.utils.io import atomic_write_json

from .cli import train_recipe
from .config import load_config

logger = logging.getLogger("mtgfe.demo")

# The trainer config each dataset starts from, and the held-out split that becomes the gallery.
DEMO_CONFIGS = {"synthetic": ("synthetic_demo", "test"), "ucm": ("ucm_fusion", "test")}
# Synthetic queries name what the generator draws (kind, colour, count); `want` is what a hit's scene
# graph must hold for the hit to count as a match. Each has >= 5 matching scenes among the 150 held-out
# test scenes (seed 0), so a perfect top-5 is possible.
SYNTHETIC_QUERIES = [
    {"text": "three blue planes parked on the paved area", "want": {"kind": "plane", "colour": "blue", "count": 3}},
    {"text": "a yellow car parked", "want": {"kind": "car", "colour": "yellow", "count": 1}},
    {"text": "a blue storage tank", "want": {"kind": "storage tank", "colour": "blue", "count": 1}},
    {"text": "two red buildings", "want": {"kind": "building", "colour": "red", "count": 2}},
    {"text": "four white cars parked", "want": {"kind": "car", "colour": "white", "count": 4}},
]
DEMO_QUERIES = {
    "synthetic": [q["text"] for q in SYNTHETIC_QUERIES],
    "ucm": ["two white planes parked near the terminal", "a river with a bridge across it"],
}
MIN_MR = 30.0  # the full demo's bar on held-out synthetic mR (filtered, headline tie rule)
MIN_SPATIAL_GROUP = 60.0  # ... and on ITM alone reading left/right: the Winoground group % on held-out spatial pairs
MIN_HIT_MATCH = 0.6  # ... and on the fraction of re-ranked top-5 hits whose scene holds the query's kind + colour


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtgfe-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic", choices=sorted(DEMO_CONFIGS))
    parser.add_argument("--data-dir", default=None, help="benchmark data folder for real data (default: $MTGFE_DATA_DIR; one of the two is needed)")
    parser.add_argument("--output", default="demo_out", help="folder for the model, index, JSON and HTML")
    parser.add_argument("--gallery-size", type=int, default=150, help="held-out images to index (synthetic: scenes)")
    parser.add_argument("--k", type=int, default=16, help="filter candidates re-ranked by the fusion encoder")
    parser.add_argument("--top-k", type=int, default=5, help="results shown per query")
    parser.add_argument("--pairs", type=int, default=60, help="synthetic minimal pairs per type (0: skip)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="trainer config overrides, e.g. max_steps=50")
    return parser


def held_out_split(cfg, data: str, split: str, gallery_size: int, data_dir: str | None):
    """The images view of the held-out split, cut to `gallery_size` images (the shared loader of
    `loading.py`; synthetic scenes are rendered as the run's config renders them)."""
    return load_dataset_split(data, split, "images", data_dir=data_dir, max_images=gallery_size,
                              synthetic_scenes=gallery_size, synthetic_seed=cfg.data.synthetic.seed,
                              synthetic_size=cfg.data.synthetic.render_size)


def write_gallery_folder(dataset, folder: Path) -> dict[str, list[str]]:
    """Write the gallery as image files (what a user's archive looks like); returns captions by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    captions: dict[str, list[str]] = {}
    for row in dataset:
        name = Path(row["filename"]).with_suffix(".png").name
        image = row["image"]
        if not isinstance(image, Image.Image):
            image = Image.open(io.BytesIO(image["bytes"]))
        image.convert("RGB").save(folder / name)
        captions[name] = list(row["captions"])
    return captions


def scene_match(want: dict, scene: dict | str | None) -> dict[str, bool] | None:
    """Does a scene graph hold a group of `want`'s kind (``kind``), also of its colour (``colour``), also
    with its count (``count``)? None without a scene graph."""
    if not scene:
        return None
    groups = (json.loads(scene) if isinstance(scene, str) else scene)["groups"]
    kind = [g for g in groups if g["kind"] == want["kind"]]
    colour = [g for g in kind if g["colour"] == want.get("colour", g["colour"])]
    count = [g for g in colour if g["count"] == want.get("count", g["count"])]
    return {"kind": bool(kind), "colour": bool(colour), "count": bool(count)}


def scene_summary(scene: dict | str | None) -> str:
    """'3 blue plane · 1 red building': what a scene holds, for a person checking a hit."""
    if not scene:
        return ""
    groups = (json.loads(scene) if isinstance(scene, str) else scene)["groups"]
    return " · ".join(f"{g['count']} {g['colour']} {g['kind']}" for g in groups)


_STOP_WORDS = frozenset("a an the is are there it its of in on at to with and some this that many lots lot".split())


def _content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP_WORDS)


def distinct_caption_queries(gallery, n: int) -> list[str]:
    """`n` held-out captions as queries that ask for different things: a caption is taken when fewer than half
    of its content words (those of the shorter caption) appear in any caption taken before, and, where file
    names carry a class (`agricultural12.tif`), from a class not used yet. Deterministic: gallery order,
    each image's captions in order. (UCM's first test images are all farmland: "There is a piece of
    farmland ." then "... of cropland ." would be the same query twice.)"""
    queries, taken, classes = [], [], set()
    for row in gallery:
        label = re.sub(r"[\d_\-]+$", "", Path(str(row["filename"])).stem)
        if label and label in classes:
            continue
        for caption in row["captions"]:
            words = _content_words(caption)
            if words and all(len(words & other) <= 0.5 * min(len(words), len(other)) - 1e-9 or not other
                             for other in taken):
                queries.append(caption)
                taken.append(words)
                classes.add(label)
                break
        if len(queries) == n:
            break
    return queries


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _match_summary(results: list[dict], top_k: int) -> dict:
    """Fraction of the top-k hits whose scene holds the query's kind / + colour / + count, per list."""
    out = {}
    for column in ("filter", "re-ranked"):
        flags = [hit["scene_match"] for r in results if "want" in r for hit in r["columns"][column][:top_k]]
        out[column] = {key: round(sum(f[key] for f in flags) / len(flags), 3) if flags else None
                       for key in ("kind", "colour", "count")}
    return out


def _tables_html(summary: dict) -> list[str]:
    """The numbers of the run as small HTML tables (placed above the queries)."""
    parts = []
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{r['metrics'][key]:.2f}</td>" for key in r["metrics"])
        + f"<td>{r['fusion_passes']}</td></tr>" for name, r in summary["retrieval"].items())
    keys = next(iter(summary["retrieval"].values()))["metrics"]
    parts.append(f"<h2>Held-out retrieval ({summary['num_images']} images)</h2><table class='t'><tr><th>mode</th>"
                 + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + f"<th>fusion passes</th></tr>{rows}</table>")
    pairs = summary.get("minimal_pairs")
    if pairs:
        head = "".join(f"<th>{html.escape(s)}</th>" for s in SCORERS)
        body = "".join(
            f"<tr><td>{html.escape(t)} (n={next(iter(row.values()))['n']})</td>"
            + "".join(f"<td><b>{row[s]['group']:.1f}</b> ({row[s]['text']:.1f} / {row[s]['image']:.1f})</td>" for s in SCORERS)
            + "</tr>" for t, row in [*pairs["per_type"].items(), ("overall", pairs["overall"])])
        parts.append(f"<h2>Minimal pairs (held-out synthetic scenes)</h2><p class='meta'>{html.escape(PAIRS_NOTE)}. "
                     f"Winoground group score, (text / image score), %; chance: group 16.7, text / image 25; "
                     f"alpha={pairs['alpha']}.</p><table class='t'><tr><th>type</th>{head}</tr>{body}</table>")
    match = summary.get("hit_match")
    if match:
        body = "".join(f"<tr><td>{html.escape(col)}</td>" + "".join(f"<td>{v[k]:.2f}</td>" for k in ("kind", "colour", "count"))
                       + "</tr>" for col, v in match.items())
        parts.append("<h2>Do the example queries' top hits hold what they ask for?</h2><p class='meta'>Fraction of the "
                     "top hits whose scene graph has a group of the query's kind; of its kind and colour; of its kind, "
                     "colour and count. ✓ marks kind + colour + count.</p><table class='t'><tr><th>list</th><th>kind</th>"
                     f"<th>+ colour</th><th>+ count</th></tr>{body}</table>")
    checks = summary.get("checks")
    if checks:
        parts.append("<p class='meta'>checks: " + " · ".join(
            f"{html.escape(name)}: {'PASS' if ok else 'FAIL'}" for name, ok in checks.items()) + "</p>")
    return parts


def run_demo(args: argparse.Namespace) -> dict:
    """Train the recipe, index a held-out gallery, search it, evaluate filtered vs exhaustive (and the
    synthetic minimal pairs), write the HTML page and `summary.json`."""
    output = Path(args.output)
    config_name, split = DEMO_CONFIGS[args.data]
    # The demo owns its output folder: a second `make demo` starts over (overwrite=true) instead of refusing.
    overrides = [f"output_dir={output / 'model'}", "overwrite=true", *args.overrides]
    if args.data_dir and args.data != "synthetic":
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = load_config(config_name, overrides)  # validated before anything expensive
    if cfg.model.pretrained_recipe is not None:  # a two-stage recipe: its stage 1 lives next to the model
        overrides.append(f"model.pretrained={output / 'stage1' / 'final'}")
        cfg = load_config(config_name, overrides)

    started, cpu_started = time.perf_counter(), cpu_seconds()
    print(f"[1/5] training `{config_name}` -> {output / 'model'}")
    summary = train_recipe(cfg, overrides)  # with its stage 1 first for a two-stage recipe
    model_dir = Path(summary["final_dir"])
    model = MTGFEModel.from_pretrained(model_dir).eval()
    processor = MTGFEProcessor.from_pretrained(model_dir)
    train_seconds = time.perf_counter() - started

    print(f"[2/5] indexing {args.gallery_size} held-out `{split}` images")
    gallery = held_out_split(cfg, args.data, split, args.gallery_size, args.data_dir)
    for stale in (output / "gallery", output / "index"):  # a rerun starts from a fresh gallery and index
        shutil.rmtree(stale, ignore_errors=True)
    captions = write_gallery_folder(gallery, output / "gallery")
    scenes = ({Path(row["filename"]).with_suffix(".png").name: row["scene"] for row in gallery}
              if "scene" in gallery.column_names else {})
    index = GalleryIndex.build(model, processor, output / "gallery", output_dir=output / "index", captions=captions, progress=False)

    print("[3/5] searching: the filter's top-k beside the re-ranked top-k")
    specs = ([dict(q) for q in SYNTHETIC_QUERIES] if args.data == "synthetic"
             else [{"text": q} for q in DEMO_QUERIES[args.data] + distinct_caption_queries(gallery, 3)])
    queries = [q["text"] for q in specs]
    reranked = index.search(queries, k=args.k, top_k=args.top_k)
    filtered = index.search(queries, k=args.k, top_k=args.top_k, score="filter")
    results = []
    for spec, fil, rer in zip(specs, filtered, reranked):
        result = {"query": spec["text"], "hits": rer, "columns": {"filter": fil, "re-ranked": rer}}
        if "want" in spec:
            available = sum(bool((scene_match(spec["want"], s) or {}).get("count")) for s in scenes.values())
            for hit in fil + rer:
                hit["scene_match"] = scene_match(spec["want"], scenes.get(Path(str(hit["image"])).name))
                hit["match"] = hit["scene_match"]["count"] if hit["scene_match"] else None
                hit["detail"] = scene_summary(scenes.get(Path(str(hit["image"])).name))
            result.update(want=spec["want"], available=available,
                          note=f"{available} of the {len(scenes)} held-out scenes hold {json.dumps(spec['want'])}; "
                               "✓ = the hit's scene graph does")
        results.append(result)
    for result in results:
        print(f"  {result['query']!r}" + (f"  ({result['available']} matching scenes)" if "want" in result else ""))
        for f_hit, hit in zip(result["columns"]["filter"], result["hits"]):
            marks = ["" if h.get("match") is None else ("ok" if h["match"] else "--") for h in (f_hit, hit)]
            print(f"    #{hit['rank']} filter {Path(str(f_hit['image'])).name:28s} {marks[0]:2s} | re-ranked "
                  f"{Path(str(hit['image'])).name:28s} {marks[1]:2s} score {hit['score']:.3f}")

    print(f"[4/5] evaluating on the {len(gallery)} held-out images: filtered k={args.k} vs exhaustive")
    reports = {}
    for name, kwargs in (("filtered", dict(k=args.k)), ("exhaustive", dict(exhaustive=True))):
        reports[name] = evaluate_model(model, processor, gallery, score=cfg.eval.score, alpha=cfg.eval.alpha,
                                       dataset_name=args.data, split=split, model_path=str(model_dir),
                                       output=output / f"eval_{name}.json", **kwargs)
        print(format_table(reports[name]))
    pairs = None
    if args.data == "synthetic" and args.pairs > 0:
        pair_set = load_synthetic_pairs(num_items=args.pairs, seed=cfg.data.synthetic.seed,
                                        image_size=cfg.data.synthetic.render_size)
        pairs = evaluate_minimal_pairs(model, processor, pair_set, alpha=cfg.eval.alpha or 1.0)
        print(f"minimal pairs ({PAIRS_NOTE}): group score % (text / image)")
        print(format_pairs_table(pairs))

    total, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    demo = {"data": args.data, "model": str(model_dir), "k": args.k, "top_k": args.top_k,
            "num_images": len(gallery), "seconds": round(total, 1), "train_seconds": round(train_seconds, 1),
            "cpu_seconds": round(cpu, 1),
            "retrieval": {name: {"metrics": r["metrics"], "fusion_passes": r["fusion_passes"]} for name, r in reports.items()},
            "mR": reports["filtered"]["metrics"]["mR"],
            "queries": [{"query": r["query"], **({"want": r["want"], "available": r["available"]} if "want" in r else {}),
                         **{col: [{"image": Path(str(h["image"])).name, "score": h["score"],
                                   **({"scene_match": h["scene_match"]} if h.get("scene_match") else {})}
                                  for h in hits] for col, hits in r["columns"].items()}} for r in results]}
    if args.data == "synthetic":
        demo["minimal_pairs"] = pairs
        demo["hit_match"] = _match_summary(results, args.top_k)
        demo["checks"] = {f"held-out mR >= {MIN_MR:g}": demo["mR"] >= MIN_MR,
                          f"re-ranked top-{args.top_k} kind+colour match >= {MIN_HIT_MATCH:g}":
                              (demo["hit_match"]["re-ranked"]["colour"] or 0) >= MIN_HIT_MATCH}
        if pairs and "spatial" in pairs["per_type"]:
            # the fusion encoder's reason to exist: a dual encoder cannot tell a scene from its mirror
            demo["checks"][f"spatial minimal pairs ITM group >= {MIN_SPATIAL_GROUP:g}"] = bool(
                pairs["per_type"]["spatial"]["itm"]["group"] >= MIN_SPATIAL_GROUP)
        print("hit match (fraction of top hits whose scene holds kind / +colour / +count):",
              json.dumps(demo["hit_match"]))
        print("checks:", json.dumps(demo["checks"]))
    atomic_write_json(output / "summary.json", demo)

    print("[5/5] writing", output / "results.html")
    meta = {"data": args.data, "model": str(model_dir), "k": args.k, "held-out mR": f"{demo['mR']:.2f}",
            "time": f"{total:.0f} s wall, {cpu:.0f} s CPU",
            "note": "synthetic scenes: a pipeline check, not a benchmark" if args.data == "synthetic" else "held-out test images"}
    write_html(output / "results.html", results, title=f"MTGFE demo ({args.data})", meta=meta,
               thumbnail_size=96, extra_html=_tables_html(demo))
    print(f"done in {total:.0f} s wall, {cpu:.0f} s CPU (training {train_seconds:.0f} s); open {output / 'results.html'}")
    return {"reports": reports, "results": results, "seconds": total, "summary": demo}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
