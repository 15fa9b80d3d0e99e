"""`make demo`: the main job end to end — train, index held-out images, search by text, report.

    python -m mtgfe.training.demo                                  # built-in synthetic scenes (default)
    python -m mtgfe.training.demo --data ucm --data-dir ../shared/data

Steps (each one a library call that the CLIs use too):
1. train a model with the project's own trainer (`synthetic_demo` config, or the two-stage `ucm_fusion`
   recipe for UCM: stage 1 `ucm_dual_finetune` first);
2. write the held-out images to a folder and index it (`GalleryIndex.build`, the `mtgfe-index` path);
3. run a few text queries through the two-stage search (filter top-k, fusion ITM re-rank);
4. evaluate the held-out split filtered (top-k) and exhaustively and print R@K / mR side by side;
5. write `results.html` with thumbnails, scores and ✓ where a ground-truth caption matches the query.

Synthetic-data numbers only show that the pipeline learns; they are never benchmark results.
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m mtgfe.training.demo`: the thread policy must be set before torch loads
    from mtgfe.utils.entrypoints import prefer_passive_omp

    prefer_passive_omp()

import argparse
import io
import logging
import time
from pathlib import Path
from typing import Sequence

from PIL import Image

from modeling_mtgfe import MTGFEModel
from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.search.report_html import write_html
from mtgfe.processing import MTGFEProcessor

from .cli import train_recipe
from .config import load_config
from .evaluation import evaluate_model, format_table
from .loading import load_dataset_split

logger = logging.getLogger("mtgfe.demo")

# The trainer config each dataset starts from, and the held-out split that becomes the gallery.
DEMO_CONFIGS = {"synthetic": ("synthetic_demo", "test"), "ucm": ("ucm_fusion", "test")}
DEMO_QUERIES = {
    "synthetic": ["two white planes parked near the terminal"],
    "ucm": ["two white planes parked near the terminal", "a river with a bridge across it"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtgfe-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic", choices=sorted(DEMO_CONFIGS))
    parser.add_argument("--data-dir", default=None, help="benchmark root for real data (default: $MTGFE_DATA_DIR or ../shared/data)")
    parser.add_argument("--output", default="demo_out", help="folder for the model, index, JSON and HTML")
    parser.add_argument("--gallery-size", type=int, default=150, help="held-out images to index (synthetic: scenes)")
    parser.add_argument("--k", type=int, default=16, help="filter candidates re-ranked by the fusion encoder")
    parser.add_argument("--top-k", type=int, default=5, help="results shown per query")
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


def run_demo(args: argparse.Namespace) -> dict:
    """Train the recipe, index a held-out gallery, search it, evaluate filtered vs exhaustive, write HTML."""
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

    started = time.perf_counter()
    print(f"[1/5] training `{config_name}` -> {output / 'model'}")
    summary = train_recipe(cfg, overrides)  # with its stage 1 first for a two-stage recipe
    model_dir = Path(summary["final_dir"])
    model = MTGFEModel.from_pretrained(model_dir).eval()
    processor = MTGFEProcessor.from_pretrained(model_dir)
    train_seconds = time.perf_counter() - started

    print(f"[2/5] indexing {args.gallery_size} held-out `{split}` images")
    gallery = held_out_split(cfg, args.data, split, args.gallery_size, args.data_dir)
    captions = write_gallery_folder(gallery, output / "gallery")
    index = GalleryIndex.build(model, processor, output / "gallery", output_dir=output / "index", captions=captions, progress=False)

    print("[3/5] searching")
    queries = DEMO_QUERIES[args.data] + [gallery[i]["captions"][0] for i in range(min(3, len(gallery)))]
    hits = index.search(queries, k=args.k, top_k=args.top_k)
    results = [{"query": q, "hits": h} for q, h in zip(queries, hits)]
    for result in results:
        print(f"  {result['query']!r}")
        for hit in result["hits"]:
            print(f"    #{hit['rank']} {Path(str(hit['image'])).name:28s} score {hit['score']:.3f} filter {hit['filter_score']:.3f}")

    print(f"[4/5] evaluating on the {len(gallery)} held-out images: filtered k={args.k} vs exhaustive")
    reports = {}
    for name, kwargs in (("filtered", dict(k=args.k)), ("exhaustive", dict(exhaustive=True))):
        reports[name] = evaluate_model(model, processor, gallery, score=cfg.eval.score, alpha=cfg.eval.alpha,
                                       dataset_name=args.data, split=split, model_path=str(model_dir),
                                       output=output / f"eval_{name}.json", **kwargs)
        print(format_table(reports[name]))

    print("[5/5] writing", output / "results.html")
    meta = {"data": args.data, "model": str(model_dir), "k": args.k,
            "note": "synthetic scenes: a pipeline check, not a benchmark" if args.data == "synthetic" else "held-out test images"}
    write_html(output / "results.html", results, title=f"MTGFE demo ({args.data})", meta=meta)
    total = time.perf_counter() - started
    print(f"done in {total:.0f} s (training {train_seconds:.0f} s); open {output / 'results.html'}")
    return {"reports": reports, "results": results, "seconds": total}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
