"""Per-loss gradient norms on the shared fusion parameters at initialisation (ITM diagnosis).

Same model and batch as itm_diagnosis.py; one forward/backward per loss, no update.
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python experiments/compositional/itm_grad_probe.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from itm_diagnosis import real_batch  # noqa: E402

from mtgfe.processing import load_default_tokenizer
from mtgfe.training.config import load_config
from mtgfe.training.train import build_model, frozen_parameters

sets = ["model.pretrained=null", "model.pretrained_recipe=null", "model.preset=small",
        "model.init={vision: efficientnet-lite0, text: minilm-l6}", "model.fusion_layer=5"]
cfg = load_config("ucm_fusion", sets)
tok = load_default_tokenizer(model_max_length=cfg.data.max_length)
torch.manual_seed(0)
model = build_model(cfg, tok)
t1, t2, caps = real_batch(model=model, image_size=cfg.data.image_size)
for p in frozen_parameters(model, cfg):
    p.requires_grad_(False)
model.train()
model.mtgfe.vision_model.eval()
batch = [c[0] for c in caps]
enc = tok(batch, padding="max_length", truncation=True, max_length=cfg.data.max_length, return_tensors="pt")
groups = {
    "cross-attention": [p for n, p in model.named_parameters() if "crossattention" in n and p.requires_grad],
    "fusion self-attn+FFN": [p for n, p in model.named_parameters()
                             if "fusion_encoder" in n and "crossattention" not in n and p.requires_grad],
    "vision_token_proj": list(model.mtgfe.vision_token_proj.parameters()),
}
grads = {}
for loss_name in ("itm", "mlm", "mvjrc"):
    torch.manual_seed(1)
    out = model(vision_hidden_states=t1, vision_hidden_states_view2=t2, input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"], image_ids=torch.arange(len(batch)))
    model.zero_grad()
    getattr(out, f"loss_{loss_name}").backward()
    grads[loss_name] = {g: torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                                      for p in ps]) for g, ps in groups.items()}
res = {}
for g in groups:
    res[g] = {f"|grad {k}|": round(float(grads[k][g].norm()), 4) for k in grads}
    res[g]["cos(itm, mlm)"] = round(float(torch.nn.functional.cosine_similarity(grads["itm"][g], grads["mlm"][g], 0)), 3)
print(json.dumps(res, indent=1))
