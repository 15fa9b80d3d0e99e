"""The splits of a training run, read from its `TrainConfig`: the one bridge from the config to `mtgfe.data`.

Why a module of its own: the data loaders (`mtgfe.data.loading`) and the fold cutting
(`mtgfe.evaluation.cv`) take plain arguments so that they sit below the config layer; the trainer,
`mtgfe-eval --cv-run` and the demo all need "this run's split", and read it here.
"""

from __future__ import annotations

from mtgfe.data.annotations import DataDirNotSetError
from mtgfe.data.loading import load_dataset_split
from mtgfe.evaluation.cv import CVData, cv_split

from .config import ConfigError, TrainConfig


def load_config_split(cfg: TrainConfig, split: str, view: str):
    """A split of the run's dataset (`cfg.data`), or None for a jsonl run without a file for that split."""
    d = cfg.data
    if d.dataset == "jsonl":
        file = d.train_file if split == d.train_split else d.val_file
        if not file:
            return None
        try:
            return load_dataset_split("jsonl", split, view, data_file=file, image_dir=d.image_dir)
        except FileNotFoundError as error:  # the file or images it names: a setting of the run (exit 2), named
            key = "data.train_file" if split == d.train_split else "data.val_file"
            raise ConfigError(f"{key}={file}: {error}") from None
    train = split == d.train_split
    scenes = d.synthetic.train_scenes if train else d.synthetic.val_scenes
    # Placeless focus captions are a training-data choice: held-out splits keep the generator's captions.
    try:
        return load_dataset_split(d.dataset, split, view, data_dir=d.data_dir, image_dir=d.image_dir,
                                  synthetic_scenes=scenes, synthetic_seed=d.synthetic.seed,
                                  synthetic_size=d.synthetic.render_size,
                                  synthetic_placeless_focus=d.synthetic.train_placeless_focus if train else 0.0)
    except DataDirNotSetError as error:  # a missing setting of the run: reported like any config error (exit 2)
        raise ConfigError(f"data.data_dir: {error}") from None
    except FileNotFoundError as error:  # annotations or images missing under data_dir / image_dir
        raise ConfigError(f"data.dataset={d.dataset} ({split} split): {error}") from None


def load_cv(cfg: TrainConfig) -> CVData:
    """`data.cv` of a run: its train and val splits (images views) pooled and cut into folds (`cv_split`).

    Here, not in train.py, because `mtgfe-eval --cv-run` needs the same held-out fold without running
    the trainer; the fold cutting itself (`cv_split`) is config-free, in `mtgfe.evaluation.cv`.
    """
    d = cfg.data
    splits = {split: load_config_split(cfg, split, "images") for split in (d.train_split, d.val_split)}
    try:
        return cv_split(splits, d.cv.folds, d.cv.fold)
    except ValueError as error:
        raise ConfigError(f"data.cv: {error}") from None


__all__ = ["load_config_split", "load_cv"]
