"""Markdown table of the compositional results (results/compositional/*.json from mtgfe-eval --compositional).

  .venv/bin/python results/compositional/make_table.py
"""
import json
from pathlib import Path

HERE = Path(__file__).parent
MODELS = [  # (file, label, scorers shown)
    ("eval_stage1_dual.json", "dual encoder, stage 1 (`ucm_dual_finetune`)", ["filter"]),
    ("eval_negclip.json", "NegCLIP dual encoder (stage 1 + 80 steps ITC with 1.0 perturbation negs)", ["filter"]),
    ("eval_fusion.json", "fusion, `ucm_fusion` (MLM 0.1), 80 of 260 steps", ["filter", "itm", "itm+itc"]),
    ("eval_fusion_pert.json", "fusion + ITM perturbation negatives 1.0, 80 steps", ["filter", "itm", "itm+itc"]),
]
SINGLE = [("ucm_test", "count"), ("ucm_test", "colour"), ("rsicd_test", "colour"), ("pooled", "overall")]
PAIRS = [("ucm_test", "overall"), ("rsicd_test", "overall"), ("pooled", "overall")]


def fmt(cell):
    if not cell or cell["mean"] is None:
        return "–"
    lo, hi = cell["ci95"]
    return f"{cell['mean']:.2f} [{lo:.2f}, {hi:.2f}]"


def main():
    head = (["model", "scorer"] + [f"single {s.split('_')[0].upper()} {t} (n={{}})" for s, t in SINGLE]
            + [f"pairs {s.split('_')[0].upper()} text (n={{}})" for s, _ in PAIRS]
            + ["pairs pooled group", "retrieval: mean rank true → edited query"])
    rows, ns = [], None
    for file, label, scorers in MODELS:
        path = HERE / file
        if not path.is_file():
            rows.append([label, "(not run)"] + ["–"] * (len(head) - 2))
            continue
        rep = json.loads(path.read_text())
        src = rep["sources"]
        if ns is None:
            ns = [src[s]["single"][t]["filter"]["accuracy"]["n"] for s, t in SINGLE] + \
                 [src[s]["pairs"][t]["filter"]["text"]["n"] for s, t in PAIRS]
        for scorer in scorers:
            r = [label if scorer == scorers[0] else "", scorer]
            r += [fmt(src[s]["single"][t][scorer]["accuracy"]) for s, t in SINGLE]
            r += [fmt(src[s]["pairs"][t][scorer]["text"]) for s, t in PAIRS]
            r.append(fmt(src["pooled"]["pairs"]["overall"][scorer]["group"]))
            ret = src["pooled"]["retrieval"]["overall"]
            r.append(f"{ret['true']['mean_rank']['mean']:.1f} → {ret['edited']['mean_rank']['mean']:.1f}"
                     if scorer == "itm+itc" or scorers == ["filter"] else "")
            rows.append(r)
    blind = json.loads((HERE / "blind_check.json").read_text())["sources"]
    b = ["blind text-only model (`blind_check.json`)", "n-grams"]
    for s, t in SINGLE:
        if s == "pooled":
            b.append("–")
        else:
            c = blind[s]["single"][t]
            b.append(f"{c['blind_accuracy']:.2f} [{c['blind_ci95'][0]:.2f}, {c['blind_ci95'][1]:.2f}]")
    b += ["0 (by construction)"] * len(PAIRS) + ["0", ""]
    rows.append(b)
    ns = ns or ["?"] * (len(SINGLE) + len(PAIRS))
    head = [h.format(ns[i - 2]) if "{}" in h else h for i, h in enumerate(head)]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
