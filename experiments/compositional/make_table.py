"""Markdown tables of the compositional results over seeds (the JSON files `runs.sh eval` writes).

  .venv/bin/python experiments/compositional/make_table.py [FOLDER] [--compact]   # default: this folder

Reads `eval_<arm>_s<seed>.json` (mtgfe-eval --compositional) and `ucm_test_mR_<arm>_s<seed>.json` (mtgfe-eval on
UCM test) for every arm in ARMS, and `eval_stage1.json` / `ucm_test_mR_stage1.json` for the common stage-1
filter. Cells are mean ± std over the seeds found (the seed count is printed); a missing file is shown, never
guessed. Pairs cells are the Winoground *text* score (each image prefers its own caption); chance for a
model that ignores the image is 0 by construction.
"""
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
ARMS = [  # (file stem, label, scorers shown)
    ("negclip_pairs", "NegCLIP dual encoder, pair negatives", ["filter"]),
    ("fusion_pairs", "fusion (ITC + ITM), pair negatives", ["filter", "itm", "itm+itc"]),
    ("negclip_edits", "NegCLIP dual encoder, rule-edit negatives", ["filter"]),
    ("fusion_edits", "fusion (ITC + ITM), rule-edit negatives", ["filter", "itm", "itm+itc"]),
]
SEEDS = (42, 1, 2)
PAIRS = [("ucm_test", "count"), ("ucm_test", "colour"), ("ucm_test", "overall"), ("rsicd_test", "overall"),
         ("pooled", "overall")]
SINGLE = [("ucm_test", "count"), ("ucm_test", "colour"), ("rsicd_test", "colour")]
TYPES = ("count", "colour")  # the pair types UCM test has (no spatial pair exists; binding has no pairs view)


def _load(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _ms(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _cells(reports, scorer):
    # the target metric: UCM test pairs, averaged over the types that exist (count, colour)
    out = [_ms([statistics.mean(r["sources"]["ucm_test"]["pairs"][t][scorer]["text"]["mean"] for t in TYPES)
                for r in reports])]
    for s, t in PAIRS:
        out.append(_ms([r["sources"][s]["pairs"][t][scorer]["text"]["mean"] for r in reports]))
    for s, t in SINGLE:
        out.append(_ms([r["sources"][s]["single"][t][scorer]["accuracy"]["mean"] for r in reports]))
    return out


COMPACT = 6  # --compact keeps the first columns: model, scorer, seeds, type mean, UCM count, UCM colour


def main(folder: Path = HERE, compact: bool = False) -> None:
    first = _load(folder, "eval_stage1.json")
    if first is None:
        raise SystemExit(f"{folder}/eval_stage1.json not found: run `runs.sh eval stage1 filter` first")
    n = [first["sources"][s]["pairs"][t]["filter"]["text"]["n"] for s, t in PAIRS]
    n += [first["sources"][s]["single"][t]["filter"]["accuracy"]["n"] for s, t in SINGLE]
    head = (["model", "scorer", "seeds", "**UCM pairs, mean of types**"] + [f"pairs {s.split('_')[0].upper()} {t} (n={k})" for (s, t), k in zip(PAIRS, n)]
            + [f"single {s.split('_')[0].upper()} {t} (n={k})" for (s, t), k in zip(SINGLE, n[len(PAIRS):])]
            + ["UCM test mR", "retrieval, pooled: true image's mean rank, true → edited query"])
    rows = []
    mr = _load(folder, "ucm_test_mR_stage1.json")
    rows.append(["stage-1 dual encoder (`ucm_dual_finetune`, the common start)", "filter", "1"]
                + _cells([first], "filter") + [_ms([mr["metrics"]["mR"]]) if mr else "–", _ranks([first])])
    for stem, label, scorers in ARMS:
        found = [(seed, _load(folder, f"eval_{stem}_s{seed}.json")) for seed in SEEDS]
        reports = [r for _, r in found if r is not None]
        if not reports:
            continue
        seeds = ",".join(str(s) for s, r in found if r is not None)
        mrs = [m["metrics"]["mR"] for m in (_load(folder, f"ucm_test_mR_{stem}_s{s}.json") for s, r in found if r)
               if m is not None]
        for scorer in scorers:
            last = scorer == scorers[-1]
            rows.append([label if scorer == scorers[0] else "", scorer, seeds] + _cells(reports, scorer)
                        + [_ms(mrs) if last else "", _ranks(reports) if last else ""])
    rows.append(["blind text-only model", "any", "–"] + ["0 (by construction)"] * (1 + len(PAIRS))
                + [f"{_blind(s, t):.2f}" for s, t in SINGLE] + ["", ""])
    if compact:  # the README's table: the target columns, RSICD transfer and UCM test mR
        keep = list(range(COMPACT)) + [head.index(h) for h in head if h.startswith("pairs RSICD")] + [len(head) - 2]
        head, rows = [head[i] for i in keep], [[r[i] for i in keep] for r in rows]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def _ranks(reports) -> str:
    """The deployed search (filter top-k, then the model's re-rank score); higher rank = worse."""
    ret = [r["sources"]["pooled"]["retrieval"]["overall"] for r in reports]
    true = statistics.mean(x["true"]["mean_rank"]["mean"] for x in ret)
    edited = statistics.mean(x["edited"]["mean_rank"]["mean"] for x in ret)
    return f"{true:.1f} → {edited:.1f}"


def per_seed(folder: Path = HERE) -> None:
    """One row per (arm, scorer, seed): UCM test pairs text score per type, and the margin of the best fusion
    scorer over the best dual encoder of the same seed (the issue's target: >= +0.15 on the type mean)."""
    head = ["seed", "arm", "scorer"] + [f"UCM pairs {t}" for t in TYPES] + ["type mean"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    stage1 = _load(folder, "eval_stage1.json")
    for seed in SEEDS:
        # the common stage-1 dual encoder counts as a dual encoder of every seed
        best = {"dual": statistics.mean(stage1["sources"]["ucm_test"]["pairs"][t]["filter"]["text"]["mean"]
                                        for t in TYPES)} if stage1 else {}
        for stem, label, scorers in ARMS:
            rep = _load(folder, f"eval_{stem}_s{seed}.json")
            if rep is None:
                continue
            for scorer in scorers:
                vals = [rep["sources"]["ucm_test"]["pairs"][t][scorer]["text"]["mean"] for t in TYPES]
                mean = statistics.mean(vals)
                kind = "fusion" if stem.startswith("fusion") and scorer != "filter" else "dual"
                best[kind] = max(best.get(kind, -1.0), mean)
                print(f"| {seed} | {stem} | {scorer} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {mean:.2f} |")
        if "fusion" in best:
            print(f"| {seed} | **best fusion − best dual encoder** | | | | **{best['fusion'] - best['dual']:+.2f}** |")


def _blind(source: str, typ: str) -> float:
    blind = json.loads((HERE / "blind_check.json").read_text())["sources"]
    return blind[source]["single"][typ]["blind_accuracy"]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--compact"]
    where = Path(args[0]) if args else HERE
    main(where, compact="--compact" in sys.argv)
    if "--compact" not in sys.argv:
        print()
        per_seed(where)
