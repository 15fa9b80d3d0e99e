"""ITM diagnosis: does the ITM loss fall below its prior on a small real UCM batch?

32 UCM *train* images (evenly spaced, so ~all 21 classes), backbone tokens computed once (plain view +
horizontal flip as the MVJRC second view), the stage-2 architecture of the default recipe (`small`
preset from offline weights, fusion_layer 5, text tower frozen, text_pooling mean, redundancy-aware
negatives), AdamW with the trainer's own `param_groups` (lr / head_lr from the recipe). Each step
draws one of the 5 captions per image. Reports the mean ITM loss of the last 20 steps per variant.

  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python experiments/compositional/itm_diagnosis.py \
      --steps 150 --variants itm itm+mlm itm+mvjrc full ...
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from mtgfe.training.config import load_config
from mtgfe.training.train import param_groups, frozen_parameters, build_model
from mtgfe.data.annotations import load_rs_benchmark
from mtgfe.processing import load_default_tokenizer, MTGFEImageProcessor, load_image

PRIOR = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))  # 0.6365


def real_batch(n_images=32, data_dir="../shared/data", image_size=256, model=None):
    ds = load_rs_benchmark("ucm", data_dir=data_dir, split="train", view="images")
    idx = np.linspace(0, len(ds) - 1, n_images).round().astype(int).tolist()
    rows = ds.select(idx)
    proc = MTGFEImageProcessor(size={"height": image_size, "width": image_size})
    images = [load_image(im) for im in rows["image"]]
    flips = [im.transpose(0) for im in images]  # PIL FLIP_LEFT_RIGHT
    with torch.no_grad():
        base = model.mtgfe
        base.vision_model.eval()
        tok = base.backbone_hidden_states(proc(images=images, return_tensors="pt")["pixel_values"])
        tok2 = base.backbone_hidden_states(proc(images=flips, return_tensors="pt")["pixel_values"])
    return tok, tok2, [list(c) for c in rows["captions"]]


def variant_overrides(name):
    w = {"itc_weight": 1.0, "itm_weight": 1.0, "mlm_weight": 0.0, "mvjrc_weight": 0.0}
    parts = name.split("+")
    if "full" in parts:
        w.update(mlm_weight=1.0, mvjrc_weight=1.0)
    if "mlm" in parts:
        w["mlm_weight"] = 1.0
    if "mvjrc" in parts:
        w["mvjrc_weight"] = 1.0
    return w


def run(name, steps, recipe, seed=0, extra=(), tokens=None, quiet=False):
    torch.manual_seed(seed)
    parts = name.split("+")
    w = variant_overrides(name)
    sets = [f"model.{k}={v}" for k, v in w.items()] + list(extra)
    sets += ["model.pretrained=null", "model.pretrained_recipe=null", "model.preset=small",
             "model.init={vision: efficientnet-lite0, text: minilm-l6}", "model.fusion_layer=5"]
    for p in parts:
        if p.startswith("lr="):
            sets.append(f"optim.head_lr={p[3:]}")
        if p == "randneg":
            sets.append("model.itm_random_negative_prob=1.0")
        if p == "nofreeze":
            sets.append("freeze.text=false")
        if p == "fuslr":  # fusion layers' self-attention/FFN at head_lr too (they are repurposed in stage 2)
            import mtgfe.training.train as T
            if "fusion_encoder" not in T.NEW_PARAMETER_PATTERNS:
                T.NEW_PARAMETER_PATTERNS = (*T.NEW_PARAMETER_PATTERNS, "fusion_encoder")
        if p.startswith("mlmw="):
            sets.append(f"model.mlm_weight={p[5:]}")
        if p == "nodup":
            sets.append("model.config.itm_near_duplicate_overlap=null")
    cfg = load_config(recipe, sets)
    tokenizer = load_default_tokenizer(model_max_length=cfg.data.max_length)
    model = build_model(cfg, tokenizer)
    if tokens is None:
        tokens = real_batch(model=model, image_size=cfg.data.image_size)
    tok, tok2, captions = tokens
    for p in frozen_parameters(model, cfg):
        p.requires_grad_(False)
    groups = param_groups(model, cfg)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k not in ("names", "group", "peak_lr")} for g in groups],
                            betas=tuple(cfg.optim.betas))
    model.train()
    model.mtgfe.vision_model.eval()
    rng = np.random.default_rng(seed)
    strings = sorted({c for cs in captions for c in cs})
    sid = {c: i for i, c in enumerate(strings)}
    log = []
    t0 = time.perf_counter()
    for step in range(steps):
        caps = [cs[rng.integers(len(cs))] for cs in captions]
        enc = tokenizer(caps, padding="max_length", truncation=True, max_length=cfg.data.max_length, return_tensors="pt")
        out = model(vision_hidden_states=tok, vision_hidden_states_view2=tok2, input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"], image_ids=torch.arange(len(caps)),
                    text_ids=torch.tensor([sid[c] for c in caps]))
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.optim.max_grad_norm)
        opt.step()
        log.append({k: float(getattr(out, f"loss_{k}")) for k in ("itc", "itm", "mlm", "mvjrc")
                    if getattr(out, f"loss_{k}", None) is not None})
        if not quiet and (step + 1) % 25 == 0:
            print(name, step + 1, {k: round(v, 3) for k, v in log[-1].items()}, flush=True)
    last = {k: float(np.mean([r[k] for r in log[-20:]])) for k in log[-1]}
    return {"variant": name, "steps": steps, "last20": last, "seconds": round(time.perf_counter() - t0, 1),
            "lr_groups": {g["group"]: g["lr"] for g in groups}}, tokens


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--recipe", default="ucm_fusion")
    ap.add_argument("--variants", nargs="+", default=["itm", "itm+mlm", "itm+mvjrc", "full"])
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tokens, results = None, []
    print(f"prior {PRIOR:.4f}")
    for v in a.variants:
        r, tokens = run(v, a.steps, a.recipe, extra=a.set, tokens=tokens)
        print(json.dumps(r), flush=True)
        results.append(r)
    if a.out:
        json.dump({"prior": PRIOR, "results": results}, open(a.out, "w"), indent=1)
