"""Markdown tables of the compositional results over seeds (the JSON files `runs.sh eval` writes).

  .venv/bin/python results/compositional/make_table.py [FOLDER]   # default: this folder

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
    ("fusion_pairs", "fusion (ITC + ITM), pair negatives", ["itm", "itm+itc"]),
    ("negclip_edits", "NegCLIP dual encoder, rule-edit negatives", ["filter"]),
    ("fusion_edits", "fusion (ITC + ITM), rule-edit negatives", ["itm", "itm+itc"]),
]
SEEDS = (42, 1, 2)
PAIRS = [("ucm_test", "count"), ("ucm_test", "colour"), ("ucm_test", "overall"), ("rsicd_test", "overall"),
         ("pooled", "overall")]
SINGLE = [("ucm_test", "count"), ("ucm_test", "colour"), ("rsicd_test", "colour")]


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
    out = []
    for s, t in PAIRS:
        out.append(_ms([r["sources"][s]["pairs"][t][scorer]["text"]["mean"] for r in reports]))
    for s, t in SINGLE:
        out.append(_ms([r["sources"][s]["single"][t][scorer]["accuracy"]["mean"] for r in reports]))
    return out


def main(folder: Path = HERE) -> None:
    first = _load(folder, "eval_stage1.json")
    if first is None:
        raise SystemExit(f"{folder}/eval_stage1.json not found: run `runs.sh eval stage1 filter` first")
    n = [first["sources"][s]["pairs"][t]["filter"]["text"]["n"] for s, t in PAIRS]
    n += [first["sources"][s]["single"][t]["filter"]["accuracy"]["n"] for s, t in SINGLE]
    head = (["model", "scorer", "seeds"] + [f"pairs {s.split('_')[0].upper()} {t} (n={k})" for (s, t), k in zip(PAIRS, n)]
            + [f"single {s.split('_')[0].upper()} {t} (n={k})" for (s, t), k in zip(SINGLE, n[len(PAIRS):])]
            + ["UCM test mR"])
    rows = []
    mr = _load(folder, "ucm_test_mR_stage1.json")
    rows.append(["stage-1 dual encoder (`ucm_dual_finetune`, the common start)", "filter", "1"]
                + _cells([first], "filter") + [_ms([mr["metrics"]["mR"]]) if mr else "–"])
    for stem, label, scorers in ARMS:
        found = [(seed, _load(folder, f"eval_{stem}_s{seed}.json")) for seed in SEEDS]
        reports = [r for _, r in found if r is not None]
        if not reports:
            continue
        seeds = ",".join(str(s) for s, r in found if r is not None)
        mrs = [m["metrics"]["mR"] for m in (_load(folder, f"ucm_test_mR_{stem}_s{s}.json") for s, r in found if r)
               if m is not None]
        for scorer in scorers:
            rows.append([label if scorer == scorers[0] else "", scorer, seeds] + _cells(reports, scorer)
                        + [_ms(mrs) if scorer == scorers[-1] else ""])
    rows.append(["blind text-only model", "any", "–"] + ["0 (by construction)"] * len(PAIRS)
                + [f"{_blind(s, t):.2f}" for s, t in SINGLE] + [""])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def _blind(source: str, typ: str) -> float:
    blind = json.loads((HERE / "blind_check.json").read_text())["sources"]
    return blind[source]["single"][typ]["blind_accuracy"]


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
