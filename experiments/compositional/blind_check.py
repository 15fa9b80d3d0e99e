"""Blind (text-only) check of the compositional benchmark: writes experiments/compositional/blind_check.json.

A pairwise logistic regression on hashed 1-3-grams, trained on single-edit items of UCM *train*
captions (test strings removed), is asked to tell each test caption from its edit without the image.
Near 0.5 per type means the edits leave no text-only cue; the pairs view gives 0 by construction.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/compositional/blind_check.py [--data-dir DIR]
    OMP_NUM_THREADS=1 .venv/bin/python experiments/compositional/blind_check.py --verify [--data-dir DIR]

`--verify` regenerates nothing on disk: it checks that the committed `counts.json` and `blind_check.json`
still describe what the code generates now (benchmark version, item hashes, the certified single-edit
types in `CERTIFIED_SINGLE`). The unit tests test the generator's behaviour; this is where the committed
numbers are held to the code.
"""

import argparse
import json
import sys
from pathlib import Path

from mtgfe.evaluation.compositional.blind import blind_check
from mtgfe.evaluation.compositional.generation import (
    CERTIFIED_SINGLE,
    COMPOSITIONAL_VERSION,
    count_table,
    generate_items,
    items_hash,
    json_safe,
)
from mtgfe.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent


def verify(data_dir) -> list[str]:
    """Disagreements between the committed JSON files and the code (empty: they agree)."""
    problems = []
    counts = json.loads((OUT / "counts.json").read_text())
    if counts["version"] != COMPOSITIONAL_VERSION:
        problems.append(f"counts.json version {counts['version']} != code {COMPOSITIONAL_VERSION}")
    for key, committed in counts["hashes"].items():
        source, view = key.split("/")
        now = items_hash(generate_items(source, view, data_dir, require_images=False))
        if now != committed:
            problems.append(f"counts.json hash of {key} {committed} != generated {now}")
    report = json.loads((OUT / "blind_check.json").read_text())
    if report["version"] != COMPOSITIONAL_VERSION:
        problems.append(f"blind_check.json version {report['version']} != code {COMPOSITIONAL_VERSION}")
    for source, certified in CERTIFIED_SINGLE.items():
        per_type = report["sources"][source]["single"]
        committed = sorted(t for t, r in per_type.items() if r["certified"])
        if committed != sorted(certified):
            problems.append(f"blind_check.json certifies {committed} for {source}, CERTIFIED_SINGLE {sorted(certified)}")
        for name in ("count", "colour"):
            for score in ("group_accuracy", "image_score", "both"):
                if report["sources"][source]["pairs"][name][score] != 0.0:
                    problems.append(f"blind_check.json: text-only {score} on {source} {name} pairs is not 0")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--verify", action="store_true", help="check the committed JSON files against the code")
    args = parser.parse_args()
    if args.verify:
        problems = verify(args.data_dir)
        print("\n".join(problems) or "committed counts.json and blind_check.json match the code")
        return 1 if problems else 0
    report = blind_check(args.data_dir)
    atomic_write_json(OUT / "blind_check.json", json_safe(report))
    atomic_write_json(OUT / "counts.json", count_table(data_dir=args.data_dir))
    print(json.dumps(json_safe(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
