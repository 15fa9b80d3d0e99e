"""Real pixels, known answers: does a class query put its top hits on tiles of that class?

A georeferenced mosaic (EPSG:32610, 0.3 m pixels) is laid out from UCM *test* images in a seeded grid
(`mtgfe.search.mosaic.build_ucm_mosaic`), indexed by tiling it like any scene (`SceneSource` through
`GalleryIndex.build`, the same path as `mtgfe-index --scenes`), and searched with one query per class.
The queries are written from the class names ("an aerial image of a tennis court"), never from test
captions, and nothing is tuned on the result. Two tilings are measured:

* stride 256: tiles coincide with the cells; precision@k per class (a hit is right when at least half of
  its box lies on cells of the queried class);
* stride 128: overlapping tiles, hits merged by `--merge` NMS; precision@k as above and the IoU of each
  merged box with the best-matching cell of its class (how well a merged box outlines a place).

    python experiments/speed/bench_mosaic_precision.py --model MODEL_DIR --data-dir ../shared/data \
        --work /tmp/mosaic --output experiments/mosaic/precision.json

The model is any saved MTGFE folder; its `retrieval_score` decides the ranking unless `--score` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

import modeling_mtgfe  # noqa: F401 - registers the Auto classes
from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.search.geo import box_iou, suppress_overlapping, window_to_box
from mtgfe.search.mosaic import UCM_CLASSES, build_ucm_mosaic, precision_at_k_by_class
from mtgfe.search.scene_index import SceneSource
from mtgfe.utils.io import atomic_write_json

# One query per class, from the class name only (no caption of any split).
CLASS_PHRASES = {
    "agricultural": "farmland", "airplane": "airplanes at an airport", "baseballdiamond": "a baseball diamond",
    "beach": "a beach", "buildings": "buildings", "chaparral": "chaparral", "denseresidential":
    "a dense residential area", "forest": "a forest", "freeway": "a freeway", "golfcourse": "a golf course",
    "harbor": "a harbor with boats", "intersection": "an intersection", "mediumresidential":
    "a medium residential area", "mobilehomepark": "a mobile home park", "overpass": "an overpass",
    "parkinglot": "a parking lot", "river": "a river", "runway": "a runway", "sparseresidential":
    "a sparse residential area", "storagetanks": "storage tanks", "tenniscourt": "a tennis court",
}


def query_for(cls: str) -> str:
    return f"an aerial image of {CLASS_PHRASES[cls]}"


def run_tiling(model, processor, mosaic: Path, layout: dict, stride: int, work: Path, ks, score: str,
               merge_iou: float | None) -> dict:
    start = time.perf_counter()
    index = GalleryIndex.build(model, processor, SceneSource(mosaic, tile_size=256, stride=stride),
                               output_dir=work / f"index_s{stride}", keep_tokens=score != "filter",
                               progress=False)
    build_s = time.perf_counter() - start
    top = max(ks) * (4 if merge_iou is not None else 1)  # merging removes hits: fetch more, keep max(ks) after
    queries = [query_for(c) for c in UCM_CLASSES]
    hits = index.search(queries, k=max(top, 32), top_k=top, score=score)
    by_class = {}
    ious = {}
    for cls, ranked in zip(UCM_CLASSES, hits):
        if merge_iou is not None:
            ranked = suppress_overlapping(ranked, iou_threshold=merge_iou, mode="merge")
        ranked = ranked[: max(ks)]
        by_class[cls] = ranked
        cells = [c for c in layout["cells"] if c["class"] == cls]
        ious[cls] = [max(box_iou(window_to_box(h["window"]), window_to_box(c["window"])) for c in cells)
                     for h in ranked]
    out = {"stride": stride, "tiles": len(index), "build_seconds": round(build_s, 1), "merge_iou": merge_iou,
           "precision": {}, "queries": dict(zip(UCM_CLASSES, queries))}
    for k in ks:
        result = precision_at_k_by_class(by_class, layout, k)
        out["precision"][f"P@{k}"] = {"mean": result["mean"], "per_class": result["per_class"]}
    flat = [v for cls in UCM_CLASSES for v in ious[cls][: min(ks)]]
    out[f"mean_iou_top{min(ks)}"] = sum(flat) / len(flat)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--work", required=True, help="scratch folder for the mosaic and the indexes")
    parser.add_argument("--output", required=True, help="JSON results")
    parser.add_argument("--grid", type=int, nargs=2, default=(15, 14), help="rows cols (210 = every UCM test image)")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--score", default=None, help="filter / itm / itm+itc (default: the model config's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    score = args.score or model.config.retrieval_score
    mosaic = work / "ucm_test_mosaic.tif"
    layout = build_ucm_mosaic(args.data_dir, mosaic, grid=tuple(args.grid), split="test", seed=args.seed)
    report = {
        "model": str(args.model), "score": score, "grid": list(args.grid), "cells": len(layout["cells"]),
        "crs": layout["crs"], "seed": args.seed, "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "runs": [run_tiling(model, processor, mosaic, layout, 256, work, args.k, score, None),
                 run_tiling(model, processor, mosaic, layout, 128, work, args.k, score, 0.3)],
    }
    atomic_write_json(args.output, report)
    for run in report["runs"]:
        line = ", ".join(f"{name} {value['mean']:.3f}" for name, value in run["precision"].items())
        print(f"stride {run['stride']}: {run['tiles']} tiles, {line}, mean IoU {run[f'mean_iou_top{min(args.k)}']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
