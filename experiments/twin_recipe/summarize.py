"""Markdown table of runs.jsonl: last logged train quad loss per twin type, held-out ITM group (text/image) per type.

    .venv/bin/python experiments/twin_recipe/summarize.py [runs.jsonl]
"""

import json
import sys
from pathlib import Path

TYPES = ("spatial", "binding", "side", "colour", "count")
LEVERS = {
    "oracle_spatial_64px_4x4": "oracle: kind/colour queries pool the grid, learned positions on values, MLP (no text model)",
    "scratch_nopos": "from scratch, twins from step 0, no positions",
    "scratch_sine": "+ sine positions added once to the grid tokens",
    "scratch_sine_clsmean_ground_side": "+ [CLS];mean-words linear readout + grounding loss + side twins",
    "scratch_sine_mlp_ground_side_init08": "+ MLP readout + init std 0.08 (the recipe)",
    "scratch_sine_mlp_ground_side_init08_1600": "the recipe, 1600 steps",
    "scratch_sine_cls_ground_side_init08": "recipe with the package's linear [CLS] ITM head",
    "scratch_sine_mlp_side_init08_noground": "recipe without the grounding loss",
    "scratch_sine_mlp_ground_side": "recipe at BERT's init (std 0.02)",
    "finetune500_sine_mlp_ground_side_init08": "recipe as fine-tuning: 500 steps without twins, then 500 with",
    "scratch_sinekeys_mlp_ground_side_init08": "recipe with sine on the keys of every fusion layer only (DETR)",
    "scratch_learned_mlp_ground_side_init08": "recipe with learned positions added once",
}


def main(path: str = "experiments/twin_recipe/runs.jsonl") -> None:
    runs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    head = "| run | lever | steps | CPU s/step | " + " | ".join(f"quad {t}" for t in TYPES) + " | " + " | ".join(
        f"held-out {t} group (text/image)" for t in TYPES) + " |"
    print(head)
    print("|" + "---|" * (4 + 2 * len(TYPES)))
    for run in runs:
        last = run["curve"][-1]
        quads = [f"{last[f'quad_{t}']:.3f}" if f"quad_{t}" in last else "-" for t in TYPES]
        evals = []
        for t in TYPES:
            e = run["eval"].get(t)
            evals.append(f"{e['group']:.1f} ({e['text']:.1f}/{e['image']:.1f})" if e else "-")
        print(f"| {run['name']} | {LEVERS.get(run['name'], '')} | {run['steps_done']} | {run['cpu_s_per_step']} | " + " | ".join(quads) + " | "
              + " | ".join(evals) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
