"""Model and dataset cards for mtgfe checkpoints and benchmark exports (offline).

Why this module exists: a retrieval number without its tie rule, filter size and split is not
comparable (docs/METHOD.md §6, §6b), so the card is rendered from the evaluation JSON itself, and the
same values go into the machine-readable ``model-index`` block and the human-readable table.

Evaluation JSON accepted by :func:`render_model_card` (one object per dataset/split; the evaluation
CLI writes it; a path to such a file is accepted too). Unknown keys are ignored::

    {
      "dataset": "ucm",            # required. ucm | sydney | rsicd | rsitmd (aliases such as
                                   #   "ucm_captions", "UCM-Captions" work) or any other name
      "split": "test",             # required
      "tie_rule": "expected",      # required, here or as metrics["tie_rule"] (retrieval_metrics output)
      "metrics": {                 # required, percent; keys "i2t_R@K", "t2i_R@K", "mR"; other keys
        "i2t_R@1": 13.5, "i2t_R@5": 49.1, "i2t_R@10": 74.7,   #   (e.g. "ties", "num_images") ignored
        "t2i_R@1": 13.6, "t2i_R@5": 54.8, "t2i_R@10": 87.2,
        "mR": 48.8
      },
      "k": 32,                     # optional: ITC top-k kept for the ITM re-rank; null or "full" = no filter
      "score": "itm+itc",          # optional: what ranked the pairs
      "split_convention": "karpathy",            # optional: becomes the model-index dataset config
      "dataset_id": "user/ucm-captions",         # optional: a Hub dataset id (model-index dataset type)
      "metrics_std": {"mR": 0.1, ...},           # optional: shown as mean ± std in the table
      "seeds": [0, 1, 2],                        # optional: shown with the std
      "metrics_by_tie_rule": {"pessimistic": {"mR": 42.9, ...}, "optimistic": {...}},  # optional
      "num_images": 210, "num_texts": 1050       # optional (also read from metrics)
    }

``model-index`` layout: per evaluation JSON, task ``image-to-text-retrieval`` carries i2t R@K and its
mean, task ``text-to-image-retrieval`` carries t2i R@K and its mean, and task
``image-text-retrieval`` carries mR (the mean of both directions). Every metric states the tie rule
in its ``name`` and ``config`` and carries ``{"tie_rule", "k", "score"}`` as ``args``. Values are
rounded to two decimals, the field's convention. The task types are free strings: the Hub has no
retrieval task type, and ``ModelCardData`` accepts any string offline.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from . import card_facts

logger = logging.getLogger(__name__)

__all__ = [
    "MTGFE_CITATION",
    "DEFAULT_PIPELINE_TAG",
    "EvalRecord",
    "load_eval_results",
    "render_model_card",
    "render_dataset_card",
]

# There is no Hub pipeline tag for image–text retrieval. The model's reusable outputs are embeddings
# (get_image_features / get_text_features) and pair scores, so "feature-extraction" is the honest
# choice: "zero-shot-image-classification" would promise a classifier widget, "text-to-image" and
# "image-text-to-text" promise generation. Callers can override (or pass None to omit the tag).
DEFAULT_PIPELINE_TAG = "feature-extraction"
MODEL_TAGS = ("remote-sensing", "image-text-retrieval", "mtgfe")

MTGFE_CITATION = """@article{zhang2023mtgfe,
  title   = {A Fusion Encoder with Multi-Task Guidance for Cross-Modal Text--Image Retrieval in Remote Sensing},
  author  = {Zhang, X. and Li, W. and Wang, X. and Wang, L. and Zheng, F. and Wang, L. and Zhang, H.},
  journal = {Remote Sensing},
  volume  = {15},
  number  = {18},
  pages   = {4637},
  year    = {2023},
  doi     = {10.3390/rs15184637}
}"""

ALBEF_CITATION = """@inproceedings{li2021albef,
  title     = {Align before Fuse: Vision and Language Representation Learning with Momentum Distillation},
  author    = {Li, Junnan and Selvaraju, Ramprasaath R. and Gotmare, Akhilesh Deepak and Joty, Shafiq and Xiong, Caiming and Hoi, Steven},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2021}
}"""

# ------------------------------------------------------------------------------- eval JSON input
_METRIC_KEY = re.compile(r"^(i2t|t2i)_R@(\d+)$")


@dataclass
class EvalRecord:
    """One validated evaluation JSON (see the module docstring)."""

    dataset: str
    split: str
    tie_rule: str
    metrics: dict[str, float]  # only (i2t|t2i)_R@K and mR
    k: int | None = None  # ITC top-k; None = full ranking
    score: str | None = None
    split_convention: str | None = None
    dataset_id: str | None = None
    metrics_std: dict[str, float] | None = None
    seeds: list | None = None
    metrics_by_tie_rule: dict[str, dict[str, float]] | None = None
    num_images: int | None = None
    num_texts: int | None = None
    source: str = "<dict>"

    @property
    def info(self) -> card_facts.BenchmarkInfo | None:
        return card_facts.benchmark_info(self.dataset)

    @property
    def dataset_name(self) -> str:
        return self.info.pretty_name if self.info else self.dataset

    def ks(self, direction: str) -> list[int]:
        out = []
        for key in self.metrics:
            m = _METRIC_KEY.match(key)
            if m and m.group(1) == direction:
                out.append(int(m.group(2)))
        return sorted(out)


def _metric_values(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping of metric name to value, got {type(raw).__name__}.")
    out = {}
    for key, value in raw.items():
        if not (_METRIC_KEY.match(str(key)) or key == "mR"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}[{key!r}] must be a finite number (percent), got {value!r}.")
        if not 0.0 <= float(value) <= 100.0:
            raise ValueError(f"{where}[{key!r}] = {value!r} is outside [0, 100]; recalls are in percent.")
        out[str(key)] = float(value)
    return out


def _parse_eval(obj: Any, source: str) -> EvalRecord:
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"evaluation JSON not found: {path}") from err
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"evaluation JSON {path} is not valid JSON: {err}") from err
        source = str(path)
    if not isinstance(obj, Mapping):
        raise ValueError(f"evaluation result {source} must be a JSON object, got {type(obj).__name__}.")
    for key in ("dataset", "split", "metrics"):
        if key not in obj:
            raise ValueError(f"evaluation result {source} lacks required key {key!r} (has {sorted(obj)}).")
    raw_metrics = obj["metrics"]
    tie_rule = obj.get("tie_rule") or (raw_metrics.get("tie_rule") if isinstance(raw_metrics, Mapping) else None)
    if not tie_rule:
        raise ValueError(
            f"evaluation result {source} lacks 'tie_rule': R@1 on these benchmarks depends on how ties are "
            "ordered, so a number without its rule is not reported (docs/METHOD.md §6b)."
        )
    metrics = _metric_values(raw_metrics, f"{source}: metrics")
    if not metrics:
        raise ValueError(f"evaluation result {source}: metrics has no 'i2t_R@K', 't2i_R@K' or 'mR' entry.")
    k = obj.get("k")
    if isinstance(k, str) and k.lower() in ("full", "none", "all"):
        k = None
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"evaluation result {source}: 'k' must be a positive integer, null or 'full', got {k!r}.")
    by_rule = obj.get("metrics_by_tie_rule")
    if by_rule is not None:
        if not isinstance(by_rule, Mapping):
            raise ValueError(f"evaluation result {source}: 'metrics_by_tie_rule' must map rule -> metrics.")
        by_rule = {str(r): _metric_values(v, f"{source}: metrics_by_tie_rule[{r!r}]") for r, v in by_rule.items()}
    std = obj.get("metrics_std")
    if std is not None:
        std = _metric_values(std, f"{source}: metrics_std")
    counts = {}
    for key in ("num_images", "num_texts"):
        value = obj.get(key, raw_metrics.get(key) if isinstance(raw_metrics, Mapping) else None)
        counts[key] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    ignored = sorted(set(obj) - {f for f in EvalRecord.__dataclass_fields__} - {"metrics"})
    if ignored:
        logger.debug("evaluation result %s: ignoring keys %s", source, ignored)
    return EvalRecord(
        dataset=str(obj["dataset"]),
        split=str(obj["split"]),
        tie_rule=str(tie_rule),
        metrics=metrics,
        k=k,
        score=None if obj.get("score") is None else str(obj["score"]),
        split_convention=None if obj.get("split_convention") is None else str(obj["split_convention"]),
        dataset_id=None if obj.get("dataset_id") is None else str(obj["dataset_id"]),
        metrics_std=std,
        seeds=list(obj["seeds"]) if isinstance(obj.get("seeds"), (list, tuple)) else None,
        metrics_by_tie_rule=by_rule,
        source=source,
        **counts,
    )


def load_eval_results(eval_results: Any) -> list[EvalRecord]:
    """Validate ``None`` | one result | a list of results, each a dict or a path to a JSON file."""
    if eval_results is None:
        return []
    if isinstance(eval_results, (Mapping, str, Path)):
        eval_results = [eval_results]
    return [_parse_eval(item, f"eval_results[{i}]") for i, item in enumerate(eval_results)]


# ---------------------------------------------------------------------------------- model index
_TASKS = {
    "i2t": ("image-to-text-retrieval", "Image-to-text retrieval"),
    "t2i": ("text-to-image-retrieval", "Text-to-image retrieval"),
    "both": ("image-text-retrieval", "Image-text retrieval (mean of both directions)"),
}


def _k_text(k: int | None) -> str:
    return "full" if k is None else str(k)


def _k_arg(k: int | None) -> int | str:
    return "full" if k is None else k


def _eval_results_for(rec: EvalRecord) -> list[EvalResult]:
    args = {"tie_rule": rec.tie_rule, "k": _k_arg(rec.k), "score": rec.score or "unspecified"}
    config = f"tie_rule={rec.tie_rule}, k={_k_text(rec.k)}, score={args['score']}"
    common = dict(
        dataset_type=rec.dataset_id or (rec.info.slug if rec.info else rec.dataset),
        dataset_name=rec.dataset_name,
        dataset_split=rec.split,
        dataset_config=rec.split_convention,
        metric_config=config,
        metric_args=dict(args),
    )
    out = []
    for direction in ("i2t", "t2i"):
        task_type, task_name = _TASKS[direction]
        ks = rec.ks(direction)
        for k in ks:
            out.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    metric_type=f"recall@{k}",
                    metric_name=f"{direction} R@{k} (ties: {rec.tie_rule})",
                    metric_value=round(rec.metrics[f"{direction}_R@{k}"], 2),
                    **common,
                )
            )
        if ks:
            mean = sum(rec.metrics[f"{direction}_R@{k}"] for k in ks) / len(ks)
            out.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    metric_type="mean_recall",
                    metric_name=f"{direction} mean R@{{{','.join(map(str, ks))}}} (ties: {rec.tie_rule})",
                    metric_value=round(mean, 2),
                    **common,
                )
            )
    if "mR" in rec.metrics:
        task_type, task_name = _TASKS["both"]
        out.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                metric_type="mean_recall",
                metric_name=f"mR (ties: {rec.tie_rule})",
                metric_value=round(rec.metrics["mR"], 2),
                **common,
            )
        )
    return out


# ------------------------------------------------------------------------------ markdown pieces
def _fmt(rec: EvalRecord, key: str) -> str:
    if key not in rec.metrics:
        return "–"
    text = f"{rec.metrics[key]:.2f}"
    if rec.metrics_std and key in rec.metrics_std:
        text += f" ± {rec.metrics_std[key]:.2f}"
    return text


def _results_table(records: Sequence[EvalRecord]) -> str:
    if not records:
        return "No evaluation results were supplied with this checkpoint."
    ks = sorted({k for r in records for d in ("i2t", "t2i") for k in r.ks(d)})
    cols = [f"i2t R@{k}" for k in ks] + [f"t2i R@{k}" for k in ks] + ["mR"]
    keys = [f"i2t_R@{k}" for k in ks] + [f"t2i_R@{k}" for k in ks] + ["mR"]
    lines = [
        "| dataset | split | tie rule | filter k | score | " + " | ".join(cols) + " |",
        "|---|---|---|---|---|" + "---|" * len(cols),
    ]
    notes = []
    for rec in records:
        split = rec.split + (f" ({rec.split_convention})" if rec.split_convention else "")
        row = [rec.dataset_name, split, rec.tie_rule, _k_text(rec.k), rec.score or "–"]
        lines.append("| " + " | ".join(row + [_fmt(rec, key) for key in keys]) + " |")
        for rule, values in (rec.metrics_by_tie_rule or {}).items():
            if rule == rec.tie_rule:
                continue
            cells = [f"{values[key]:.2f}" if key in values else "–" for key in keys]
            lines.append("| " + " | ".join([rec.dataset_name, split, rule, _k_text(rec.k), rec.score or "–"] + cells) + " |")
        size = ", ".join(
            f"{n:,} {what}" for n, what in ((rec.num_images, "images"), (rec.num_texts, "captions")) if n is not None
        )
        if size:
            notes.append(f"{rec.dataset_name} {rec.split}: {size}.")
        if rec.seeds:
            notes.append(f"{rec.dataset_name} {rec.split}: mean ± std over seeds {rec.seeds}.")
    text = "\n".join(lines)
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text


def _read_model_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        logger.warning("no config.json in %s: the card will not describe the architecture", model_dir)
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _details_lines(cfg: Mapping[str, Any], base_models: Sequence[str], license: str) -> list[str]:
    lines = [] if cfg else ["- **Architecture:** not recorded (no `config.json` next to the weights)."]
    vision = cfg.get("vision_config") or {}
    text = cfg.get("text_config") or {}
    if vision:
        desc = str(vision.get("model_type", "?"))
        if vision.get("variant"):
            desc += f" ({vision['variant']})"
        if vision.get("image_size"):
            desc += f", input {vision['image_size']}x{vision['image_size']} px"
        lines.append(f"- **Image encoder:** {desc}")
    if text:
        layers = text.get("num_hidden_layers")
        fusion = cfg.get("fusion_layer")
        desc = f"BERT-style, hidden size {text.get('hidden_size', '?')}"
        if layers is not None and fusion is not None:
            desc += f"; layers 0..{fusion - 1} encode text, layers {fusion}..{layers - 1} fuse image and text by cross-attention"
        lines.append(f"- **Text / fusion encoder:** {desc}")
    for key, label in (("embed_dim", "Filter embedding size"), ("k_test", "Default re-rank depth k")):
        if cfg.get(key) is not None:
            lines.append(f"- **{label}:** {cfg[key]}")
    if base_models:
        lines.append("- **Initialised from:** " + ", ".join(f"[`{b}`](https://huggingface.co/{b})" for b in base_models))
    lines.append("- **Library:** 🤗 Transformers with custom code (`trust_remote_code=True`)")
    lines.append(f"- **License:** {license}")
    return lines


_TRAIN_DATA_KEYS = ("dataset", "datasets", "train_dataset", "train_datasets", "data")


def _train_datasets(train_config: Mapping[str, Any] | None) -> list[str]:
    """Dataset names in a training config, whatever key the trainer used."""
    names: list[str] = []
    for key in _TRAIN_DATA_KEYS:
        value = (train_config or {}).get(key)
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, Mapping):
                item = item.get("name") or item.get("dataset")
            if isinstance(item, str) and item not in names:
                names.append(item)
    return names


def _describe(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        info = card_facts.benchmark_info(name)
        out.append(f"**{info.pretty_name}** — {info.imagery}" if info else f"**{name}** (no description on file)")
    return out


def _limitations(records, train_names, image_size) -> str:
    lines = []
    if train_names:
        lines.append("- **Training imagery:** " + "; ".join(_describe(train_names)) + ".")
    else:
        lines.append("- **Training imagery:** not recorded with this checkpoint.")
    eval_names = [r.dataset for r in records if r.dataset not in train_names]
    if eval_names:
        lines.append("- **Evaluated (not trained) on:** " + "; ".join(_describe(dict.fromkeys(eval_names))) + ".")
    if image_size:
        lines.append(
            f"- **Input resolution:** images are resized to {image_size}x{image_size} px. Ground sampling distances, "
            "sensors, seasons and regions outside the imagery above (e.g. Sentinel-2 at 10 m, SAR, multispectral "
            "bands, off-nadir views) were not seen in training, and retrieval quality there is unknown."
        )
    lines += [
        "- **Language:** captions are English and short (one sentence); long or non-English queries are out of scope.",
        "- **Ties:** these benchmarks repeat many captions word for word, so R@1 depends on how tied scores are "
        "ordered. Every number here names its tie rule (`expected` = exact expectation under random tie order; "
        "`pessimistic`/`optimistic` bound it; `argsort` is the field's code). Published numbers usually do not say, "
        "so compare with care.",
        "- **Small test sets:** UCM-Captions and Sydney-Captions test splits have about 210 and 58 images; "
        "differences of a few points are within seed noise.",
        "- **Filtering:** with a top-k pre-filter, a pair outside the filter's top k cannot be recovered by the re-rank, "
        "so recall is bounded by the filter's recall@k.",
    ]
    return "\n".join(lines)


def _template(name: str) -> str:
    return (files("mtgfe.hub_cards") / name).read_text(encoding="utf-8")


def _citations(records, train_names) -> str:
    seen: list[str] = [MTGFE_CITATION, ALBEF_CITATION]
    for name in list(train_names) + [r.dataset for r in records]:
        info = card_facts.benchmark_info(name)
        for cite in info.citations if info else ():
            if cite not in seen:
                seen.append(cite)
    return "\n\n".join(seen)


# ------------------------------------------------------------------------------------ public API
def render_model_card(
    model_dir: str | Path,
    eval_results: list[dict] | dict | str | Path | None = None,
    repo_id: str | None = None,
    base_models: Sequence[str] = (),
    train_config: Mapping[str, Any] | None = None,
    reproduce_commands: Sequence[str] = (),
    license: str = "apache-2.0",
    *,
    model_name: str | None = None,
    pipeline_tag: str | None = DEFAULT_PIPELINE_TAG,
    extra_tags: Sequence[str] = (),
) -> ModelCard:
    """Render the README.md model card of an mtgfe checkpoint folder.

    Args:
        model_dir: checkpoint folder; its ``config.json`` (if any) describes the architecture.
        eval_results: evaluation JSON(s) as dicts or file paths (schema in the module docstring).
        repo_id: Hub id the card is for; names the model and the usage snippet.
        base_models: Hub ids the weights were initialised from (``base_model`` metadata).
        train_config: the training configuration (dict); shown verbatim, and its dataset and
            ``image_size`` entries feed the limitations.
        reproduce_commands: shell commands that reproduce the checkpoint and its numbers.
        license: SPDX-like Hub license id of the weights.
        model_name: ``model-index`` name; defaults to the last part of ``repo_id`` or the folder name.
        pipeline_tag: see :data:`DEFAULT_PIPELINE_TAG`.
        extra_tags: added to ``remote-sensing``, ``image-text-retrieval``, ``mtgfe``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir {model_dir} is not a directory.")
    if train_config is not None and not isinstance(train_config, Mapping):
        raise TypeError(f"train_config must be a mapping (e.g. dataclasses.asdict(cfg)), got {type(train_config).__name__}.")
    if isinstance(base_models, str):
        base_models = [base_models]
    if isinstance(reproduce_commands, str):
        reproduce_commands = [reproduce_commands]
    records = load_eval_results(eval_results)
    cfg = _read_model_config(model_dir)
    name = model_name or (repo_id.split("/")[-1] if repo_id else model_dir.resolve().name)

    results = [er for rec in records for er in _eval_results_for(rec)]
    hub_datasets = sorted({rec.dataset_id for rec in records if rec.dataset_id})
    card_data = ModelCardData(
        model_name=name,
        eval_results=results or None,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        base_model=list(base_models) or None,
        datasets=hub_datasets or None,
        language=["en"],
        tags=list(dict.fromkeys([*MODEL_TAGS, *extra_tags])),
    )

    train_names = _train_datasets(train_config)
    image_size = (train_config or {}).get("image_size") or (cfg.get("vision_config") or {}).get("image_size")
    train_yaml = (
        yaml.safe_dump(json.loads(json.dumps(dict(train_config), default=str)), sort_keys=False).strip()
        if train_config
        else ""
    )
    return ModelCard.from_template(
        card_data,
        template_str=_template("model_card_template.md"),
        model_name=name,
        repo_id=repo_id or f"<user>/{name}",
        details="\n".join(_details_lines(cfg, base_models, license)),
        results_table=_results_table(records),
        train_datasets=_describe(train_names),
        train_config_yaml=train_yaml,
        reproduce="\n".join(reproduce_commands),
        limitations=_limitations(records, train_names, image_size),
        citations=_citations(records, train_names),
        license=license,
    )


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def render_dataset_card(
    dataset_name: str,
    splits: Mapping[str, int],
    source_citation: str | None = None,
    license: str = "other",
    *,
    pretty_name: str | None = None,
    description: str | None = None,
    features: Mapping[str, str] | None = None,
    data_files: Mapping[str, str] | None = None,
    license_note: str | None = None,
    num_captions: Mapping[str, int] | None = None,
) -> DatasetCard:
    """Render a dataset card for a benchmark export.

    Args:
        dataset_name: benchmark key or alias (``ucm``, ``rsicd``, ...) or any name; known benchmarks
            fill the description, citation and license note.
        splits: ``{split: number of rows}``.
        source_citation: BibTeX of the source; defaults to the registry's citations.
        license: Hub license id. ``"other"`` (default) because none of these releases has a license
            file; ``license_note`` explains the terms.
        features: ``{column: type description}`` for the card's field table.
        data_files: ``{split: path inside the repo}``; written as the ``configs`` metadata so that
            ``load_dataset(<repo or folder>)`` finds the splits.
        num_captions: ``{split: number of captions}``, shown beside the image counts.
    """
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError(f"splits must be a non-empty mapping of split name to row count, got {splits!r}.")
    for split, n in splits.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"splits[{split!r}] must be a non-negative int, got {n!r}.")
    info = card_facts.benchmark_info(dataset_name)
    pretty = pretty_name or (info.pretty_name if info else dataset_name)
    citation = source_citation or ("\n\n".join(info.citations) if info else None)
    if not citation:
        raise ValueError(f"source_citation is required for {dataset_name!r}, which is not a known benchmark.")
    note = license_note or (info.license_note if info else "See the source's terms.")
    extra: dict[str, Any] = {"dataset_info": {"splits": [{"name": s, "num_examples": n} for s, n in splits.items()]}}
    if data_files:
        missing = sorted(set(splits) - set(data_files))
        if missing:
            raise ValueError(f"data_files lacks split(s) {missing} that splits lists.")
        extra["configs"] = [
            {"config_name": "default", "data_files": [{"split": s, "path": data_files[s]} for s in splits]}
        ]
    card_data = DatasetCardData(
        pretty_name=pretty,
        license=license,
        language=["en"],
        task_categories=["image-to-text", "text-to-image"],
        size_categories=[_size_category(sum(splits.values()))],
        tags=["remote-sensing", "image-text-retrieval", "mtgfe"],
        **extra,
    )
    split_rows = "\n".join(
        f"| {s} | {n:,} | {num_captions[s]:,} |" if num_captions and s in num_captions else f"| {s} | {n:,} | – |"
        for s, n in splits.items()
    )
    return DatasetCard.from_template(
        card_data,
        template_str=_template("dataset_card_template.md"),
        pretty_name=pretty,
        description=description or (info.imagery if info else ""),
        split_rows=split_rows,
        feature_rows="\n".join(f"| `{k}` | {v} |" for k, v in (features or {}).items()),
        license=license,
        license_note=note,
        citation=citation,
    )
