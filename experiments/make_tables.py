"""Print the UCM / RSICD result tables of experiments/README.md from the JSON files in experiments/.

    python experiments/make_tables.py                                        # every table, markdown
    python experiments/make_tables.py --update experiments/README.md   # refresh the tables in place

Every number comes from an `mtgfe-eval` report (`<run>_test_*.json`), a run summary written by
`collect_run.py` (`<run>_train.json`: train wall time, end-of-run val report) or an `mtgfe-cv`
summary (`cv_*.json`). Headline metric: expected recall under random tie order (docs/METHOD.md §6b).
Alpha for ITM + alpha * ITC is the one picked by 3-fold cross-validation over the 1,890 non-test
images (`cv_<recipe>.json`, `best_alpha`), never by test.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
UCM, RSICD = HERE / "ucm", HERE / "rsicd"
RECALLS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")
SEEDS = {42: "", 1: "_s1", 2: "_s2"}  # file suffixes of the dual-encoder runs
FILTER_ALPHA = "100.0"  # ITM + 100 * cosine: the filter's order, ITM only breaking its near-ties


def load(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the command in experiments/README.md that writes it")
    return json.loads(path.read_text(encoding="utf-8"))


def blend(report: dict, alpha: str | None) -> dict:
    """Metrics of ITM alone (alpha None) or ITM + alpha * cosine from a sweep report."""
    if alpha is None:
        return report["metrics"]
    return report["alpha_sweep"][alpha]["expected"]


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def row(label: str, config: str, wall: str, metrics: list[dict], extra: str = "") -> str:
    recalls = " | ".join(f"{statistics.fmean(m[k] for m in metrics):.1f}" for k in RECALLS)
    return f"| {label} | `{config}` | {wall} | {recalls} | **{fmt([m['mR'] for m in metrics])}** |{extra}"


def wall_min(*runs: str) -> float:
    return sum(load(UCM, f"{run}_train.json")["train_wall_s"] for run in runs) / 60


def cv_alpha(recipe: str) -> str:
    return load(UCM, f"cv_{recipe}.json")["best_alpha"]


# Output folders of each recipe's seeds 42, 1, 2 (seed-42 runs of the first recipes carry no suffix).
SEED_RUNS = {
    "ucm_fusion": ["ucm_fusion", "ucm_fusion_s1", "ucm_fusion_s2"],
    "ucm_fusion_itm": ["ucm_fusion_itm", "ucm_fusion_itm_s1", "ucm_fusion_itm_s2"],
    "ucm_fusion_itm_mlm": ["ucm_fusion_itm_mlm_s42", "ucm_fusion_itm_mlm_s1", "ucm_fusion_itm_mlm_s2"],
}


def seed_runs(recipe: str) -> list[str]:
    return SEED_RUNS[recipe]


def main_table() -> str:
    header = ("| UCM test (210 images × 1,050 captions), 3 seeds | config | train wall (mean) | "
              + " | ".join(RECALLS) + " | mR |\n|---|---|---|" + "---|" * 7)
    lines = [header]
    frozen = [load(UCM, f"ucm_dual_frozen_s{s}_test_filter.json")["metrics"] for s in SEEDS]
    lines.append(row("(a) dual encoder, frozen encoders, ITC only", "ucm_dual_frozen", "4.6 min", frozen))
    dual_runs = [f"ucm_dual_finetune{suffix}" for suffix in SEEDS.values()]
    dual = [load(UCM, f"{run}_test_filter.json")["metrics"] for run in dual_runs]
    stage1 = statistics.fmean(wall_min(run) for run in dual_runs)
    lines.append(row("(b) dual encoder, text fine-tuned, ITC only (= stage 1 below)", "ucm_dual_finetune",
                     f"{stage1:.1f} min", dual))
    for recipe, name in (("ucm_fusion", "ITC+ITM+MLM+MVJRC"), ("ucm_fusion_itm", "ITC+ITM")):
        runs = seed_runs(recipe)
        reports = [load(UCM, f"{run}_test_k16.json") for run in runs]
        stage2 = statistics.fmean(wall_min(run) for run in runs)
        alpha = cv_alpha(recipe)
        wall = f"{stage1:.1f} + {stage2:.1f} min"
        lines.append(row(f"(c) MTGFE two-stage {name}: ITM + {float(alpha):g}·ITC (α by CV), k = 16", recipe, wall,
                         [blend(r, alpha) for r in reports]))
        lines.append(row("(c) same, ITM alone, k = 16", recipe, "", [blend(r, None) for r in reports]))
        lines.append(row("(c) same model, its filter alone (no fusion)", recipe, "",
                         [load(UCM, f"{run}_test_filter.json")["metrics"] for run in runs]))
        if alpha != FILTER_ALPHA:
            lines.append(row("(c) same, filter order (ITM + 100·ITC)", recipe, "", [blend(r, FILTER_ALPHA) for r in reports]))
    return "\n".join(lines)


def paired_table() -> str:
    """Per seed: the fusion model's score minus its own stage-1 filter (same seed), on test."""
    lines = ["| recipe | α (CV) | seed 42 | seed 1 | seed 2 | mean ± std |", "|---|---|---|---|---|---|"]
    dual = [load(UCM, f"ucm_dual_finetune{suffix}_test_filter.json")["metrics"]["mR"] for suffix in SEEDS.values()]
    for recipe in ("ucm_fusion", "ucm_fusion_itm"):
        alpha = cv_alpha(recipe)
        fused = [blend(load(UCM, f"{run}_test_k16.json"), alpha)["mR"] for run in seed_runs(recipe)]
        diffs = [f - d for f, d in zip(fused, dual)]
        lines.append(f"| `{recipe}` ITM + α·ITC − stage-1 filter | {float(alpha):g} | "
                     + " | ".join(f"{d:+.1f}" for d in diffs) + f" | {fmt(diffs)} |")
        own = [load(UCM, f"{run}_test_filter.json")["metrics"]["mR"] for run in seed_runs(recipe)]
        diffs = [f - o for f, o in zip(fused, own)]
        lines.append(f"| `{recipe}` ITM + α·ITC − the same model's filter alone | {float(alpha):g} | "
                     + " | ".join(f"{d:+.1f}" for d in diffs) + f" | {fmt(diffs)} |")
    return "\n".join(lines)


def cv_table() -> str:
    lines = ["| 3-fold CV over the 1,890 non-test images (630 held out per fold) | mR per fold | mean ± std |",
             "|---|---|---|"]
    stage1 = load(UCM, "cv_ucm_dual_finetune.json")
    lines.append("| stage 1 = (b) dual encoder, filter only | "
                 + ", ".join(f"{r['metrics']['mR']:.1f}" for r in stage1["runs"]) + f" | {fmt([r['metrics']['mR'] for r in stage1['runs']])} |")
    for recipe in ("ucm_fusion_itm", "ucm_fusion"):
        summary = load(UCM, f"cv_{recipe}.json")
        filters = [load(UCM, f"cv_{recipe}_f{r['fold']}_filter.json")["metrics"]["mR"] for r in summary["runs"]]
        lines.append(f"| stage 2 `{recipe}`: its filter alone (no fusion) | " + ", ".join(f"{v:.1f}" for v in filters)
                     + f" | {fmt(filters)} |")
        for alpha in summary["alpha_sweep_mean_mR"]:
            values = [r["alpha_sweep_mR"][alpha] for r in summary["runs"]]
            label = "ITM alone" if float(alpha) == 0 else f"ITM + {float(alpha):g}·ITC"
            best = " (chosen)" if alpha == summary["best_alpha"] else ""
            lines.append(f"| stage 2 `{recipe}`: {label}{best} | " + ", ".join(f"{v:.1f}" for v in values) + f" | {fmt(values)} |")
    return "\n".join(lines)


def ablation_table() -> str:
    alpha = cv_alpha("ucm_fusion")
    alphas = (None, alpha) if alpha == FILTER_ALPHA else (None, alpha, FILTER_ALPHA)
    lines = [f"| objective (stage 2, 3 seeds, k = 16) | config | stage-2 wall | ITM alone | ITM + {float(alpha):g}·ITC |"
             + ("" if alpha == FILTER_ALPHA else " filter order |"), "|---|---|---|---|---|" + ("" if alpha == FILTER_ALPHA else "---|")]
    for recipe, label, config in (("ucm_fusion_itm", "ITC + ITM", "ucm_fusion_itm"),
                                  ("ucm_fusion_itm_mlm", "ITC + ITM + MLM", "ucm_fusion_itm --set model.mlm_weight=1"),
                                  ("ucm_fusion", "ITC + ITM + MLM + MVJRC", "ucm_fusion")):
        runs = seed_runs(recipe)
        reports = [load(UCM, f"{run}_test_k16.json") for run in runs]
        wall = statistics.fmean(wall_min(run) for run in runs)
        cells = [fmt([blend(r, a)["mR"] for r in reports]) for a in alphas]
        lines.append(f"| {label} | `{config}` | {wall:.1f} min | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lever_table() -> str:
    """Seed-42 runs that change one thing; val = 210-image val split (end-of-run report), test = k 16."""
    levers = [
        ("single stage, 3 text + 3 fusion layers (old `ucm_small`), 3 epochs", None, "ucm_itm_mlm_mvjrc"),
        ("single stage, deep filter (5 text + 3 fusion layers), full objective, 5 epochs", "ucm_deep", None),
        ("single stage, deep filter, ITC + ITM", "ucm_deep_itm", None),
        ("two-stage, ITC + ITM (reference for the rows below)", "ucm_fusion_itm", None),
        ("… without near-duplicate exclusion", "ucm_fusion_itm_nodedup", None),
        ("… without random negatives (hard only)", "ucm_fusion_itm_norandom", None),
        ("… 15 epochs instead of 5", "ucm_fusion_itm_15ep", None),
        ("… head lr 1e-3 instead of 3e-4", "hl1e3_ucm_fusion_itm", None),
    ]
    lines = ["| lever (seed 42) | run | train wall | val: ITM alone / best blend / filter order | test: ITM alone / ITM + 2·ITC / filter order |",
             "|---|---|---|---|---|"]
    for label, run, legacy in levers:
        if legacy:  # first-session run: eval files of that session
            itm = load(UCM, f"{legacy}_test_k16_itm.json")["metrics"]["mR"]
            mixed = load(UCM, f"{legacy}_test_k16_itm+itc.json")["metrics"]["mR"]
            filt = load(UCM, f"{legacy}_test_filter.json")["metrics"]["mR"]
            lines.append(f"| {label} | `{legacy}` | 11.6 min | see appendix §1b | {itm:.1f} / {mixed:.1f} / {filt:.1f} (filter alone) |")
            continue
        try:
            train = load(UCM, f"{run}_train.json")
        except FileNotFoundError:
            lines.append(f"| {label} | `{run}` | not run | | |")
            continue
        val = train["val_report"]
        if (UCM / f"{run}_val_k16.json").is_file():  # a separate val alpha sweep (runs whose in-loop eval had none)
            val = load(UCM, f"{run}_val_k16.json")
        if "alpha_sweep" in val:
            sweep = {a: v["expected"]["mR"] for a, v in val["alpha_sweep"].items()}
            val_cell = f"{val['metrics']['mR']:.1f} / {max(sweep.values()):.1f} / {sweep[FILTER_ALPHA]:.1f}"
        else:
            val_cell = f"– / {val['metrics']['mR']:.1f} (α = {val['alpha']:g}) / –"
        test_file = UCM / f"{run}_test_k16.json"
        test_cell = "not evaluated"
        if test_file.is_file():
            test = json.loads(test_file.read_text(encoding="utf-8"))
            test_cell = " / ".join(f"{blend(test, a)['mR']:.1f}" for a in (None, "2.0", FILTER_ALPHA))
        lines.append(f"| {label} | `{run}` | {train['train_wall_s'] / 60:.1f} min | {val_cell} | {test_cell} |")
    return "\n".join(lines)


def shift_table() -> str:
    alpha = cv_alpha("ucm_fusion")
    lines = ["| model (seed 42, k = 16) | score | clean | rotate90 | color | rescale | mean drop |", "|---|---|---|---|---|---|---|"]
    for run, label in (("ucm_fusion", "with MVJRC (`ucm_fusion`)"), ("ucm_fusion_itm_mlm_s42", "without MVJRC (ITC+ITM+MLM)")):
        for a, score in ((alpha, f"ITM + {float(alpha):g}·ITC"), (None, "ITM alone")):
            clean = blend(load(UCM, f"{run}_test_k16.json"), a)["mR"]
            shifted = [blend(load(UCM, f"{run}_test_k16_shift-{s}.json"), a)["mR"] for s in ("rotate90", "color", "rescale")]
            lines.append(f"| {label} | {score} | {clean:.1f} | " + " | ".join(f"{v:.1f}" for v in shifted)
                         + f" | {clean - statistics.fmean(shifted):.1f} |")
    return "\n".join(lines)


def rsicd_table() -> str:
    alpha = cv_alpha("ucm_fusion")
    report = load(RSICD, "ucm_fusion_rsicd_test_k16.json")
    lines = ["| UCM-trained `ucm_fusion` (seed 42) on RSICD test, k = 16 | " + " | ".join(RECALLS) + " | mR |",
             "|---|" + "---|" * 7]
    for a, label in ((None, "ITM alone"), (alpha, f"ITM + {float(alpha):g}·ITC"), (FILTER_ALPHA, "filter order")):
        if a == FILTER_ALPHA and alpha == FILTER_ALPHA and label == "filter order":
            continue
        m = blend(report, a)
        lines.append(f"| {label} | " + " | ".join(f"{m[k]:.1f}" for k in RECALLS) + f" | {m['mR']:.1f} |")
    lines.append(f"\neval wall {report['timings']['total_s'] / 60:.1f} min, {report['fusion_passes']} fusion passes "
                 f"(exhaustive would be {report['exhaustive_pairs']:,})")
    return "\n".join(lines)


TABLES = {"main": main_table, "paired": paired_table, "cv": cv_table, "ablation": ablation_table,
          "levers": lever_table, "robustness": shift_table, "rsicd": rsicd_table}


def render(name: str) -> str:
    try:
        return TABLES[name]()
    except (FileNotFoundError, KeyError) as error:
        return f"(not available yet: {error})"


def update(document: Path) -> None:
    """Replace the text between `<!-- table:NAME -->` and `<!-- /table:NAME -->` with the fresh table."""
    text = document.read_text(encoding="utf-8")
    for name in TABLES:
        start, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
        if start in text:
            head, rest = text.split(start, 1)
            if end not in rest:
                raise ValueError(f"{document}: {start} has no closing {end}")
            text = head + start + "\n" + render(name) + "\n" + end + rest.split(end, 1)[1]
    document.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", nargs="*", default=None, metavar="MARKDOWN",
                        help="rewrite the tables between <!-- table:NAME --> markers in these files")
    args = parser.parse_args(argv)
    if args.update is not None:
        for document in args.update:
            update(Path(document))
        return 0
    for name in TABLES:
        print(f"### {name}\n\n{render(name)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
