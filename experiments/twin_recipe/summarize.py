"""Markdown table of runs.jsonl: last logged train quad loss per twin type, held-out ITM group (text/image) per type.

    .venv/bin/python experiments/twin_recipe/summarize.py [runs.jsonl]
"""

import json
import sys
from pathlib import Path

TYPES = ("spatial", "binding", "side", "colour", "count")


def main(path: str = "experiments/twin_recipe/runs.jsonl") -> None:
    runs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    head = "| run | steps | CPU s/step | " + " | ".join(f"quad {t}" for t in TYPES) + " | " + " | ".join(
        f"held-out {t} group (text/image)" for t in TYPES) + " |"
    print(head)
    print("|" + "---|" * (3 + 2 * len(TYPES)))
    for run in runs:
        last = run["curve"][-1]
        quads = [f"{last[f'quad_{t}']:.3f}" if f"quad_{t}" in last else "-" for t in TYPES]
        evals = []
        for t in TYPES:
            e = run["eval"].get(t)
            evals.append(f"{e['group']:.1f} ({e['text']:.1f}/{e['image']:.1f})" if e else "-")
        print(f"| {run['name']} | {run['steps_done']} | {run['cpu_s_per_step']} | " + " | ".join(quads) + " | "
              + " | ".join(evals) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
