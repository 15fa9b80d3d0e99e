"""Export a benchmark (``datasets.Dataset``/``DatasetDict``) as self-contained Parquet + dataset card.

Why not ``Dataset.to_parquet``: it writes path-backed images as their *paths* only, so the files
are useless once the image folder is gone (docs/HF_PITFALLS.md §6). Here every batch goes through
``datasets.table.embed_table_storage``, which reads the image files into the ``bytes`` field (keeping
only the file's base name as ``path``), and is streamed to a ``pyarrow.parquet.ParquetWriter`` with the
dataset's feature metadata, so ``load_dataset("parquet", ...)`` gives back ``Image()`` columns that
decode without the source files. Streaming keeps memory to one batch and leaves no cache files
beside the source dataset.

Layout written::

    out_dir/
      data/<split>.parquet    # one file per split
      README.md               # dataset card; its `configs` metadata lets load_dataset(out_dir) find the splits
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict
from datasets.features import Image, List, Sequence, Value
from datasets.table import embed_table_storage

from mtgfe.utils.io import atomic_path

from .cards import render_dataset_card

logger = logging.getLogger(__name__)

__all__ = ["export_benchmark_to_parquet"]

_SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")  # what datasets accepts as a split name
ROWS_PER_ROW_GROUP = 100  # datasets' own row-group size for image data: keeps random access cheap


def _feature_text(feature: Any) -> str:
    if isinstance(feature, Image):
        return "image (encoded file bytes embedded)"
    if isinstance(feature, Value):
        return str(feature.dtype)
    if isinstance(feature, (List, Sequence)):
        return f"list of {_feature_text(feature.feature)}"
    return type(feature).__name__


def _write_split(ds: Dataset, path: Path, batch_size: int) -> None:
    schema = ds.features.arrow_schema  # carries the `huggingface` feature metadata (Image() etc.)
    with atomic_path(path) as tmp:  # a killed export never leaves a parquet file that looks complete
        with pq.ParquetWriter(tmp, schema=schema) as writer:
            for batch in ds.with_format("arrow").iter(batch_size=batch_size):
                writer.write_table(embed_table_storage(batch), row_group_size=batch_size)
            if len(ds) == 0:
                writer.write_table(schema.empty_table())
    written = pq.ParquetFile(path).metadata.num_rows
    if written != len(ds):  # pragma: no cover - would be a datasets/pyarrow bug
        raise RuntimeError(f"{path}: wrote {written} rows, expected {len(ds)}.")


def export_benchmark_to_parquet(
    dataset: Dataset | DatasetDict,
    out_dir: str | Path,
    dataset_name: str,
    card: bool = True,
    *,
    split: str | None = None,
    source_citation: str | None = None,
    license: str = "other",
    overwrite: bool = False,
    batch_size: int = ROWS_PER_ROW_GROUP,
) -> dict[str, Path]:
    """Write ``out_dir/data/<split>.parquet`` per split (image bytes embedded) and ``out_dir/README.md``.

    Args:
        dataset: a ``Dataset`` (one split) or ``DatasetDict``; any columns, typically the evaluation
            view of docs/CONTRACTS.md (``image``, ``captions``, ``image_id``, ``filename``).
        out_dir: output folder (created).
        dataset_name: benchmark key or alias (``ucm``, ``rsicd``, ...) for the card, or any name
            together with ``source_citation``.
        card: also write the dataset card.
        split: split name for a lone ``Dataset``; defaults to ``dataset.split`` or ``"train"``.
        source_citation: BibTeX for the card (defaults to the benchmark's citations).
        license: Hub license id for the card (``other``: the sources ship no license file).
        overwrite: replace existing files instead of raising ``FileExistsError``.
        batch_size: rows per read batch and Parquet row group.

    Returns:
        ``{split: path of its Parquet file}``; the card, when written, is ``out_dir/README.md``.
    """
    if isinstance(dataset, Dataset):
        name = split or (str(dataset.split) if dataset.split is not None else "train")
        dataset = DatasetDict({name: dataset})
    elif not isinstance(dataset, DatasetDict):
        raise TypeError(f"dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}.")
    elif split is not None:
        raise ValueError("split names a lone Dataset's split; a DatasetDict already names its splits.")
    if not dataset:
        raise ValueError("dataset has no splits to export.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    for name in dataset:
        if not _SPLIT_RE.match(name):
            raise ValueError(f"split name {name!r} is not a valid datasets split name (letters, digits, _ and .).")

    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    targets = {name: data_dir / f"{name}.parquet" for name in dataset}
    readme = out_dir / "README.md"
    if not overwrite:
        for path in [*targets.values(), *([readme] if card else [])]:
            if path.exists():
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    if not any(isinstance(f, Image) for ds in dataset.values() for f in ds.features.values()):
        logger.warning("dataset %r has no top-level Image() column: nothing to embed", dataset_name)
    # Render the card first so that a bad name/citation fails before any file is written.
    dataset_card = _render_card(dataset, out_dir, targets, dataset_name, source_citation, license) if card else None
    for name, ds in dataset.items():
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_split(ds, targets[name], batch_size)
        logger.info("wrote %s (%d rows, %.1f MB)", targets[name], len(ds), targets[name].stat().st_size / 1e6)
    if dataset_card is not None:
        dataset_card.save(readme)
    return targets


def _render_card(dataset: DatasetDict, out_dir: Path, targets: dict[str, Path], dataset_name, source_citation, license):
    first = next(iter(dataset.values()))
    num_captions = None
    if "captions" in first.column_names:
        num_captions = {
            name: int(pc.sum(pc.list_value_length(ds.with_format("arrow")["captions"])).as_py() or 0)
            for name, ds in dataset.items()
        }
    return render_dataset_card(
        dataset_name,
        splits={name: len(ds) for name, ds in dataset.items()},
        source_citation=source_citation,
        license=license,
        features={col: _feature_text(f) for col, f in first.features.items()},
        data_files={name: path.relative_to(out_dir).as_posix() for name, path in targets.items()},
        num_captions=num_captions,
    )
