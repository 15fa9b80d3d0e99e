"""Caption datasets for retrieval: the four RS benchmarks and users' own JSONL/CSV files.

Every loader returns a `datasets.Dataset` in one of the two schemas fixed by `docs/CONTRACTS.md`:

* ``view="captions"`` (training): one row per caption, columns ``image`` (`Image()`), ``caption``,
  ``image_id`` (index of the image within the split), ``caption_id`` (index of the distinct
  *normalised* caption within the split, so identical strings of different images share it and the
  trainer can keep them out of the negatives) and ``filename``.
* ``view="images"`` (evaluation): one row per image, columns ``image``, ``captions`` (list),
  ``image_id`` and ``filename``.

Images are path-backed and decoded lazily by `datasets`; no pixel is read at load time. Every
image file is checked to exist before the dataset is built (from one directory listing per folder,
so 50k rows cost a few ``listdir`` calls), and a missing file is an error, never a dropped row.

Annotation layouts (the data folder's own README describes them), one parser each:

* ``karpathy``: ``{"images": [{"filename", "split", "sentences": [{"raw"}]}]}`` (UCM, Sydney);
* ``coco``: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``
  (Sydney; RSICD's COCO files are a *captioning* split and are only used when asked for by name);
* ``amfmn``: ``<split>_caps.txt`` + ``<split>_filename.txt``; the filename file has either one line
  per caption or one line per image (then caption ``j`` belongs to image ``j // k``);
* ``harma``: a JSON list, either one entry per caption (train) or one entry per image with a
  caption list (val/test); paths carry a ``train/``, ``val/`` or ``test/`` prefix.

The default layout (``layout=None`` or ``"retrieval"``) is the retrieval convention of the field:
UCM/Sydney use the Karpathy split field, RSITMD the HarMA train/val/test files, RSICD the HarMA
val/test files and, for train, HarMA's ``rsicd_train.json`` when a user has put it beside the others,
else AMFMN train minus the HarMA val images (9828 - 1966 = 7862 images, which is what HarMA's own
train file holds), so that val never leaks into train.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from datasets import Dataset, DatasetInfo, Features, Image, List, Value
from transformers.utils import logging

from modeling_mtgfe import retrieval as model_retrieval

from . import registry as benchmarks


logger = logging.get_logger(__name__)

PathLike = str | os.PathLike

DATA_DIR_ENV = "MTGFE_DATA_DIR"
VIEWS = ("captions", "images")
LAYOUTS = ("karpathy", "coco", "amfmn", "harma")
RETRIEVAL_LAYOUT = "retrieval"

# When an annotation names `1.tif` and only `1.jpg` exists (UCM ships JPEG re-encodes), the stem is
# matched with these extensions, in this order. The exact name always wins.
# When a stem exists with several extensions, lossless originals win over re-encodings (UCM ships
# `1.tif` re-encoded as `1.jpg`); the accepted extensions themselves are the package's one list,
# `modeling_mtgfe.retrieval.IMAGE_EXTENSIONS`.
_LOSSLESS_FIRST = (".tif", ".tiff", ".png")
STEM_MATCH_ORDER = tuple(sorted(model_retrieval.IMAGE_EXTENSIONS, key=lambda ext: (
    ext not in _LOSSLESS_FIRST, (_LOSSLESS_FIRST + model_retrieval.IMAGE_EXTENSIONS).index(ext))))
# HarMA image paths start with the split folder HarMA used; `filename` drops it so that the same
# image has the same name in every layout.
_HARMA_SPLIT_PREFIXES = ("train", "val", "test")
_MISSING_SHOWN = 10


class AnnotationFormatError(ValueError):
    """An annotation file does not have the structure of the layout it is read as."""


# --------------------------------------------------------------------------------------------
# Schema and captions
# --------------------------------------------------------------------------------------------


def dataset_features(view: str = "captions", with_image: bool = True, extra: dict | None = None) -> Features:
    """The `Features` of a view (CONTRACTS.md), optionally without the image column or with extras."""
    _check_choice("view", view, VIEWS)
    columns: dict = {"image": Image()} if with_image else {}
    if view == "captions":
        columns.update(caption=Value("string"), image_id=Value("int64"), caption_id=Value("int64"))
    else:
        columns.update(captions=List(Value("string")), image_id=Value("int64"))
    columns["filename"] = Value("string")
    columns.update(extra or {})
    return Features(columns)


_TRAILING_PERIOD = re.compile(r"\s*\.+$")


def normalize_caption(text: str) -> str:
    """Key under which captions count as identical: lowercase, collapsed spaces, no final period.

    "There is a piece of farmland ." and "there is a piece of  farmland." are the same sentence for
    a retrieval model, so they must not serve as each other's negatives.
    """
    return _TRAILING_PERIOD.sub("", " ".join(text.lower().split()))


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split and its captions, in annotation order.

    ``filename`` is the name the annotation gives (HarMA's split prefix removed); ``relpath`` is the
    path tried first below an image folder (HarMA's prefix kept, Karpathy's ``filepath`` joined).
    """

    filename: str
    captions: tuple[str, ...]
    relpath: str = ""

    def __post_init__(self):
        if not self.relpath:
            object.__setattr__(self, "relpath", self.filename)


def _group_captions(pairs: Iterable[tuple[str, str, str]], source: Path) -> list[ImageRecord]:
    """(filename, relpath, caption) triples → one record per image, in order of first appearance."""
    captions: dict[str, list[str]] = {}
    relpaths: dict[str, str] = {}
    for filename, relpath, caption in pairs:
        captions.setdefault(filename, []).append(caption.strip())
        relpaths.setdefault(filename, relpath)
    records = [ImageRecord(f, tuple(c), relpaths[f]) for f, c in captions.items()]
    empty = sum(1 for r in records for c in r.captions if not c)
    if empty:
        # Kept, not dropped: dropping would shift the caption/image alignment of the split.
        logger.warning("%s holds %d empty captions; they are kept as empty strings.", source, empty)
    return records


# --------------------------------------------------------------------------------------------
# Parsers: one per layout, each returns list[ImageRecord]
# --------------------------------------------------------------------------------------------


def _read_json(path: Path):
    _require_file(path, "annotation file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AnnotationFormatError(f"{path} is not valid JSON: {err}") from err


def _field(entry, key: str, path: Path, where: str):
    if not isinstance(entry, dict) or key not in entry:
        raise AnnotationFormatError(f"{path}: {where} has no key {key!r} (got {_keys(entry)})")
    return entry[key]


def _keys(obj) -> str:
    return f"keys {sorted(obj)}" if isinstance(obj, dict) else type(obj).__name__


def parse_karpathy(path: PathLike, split: str) -> list[ImageRecord]:
    """Images of one ``split`` of a Karpathy ``dataset_*.json`` (captions from ``raw``, else tokens)."""
    path = Path(path)
    data = _read_json(path)
    images = _field(data, "images", path, "the top level")
    if not isinstance(images, list):
        raise AnnotationFormatError(f"{path}: 'images' must be a list, got {type(images).__name__}")
    pairs, found = [], set()
    for i, entry in enumerate(images):
        entry_split = _field(entry, "split", path, f"images[{i}]")
        found.add(entry_split)
        if entry_split != split:
            continue
        filename = _field(entry, "filename", path, f"images[{i}]")
        relpath = str(PurePosixPath(entry["filepath"], filename)) if entry.get("filepath") else filename
        for j, sentence in enumerate(_field(entry, "sentences", path, f"images[{i}]")):
            where = f"images[{i}].sentences[{j}]"
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            text = raw if raw is not None else " ".join(_field(sentence, "tokens", path, where))
            pairs.append((filename, relpath, text))
    if not pairs:
        raise ValueError(f"{path} has no image with split {split!r}; splits present: {sorted(found)}")
    return _group_captions(pairs, path)


def parse_coco(path: PathLike) -> list[ImageRecord]:
    """Images of a COCO-caption JSON, in ``images`` order, captions in ``annotations`` order."""
    path = Path(path)
    data = _read_json(path)
    images = _field(data, "images", path, "the top level")
    annotations = _field(data, "annotations", path, "the top level")
    names = {}
    for i, entry in enumerate(images):
        names[_field(entry, "id", path, f"images[{i}]")] = _field(entry, "file_name", path, f"images[{i}]")
    captions: dict = {image_id: [] for image_id in names}
    for i, ann in enumerate(annotations):
        image_id = _field(ann, "image_id", path, f"annotations[{i}]")
        if image_id not in captions:
            raise AnnotationFormatError(f"{path}: annotations[{i}] refers to unknown image_id {image_id!r}")
        captions[image_id].append(_field(ann, "caption", path, f"annotations[{i}]"))
    uncaptioned = [names[k] for k, v in captions.items() if not v]
    if uncaptioned:
        logger.warning("%s: %d images have no caption (e.g. %s)", path, len(uncaptioned), uncaptioned[0])
    return [ImageRecord(names[k], tuple(c.strip() for c in v)) for k, v in captions.items()]


def amfmn_partner(path: PathLike) -> tuple[Path, Path]:
    """``(caps, filename)`` paths of an AMFMN pair from either of its two files."""
    path = Path(path)
    for own, other in (("_caps.txt", "_filename.txt"), ("_filename.txt", "_caps.txt")):
        if path.name.endswith(own):
            partner = path.with_name(path.name[: -len(own)] + other)
            return (path, partner) if own == "_caps.txt" else (partner, path)
    raise ValueError(f"{path} is not an AMFMN file: its name must end in '_caps.txt' or '_filename.txt'")


def parse_amfmn(caps_path: PathLike, filename_path: PathLike) -> list[ImageRecord]:
    """AMFMN ``*_caps.txt`` + ``*_filename.txt``; the per-image vs per-caption form is read off the counts."""
    caps_path, filename_path = Path(caps_path), Path(filename_path)
    _require_file(caps_path, "AMFMN caption file")
    _require_file(filename_path, "AMFMN filename file")
    caps = caps_path.read_text(encoding="utf-8").splitlines()
    names = [line.strip() for line in filename_path.read_text(encoding="utf-8").splitlines()]
    if not names or any(not n for n in names):
        raise AnnotationFormatError(f"{filename_path}: empty file or blank image name")
    if len(caps) == len(names):  # test form: line j names the image of caption j
        owners = names
    elif len(caps) % len(names) == 0:  # train form: caption j belongs to image j // k
        per_image = len(caps) // len(names)
        owners = [names[j // per_image] for j in range(len(caps))]
    else:
        raise AnnotationFormatError(
            f"{caps_path} has {len(caps)} captions but {filename_path} names {len(names)} images: "
            "expected one name per caption or a whole number of captions per name"
        )
    return _group_captions(((n, n, c) for n, c in zip(owners, caps)), caps_path)


def _strip_split_prefix(relpath: str) -> str:
    parts = PurePosixPath(relpath).parts
    return str(PurePosixPath(*parts[1:])) if len(parts) > 1 and parts[0] in _HARMA_SPLIT_PREFIXES else relpath


def parse_harma(path: PathLike) -> list[ImageRecord]:
    """HarMA JSON list: ``{"image", "caption": str}`` per caption or ``{"image", "caption": [...]}`` per image."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise AnnotationFormatError(f"{path}: a HarMA file is a JSON list, got {_keys(data)}")
    pairs = []
    for i, entry in enumerate(data):
        relpath = _field(entry, "image", path, f"entry [{i}]")
        caption = _field(entry, "caption", path, f"entry [{i}]")
        filename = _strip_split_prefix(relpath)
        for text in [caption] if isinstance(caption, str) else caption:
            pairs.append((filename, relpath, text))
    return _group_captions(pairs, path)


def detect_layout(path: PathLike) -> str:
    """Layout of an annotation file from its name (AMFMN ``.txt``) or its JSON structure."""
    path = Path(path)
    if path.suffix == ".txt":
        amfmn_partner(path)
        return "amfmn"
    data = _read_json(path)
    if isinstance(data, list):
        return "harma"
    if isinstance(data, dict) and "annotations" in data:
        return "coco"
    if isinstance(data, dict) and "images" in data:
        return "karpathy"
    raise AnnotationFormatError(
        f"{path}: unknown annotation layout ({_keys(data)}); expected a Karpathy dict with 'images', "
        "a COCO dict with 'images' and 'annotations', or a HarMA list"
    )


def parse_annotations(layout: str, files: Sequence[PathLike], split: str) -> list[ImageRecord]:
    """Dispatch to the parser of ``layout`` (``files``: one JSON, or AMFMN caps + filename)."""
    _check_choice("layout", layout, LAYOUTS)
    if layout == "amfmn":
        return parse_amfmn(*(files if len(files) == 2 else amfmn_partner(files[0])))
    if len(files) != 1:
        raise ValueError(f"layout {layout!r} reads one annotation file, got {len(files)}: {list(files)}")
    detected = detect_layout(files[0])
    if detected != layout:
        raise AnnotationFormatError(f"{files[0]} has the structure of layout {detected!r}, not {layout!r}")
    if layout == "karpathy":
        return parse_karpathy(files[0], split)
    return parse_coco(files[0]) if layout == "coco" else parse_harma(files[0])


# --------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------


class ImageLocator:
    """Finds the file of each annotation name below one or more image folders.

    Each folder is listed once (``os.scandir``), so checking tens of thousands of names costs a few
    directory reads. For a name ``a/b.tif`` below a root it tries ``root/a/b.tif``, then
    ``root/b.tif`` (HarMA's split folders are optional); with ``match_extension=True`` it accepts the
    same stem with another image extension when the exact name is absent (UCM-Captions' ``1.tif`` is
    shipped as ``1.jpg``).
    """

    def __init__(self, roots: Sequence[Path], match_extension: bool = True):
        self.roots = [Path(r) for r in roots]
        self.match_extension = match_extension
        self._listings: dict[Path, tuple[frozenset[str], dict[str, str]]] = {}

    def _listing(self, folder: Path):
        if folder not in self._listings:
            try:
                names = frozenset(e.name for e in os.scandir(folder) if e.is_file())
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            by_stem: dict[str, str] = {}
            for ext in reversed(STEM_MATCH_ORDER):  # earlier extensions overwrite: they win
                for name in names:
                    stem, suffix = os.path.splitext(name)
                    if suffix.lower() == ext:
                        by_stem[stem] = name
            self._listings[folder] = (names, by_stem)
        return self._listings[folder]

    def find(self, relpath: str) -> Path | None:
        rel = PurePosixPath(relpath)
        if rel.is_absolute():
            return Path(rel) if Path(rel).is_file() else None
        for root in self.roots:
            for candidate in dict.fromkeys((rel, PurePosixPath(rel.name))):
                folder = root.joinpath(*candidate.parent.parts)
                names, by_stem = self._listing(folder)
                if candidate.name in names:
                    return folder / candidate.name
                if self.match_extension and candidate.stem in by_stem:
                    return folder / by_stem[candidate.stem]
        return None

    def resolve_all(self, records: Sequence[ImageRecord]) -> list[str]:
        """Paths of all records' images; raises FileNotFoundError listing missing ones (none dropped)."""
        missing_roots = [r for r in self.roots if not r.is_dir()]
        if len(missing_roots) == len(self.roots):
            raise FileNotFoundError(
                f"image folder {', '.join(map(str, missing_roots))} does not exist; pass image_dir= "
                "pointing at your copy of the images, or require_images=False to load the annotations only"
            )
        paths, missing = [], []
        for record in records:
            found = self.find(record.relpath)
            if found is None:
                missing.append(record.relpath)
            else:
                paths.append(str(found))
        if missing:
            shown = ", ".join(missing[:_MISSING_SHOWN]) + (", ..." if len(missing) > _MISSING_SHOWN else "")
            raise FileNotFoundError(
                f"{len(missing)} of {len(records)} images not found under {', '.join(map(str, self.roots))}: "
                f"{shown}; pass image_dir= pointing at a complete copy, or require_images=False to load "
                "the annotations only"
            )
        return paths


# --------------------------------------------------------------------------------------------
# Builder (shared with the synthetic dataset)
# --------------------------------------------------------------------------------------------


def build_dataset(
    records: Sequence[ImageRecord],
    view: str = "captions",
    images: Sequence | None = None,
    extra_columns: dict[str, tuple[Value, Sequence]] | None = None,
    description: str = "",
    image_ids: Sequence[int] | None = None,
) -> Dataset:
    """The one place that turns image records into a dataset of either view.

    ``images`` holds one `Image`-encodable value per record (a path, or ``{"bytes", "path"}``), or is
    ``None`` for an annotations-only dataset without an ``image`` column. ``extra_columns`` maps a
    column name to ``(feature, one value per record)``; values repeat over a record's captions in the
    captions view. ``image_ids`` replaces the default ids ``0..len(records)-1`` (one per record, e.g. the
    pool ids of a cross-validation subset, `mtgfe.evaluation.cv`).
    """
    _check_choice("view", view, VIEWS)
    if images is not None and len(images) != len(records):
        raise ValueError(f"got {len(images)} images for {len(records)} records")
    if image_ids is not None and len(image_ids) != len(records):
        raise ValueError(f"got {len(image_ids)} image ids for {len(records)} records")
    record_ids = list(range(len(records))) if image_ids is None else [int(i) for i in image_ids]
    extra_columns = extra_columns or {}
    features = dataset_features(view, images is not None, {k: f for k, (f, _) in extra_columns.items()})
    if view == "images":
        columns = {"captions": [list(r.captions) for r in records], "image_id": record_ids}
        columns["filename"] = [r.filename for r in records]
        owners = range(len(records))
    else:
        owners = [i for i, r in enumerate(records) for _ in r.captions]
        texts = [c for r in records for c in r.captions]
        ids: dict[str, int] = {}
        columns = {
            "caption": texts,
            "image_id": [record_ids[i] for i in owners],
            "caption_id": [ids.setdefault(normalize_caption(t), len(ids)) for t in texts],
            "filename": [records[i].filename for i in owners],
        }
    if images is not None:
        columns["image"] = [images[i] for i in owners]
    for name, (_, values) in extra_columns.items():
        columns[name] = [values[i] for i in owners]
    columns = {name: columns[name] for name in features}  # column order as in the contract
    return Dataset.from_dict(columns, features=features, info=DatasetInfo(description=description, features=features))


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------


class DataDirNotSetError(FileNotFoundError):
    """No benchmark data folder was given: neither an explicit ``data_dir`` nor ``$MTGFE_DATA_DIR``.

    A `FileNotFoundError`, so the command lines that report a missing data folder as a one-line input
    error (exit status 2) report this one the same way.
    """


def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The benchmark data folder: ``data_dir`` when given, else ``$MTGFE_DATA_DIR``, else an error.

    Why no fallback beyond the two: a folder guessed relative to this source file only exists in one
    source-checkout layout; in an installed wheel it points into site-packages, and the guess turns a
    missing setting into a puzzling "file not found" deep inside a loader. The error names both ways to
    set the folder instead. An empty string counts as not set (``MTGFE_DATA_DIR=`` in a shell).
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    raise DataDirNotSetError(
        f"no benchmark data folder is set: pass data_dir= (--data-dir on the command lines, data.data_dir "
        f"in a training config) or set the {DATA_DIR_ENV} environment variable")


def _rsicd_derived_train(bench: benchmarks.BenchmarkLayout, root: Path) -> tuple[list[ImageRecord], str]:
    """RSICD retrieval train: HarMA's train file if present, else AMFMN train minus HarMA val."""
    harma_train = root / bench.sources["harma"]["train"][0]
    if harma_train.is_file():
        return parse_harma(harma_train), f"harma ({harma_train})"
    amfmn_files = [root / f for f in bench.sources["amfmn"]["train"]]
    records = parse_amfmn(*amfmn_files)
    val_file = root / bench.sources["harma"]["val"][0]
    if not val_file.is_file():
        logger.warning("%s is missing: RSICD train is the whole AMFMN train split (%d images), "
                       "which includes HarMA's val images.", val_file, len(records))
        return records, f"amfmn ({amfmn_files[0]})"
    val_names = {r.filename for r in parse_harma(val_file)}
    kept = [r for r in records if r.filename not in val_names]
    return kept, f"amfmn ({amfmn_files[0]}) minus harma val ({val_file})"


def load_rs_benchmark(
    name: str,
    data_dir: PathLike | None = None,
    split: str = "test",
    view: str = "captions",
    layout: str | None = None,
    image_dir: PathLike | None = None,
    annotation_file: PathLike | Sequence[PathLike] | None = None,
    require_images: bool = True,
) -> Dataset:
    """Load one split of UCM-Captions, Sydney-Captions, RSICD or RSITMD.

    Args:
        name: ``"ucm"``, ``"sydney"``, ``"rsicd"`` or ``"rsitmd"``.
        data_dir: the benchmark data folder (layout in `registry`); default ``$MTGFE_DATA_DIR``,
            and an error naming both when neither is set (`resolve_data_dir`).
        split: ``"train"``, ``"val"`` or ``"test"`` (what the layout provides).
        view: ``"captions"`` (one row per caption) or ``"images"`` (one row per image).
        layout: ``None``/``"retrieval"`` for the retrieval convention (module docstring), or
            ``"karpathy"``, ``"coco"``, ``"amfmn"``, ``"harma"`` to read that file family.
        image_dir: folder holding the images (e.g. a full download); replaces the default one.
            Names are matched as ``image_dir/<name>``, HarMA split folders optional.
        annotation_file: an annotation file to read instead of the shipped one (layout detected
            from it when ``layout`` is None; AMFMN: either file of the pair, or both).
        require_images: with False, no image file is looked up and the dataset has no ``image``
            column (annotations only: counts, captions, ``filename``). This is how RSITMD and the
            Sydney/RSICD splits without shipped images load.
    """
    key = benchmarks.canonical_benchmark(name) or name.lower()
    if key not in benchmarks.BENCHMARKS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(benchmarks.BENCHMARKS)}")
    _check_choice("view", view, VIEWS)
    bench = benchmarks.BENCHMARKS[key]
    needs_root = annotation_file is None or (require_images and image_dir is None)
    root = resolve_data_dir(data_dir) if needs_root else None  # only annotation_file and image_dir are read
    if needs_root and not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; pass data_dir= or set ${DATA_DIR_ENV}")
    if layout is not None:
        layout = layout.lower().removesuffix("_json").removesuffix("_txt")

    if annotation_file is not None:
        single = isinstance(annotation_file, (str, os.PathLike))
        files = [Path(annotation_file)] if single else [Path(f) for f in annotation_file]
        detected = detect_layout(files[0])
        layout = detected if layout in (None, RETRIEVAL_LAYOUT) else layout
        records = parse_annotations(layout, files, split)
        source = f"{layout} ({', '.join(map(str, files))})"
    else:
        if layout in (None, RETRIEVAL_LAYOUT):
            _check_choice("split", split, tuple(bench.retrieval), f"{key} (retrieval convention)")
            layout = bench.retrieval[split]
        else:
            _check_choice("layout", layout, (RETRIEVAL_LAYOUT, *bench.sources), key)
        if layout == "derived":
            records, source = _rsicd_derived_train(bench, root)
        else:
            _check_choice("split", split, tuple(bench.sources[layout]), f"{key} layout {layout!r}")
            files = [root / f for f in bench.sources[layout][split]]
            records = parse_annotations(layout, files, split)
            source = f"{layout} ({', '.join(map(str, files))})"

    images = None
    if require_images:
        roots = [Path(image_dir)] if image_dir is not None else [root / d for d in bench.image_dirs]
        images = ImageLocator(roots).resolve_all(records)
    n_caps = sum(len(r.captions) for r in records)
    logger.info("%s %s: %d images, %d captions from %s", key, split, len(records), n_caps, source)
    return build_dataset(records, view, images, description=f"{key} {split} split, {view} view, from {source}")


# --------------------------------------------------------------------------------------------
# Users' own data
# --------------------------------------------------------------------------------------------


def _rows_of(path: Path) -> Iterable[tuple[str, dict]]:
    """(location, row dict) of a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for i, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:{i}", row
        return
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield f"{path}:{i}", json.loads(line)
            except json.JSONDecodeError as err:
                raise AnnotationFormatError(f"{path}:{i} is not valid JSON: {err}") from err


def parse_caption_file(path: PathLike) -> list[ImageRecord]:
    """Records of a JSONL/CSV file whose rows hold ``image`` and ``captions`` (list) or ``caption``.

    Rows naming the same image are merged in order. In CSV, ``captions`` is a JSON list.
    """
    path = Path(path)
    _require_file(path, "caption file")
    pairs = []
    for where, row in _rows_of(path):
        if not isinstance(row, dict) or not row.get("image"):
            raise AnnotationFormatError(f"{where}: row has no 'image' ({_keys(row)})")
        if row.get("captions") not in (None, ""):
            captions = row["captions"]
            if isinstance(captions, str):
                try:
                    captions = json.loads(captions)
                except json.JSONDecodeError as err:
                    raise AnnotationFormatError(f"{where}: 'captions' is not a JSON list: {err}") from err
        elif row.get("caption") is not None:
            captions = [row["caption"]]
        else:
            raise AnnotationFormatError(f"{where}: row has neither 'captions' nor 'caption'")
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise AnnotationFormatError(f"{where}: 'captions' must be a list of strings")
        pairs.extend((row["image"], row["image"], c) for c in captions)
    if not pairs:
        raise AnnotationFormatError(f"{path} holds no caption rows")
    return _group_captions(pairs, path)


def load_caption_file(
    path: PathLike,
    image_dir: PathLike | None = None,
    view: str = "captions",
    require_images: bool = True,
) -> Dataset:
    """A user's JSONL/CSV caption file as a dataset of the standard schema.

    Rows look like ``{"image": "rel/path.jpg", "captions": ["...", ...]}``; ``image`` is relative to
    ``image_dir`` (default: the file's folder) or absolute, and must name the file exactly.
    """
    path = Path(path)
    records = parse_caption_file(path)
    images = None
    if require_images:
        root = Path(image_dir) if image_dir is not None else path.parent
        images = ImageLocator([root], match_extension=False).resolve_all(records)
    return build_dataset(records, view, images, description=f"{view} view of {path}")


# --------------------------------------------------------------------------------------------
# Small checks
# --------------------------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def _check_choice(field: str, value, allowed: Sequence, context: str = "") -> None:
    if value not in allowed:
        where = f" for {context}" if context else ""
        raise ValueError(f"unknown {field} {value!r}{where}; allowed: {list(dict.fromkeys(allowed))}")
