"""k-fold cross-validation (`data.cv`): config checks, fold assignment, pooled ids, a tiny fold run with a
shared backbone cache, and the `mtgfe-cv` summary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mtgfe.training.config import ConfigError, config_from_dict, load_config
from mtgfe.evaluation.cli import cv_main
from mtgfe.evaluation.cv import FOLDS_FILE, assign_folds, cv_split, natural_key, summarize

from tests.helpers.training import BASE, one_thread, records  # noqa: F401  (autouse: one intra-op thread)


TINY = {"model": {"preset": "tiny"}, "data": {"dataset": "synthetic", "image_size": 32, "tokenizer": "wordpiece"}}
CACHE = ["freeze.vision=true", "data.backbone_cache.enabled=true", "data.backbone_cache.num_views=2", "views.base={}"]


def _synthetic_splits(train: int = 10, val: int = 5) -> dict:
    from mtgfe.data.synthetic import load_synthetic

    return {"train": load_synthetic("train", num_scenes=train, image_size=16, view="images"),
            "val": load_synthetic("val", num_scenes=val, image_size=16, view="images")}


# ------------------------------------------------------------------------------------------ config
def test_cv_config_from_yaml_and_overrides():
    cfg = config_from_dict({**TINY, "data": {**TINY["data"], "cv": {"folds": 3, "fold": 2}}})
    assert (cfg.data.cv.folds, cfg.data.cv.fold) == (3, 2)
    cfg = load_config("synthetic_tiny", ["data.cv.folds=3", "data.cv.fold=1"])
    assert (cfg.data.cv.folds, cfg.data.cv.fold) == (3, 1)
    assert load_config("synthetic_tiny").data.cv.folds is None  # off by default


@pytest.mark.parametrize("overrides, message", [
    (["data.cv.folds=1"], r"data\.cv\.folds=1 must be >= 2"),
    (["data.cv.folds=3", "data.cv.fold=3"], r"data\.cv\.fold=3 must be in \[0, 2\]"),
    (["data.cv.folds=3", "data.cv.fold=-1"], r"data\.cv\.fold=-1 must be >= 0"),
    (["data.cv.fold=1"], r"data\.cv\.fold=1 is set but data\.cv\.folds is null"),
    (["data.cv.folds=2", "data.val_split=test"], r"data\.cv pools two distinct non-test splits.*'test'"),
    (["data.cv.folds=2", "data.val_split=train"], r"data\.cv pools two distinct"),
])
def test_cv_config_errors_name_key_and_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(TINY, overrides)


def test_cv_with_jsonl_needs_both_files(tmp_path):
    file = tmp_path / "train.jsonl"
    file.write_text(json.dumps({"image": "a.png", "captions": ["x"]}) + "\n")
    data = {**TINY, "data": {**TINY["data"], "dataset": "jsonl", "train_file": str(file)}}
    with pytest.raises(ConfigError, match=r"data\.val_file"):
        config_from_dict(data, ["data.cv.folds=2"])


# ------------------------------------------------------------------------------------------ folds
def test_fold_assignment_is_a_balanced_deterministic_partition():
    names = [f"{i}.tif" for i in range(1, 2101) if i % 10 != 3]  # gaps, like a split without its test images
    assert sorted(["10.tif", "2.tif", "1.tif"], key=natural_key) == ["1.tif", "2.tif", "10.tif"]
    for folds in (2, 3, 5):
        of = assign_folds(names, folds)
        shuffled = names[:]
        random.Random(0).shuffle(shuffled)
        assert assign_folds(shuffled, folds) == of  # depends on the names only, not their order
        assert set(of) == set(names) and set(of.values()) == set(range(folds))  # each image in exactly one fold
        sizes = [sum(1 for f in of.values() if f == k) for k in range(folds)]
        assert max(sizes) - min(sizes) <= 1
        ordered = sorted(names, key=natural_key)
        assert [of[n] for n in ordered[:folds + 1]] == [*range(folds), 0]  # position p -> fold p % folds
    with pytest.raises(ValueError, match="folds"):
        assign_folds(names, 1)


def test_cv_split_pools_with_unique_consistent_ids():
    splits = _synthetic_splits()
    folds = 3
    parts = [cv_split(splits, folds, fold) for fold in range(folds)]
    pool = parts[0].pool
    assert pool["image_id"] == list(range(15))  # train keeps 0..9, val follows at 10..14
    assert pool["filename"][:10] == splits["train"]["filename"] and pool["filename"][10:] == splits["val"]["filename"]
    name_of = dict(zip(pool["image_id"], pool["filename"]))
    held_out = []
    for fold, part in enumerate(parts):
        train_ids, val_ids = set(part.train["image_id"]), set(part.val["image_id"])
        assert not train_ids & val_ids and train_ids | val_ids == set(range(15))  # disjoint, union = pool
        # every view agrees with the pool on which image an id is
        assert all(name_of[i] == n for i, n in zip(part.train["image_id"], part.train["filename"]))
        assert all(name_of[i] == n for i, n in zip(part.val["image_id"], part.val["filename"]))
        assert part.pool["filename"] == pool["filename"]  # the pool does not depend on the fold
        m = part.membership
        assert m["fold_sizes"] == [5, 5, 5] and m["val"]["images"] == len(val_ids) == 5
        assert sorted(m["val"]["filenames"], key=natural_key) == m["val"]["filenames"]
        assert set(m["val"]["filenames"]) == {name_of[i] for i in val_ids}
        assert m["train"]["captions"] == len(part.train) and m["pool_sha256"] == parts[0].membership["pool_sha256"]
        # identical captions share one caption id within the training folds (kept out of the negatives)
        from mtgfe.data.annotations import normalize_caption

        by_text: dict[str, set] = {}
        for text, cid in zip(part.train["caption"], part.train["caption_id"]):
            by_text.setdefault(normalize_caption(text), set()).add(cid)
        assert all(len(ids) == 1 for ids in by_text.values()) and len(set(part.train["caption_id"])) == len(by_text)
        held_out += m["val"]["filenames"]
    assert sorted(held_out) == sorted(pool["filename"])  # the folds cover the pool once
    assert cv_split(splits, folds, 1).membership == parts[1].membership  # deterministic


def test_cv_split_rejects_an_image_in_both_splits():
    splits = _synthetic_splits(4, 3)
    with pytest.raises(ValueError, match="in split 'train' and in split 'again'"):
        cv_split({"train": splits["train"], "again": splits["train"]}, 2, 0)


def test_ucm_pool_folds_are_class_balanced(data_dir):
    from mtgfe.training.splits import load_config_split as load_split, load_cv

    cfg = load_config("ucm_small", [f"data.data_dir={data_dir}", "data.cv.folds=3", "data.cv.fold=1"])
    part = load_cv(cfg)
    m = part.membership
    assert (m["pool_images"], m["fold_sizes"], m["val"]["images"], m["train"]["images"]) == (1890, [630] * 3, 630, 1260)
    per_class = {}
    for name in m["val"]["filenames"]:  # UCM numbers 100 images per class: 1-100, 101-200, ...
        per_class[(int(name.split(".")[0]) - 1) // 100] = per_class.get((int(name.split(".")[0]) - 1) // 100, 0) + 1
    assert len(per_class) == 21 and set(per_class.values()) == {30}
    train = load_split(cfg, "train", "captions")
    ids = dict(zip(train["filename"], train["image_id"]))
    assert all(ids.get(n, i) == i for n, i in zip(part.train["filename"], part.train["image_id"]))


# ------------------------------------------------------------------------------------------ training
def test_fold_runs_share_one_pool_cache_and_summarize(tmp_path, capsys):
    from mtgfe.training.cli import main

    cache_dir = tmp_path / "cache"
    common = [*CACHE, f"data.backbone_cache.dir={cache_dir}", "max_steps=2", "data.cv.folds=2"]
    outs = [tmp_path / f"f{fold}" for fold in (0, 1)]
    assert main(BASE + [f"output_dir={outs[0]}", *common, "data.cv.fold=0"]) == 0
    files = list(cache_dir.glob("backbone-*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    assert main(BASE + [f"output_dir={outs[1]}", *common, "data.cv.fold=1"]) == 0
    assert list(cache_dir.glob("backbone-*.safetensors")) == files and files[0].stat().st_mtime_ns == stamp

    from mtgfe.training.collate import BackboneCache

    assert BackboneCache.load(files[0]).image_ids == list(range(56))  # 48 train + 8 val scenes: the whole pool
    for fold, out in enumerate(outs):
        m = json.loads((out / FOLDS_FILE).read_text())
        assert (m["fold"], m["pool_images"], m["fold_sizes"]) == (fold, 56, [28, 28])
        report = json.loads((out / "final" / "eval_results.json").read_text())
        assert report["num_images"] == 28 and report["split"] == f"cv fold {fold}/2 of train+val"
        assert records(out, "eval")[-1]["step"] == 2
    capsys.readouterr()
    assert cv_main([str(tmp_path / "f*"), "--json", str(tmp_path / "cv.json")]) == 0
    assert "2-fold CV" in capsys.readouterr().out
    summary = json.loads((tmp_path / "cv.json").read_text())
    assert summary["complete"] and [r["fold"] for r in summary["runs"]] == [0, 1]

    # mtgfe-eval --cv-run scores a fold model on exactly the images its run held out
    from mtgfe.evaluation.cli import main as eval_main

    out_json = tmp_path / "f1_filter.json"
    assert eval_main(["--model", str(outs[1] / "final"), "--cv-run", str(outs[1]), "--filter-only", "--no-progress",
                      "--output", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["num_images"] == 28 and report["split"] == "cv fold 1/2 of train+val" and report["filter_only"]
    capsys.readouterr()
    assert eval_main(["--model", str(outs[1] / "final"), "--filter-only"]) == 2  # an argument error: one line, rc 2
    assert "exactly one of --dataset or --cv-run" in capsys.readouterr().err


def test_cache_must_hold_every_training_image(tmp_path):
    from accelerate import Accelerator

    from mtgfe.processing import build_wordpiece_tokenizer
    from mtgfe.training.backbone_cache import load_or_build_backbone_cache
    from mtgfe.training.train import build_model, build_processor

    part = cv_split(_synthetic_splits(6, 2), 2, 0)
    tokenizer = build_wordpiece_tokenizer(part.train["caption"], vocab_size=300, model_max_length=40)
    cfg = load_config("synthetic_tiny", [*CACHE, f"data.backbone_cache.dir={tmp_path}", "data.image_size=16"])
    model, processor = build_model(cfg, tokenizer), build_processor(cfg, tokenizer)
    accelerator = Accelerator(cpu=True)
    cache = load_or_build_backbone_cache(cfg, model, processor, part.train, accelerator, pool_rows=part.pool)
    assert cache.image_ids == list(range(8))  # a superset of the 4 training images is fine
    lacking = len(set(part.train["image_id"]) - set(range(6)))
    assert lacking > 0
    with pytest.raises(ConfigError, match=rf"backbone cache .*backbone-.*\.safetensors lacks {lacking} of the training"):
        load_or_build_backbone_cache(cfg, model, processor, part.train, accelerator, pool_rows=part.pool.select(range(6)))


# ------------------------------------------------------------------------------------------ summary
def _fold_dir(root: Path, fold: int, mr: float, folds: int = 3, pool: str = "abc", best: bool = True) -> Path:
    out = root / f"run_f{fold}"
    metrics = {k: mr + i for i, k in enumerate(("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"))}
    metrics["mR"] = mr
    (out / "final").mkdir(parents=True)
    (out / FOLDS_FILE).write_text(json.dumps({"folds": folds, "fold": fold, "pool_sha256": pool,
                                              "val": {"images": 630}}))
    (out / "final" / "eval_results.json").write_text(json.dumps({"step": 100, "metrics": metrics}))
    if best:
        (out / "best").mkdir()
        (out / "best" / "eval_results.json").write_text(json.dumps({"step": 50, "metrics": {**metrics, "mR": mr + 1}}))
    return out


def test_summary_mean_and_std_over_folds(tmp_path, capsys):
    folders = [_fold_dir(tmp_path, fold, mr) for fold, mr in ((2, 50.0), (0, 48.0), (1, 52.0))]
    summary = summarize(folders)
    assert [r["fold"] for r in summary["runs"]] == [0, 1, 2] and summary["complete"]
    assert summary["mean"]["mR"] == pytest.approx(50.0) and summary["std"]["mR"] == pytest.approx(2.0)  # n - 1
    assert summary["mean"]["t2i_R@10"] == pytest.approx(55.0)
    assert summarize(folders, "best")["mean"]["mR"] == pytest.approx(51.0)
    assert cv_main([str(tmp_path / "run_f*"), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "50.00 ± 2.00" in out and "3-fold CV, final reports" in out
    assert json.loads((tmp_path / "s.json").read_text())["mean"]["mR"] == pytest.approx(50.0)


def test_summary_fallbacks_and_errors(tmp_path, capsys):
    a = _fold_dir(tmp_path / "a", 0, 40.0, best=False)
    (a / "final" / "eval_results.json").unlink()  # no final/: the last eval of metrics.jsonl
    lines = [{"type": "train", "step": 1}, {"type": "eval", "step": 5, "metrics": {"mR": 1.0}},
             {"type": "eval", "step": 9, "metrics": json.loads(json.dumps({k: 42.0 for k in
                                                                          ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1",
                                                                           "t2i_R@5", "t2i_R@10", "mR")}))}]
    (a / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = summarize([a])
    assert summary["runs"][0]["step"] == 9 and summary["mean"]["mR"] == 42.0
    assert summary["std"]["mR"] is None and not summary["complete"]
    with pytest.raises(FileNotFoundError, match="best/eval_results.json"):
        summarize([a], "best")
    with pytest.raises(ValueError, match="appears twice"):
        summarize([a, _fold_dir(tmp_path / "b", 0, 41.0)])
    with pytest.raises(ValueError, match="mix cross-validation setups"):
        summarize([a, _fold_dir(tmp_path / "c", 1, 41.0, pool="other")])
    assert cv_main([str(tmp_path / "nothing_here")]) == 2
    assert "not a cross-validation run" in capsys.readouterr().err


def test_summary_averages_the_alpha_sweep_and_picks_the_best_alpha(tmp_path, capsys):
    folders = [_fold_dir(tmp_path, fold, 45.0) for fold in range(3)]
    for folder, offset in zip(folders, (0.0, 1.0, 2.0)):
        path = folder / "final" / "eval_results.json"
        report = json.loads(path.read_text())
        report["alpha_sweep"] = {a: {"expected": {"mR": v + offset}} for a, v in (("0.0", 40.0), ("2.0", 47.0), ("8.0", 46.0))}
        path.write_text(json.dumps(report))
    summary = summarize(folders)
    assert summary["alpha_sweep_mean_mR"] == pytest.approx({"0.0": 41.0, "2.0": 48.0, "8.0": 47.0})
    assert summary["best_alpha"] == "2.0"
    assert cv_main([str(tmp_path / "run_f*")]) == 0
    assert "(best alpha 2.0)" in capsys.readouterr().out
