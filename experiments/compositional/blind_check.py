"""Blind (text-only) check of the compositional benchmark: writes experiments/compositional/blind_check.json.

A pairwise logistic regression on hashed 1-3-grams, trained on single-edit items of UCM *train*
captions (test strings removed), is asked to tell each test caption from its edit without the image.
Near 0.5 per type means the edits leave no text-only cue; the pairs view gives 0 by construction.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/compositional/blind_check.py [--data-dir ../shared/data]
"""

import argparse
import json
from pathlib import Path

from mtgfe.evaluation.compositional.generation import count_table, json_safe
from mtgfe.evaluation.compositional.blind import blind_check
from mtgfe.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "compositional"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    report = blind_check(args.data_dir)
    atomic_write_json(OUT / "blind_check.json", json_safe(report))
    atomic_write_json(OUT / "counts.json", count_table(data_dir=args.data_dir))
    print(json.dumps(json_safe(report), indent=1))


if __name__ == "__main__":
    main()
