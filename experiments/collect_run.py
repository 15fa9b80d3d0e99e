"""Copy what the tables need from finished training runs into `experiments/` (models stay outside git).

    python experiments/collect_run.py outputs/ucm_fusion outputs/ucm_fusion_s1 ... [--into experiments/ucm]

For each run folder it writes `<into>/<run name>_train.json`: the resolved config, the train wall
time (the trainer's own `elapsed_s` at its last step, model loading and the end-of-run evaluation
excluded), the last logged losses, and the end-of-run validation report (`final/eval_results.json`,
incl. the alpha sweep when `eval.alpha_sweep` was set). For a cross-validation fold run it also keeps
`cv_folds.json`'s counts and hashes (not the file lists).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def summarize_run(folder: Path) -> dict:
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [r for r in log if r.get("type") == "train"]
    if not train:
        raise ValueError(f"{folder}/metrics.jsonl has no train record: the run did not train")
    last = train[-1]
    summary = {
        "run": folder.name,
        "config": yaml.safe_load((folder / "train_config.yaml").read_text(encoding="utf-8")),
        "steps": last["step"],
        "train_wall_s": round(last["elapsed_s"], 1),
        "last_losses": {k: v for k, v in last.items() if k.startswith("loss")},
    }
    report = folder / "final" / "eval_results.json"
    if report.is_file():
        summary["val_report"] = json.loads(report.read_text(encoding="utf-8"))
    folds = folder / "cv_folds.json"
    if folds.is_file():
        membership = json.loads(folds.read_text(encoding="utf-8"))
        summary["cv"] = {k: v for k, v in membership.items() if k not in ("train", "val")}
        summary["cv"].update({role: {k: v for k, v in membership[role].items() if k != "files"}
                              for role in ("train", "val")})
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="training output folders")
    parser.add_argument("--into", default=str(Path(__file__).parent / "ucm"))
    args = parser.parse_args(argv)
    for run in map(Path, args.runs):
        summary = summarize_run(run)
        name = f"{run.parent.name}_{run.name}" if run.parent.name == "cv" else run.name
        out = Path(args.into) / f"{name}_train.json"
        out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        print(f"{out}: {summary['steps']} steps, {summary['train_wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
