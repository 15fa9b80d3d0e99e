"""Draw the hand-audit sample of the compositional benchmark: experiments/compositional/audit_sample.md.

30 pair items and 70 single-edit items (all types, certified or not) of UCM test and RSICD test,
drawn with a fixed seed. The verdicts at the top of the file are written by hand after reading.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/compositional/audit.py
"""

import random
from pathlib import Path

from mtgfe.evaluation.compositional.generation import COMPOSITIONAL_VERSION, generate_items

OUT = Path(__file__).resolve().parent / "audit_sample.md"
SEED = 14
HEADER_END = "<!-- sample below is generated; verdicts above are by hand -->"


def sample():
    rng = random.Random(SEED)
    pairs = [it for s in ("ucm_test", "rsicd_test") for it in generate_items(s, "pairs", require_images=False)]
    single = [it for s in ("ucm_test", "rsicd_test") for it in generate_items(s, "single", require_images=False)]
    return rng.sample(pairs, 30) + rng.sample(single, 70)


def main():
    lines = [f"## Sample (version {COMPOSITIONAL_VERSION}, seed {SEED})", ""]
    for i, it in enumerate(sample(), 1):
        where = f"{it['filename']} / {it['filename_b']}" if it["view"] == "pairs" else it["filename"]
        lines += [f"{i}. **{it['view']} · {it['type']} · {it['kind']} · {it['source']}** ({where}; "
                  f"`{it['word_true']}` → `{it['word_neg']}`)",
                  f"   - true: {it['caption']}", f"   - {'b' if it['view'] == 'pairs' else 'neg'}: {it['negative']}"]
    header = OUT.read_text().split(HEADER_END)[0] if OUT.is_file() else "# Hand audit\n\n(verdicts to be written)\n\n"
    OUT.write_text(header + HEADER_END + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
