"""Markdown table of the controlled study (study.jsonl, written by study.sh): per arm and score, the held-out
Winoground group % per type, the mean over seeds with a 95 % CI for that mean.

The CI combines each seed's item bootstrap (95 % percentile interval, 1,000 resamples, items resampled within
type) as independent normal errors: se = sqrt(sum se_seed^2) / n_seeds, with se_seed = interval width / 3.92.
It covers item sampling, not seed-to-seed variation; the seeds' spread is given separately (min-max).

    .venv/bin/python experiments/twin_recipe/study_table.py [study.jsonl]
"""

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

TYPES = ("spatial", "binding", "count", "colour", "overall", "side")
ARMS = {  # arm -> (what it is, the scores reported for it)
    "dual": ("dual encoder, ITC on the base captions", ("itc",)),
    "negclip": ("NegCLIP dual: ITC + twins as negative columns", ("itc",)),
    "fusion_nopos": ("fusion + twins, no positions", ("itm", "itm+itc")),
    "fusion_sine": ("fusion + twins, sine positions", ("itm", "itm+itc")),
    "fusion_learned": ("fusion + twins, learned positions", ("itm", "itm+itc")),
}
SCORE_NAMES = {"itc": "filter (ITC)", "itm": "ITM alone", "itm+itc": "ITM + α·ITC (α on val)"}


def load(path: str) -> dict[str, list[dict]]:
    runs = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            runs[run["name"].rsplit("_s", 1)[0]].append(run)
    return runs


def cell(seeds: list[dict], typ: str) -> str:
    rows = [s[typ] for s in seeds if typ in s]
    if not rows:
        return "-"
    groups = [r["group"] for r in rows]
    mean = sum(groups) / len(groups)
    se = math.sqrt(sum(((r["group_ci95"][1] - r["group_ci95"][0]) / 3.92) ** 2 for r in rows)) / len(rows)
    lo, hi = max(0.0, mean - 1.96 * se), min(100.0, mean + 1.96 * se)
    spread = f"; seeds {min(groups):.1f}–{max(groups):.1f}" if len(rows) > 1 else ""
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]{spread}"


def main(path: str = "experiments/twin_recipe/study.jsonl") -> None:
    runs = load(path)
    print("| arm | score | seeds | " + " | ".join(TYPES) + " |")
    print("|" + "---|" * (3 + len(TYPES)))
    for arm, (label, scores) in ARMS.items():
        for score in scores:
            seeds = [r["study"][score] for r in runs.get(arm, [])]
            if not seeds:
                continue
            alphas = sorted({r["study"]["alpha"] for r in runs[arm]}) if score == "itm+itc" else []
            name = SCORE_NAMES[score] + (f" α ∈ {alphas}" if alphas else "")
            print(f"| {label} | {name} | {len(seeds)} | " + " | ".join(cell(seeds, t) for t in TYPES) + " |")
    cost = {arm: sum(r["cpu_s"] for r in rs) / len(rs) for arm, rs in runs.items()}
    print("\nMean train CPU-seconds per run (one thread): "
          + ", ".join(f"{arm} {c:.0f}" for arm, c in cost.items()))


if __name__ == "__main__":
    main(*sys.argv[1:])
