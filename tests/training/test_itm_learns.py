"""ITM must learn under the default recipe's settings (it once sat at its prior, 0.636).

A small real batch: 16 UCM *train* images (evenly spaced, so distinct classes), their backbone tokens
computed once by the offline EfficientNet-Lite0, one of the 5 captions per image drawn per step. The
model is the default stage 2 (`ucm_fusion`: MiniLM text tower frozen, fusion layer 5 with fresh
cross-attention, ITC + ITM + MLM + MVJRC with the recipe's weights, redundancy-aware negatives, the
trainer's own parameter groups and lrs); only the stage-1 weights are replaced by the offline
initialisation (a test cannot train stage 1). The ITM loss must fall clearly below the constant
predictor's 0.636 (1 positive : 2 negatives) within N steps. With the old recipe (mlm_weight 1.0) it
stays at ~0.64 (experiments/compositional/README.md, "ITM diagnosis").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

PRIOR = -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
N_IMAGES, MAX_STEPS, TARGET, WINDOW = 16, 80, 0.45, 8  # passes at step 55 (0.448): stops early


@pytest.fixture(scope="module")
def setup(data_dir):
    from mtgfe.processing import MTGFEImageProcessor, load_default_tokenizer, load_image
    from mtgfe.training.config import load_config
    from mtgfe.data.annotations import load_rs_benchmark
    from mtgfe.training.train import build_model

    torch.set_num_threads(1)
    cfg = load_config("ucm_fusion", [
        "model.pretrained=null", "model.pretrained_recipe=null", "model.preset=small",
        "model.init={vision: efficientnet-lite0, text: minilm-l6}", "model.fusion_layer=5", "data.max_length=24"])
    tokenizer = load_default_tokenizer(model_max_length=cfg.data.max_length)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    ds = load_rs_benchmark("ucm", data_dir=data_dir, split="train", view="images")
    rows = ds.select(np.linspace(0, len(ds) - 1, N_IMAGES).round().astype(int).tolist())
    processor = MTGFEImageProcessor(size={"height": cfg.data.image_size, "width": cfg.data.image_size})
    images = [load_image(im) for im in rows["image"]]
    with torch.no_grad():
        model.mtgfe.vision_model.eval()
        tokens = model.mtgfe.backbone_hidden_states(processor(images=images, return_tensors="pt")["pixel_values"])
        flipped = [im.transpose(0) for im in images]
        tokens2 = model.mtgfe.backbone_hidden_states(processor(images=flipped, return_tensors="pt")["pixel_values"])
    return cfg, tokenizer, model, tokens, tokens2, [list(c) for c in rows["captions"]]


def test_default_recipe_weights_keep_mlm_from_drowning_itm():
    from mtgfe.training.config import load_config

    m = load_config("ucm_fusion").model
    assert m.itm_weight == 1.0 and 0 < m.mlm_weight <= 0.1, "MLM at weight 1 keeps ITM at its prior (see module doc)"


def test_param_groups_give_new_parts_head_lr(setup):
    from mtgfe.training.train import param_groups

    cfg, _, model, *_ = setup
    lr_of = {name: g["lr"] for g in param_groups(model, cfg) for name in g["names"]}
    for name, lr in lr_of.items():
        if any(part in name for part in ("crossattention", "itm_head", "mlm_head.transform", "mvjrc_head",
                                         "vision_token_proj")):
            assert lr == cfg.optim.head_lr, name
    assert lr_of["mtgfe.itm_head.weight"] == cfg.optim.head_lr == 3e-4


def test_itm_loss_falls_below_the_prior(setup):
    from mtgfe.training.train import frozen_parameters, param_groups

    cfg, tokenizer, model, tokens, tokens2, captions = setup
    torch.manual_seed(0)
    for p in frozen_parameters(model, cfg):
        p.requires_grad_(False)
    groups = param_groups(model, cfg)
    optimizer = torch.optim.AdamW([{k: g[k] for k in ("params", "lr", "weight_decay")} for g in groups],
                                  betas=tuple(cfg.optim.betas))
    model.train()
    model.mtgfe.vision_model.eval()
    rng = np.random.default_rng(0)
    strings = {c: i for i, c in enumerate(sorted({c for cs in captions for c in cs}))}
    losses = []
    for step in range(MAX_STEPS):
        batch = [cs[rng.integers(len(cs))] for cs in captions]
        enc = tokenizer(batch, padding="max_length", truncation=True, max_length=cfg.data.max_length,
                        return_tensors="pt")
        out = model(vision_hidden_states=tokens, vision_hidden_states_view2=tokens2, input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"], image_ids=torch.arange(len(batch)),
                    text_ids=torch.tensor([strings[c] for c in batch]))
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.optim.max_grad_norm)
        optimizer.step()
        losses.append(float(out.loss_itm))
        if len(losses) >= WINDOW and np.mean(losses[-WINDOW:]) < TARGET:
            break
    print(f"ITM loss: first {losses[0]:.3f}, last {WINDOW} mean {np.mean(losses[-WINDOW:]):.3f} after {len(losses)} steps")
    assert np.mean(losses[-WINDOW:]) < TARGET, f"ITM loss stayed at {np.mean(losses[-WINDOW:]):.3f} after {len(losses)} steps"
