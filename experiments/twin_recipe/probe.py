"""Twin-recipe probes: under which recipe does ITM learn spatial and binding twins at all?

A self-contained probe (one CPU thread, a few minutes per run). It trains the `make demo` architecture
(3-stage ResNet -> grid tokens, 4-layer text of width 96 whose last 2 layers are fusion layers) FROM
SCRATCH on the procedural synthetic world, with rendered twins mixed into every batch as balanced swap
quads: (A, a) and (A', a') positive, (A, a') and (A', a) negative, so no text-only or image-only
shortcut lowers the quad loss below ln 2. Alongside, ordinary captions of the base scenes give the ITC
loss and ITM with one hard negative text and image per pair (the demo's recipe), so the backbone and the
word embeddings learn what objects and colours are.

Levers (flags): image positions (`--pos none|sine|learned`, added once to the projected tokens, or
`sine_keys|learned_keys`: DETR-style, on the cross-attention keys of every fusion layer, never on the
values), the grid (`--stages 3` -> 4x4 at 64 px, `--stages 2` -> 8x8 at 64 px, or `--px 128`), the
ITM readout (`--readout cls` or `cls_mean`: [CLS] concatenated with the mean of the fused word states),
the twin types in the quads (`--types`), a curriculum of one-group side captions (`--types side,...`),
and the fusion lr (`--fusion-lr`). `--oracle` trains a structured classifier instead (same backbone,
no text encoder) to check that the pixels at this resolution and grid hold the answer.

Training data: train-split scenes of generator seed 0 (their twins built by
`evaluation.compositional.synthetic_pairs.edit_scene`). Held-out evaluation: `generate_pairs` on the test split of generator
seed 1, Winoground text / image / group per type with the ITM score alone. Output: one JSON line per run
appended to `--out` (config, loss curve every `--log-every` steps, held-out scores, CPU-seconds per step).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/twin_recipe/probe.py --name pos_sine --pos sine --steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from modeling_mtgfe import MTGFEConfig, MTGFEModel  # noqa: E402
from modeling_mtgfe.losses import itc_loss  # noqa: E402
from mtgfe.processing.tokenization_mtgfe import build_wordpiece_tokenizer  # noqa: E402
from mtgfe.evaluation.compositional.generation import group_scores  # noqa: E402
from mtgfe.data.synthetic import SPLIT_CODES, KINDS, describe_scene, render_scene, sample_scene  # noqa: E402
from mtgfe.evaluation.compositional.synthetic_pairs import edit_scene, generate_pairs, group_phrase, mirror_scene, render  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CACHE = Path(os.environ.get("TWIN_CACHE", "/tmp/twin_recipe_cache"))
LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------ data
def _side_edit(scene: dict, rng: np.random.Generator):
    """Curriculum twin: one group clearly on one side; the twin is the pixel mirror; captions name the side."""
    options = []
    for g in scene["groups"]:
        if g["cx"] < 0.4 or g["cx"] > 0.6:
            options.append((g, "x", "left" if g["cx"] < 0.5 else "right"))
        if g["cy"] < 0.4 or g["cy"] > 0.6:
            options.append((g, "y", "top" if g["cy"] < 0.5 else "bottom"))
    if not options:
        return None
    g, axis, side = options[int(rng.integers(len(options)))]
    other = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[side]
    twin = mirror_scene(scene, axis)  # graph coordinates mirrored; `render` draws the exact pixel mirror of the base
    return twin, f"{group_phrase(g)} on the {side} side", f"{group_phrase(g)} on the {other} side"


def _edit_any(scene, typ, rng):
    return _side_edit(scene, rng) if typ == "side" else edit_scene(scene, typ, rng)


def _spatial_roles(scene: dict, caption: str):
    """(subject group, object group, relation) of a spatial twin caption, for the oracle."""
    for i, gi in enumerate(scene["groups"]):
        for j, gj in enumerate(scene["groups"]):
            if i != j and caption.startswith(group_phrase(gi) + " ") and caption.endswith(" " + group_phrase(gj)):
                middle = caption[len(group_phrase(gi)) + 1: len(caption) - len(group_phrase(gj)) - 1]
                return gi, gj, middle
    raise ValueError(f"cannot parse {caption!r}")


def grounding_targets(scene: dict, caption: str, tokenizer, grid: int) -> list[tuple[int, list[int]]]:
    """(token index, grid cells of its group's objects) for every token of each group phrase in ``caption``:
    the generator knows where every named group is, so cross-attention can be told where to look."""
    out = []
    phrases = [group_phrase(g) for g in scene["groups"]]
    for g, ph in zip(scene["groups"], phrases):
        if phrases.count(ph) != 1 or caption.count(ph) != 1:
            continue
        start = 1 + len(tokenizer.tokenize(caption[: caption.index(ph)]))
        cells = sorted({min(int(o["y"] * grid), grid - 1) * grid + min(int(o["x"] * grid), grid - 1)
                        for o in g["objects"]})
        out += [(start + k, cells) for k in range(len(tokenizer.tokenize(ph)))]
    return out


def load_cached(key: Path) -> dict:
    """A rendered set saved by this script: tensors, dicts, lists, strings and numbers only, so it loads with
    `weights_only=True` (no code in a cache file can run); a file holding anything else is refused."""
    return torch.load(key, weights_only=True)


def build_train(n: int, px: int, types: tuple[str, ...], seed: int = 0) -> dict:
    key = CACHE / f"train_v2_n{n}_px{px}_s{seed}_{'-'.join(types)}.pt"
    if key.exists():
        return load_cached(key)
    images, scenes = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_CODES["train"], i])
        scene = sample_scene(rng)
        captions = describe_scene(scene, rng, placeless_focus=1.0)
        row = {"image": len(images), "captions": captions, "twins": {}, "scene": scene}
        images.append(np.asarray(render_scene(scene, px)))
        for code, typ in enumerate(types):
            edit = _edit_any(scene, typ, np.random.default_rng([seed, SPLIT_CODES["train"], i, 101 + code]))
            if edit is None:
                continue
            twin, cap_base, cap_twin = edit
            row["twins"][typ] = (len(images), cap_base, cap_twin, twin)
            images.append(np.asarray(render(twin, px)))
        scenes.append(row)
    data = {"images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), "rows": scenes}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, key)
    return data


def build_eval(n: int, px: int, types: tuple[str, ...], seed: int = 1) -> dict:
    key = CACHE / f"eval_n{n}_px{px}_s{seed}_{'-'.join(types)}.pt"
    if key.exists():
        return load_cached(key)
    items = generate_pairs(num_items=n, seed=seed, types=tuple(t for t in types if t != "side"))
    if "side" in types:  # the curriculum type, on the same held-out scenes
        count = 0
        for index in range(2000):
            if count >= n:
                break
            scene = sample_scene(np.random.default_rng([seed, SPLIT_CODES["test"], index]))
            edit = _side_edit(scene, np.random.default_rng([seed, SPLIT_CODES["test"], index, 999]))
            if edit:
                items.append({"type": "side", "scene": scene, "scene_b": edit[0], "caption": edit[1],
                              "negative": edit[2]})
                count += 1
    images = [np.asarray(render(it[k], px)) for it in items for k in ("scene", "scene_b")]
    data = {"images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "items": [{k: it[k] for k in ("type", "caption", "negative", "scene", "scene_b")} for it in items]}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, key)
    return data


def pixels(uint8: torch.Tensor) -> torch.Tensor:
    return (uint8.float() / 255.0 - MEAN) / STD


# ------------------------------------------------------------------------------------------ model
def sine_2d(grid: int, dim: int) -> torch.Tensor:
    """DETR's 2D sine embedding (half the channels for y, half for x), `(grid*grid, dim)`, normalised coords."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 * math.pi
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def enc(c):
        angle = c.reshape(-1, 1) * omega * 4  # a few periods over the image
        return torch.cat([angle.sin(), angle.cos()], 1)
    return torch.cat([enc(yy), enc(xx)], 1)[:, :dim]


class ProbeModel(MTGFEModel):
    """The package's MTGFEModel with probe-only levers: grid positions and an ITM readout over word states."""

    def __init__(self, config: MTGFEConfig, pos: str, grid: int, readout: str):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.pos_mode, self.readout = pos, readout
        if pos.startswith("sine"):
            self.register_buffer("pos_table", sine_2d(grid, hidden), persistent=False)
        elif pos.startswith("learned"):
            self.pos_table = nn.Parameter(torch.randn(grid * grid, hidden) * 0.1)
        if readout == "cls_mean":
            self.itm_head_words = nn.Linear(2 * hidden, 2)
        elif readout == "cls_mean_mlp":  # a nonlinear readout (PyTorch default init), like the oracle's MLP
            self.itm_head_words = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, 2))

    def encode_image(self, pixel_values=None, vision_hidden_states=None):
        global_vector, tokens = super().encode_image(pixel_values, vision_hidden_states)
        if self.pos_mode in ("sine", "learned"):
            tokens = tokens + self.pos_table
        return global_vector, tokens

    def image_key_values(self, image_tokens):
        if not self.pos_mode.endswith("_keys"):
            return super().image_key_values(image_tokens)
        out = []
        for layer in self.fusion_encoder:
            attn = layer.crossattention.self
            out.append((attn._heads(attn.key(image_tokens + self.pos_table)), attn._heads(attn.value(image_tokens))))
        return out

    def itm_logits(self, image_tokens, text_states, text_mask, image_index, text_index):
        joint = self.fuse(text_states[text_index], text_mask[text_index], image_tokens=image_tokens,
                          image_index=image_index)
        if self.readout == "cls":
            return self.itm_head(joint[:, 0])
        mask = text_mask[text_index].clone()
        mask[:, 0] = 0
        w = mask.unsqueeze(-1).to(joint.dtype)
        words = (joint * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.itm_head_words(torch.cat([joint[:, 0], words], -1))


def build_model(args, tokenizer) -> ProbeModel:
    hidden_sizes = [64, 96, 128][: args.stages]
    vision = dict(model_type="resnet", image_size=args.px, embedding_size=32, hidden_sizes=hidden_sizes,
                  depths=[1] * args.stages, layer_type="basic", downsample_in_first_stage=False)
    config = MTGFEConfig.from_preset(
        "tiny", vision_config=vision,
        text_config=dict(vocab_size=len(tokenizer), hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=192),
        embed_dim=64, image_pooling="mean", text_pooling="mean", fusion_layer=4 - args.fusion_layers,
        pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, mask_token_id=tokenizer.mask_token_id)
    grid = args.px // 4 // (2 ** (args.stages - 1))
    return ProbeModel(config, args.pos, grid, args.readout)


# ------------------------------------------------------------------------------------------ oracle
class Oracle(nn.Module):
    """Structured spatial classifier: kind/colour queries attention-pool the grid (tokens + positions), an MLP
    reads (subject, object, relation). If this cannot learn mirrored twins, the pixels/grid are the obstacle."""

    def __init__(self, backbone: MTGFEModel, grid: int, hidden: int = 96, positions: bool = True):
        super().__init__()
        self.backbone = backbone
        self.pos = nn.Parameter(torch.randn(grid * grid, hidden) * 0.1, requires_grad=positions)
        if not positions:
            self.pos.data.zero_()
        self.kind = nn.Embedding(len(KINDS), hidden)
        self.colour = nn.Embedding(16, hidden)
        self.relation = nn.Embedding(8, hidden)
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 2))

    def pool(self, tokens, query):
        att = torch.softmax((tokens * query[:, None]).sum(-1) / math.sqrt(tokens.shape[-1]), 1)
        return (att[..., None] * (tokens + self.pos)).sum(1)

    def forward(self, pix, subj, obj, rel, image_index):
        _, tokens = self.backbone.encode_image(pix)
        tokens = tokens[image_index]
        qs = self.kind(subj[:, 0]) + self.colour(subj[:, 1])
        qo = self.kind(obj[:, 0]) + self.colour(obj[:, 1])
        return self.mlp(torch.cat([self.pool(tokens, qs), self.pool(tokens, qo), self.relation(rel)], -1))


# ------------------------------------------------------------------------------------------ training
def tokenize(tokenizer, texts):
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=40, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


ISSUE_TYPES = ("count", "colour", "spatial", "binding")  # "overall" averages these; "side" is the probe's curriculum
ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@torch.no_grad()
def pair_scores(model, tokenizer, ev, with_itm: bool = True, batch: int = 64) -> dict[str, np.ndarray]:
    """Per item the 2 x 2 matrix s[x][y] = score(image x, caption y), x, y in (a, b): "itc" is the filter's
    cosine (the dual encoder's score), "itm" the fusion encoder's match logit difference."""
    model.eval()
    items = ev["items"]
    out = {"itc": [], "itm": []}
    for start in range(0, len(items), batch):
        chunk = items[start: start + batch]
        n = len(chunk)
        pix = pixels(ev["images"][2 * start: 2 * start + 2 * n])  # a0 b0 a1 b1 ...
        global_vec, tokens = model.encode_image(pix)
        ids, mask = tokenize(tokenizer, [t for it in chunk for t in (it["caption"], it["negative"])])
        states = model.encode_text(ids, mask)
        img_emb = model._image_embed(global_vec).view(n, 2, -1)
        txt_emb = model._text_embed(states, mask).view(n, 2, -1)
        out["itc"].append(torch.einsum("nxd,nyd->nxy", img_emb, txt_emb).numpy())
        if with_itm:
            item = torch.arange(n)
            img = (2 * item[:, None, None] + torch.tensor([0, 1])[None, :, None]).expand(n, 2, 2).reshape(-1)
            txt = (2 * item[:, None, None] + torch.tensor([0, 1])[None, None, :]).expand(n, 2, 2).reshape(-1)
            logits = model.itm_logits(tokens, states, mask, img, txt)
            out["itm"].append((logits[:, 1] - logits[:, 0]).view(n, 2, 2).numpy())
    model.train()
    return {k: np.concatenate(v) for k, v in out.items() if v}


def _outcomes(s: np.ndarray) -> np.ndarray:
    """(N, 3) booleans text / image / group per item (Winoground; ties fail), from (N, 2, 2) scores."""
    rows = [group_scores(float(m[0, 0]), float(m[0, 1]), float(m[1, 0]), float(m[1, 1])) for m in s]
    return np.array([[r["group_accuracy"], r["image_score"], r["both"]] for r in rows], dtype=float)


def report(s: np.ndarray, items: list[dict], boot: int = 0, seed: int = 0) -> dict:
    """Text / image / group % per type and "overall" (the mean group over ISSUE_TYPES), with a 95 % percentile
    bootstrap CI on every group score when ``boot`` > 0 (items resampled within each type)."""
    outcome = _outcomes(s)
    types = np.array([it["type"] for it in items])
    out = {}
    for typ in dict.fromkeys(types.tolist()):
        o = outcome[types == typ]
        out[typ] = {"text": round(100 * o[:, 0].mean(), 1), "image": round(100 * o[:, 1].mean(), 1),
                    "group": round(100 * o[:, 2].mean(), 1), "n": len(o)}
    present = [t for t in ISSUE_TYPES if t in out]
    if present:
        out["overall"] = {"group": round(float(np.mean([out[t]["group"] for t in present])), 1), "types": present}
    if boot:
        rng = np.random.default_rng(seed)
        draws = {t: [] for t in out}
        for _ in range(boot):
            per = {}
            for typ in out:
                if typ == "overall":
                    continue
                g = outcome[types == typ, 2]
                per[typ] = 100 * g[rng.integers(len(g), size=len(g))].mean()
                draws[typ].append(per[typ])
            if present:
                draws["overall"].append(np.mean([per[t] for t in present]))
        for typ, values in draws.items():
            out[typ]["group_ci95"] = [round(float(np.percentile(values, 2.5)), 1),
                                      round(float(np.percentile(values, 97.5)), 1)]
    return out


def evaluate(model, tokenizer, ev, batch=64) -> dict:
    """Held-out ITM report (the probe's mid-run check)."""
    return report(pair_scores(model, tokenizer, ev, batch=batch)["itm"], ev["items"])


def final_evaluation(model, tokenizer, ev, val, arm: str, boot: int = 1000) -> dict:
    """The study's scores on the held-out pairs: the filter (ITC) for every arm; for fusion arms also ITM alone
    and ITM + alpha * ITC, alpha chosen on the *val* pairs (another generator seed) by their overall group."""
    with_itm = arm == "fusion"
    test_s = pair_scores(model, tokenizer, ev, with_itm)
    out = {"itc": report(test_s["itc"], ev["items"], boot)}
    if with_itm:
        val_s = pair_scores(model, tokenizer, val, True)
        sweep = {a: report(val_s["itm"] + a * val_s["itc"], val["items"])["overall"]["group"] for a in ALPHAS}
        alpha = max(ALPHAS, key=lambda a: (sweep[a], -a))  # ties: the smaller alpha
        out["itm"] = report(test_s["itm"], ev["items"], boot)
        out["itm+itc"] = report(test_s["itm"] + alpha * test_s["itc"], ev["items"], boot)
        out["alpha"], out["val_alpha_sweep"] = alpha, {str(a): g for a, g in sweep.items()}
    return out


def hard_negatives(sim: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    weights = sim.detach().float().softmax(1)
    weights.fill_diagonal_(0)
    return torch.multinomial(weights + 1e-9, 1, generator=generator).squeeze(1)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    types = tuple(args.types.split(","))
    data = build_train(args.train_scenes, args.px, types)
    ev = build_eval(args.eval_items, args.px, tuple(args.eval_types.split(",")))
    val = build_eval(args.val_items, args.px, tuple(args.eval_types.split(",")), seed=2) if args.val_items else None
    rows = data["rows"]
    captions = [c for r in rows for c in r["captions"]] + [c for r in rows for t in r["twins"].values() for c in t[1:3]]
    captions += [it[k] for it in ev["items"] for k in ("caption", "negative")]  # vocabulary only (tiny world)
    fusion = args.arm == "fusion"
    tokenizer = build_wordpiece_tokenizer(captions, vocab_size=1000, model_max_length=40)
    model = build_model(args, tokenizer)
    if args.init_std:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name.startswith(("text_encoder", "fusion_encoder")):
                nn.init.normal_(module.weight, 0.0, args.init_std)
                nn.init.zeros_(module.bias)
    model.train()
    grid = args.px // 4 // (2 ** (args.stages - 1))
    captured = {}
    if args.ground_weight:
        cross0 = model.fusion_encoder[0].crossattention.self

        def hook(module, inputs, output):
            if "on" in captured:
                captured["h"], captured["kv"] = inputs[0], inputs[2]
        cross0.register_forward_hook(hook)
    fusion_names = {n for n, _ in model.named_parameters() if n.startswith("fusion_encoder") or "itm_head" in n}
    groups = [{"params": [p for n, p in model.named_parameters() if n not in fusion_names], "lr": args.lr},
              {"params": [p for n, p in model.named_parameters() if n in fusion_names], "lr": args.fusion_lr or args.lr}]
    for g in groups:
        g["peak"] = g["lr"]
    opt = torch.optim.AdamW(groups, weight_decay=0.02)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    eligible = [i for i, r in enumerate(rows) if any(t in r["twins"] for t in types)]
    curve, window, t0 = [], {}, time.process_time()
    wall0 = time.time()
    perm, cursor = rng.permutation(eligible), 0
    warmup = max(1, int(args.warmup * args.steps))
    for step in range(args.steps):
        scale = min(1.0, (step + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * step / args.steps)) * 0.95 + 0.05)
        for g in opt.param_groups:
            g["lr"] = g["peak"] * scale
        if cursor + args.batch > len(perm):
            perm, cursor = rng.permutation(eligible), 0
        batch = [rows[i] for i in perm[cursor: cursor + args.batch]]
        cursor += args.batch
        B = len(batch)
        if args.curriculum_steps and step < args.curriculum_steps:
            pool = ("side",)
        else:
            pool = tuple(t for t in types if t != "side" or not args.curriculum_steps)
        chosen = []
        for r in batch:
            avail = [t for t in pool if t in r["twins"]] or [t for t in types if t in r["twins"]]
            chosen.append(avail[int(rng.integers(len(avail)))])
        base_idx = torch.tensor([r["image"] for r in batch])
        twin_idx = torch.tensor([r["twins"][t][0] for r, t in zip(batch, chosen)])
        # the plain dual encoder never sees the twins: it encodes the base images only
        pix = pixels(data["images"][torch.cat([base_idx, twin_idx]) if args.arm != "dual" else base_idx])
        global_vec, tokens = model.encode_image(pix)
        reg = [r["captions"][int(rng.integers(5))] for r in batch]
        cap_a = [r["twins"][t][1] for r, t in zip(batch, chosen)]
        cap_b = [r["twins"][t][2] for r, t in zip(batch, chosen)]
        ids, mask = tokenize(tokenizer, reg + cap_a + cap_b if args.arm != "dual" else reg)
        states = model.encode_text(ids, mask)
        losses = {}
        ar = torch.arange(B)
        if not args.quad_only:
            img_emb = model._image_embed(global_vec[:B])
            txt_emb = model._text_embed(states[:B], mask[:B])
            sim = img_emb @ txt_emb.t() * model.logit_scale
            losses["itc"] = itc_loss(sim, torch.eye(B, dtype=torch.bool))
        if args.arm == "negclip":
            # NegCLIP with twins: images [A; A'] against captions [a; a'] in one contrastive matrix, so every
            # twin caption is a hard negative column for its base image and vice versa
            twin_img = model._image_embed(global_vec)
            twin_txt = model._text_embed(states[B:], mask[B:])
            sim_twins = twin_img @ twin_txt.t() * model.logit_scale
            losses["itc_twins"] = itc_loss(sim_twins, torch.eye(2 * B, dtype=torch.bool))
        if fusion and not args.quad_only:
            neg_txt, neg_img = hard_negatives(sim, gen), hard_negatives(sim.t(), gen)
            img = torch.cat([ar, ar, neg_img])
            txt = torch.cat([ar, neg_txt, ar])
            lab = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long()
            losses["itm"] = F.cross_entropy(model.itm_logits(tokens, states, mask, img, txt), lab)
        per = None
        if fusion:
            # balanced swap quads: A = base image (row ar), A' = twin (row B + ar); a = text B + ar, a' = 2B + ar
            img = torch.cat([ar, B + ar, ar, B + ar])
            txt = torch.cat([B + ar, 2 * B + ar, 2 * B + ar, B + ar])
            lab = torch.cat([torch.ones(2 * B), torch.zeros(2 * B)]).long()
            captured["on"] = True
            per = F.cross_entropy(model.itm_logits(tokens, states, mask, img, txt), lab, reduction="none")
            captured.pop("on")
            losses["quad"] = per.mean()
            if args.ground_weight:
                # fusion layer 0 cross-attention of the positive pairs (rows 0 .. 2B-1 of the quad), heads averaged
                q = cross0._heads(cross0.query(captured["h"][: 2 * B]))
                probs = torch.softmax(q @ captured["kv"][0][: 2 * B].transpose(-1, -2) * cross0.scaling, -1).mean(1)
                terms = []
                pairs = [(r["scene"], r["twins"][t][1]) for r, t in zip(batch, chosen)]
                pairs += [(r["twins"][t][3], r["twins"][t][2]) for r, t in zip(batch, chosen)]
                for p_i, (scene, caption) in enumerate(pairs):
                    for token, cells in grounding_targets(scene, caption, tokenizer, grid):
                        if token < probs.shape[1]:
                            terms.append(-torch.log(probs[p_i, token, cells].sum() + 1e-6))
                if terms:
                    losses["ground"] = torch.stack(terms).mean()
        quad_weight = args.quad_weight if step >= args.quad_start else 0.0
        weights = {"quad": quad_weight, "ground": args.ground_weight if step >= args.quad_start else 0.0}
        loss = sum(weights.get(k, 1.0) * v for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v.detach()))
        if per is not None:
            for t, v in zip(chosen, per.view(4, B).mean(0).detach().tolist()):
                window.setdefault(f"quad_{t}", []).append(v)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            rec = {"step": step + 1, **{k: round(float(np.mean(v)), 4) for k, v in window.items()},
                   "cpu_s": round(time.process_time() - t0, 1)}
            if fusion and args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 != args.steps:
                rec["eval"] = evaluate(model, tokenizer, ev)
            curve.append(rec)
            window = {}
            print(json.dumps(rec), flush=True)
            if args.max_cpu_s and time.process_time() - t0 > args.max_cpu_s:
                break
    cpu = time.process_time() - t0
    if val is None:
        final, study = evaluate(model, tokenizer, ev), None
    else:
        study = final_evaluation(model, tokenizer, ev, val, args.arm, boot=args.bootstrap)
        final = study["itm" if fusion else "itc"]
    print("EVAL", json.dumps(final), flush=True)
    return {"curve": curve, "eval": final, "study": study, "steps_done": curve[-1]["step"], "cpu_s": round(cpu, 1),
            "wall_s": round(time.time() - wall0, 1), "cpu_s_per_step": round(cpu / curve[-1]["step"], 3),
            "params": sum(p.numel() for p in model.parameters())}


def train_oracle(args) -> dict:
    """Spatial twins only, structured inputs (kinds/colours/relation from the generator)."""
    torch.manual_seed(args.seed)
    data = build_train(args.train_scenes, args.px, ("spatial",))
    ev = build_eval(args.eval_items, args.px, ("spatial",))
    colours = {c: i for i, c in enumerate(["white", "grey", "black", "red", "blue", "green", "yellow", "orange"])}
    kinds = {k: i for i, k in enumerate(KINDS)}
    relations = {}

    def encode(scene, caption):
        gs, go, rel = _spatial_roles(scene, caption)
        rel = relations.setdefault(rel, len(relations))
        return [kinds[gs["kind"]], colours[gs["colour"]]], [kinds[go["kind"]], colours[go["colour"]]], rel

    tok = build_wordpiece_tokenizer(["a"], vocab_size=100)
    backbone = build_model(args, tok)
    grid = args.px // 4 // (2 ** (args.stages - 1))
    model = Oracle(backbone, grid, positions=not args.oracle_nopos)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.02)
    rows = [r for r in data["rows"] if "spatial" in r["twins"]]
    rng = np.random.default_rng(args.seed)
    curve, window, t0 = [], [], time.process_time()

    def quad_logits(pix, scenes, caps_a, caps_b):
        n = len(caps_a)
        enc_a = [encode(s, c) for s, c in zip(scenes, caps_a)]
        enc_b = [encode(s, c) for s, c in zip(scenes, caps_b)]
        subj = torch.tensor([e[0] for e in enc_a] + [e[0] for e in enc_b])
        obj = torch.tensor([e[1] for e in enc_a] + [e[1] for e in enc_b])
        rel = torch.tensor([e[2] for e in enc_a] + [e[2] for e in enc_b])
        ar = torch.arange(n)
        img = torch.cat([ar, n + ar, ar, n + ar])  # images: A = 0..n-1, A' = n..2n-1
        txt = torch.cat([ar, n + ar, n + ar, ar])  # texts: a = 0..n-1, a' = n..2n-1
        return model(pix, subj[txt], obj[txt], rel[txt], img)

    for step in range(args.steps):
        idx = rng.choice(len(rows), args.batch, replace=False)
        batch = [rows[i] for i in idx]
        pix = pixels(data["images"][torch.tensor([r["image"] for r in batch] + [r["twins"]["spatial"][0] for r in batch])])
        logits = quad_logits(pix, [r["scene"] for r in batch], [r["twins"]["spatial"][1] for r in batch],
                             [r["twins"]["spatial"][2] for r in batch])
        lab = torch.cat([torch.ones(2 * args.batch), torch.zeros(2 * args.batch)]).long()
        loss = F.cross_entropy(logits, lab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.append(float(loss))
        if (step + 1) % args.log_every == 0:
            curve.append({"step": step + 1, "quad_spatial": round(float(np.mean(window)), 4),
                          "cpu_s": round(time.process_time() - t0, 1)})
            window = []
            print(json.dumps(curve[-1]), flush=True)
            if args.max_cpu_s and time.process_time() - t0 > args.max_cpu_s:
                break
    model.eval()
    with torch.no_grad():
        items = ev["items"]
        pix = pixels(ev["images"])
        n = len(items)
        order = torch.cat([torch.arange(n) * 2, torch.arange(n) * 2 + 1])
        logits = quad_logits(pix[order], [it["scene"] for it in items], [it["caption"] for it in items],
                             [it["negative"] for it in items])
        s = (logits[:, 1] - logits[:, 0]).view(4, n)  # (A,a), (A',a'), (A,a'), (A',a)
        rows_ = [group_scores(float(s[0, i]), float(s[2, i]), float(s[3, i]), float(s[1, i])) for i in range(n)]
    final = {"spatial": {"text": round(100 * np.mean([r["group_accuracy"] for r in rows_]), 1),
                         "image": round(100 * np.mean([r["image_score"] for r in rows_]), 1),
                         "group": round(100 * np.mean([r["both"] for r in rows_]), 1), "n": n}}
    print("EVAL", json.dumps(final), flush=True)
    cpu = time.process_time() - t0
    return {"curve": curve, "eval": final, "steps_done": curve[-1]["step"], "cpu_s": round(cpu, 1),
            "cpu_s_per_step": round(cpu / curve[-1]["step"], 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--arm", default="fusion", choices=("fusion", "dual", "negclip"),
                   help="fusion: ITC + ITM + quads (+ grounding); dual: ITC on the base captions only; "
                        "negclip: dual + twins as NegCLIP columns ([A; A'] against [a; a'])")
    p.add_argument("--val-items", type=int, default=0,
                   help="pairs per type from generator seed 2 to choose alpha of ITM + alpha * ITC on; "
                        "0 = the probe's ITM-only report")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95 %% CIs")
    p.add_argument("--out", default="experiments/twin_recipe/runs.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--px", type=int, default=64)
    p.add_argument("--stages", type=int, default=3, choices=(2, 3))
    p.add_argument("--pos", default="none", choices=("none", "sine", "learned", "sine_keys", "learned_keys"))
    p.add_argument("--readout", default="cls", choices=("cls", "cls_mean", "cls_mean_mlp"))
    p.add_argument("--init-std", type=float, default=0.0,
                   help="re-initialise the text/fusion Linear layers with this std (BERT's is 0.02)")
    p.add_argument("--fusion-layers", type=int, default=2)
    p.add_argument("--types", default="spatial,binding,colour,count")
    p.add_argument("--eval-types", default="count,colour,spatial,binding")
    p.add_argument("--train-scenes", type=int, default=4000)
    p.add_argument("--eval-items", type=int, default=200)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fusion-lr", type=float, default=None)
    p.add_argument("--warmup", type=float, default=0.05)
    p.add_argument("--quad-weight", type=float, default=1.0)
    p.add_argument("--quad-only", action="store_true")
    p.add_argument("--quad-start", type=int, default=0,
                   help="quad (and grounding) loss weight 0 before this step: the fine-tuning protocol (twins after "
                        "training without them)")
    p.add_argument("--curriculum-steps", type=int, default=0)
    p.add_argument("--ground-weight", type=float, default=0.0,
                   help="auxiliary grounding loss: -log of fusion layer 0 attention mass on the named group's cells")
    p.add_argument("--oracle", action="store_true")
    p.add_argument("--oracle-nopos", action="store_true", help="oracle without its learned grid positions")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--max-cpu-s", type=float, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    result = train_oracle(args) if args.oracle else train(args)
    record = {"name": args.name, "config": vars(args), **result, "torch_threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
