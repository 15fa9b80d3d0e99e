"""Compositional evaluation of a trained model: `mtgfe-eval --compositional`.

For each test source (UCM test, RSICD test) and pooled, per type and overall, three scorers:

* ``filter``: the retrieval filter's cosine (ITC embeddings; what a dual encoder sees),
* ``itm``: the fusion encoder's ITM match probability alone,
* ``itm+itc``: ITM + alpha * cosine, alpha = the model's `retrieval_alpha` (the search default).

Pairs view (Winoground): ``text`` = each image prefers its own caption (`group_scores`'
``group_accuracy``, the item score), ``image`` = each caption prefers its own image, ``group``
= both. Single-edit view: ``accuracy`` = the true caption beats its edit for its image (chance 0.5).
Every cell carries n and a seeded bootstrap 95% CI over items.

Retrieval view: each item's true caption and its edited caption (single view: the negative; pairs:
caption b, false for image a) are run as queries through the normal two-stage search over all images of
the split (filter top-k, then ITM + alpha * cosine on the shortlist); reported: where the true image
falls (mean rank, R@1, R@k) for the true query and for the edited query. A model that reads the edit
should push the true image *down* for the edited query.

The JSON records `COMPOSITIONAL_VERSION` and each (source, view)'s `items_hash`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from modeling_mtgfe.configuration_mtgfe import resolve_retrieval_settings
from modeling_mtgfe.retrieval import coarse_topk, encode_images, encode_texts, score_pairs

from mtgfe.data.loading import load_dataset_split

from .generation import COMPOSITIONAL_VERSION, SOURCES, generate_items, group_scores, items_hash, CERTIFIED_SINGLE

SCORERS = ("filter", "itm", "itm+itc")
DEFAULT_SOURCES = ("ucm_test", "rsicd_test")
# the sources that can be scored (their images ship with the data); (benchmark, split) comes from SOURCES
_SPLIT_OF = {name: SOURCES[name][0] for name in ("ucm_test", "rsicd_test", "ucm_val")}


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """Percentile 95% CI of the mean, resampling items with a seeded generator; None for no items."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def _cell(values: Sequence[float], n_boot: int, seed: int) -> dict:
    return {"n": len(values), "mean": round(float(np.mean(values)), 4) if len(values) else None,
            "ci95": bootstrap_ci(values, n_boot, seed)}


def _items(source: str, data_dir, certified_only: bool) -> dict[str, list[dict]]:
    pairs = generate_items(source, "pairs", data_dir)
    single = generate_items(source, "single", data_dir)
    if certified_only and source in CERTIFIED_SINGLE:
        single = [it for it in single if it["type"] in CERTIFIED_SINGLE[source]]
    return {"pairs": pairs, "single": single}


@torch.no_grad()
def score_source(model, processor, source: str, data_dir=None, k: int | None = None, alpha: float | None = None,
                 certified_only: bool = True, retrieval: bool = True, batch_size: int = 32,
                 max_gallery: int | None = None) -> dict:
    """Per-item scores of one source: `{"items": {view: [...]}, "scores": ..., "retrieval": ...}`."""
    items = _items(source, data_dir, certified_only)
    bench, split = _SPLIT_OF[source]
    gallery = load_dataset_split(bench, split, "images", data_dir=data_dir)
    if max_gallery is not None:
        gallery = gallery.select(range(min(max_gallery, len(gallery))))
    names = list(gallery["filename"])
    row_of = {name: i for i, name in enumerate(names)}
    # every item's image(s) must be in the gallery (tests may cut the gallery: keep what fits)
    for view in items:
        items[view] = [it for it in items[view] if it["filename"] in row_of
                       and (view == "single" or it["filename_b"] in row_of)]
    from datasets import Image as ImageFeature

    sources = [row["path"] or row["bytes"] for row in gallery.cast_column("image", ImageFeature(decode=False))["image"]]
    image_feats = encode_images(model, processor, sources, batch_size=batch_size, keep_tokens=True, progress=False)
    texts = sorted({it[key] for view in items for it in items[view] for key in ("caption", "negative")})
    if not texts:
        return {"items": items, "pair_scores": {}, "retrieval": None}
    text_feats = encode_texts(model, processor, texts, keep_states=True)
    text_row = {t: int(text_feats.inverse[i]) for i, t in enumerate(texts)}
    k, _, alpha = resolve_retrieval_settings(model.config, k, "itm+itc", alpha)  # alpha of the itm+itc scorer

    # all (image, text) pairs the items need, scored once
    needed = set()
    for it in items["single"]:
        needed |= {(row_of[it["filename"]], text_row[it["caption"]]), (row_of[it["filename"]], text_row[it["negative"]])}
    for it in items["pairs"]:
        a, b = row_of[it["filename"]], row_of[it["filename_b"]]
        ta, tb = text_row[it["caption"]], text_row[it["negative"]]
        needed |= {(a, ta), (a, tb), (b, ta), (b, tb)}
    # retrieval: each query's filter shortlist over the whole split
    queries = sorted({text_row[it[key]] for view in items for it in items[view] for key in ("caption", "negative")})
    cosine = (text_feats.embeds @ image_feats.embeds.t()).float()  # (distinct texts, images)
    shortlist = {}
    if retrieval:
        cand = coarse_topk(text_feats.embeds[queries], image_feats.embeds, k)
        for q, idx in zip(queries, cand.indices):
            shortlist[q] = idx
            needed |= {(int(i), q) for i in idx}
    pairs = sorted(needed)
    itm = score_pairs(model, torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]), text_feats,
                      image_tokens=image_feats.tokens)
    itm_of = {p: float(s) for p, s in zip(pairs, itm)}

    def score(scorer, image, text):
        cos = float(cosine[text, image])
        if scorer == "filter":
            return cos
        return itm_of[(image, text)] + (alpha * cos if scorer == "itm+itc" else 0.0)

    per_item = {"single": [], "pairs": []}
    for it in items["single"]:
        img, t, n = row_of[it["filename"]], text_row[it["caption"]], text_row[it["negative"]]
        per_item["single"].append({"type": it["type"], **{s: float(score(s, img, t) > score(s, img, n)) for s in SCORERS}})
    for it in items["pairs"]:
        a, b = row_of[it["filename"]], row_of[it["filename_b"]]
        ta, tb = text_row[it["caption"]], text_row[it["negative"]]
        row = {"type": it["type"]}
        for s in SCORERS:
            g = group_scores(score(s, a, ta), score(s, a, tb), score(s, b, ta), score(s, b, tb))
            row[s] = {"text": float(g["group_accuracy"]), "image": float(g["image_score"]), "group": float(g["both"])}
        per_item["pairs"].append(row)

    ranks = None
    if retrieval:
        def rank_of(image, q):
            idx = shortlist[q]
            if image in set(idx.tolist()):
                final = torch.tensor([score("itm+itc", int(i), q) for i in idx])
                mine = score("itm+itc", image, q)
                return 1.0 + float((final > mine).sum()) + 0.5 * float((final == mine).sum() - 1)
            outside = torch.ones(cosine.shape[1], dtype=torch.bool)
            outside[idx] = False
            return float(len(idx)) + 1.0 + float((cosine[q][outside] > cosine[q, image]).sum())

        ranks = []
        for view in ("single", "pairs"):
            for it in items[view]:
                img = row_of[it["filename"]]
                ranks.append({"view": view, "type": it["type"],
                              "true": rank_of(img, text_row[it["caption"]]),
                              "edited": rank_of(img, text_row[it["negative"]])})
    return {"items": items, "per_item": per_item, "ranks": ranks, "alpha": alpha, "k": k,
            "gallery_images": len(names)}


def _summarise(per_item: dict, ranks, k: int, n_boot: int, seed: int) -> dict:
    out = {"single": {}, "pairs": {}, "retrieval": {}}
    for view in ("single", "pairs"):
        rows = per_item[view]
        by_type = defaultdict(list)
        for r in rows:
            by_type[r["type"]].append(r)
        by_type["overall"] = list(rows)
        for typ, group in sorted(by_type.items()):
            cell = {}
            for s in SCORERS:
                if view == "single":
                    cell[s] = {"accuracy": _cell([r[s] for r in group], n_boot, seed)}
                else:
                    cell[s] = {m: _cell([r[s][m] for r in group], n_boot, seed) for m in ("text", "image", "group")}
            out[view][typ] = cell
    if ranks:
        by_type = defaultdict(list)
        for r in ranks:
            by_type[f"{r['view']}/{r['type']}"].append(r)
            by_type["overall"].append(r)
        for key, group in sorted(by_type.items()):
            cell = {"n": len(group)}
            for q in ("true", "edited"):
                rk = [r[q] for r in group]
                cell[q] = {"mean_rank": _cell(rk, n_boot, seed), "R@1": _cell([float(x <= 1) for x in rk], n_boot, seed),
                           f"R@{k}": _cell([float(x <= k) for x in rk], n_boot, seed)}
            cell["edited_minus_true_rank"] = _cell([r["edited"] - r["true"] for r in group], n_boot, seed)
            out["retrieval"][key] = cell
    return out


def evaluate_compositional(model, processor, sources: Sequence[str] = DEFAULT_SOURCES, data_dir=None,
                           k: int | None = None, alpha: float | None = None, n_boot: int = 2000, seed: int = 0,
                           certified_only: bool = True, retrieval: bool = True, model_path: str | None = None,
                           max_gallery: int | None = None) -> dict:
    """The compositional report of `model` (see the module docstring); JSON-able."""
    model.eval()
    unknown = [s for s in sources if s not in _SPLIT_OF]
    if unknown:
        raise ValueError(f"unknown compositional test source(s) {unknown}; known: {sorted(_SPLIT_OF)}")
    report = {"benchmark": "mtgfe compositional", "version": COMPOSITIONAL_VERSION, "model_path": model_path,
              "scorers": list(SCORERS), "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95},
              "certified_only": certified_only, "items_hash": {}, "sources": {}}
    pooled_items = {"single": [], "pairs": []}
    pooled_ranks = []
    k_used = alpha_used = None
    for source in sources:
        res = score_source(model, processor, source, data_dir, k, alpha, certified_only, retrieval,
                           max_gallery=max_gallery)
        k_used, alpha_used = res.get("k", k_used), res.get("alpha", alpha_used)
        for view in ("pairs", "single"):
            report["items_hash"][f"{source}/{view}"] = items_hash(res["items"][view])
        if "per_item" not in res:
            continue
        report["sources"][source] = {"gallery_images": res["gallery_images"],
                                     **_summarise(res["per_item"], res["ranks"], res["k"], n_boot, seed)}
        for view in pooled_items:
            pooled_items[view] += res["per_item"][view]
        pooled_ranks += res["ranks"] or []
    report["alpha"], report["k"] = alpha_used, k_used
    if len(sources) > 1:
        report["sources"]["pooled"] = _summarise(pooled_items, pooled_ranks, k_used or 16, n_boot, seed)
    return report


def format_compositional(report: dict) -> str:
    """A short text table: per source and type, single accuracy and pairs text/group score per scorer."""
    lines = [f"compositional {report['version']}  alpha={report['alpha']}  k={report['k']}"]
    for source, res in report["sources"].items():
        for view, metric in (("single", "accuracy"), ("pairs", "text"), ("pairs", "group")):
            for typ, cell in res.get(view, {}).items():
                vals = "  ".join(f"{s}={cell[s][metric]['mean']:.3f}" for s in SCORERS if cell[s][metric]["mean"] is not None)
                lines.append(f"{source:10s} {view:6s} {metric:8s} {typ:8s} n={cell[SCORERS[0]][metric]['n']:3d}  {vals}")
    return "\n".join(lines)


__all__ = ["SCORERS", "bootstrap_ci", "evaluate_compositional", "format_compositional", "score_source"]
