"""k-fold cross-validation over the train + val images (`data.cv`) and its summary over folds (`mtgfe-cv`).

Why: UCM's 210 val images cannot resolve mR differences below ~1-2 points, so model selection on val
is noise. CV evaluates each setup on every one of the 1,890 non-test images once (3 folds of 630).

* Pool: the images of `train_split` then of `val_split` (images views), numbered 0..N-1 in that
  order, so the train split keeps its own ids and a val image gets `len(train) + its id`. A file name
  found in both splits is an error (the pool would hold it twice, in training and validation).
* Folds: the pool's file names sorted in natural order (`1.tif < 2.tif < 10.tif`; UCM numbers its
  images class by class, so this interleaves the classes) and the image at sorted position p is in
  fold p % k. Deterministic, balanced within one image, independent of the seed and of `fold`.
* A fold run trains on the captions of the other folds (pool ids, caption ids recomputed over the
  training images so identical captions share one id) and evaluates on the images view of its fold.
  The backbone cache is built over the whole pool (pool ids), so every fold shares one cache file.

    for f in 0 1 2; do mtgfe-train --config ucm_small --set data.cv.folds=3 data.cv.fold=$f \\
        output_dir=outputs/cv/ucm_small_f$f; done
    mtgfe-cv outputs/cv/ucm_small_f* [--which final|best] [--json outputs/cv/ucm_small.json]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from datasets import Image as ImageFeature

from mtgfe.utils.io import atomic_write_json, read_json

from .config_schema import ConfigError
from .data import ImageRecord, build_dataset
from .loading import load_config_split
from .metrics import HEADLINE_RULE, RECALL_KEYS


if TYPE_CHECKING:
    from .config import TrainConfig

FOLDS_FILE = "cv_folds.json"  # in each fold run's output_dir
_DIGITS = re.compile(r"(\d+)")


# ------------------------------------------------------------------------------------------ folds
def natural_key(name: str) -> tuple:
    """Sort key with digit runs compared as numbers: `2.tif` < `10.tif`; the name breaks remaining ties."""
    parts = _DIGITS.split(name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p), name


def assign_folds(filenames: Sequence[str], folds: int) -> dict[str, int]:
    """`{filename: fold}`: distinct names in natural order, position p -> fold p % folds."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    return {name: p % folds for p, name in enumerate(sorted(set(filenames), key=natural_key))}


def _names_digest(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names, key=natural_key)).encode()).hexdigest()[:16]


@dataclass
class CVData:
    """One fold's data: `train` (captions view), `val` (images view), `pool` (images view, ids 0..N-1:
    what the backbone cache covers) and `membership` (written to `cv_folds.json`)."""

    train: Any
    val: Any
    pool: Any
    membership: dict


def pool_images(splits: dict[str, Any]) -> tuple[list, list, list[str]]:
    """`(records, image sources, split of each)` of the images views in `splits`, in pool order."""
    records, sources, owners, seen = [], [], [], {}
    for split, dataset in splits.items():
        if "captions" not in dataset.column_names:
            raise ValueError(f"split {split!r} must be an images view (a 'captions' list per image)")
        raw = dataset.cast_column("image", ImageFeature(decode=False))["image"]
        for name, captions, source in zip(dataset["filename"], dataset["captions"], raw):
            if name in seen:
                raise ValueError(f"image {name!r} is in split {seen[name]!r} and in split {split!r}: cross-validation "
                                 "cannot pool splits that share images")
            seen[name] = split
            records.append(ImageRecord(name, tuple(captions)))
            sources.append({"bytes": source.get("bytes"), "path": source.get("path")})
            owners.append(split)
    return records, sources, owners


def cv_split(splits: dict[str, Any], folds: int, fold: int) -> CVData:
    """Pool the images views in `splits` (`{name: dataset}`, train first) and cut out fold `fold`."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds - 1}], got {fold}")
    records, sources, owners = pool_images(splits)
    of = assign_folds([r.filename for r in records], folds)
    held = [i for i, r in enumerate(records) if of[r.filename] == fold]
    kept = [i for i, r in enumerate(records) if of[r.filename] != fold]
    pool = build_dataset(records, "images", sources, description=f"cv pool of {'+'.join(splits)}")
    train = build_dataset([records[i] for i in kept], "captions", [sources[i] for i in kept], image_ids=kept,
                          description=f"cv training folds (all but {fold} of {folds})")
    val = pool.select(held)
    sizes = [sum(1 for f in of.values() if f == k) for k in range(folds)]
    roles = {}
    for role, rows in (("train", kept), ("val", held)):
        names = sorted((records[i].filename for i in rows), key=natural_key)
        roles[role] = {"images": len(rows), "captions": sum(len(records[i].captions) for i in rows),
                       "from_split": {s: sum(1 for i in rows if owners[i] == s) for s in splits},
                       "sha256": _names_digest(names), "filenames": names}
    membership = {"folds": folds, "fold": fold, "pool_splits": list(splits), "pool_images": len(records),
                  "pool_sha256": _names_digest([r.filename for r in records]), "fold_sizes": sizes,
                  "assignment": "file names in natural order; position p -> fold p % folds", **roles}
    return CVData(train=train, val=val, pool=pool, membership=membership)


def load_cv(cfg: TrainConfig) -> CVData:
    """`data.cv` of a run: its train and val splits (images views) pooled and cut into folds (`cv_split`).

    Here, not in train.py, because evaluation (`mtgfe-eval --cv-run`) needs the same held-out fold and
    must not import the trainer for it (that was the train -> cv -> evaluation -> train cycle).
    """
    d = cfg.data
    splits = {split: load_config_split(cfg, split, "images") for split in (d.train_split, d.val_split)}
    try:
        return cv_split(splits, d.cv.folds, d.cv.fold)
    except ValueError as error:
        raise ConfigError(f"data.cv: {error}") from None


# ------------------------------------------------------------------------------------------ summary
def read_fold(folder: str | Path, which: str = "final") -> dict:
    """The held-out fold's report of one fold run: `final/` (the end-of-run eval; falls back to the last
    eval in `metrics.jsonl`) or `best/` (the best in-loop eval: selected on the same fold, so optimistic)."""
    folder = Path(folder)
    folds_file = folder / FOLDS_FILE
    if not folds_file.is_file():
        raise FileNotFoundError(f"{folds_file} not found: {folder} is not a cross-validation run (data.cv.folds)")
    membership = read_json(folds_file, what="cross-validation folds file")
    report = None
    path = folder / which / "eval_results.json"
    if path.is_file():
        report = read_json(path, what="evaluation report")
    elif which == "final" and (folder / "metrics.jsonl").is_file():
        evals = [r for r in map(json.loads, (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
                 if r.get("type") == "eval"]
        report, path = (evals[-1] if evals else None), folder / "metrics.jsonl"
    if report is None:
        raise FileNotFoundError(f"{folder}: no {which}/eval_results.json" +
                                (" and no eval record in metrics.jsonl" if which == "final" else ""))
    return {"folder": str(folder), "source": str(path), "fold": membership["fold"], "folds": membership["folds"],
            "pool_sha256": membership.get("pool_sha256"), "val_images": membership["val"]["images"],
            "step": report.get("step"), "metrics": {k: report["metrics"][k] for k in RECALL_KEYS},
            "alpha_sweep_mR": _sweep_mR(folder, report)}


def _sweep_mR(folder: Path, report: dict) -> dict[str, float]:
    """mR of ITM + a * cosine per alpha (`eval.alpha_sweep`), from the report or its `eval/step-N.json`."""
    sweep = report.get("alpha_sweep")
    step_file = folder / "eval" / f"step-{report.get('step')}.json"
    if sweep is None and step_file.is_file():
        sweep = read_json(step_file, what="evaluation report").get("alpha_sweep")
    return {alpha: rules[HEADLINE_RULE]["mR"] for alpha, rules in (sweep or {}).items()}


def summarize(folders: Sequence[str | Path], which: str = "final") -> dict:
    """Mean and sample std (n - 1) over folds of mR and each recall. Folds must come from one CV setup
    (same `folds` and pool), each at most once; fewer runs than folds is allowed but flagged."""
    runs = sorted((read_fold(f, which) for f in folders), key=lambda r: r["fold"])
    if not runs:
        raise ValueError("no fold folders given")
    setups = {(r["folds"], r["pool_sha256"]) for r in runs}
    if len(setups) > 1:
        raise ValueError(f"the folders mix cross-validation setups (folds, pool hash): {sorted(setups, key=str)}")
    folds = [r["fold"] for r in runs]
    if len(set(folds)) != len(folds):
        raise ValueError(f"a fold appears twice: {[(r['fold'], r['folder']) for r in runs]}")
    mean, std = {}, {}
    for key in RECALL_KEYS:
        values = [r["metrics"][key] for r in runs]
        mean[key] = statistics.fmean(values)
        std[key] = statistics.stdev(values) if len(values) > 1 else None
    alphas = set.intersection(*(set(r["alpha_sweep_mR"]) for r in runs))
    sweep = {a: statistics.fmean(r["alpha_sweep_mR"][a] for r in runs) for a in sorted(alphas, key=float)}
    best_alpha = max(sweep, key=sweep.get) if sweep else None
    return {"which": which, "folds": runs[0]["folds"], "complete": len(runs) == runs[0]["folds"], "n": len(runs),
            "mean": mean, "std": std, "alpha_sweep_mean_mR": sweep, "best_alpha": best_alpha, "runs": runs}


def format_summary(summary: dict) -> str:
    keys = RECALL_KEYS
    lines = ["| fold | step | images | " + " | ".join(keys) + " |", "|---:|---:|---:|" + "---:|" * len(keys)]
    for r in summary["runs"]:
        lines.append(f"| {r['fold']} | {r['step']} | {r['val_images']} | "
                     + " | ".join(f"{r['metrics'][k]:.2f}" for k in keys) + " |")
    cell = (lambda k: f"{summary['mean'][k]:.2f} ± {summary['std'][k]:.2f}" if summary["std"][k] is not None
            else f"{summary['mean'][k]:.2f}")
    lines.append("| mean ± std | | | " + " | ".join(cell(k) for k in keys) + " |")
    note = "" if summary["complete"] else f" (INCOMPLETE: {summary['n']} of {summary['folds']} folds)"
    if summary.get("alpha_sweep_mean_mR"):
        lines += ["", "ITM + alpha * cosine, mean mR over folds: " + ", ".join(
            f"{a}: {v:.2f}" for a, v in summary["alpha_sweep_mean_mR"].items()) + f" (best alpha {summary['best_alpha']})"]
    return f"{summary['n']}-fold CV, {summary['which']} reports{note}\n\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`mtgfe-cv DIR...`: table of the fold runs' held-out metrics and mean ± std over folds."""
    parser = argparse.ArgumentParser(prog="mtgfe-cv", description="Summarise a k-fold CV (data.cv) over its fold runs.")
    parser.add_argument("folders", nargs="+", help="output_dir of each fold run (globs are expanded)")
    parser.add_argument("--which", choices=("final", "best"), default="final",
                        help="final: end-of-run eval (default, unbiased); best: the best in-loop eval (optimistic)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    folders = [p for pattern in args.folders for p in (sorted(glob.glob(pattern)) or [pattern])]
    try:
        summary = summarize(folders, args.which)
    except (FileNotFoundError, ValueError) as error:
        sys.stderr.write(f"mtgfe-cv: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nmtgfe-cv: interrupted (Ctrl-C); nothing was written, run the same command again\n")
        return 130
    sys.stdout.write(format_summary(summary) + "\n")
    if args.json:
        atomic_write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
