"""Rank `make demo` recipe changes without looking at the demo's test gallery.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/synthetic_demo/recipe_check.py NAME [KEY=VALUE ...]

Trains `synthetic_demo` with the overrides (one thread, `eval.at_end` off), then on the first 150 **val**
scenes (the selection split) and, for the record only, the 150 test scenes of the demo's gallery:
* mR of the filter alone, ITM alone and ITM + alpha * ITC for alpha in 0.5 / 1 / 2 / 4 / 8 (k=16, one fusion
  pass, `evaluate_model(alpha_sweep=...)`; expected-tie rule);
* val only: demo-style queries ("<count> <colour> <kind> <verb>", e.g. "two red buildings") for every
  (kind, colour, count) that >= 5 val scenes hold (trees left out: they are always green), searched through a
  `GalleryIndex` of the val scenes like the demo does; the fraction of the filter / re-ranked top-5 hits whose
  scene graph holds the kind, + colour, + count (`demo.scene_match`), with the recipe's alpha.
Appends one JSON line to experiments/synthetic_demo/runs.jsonl (model under /tmp/mtgfe_recipe_check/NAME).
"""

from __future__ import annotations

import collections
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from modeling_mtgfe import MTGFEModel
from mtgfe.processing import MTGFEProcessor
from mtgfe.search.gallery_index import GalleryIndex
from mtgfe.training.cli import train_recipe
from mtgfe.training.config import load_config
from mtgfe.training.demo import scene_match, write_gallery_folder
from mtgfe.evaluation.retrieval import evaluate_model
from mtgfe.data.loading import load_dataset_split
from mtgfe.data.synthetic import KINDS, NUMBER_WORDS

ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0)
SCENES = 150


def val_queries(scenes: dict[str, dict]) -> list[dict]:
    combos = collections.Counter((g["kind"], g["colour"], g["count"]) for s in scenes.values() for g in s["groups"])
    specs = []
    for (kind, colour, count), n in sorted(combos.items()):
        if n < 5 or kind == "tree":
            continue
        singular, plural = KINDS[kind].nouns[0]
        verb = KINDS[kind].verbs[0]
        text = f"{'a' if count == 1 else NUMBER_WORDS[count]} {colour} {singular if count == 1 else plural}"
        specs.append({"text": text + (f" {verb}" if verb else ""), "want": {"kind": kind, "colour": colour, "count": count}})
    return specs


def query_hits(model, processor, dataset) -> dict:
    scenes = {Path(r["filename"]).with_suffix(".png").name: json.loads(r["scene"]) for r in dataset}
    specs = val_queries(scenes)
    tmp = Path(tempfile.mkdtemp())
    try:
        captions = write_gallery_folder(dataset, tmp / "gallery")
        index = GalleryIndex.build(model, processor, tmp / "gallery", output_dir=tmp / "index", captions=captions,
                                   progress=False)
        out = {"n_queries": len(specs)}
        for column, kwargs in (("filter", {"score": "filter"}), ("re-ranked", {})):
            results = index.search([s["text"] for s in specs], k=16, top_k=5, **kwargs)
            flags = [scene_match(s["want"], scenes[Path(str(h["image"])).name]) for s, hits in zip(specs, results) for h in hits]
            out[column] = {key: round(sum(f[key] for f in flags) / len(flags), 3) for key in ("kind", "colour", "count")}
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(name: str, overrides: list[str]) -> dict:
    torch.set_num_threads(1)
    out = Path(tempfile.gettempdir()) / "mtgfe_recipe_check" / name
    run_overrides = [f"output_dir={out}", "overwrite=true", "num_threads=1", "eval.at_end=false", *overrides]
    cfg = load_config("synthetic_demo", run_overrides)
    started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    summary = train_recipe(cfg, run_overrides)
    after = resource.getrusage(resource.RUSAGE_SELF)
    record = {"name": name, "overrides": overrides, "train_s": round(time.perf_counter() - started, 1),
              "train_cpu_s": round(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime, 1)}
    model_dir = summary["final_dir"]
    model = MTGFEModel.from_pretrained(model_dir).eval()
    processor = MTGFEProcessor.from_pretrained(model_dir)
    for split in ("val", "test"):
        dataset = load_dataset_split("synthetic", split, "images", max_images=SCENES, synthetic_scenes=SCENES,
                                     synthetic_seed=cfg.data.synthetic.seed, synthetic_size=cfg.data.synthetic.render_size)
        filtered = evaluate_model(model, processor, dataset, score="filter")
        fused = evaluate_model(model, processor, dataset, k=16, score="itm", alpha_sweep=ALPHAS)
        record[split] = {"filter": round(filtered["metrics"]["mR"], 2), "itm": round(fused["metrics"]["mR"], 2),
                         "itm+alpha*itc": {a: round(m[fused["tie_rule"]]["mR"], 2) for a, m in fused["alpha_sweep"].items()}}
        if split == "val":
            model.config.retrieval_alpha = cfg.eval.alpha
            record["val_queries"] = {"alpha": cfg.eval.alpha, **query_hits(model, processor, dataset)}
    print("RESULT", json.dumps(record), flush=True)
    with open(Path(__file__).with_name("runs.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
