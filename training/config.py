"""Reading a training config: YAML/JSON files, `extends:`, `--set section.key=value`, readable errors.

A run is described by a YAML (or JSON) file plus `--set` overrides. Everything is checked before any
dataset is read or model built, so a typo or an impossible setting costs a second, not the minutes it
takes to load backbones and start training:

* the schema, with every field's type, default, range or choices and doc, and the rules between fields,
  is `config_schema.py` (pydantic models);
* unknown keys raise and name the key with close matches (also from other sections: `lr` at the top
  level suggests `optim.lr`);
* values are converted to the declared field types (YAML reads `1e-4` as a *string*; a `float` field
  accepts it), and every problem is reported at once, each naming its dotted key, the value and the
  allowed range or choices, as one `ConfigError`.

Checks that need the data (number of steps of an epoch, captions per image when all captions are
used) are in `check_data_dependent`, which the trainer calls right after loading the annotations and
still before building the model.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from mtgfe.utils.io import FileFormatError, load_yaml_text, read_yaml

from .config_schema import (
    TwinsConfig,
    BENCHMARK_DATASETS,
    CACHE_DTYPES,
    DATASETS,
    LOSS_NAMES,
    MIXED_PRECISIONS,
    SELECTION_METRICS,
    TOKENIZER_CHOICES,
    BackboneCacheConfig,
    CheckpointConfig,
    ConfigError,
    CVConfig,
    DataConfig,
    EvalConfig,
    FreezeConfig,
    InitConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    SyntheticConfig,
    TrainConfig,
    ViewsConfig,
    build_view_transforms,
    check_data_dependent,
    did_you_mean,
    resolve_config_path,
    warmup_steps,
)


# ------------------------------------------------------------------------------------------ errors
def _section_class(annotation) -> type[BaseModel] | None:
    """The section model in `X` or `X | None`, else None."""
    for tp in (annotation, *typing.get_args(annotation)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def _all_paths(cls: type[BaseModel] = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted field path of the schema (for "did you mean" across sections)."""
    paths = []
    for name, info in cls.model_fields.items():
        paths.append(prefix + name)
        inner = _section_class(info.annotation)
        if inner is not None:
            paths.extend(_all_paths(inner, f"{prefix}{name}."))
    return paths


def _field_at(loc: Sequence) -> Any:
    """The pydantic `FieldInfo` at an error location, or None (list items, free mappings)."""
    cls, info = TrainConfig, None
    for part in loc:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return None
        info = cls.model_fields[part]
        cls = _section_class(info.annotation)
    return info


def _allowed_range(loc: Sequence, ctx: Mapping) -> str:
    """`in [0, 1]`, `> 0`, ... from the field's declared bounds (or the failing bound alone)."""
    bounds = dict(ctx)
    info = _field_at(loc)
    for item in getattr(info, "metadata", ()):
        for key in ("gt", "ge", "lt", "le"):
            if getattr(item, key, None) is not None:
                bounds[key] = getattr(item, key)
    bounds = {key: int(v) if isinstance(v, float) and v.is_integer() else v for key, v in bounds.items()}  # 0, not 0.0
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"{'<=' if high[1] == ']' else '<'} {high[0]}"


_EXPECTED = {"int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
             "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true/false",
             "bool_type": "true/false", "string_type": "a string", "model_type": "a mapping of its fields",
             "model_attributes_type": "a mapping of its fields", "dict_type": "a mapping", "list_type": "a list"}


def _describe(error: Mapping) -> list[str]:
    """One pydantic error as messages that name the dotted key, the value and what is allowed."""
    loc, kind, ctx = error["loc"], error["type"], error.get("ctx") or {}
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    value = error.get("input")
    if kind == "extra_forbidden":
        return [f"unknown config key {path!r}{_suggest(path)}"]
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))
        if not path:  # the cross-field rules: one line per problem, each names its keys
            return message.splitlines()
        if isinstance(value, dict) or path in message:
            return [message if path in message else f"{path}: {message}"]
        return [f"{path}={value!r} {message}"]
    if kind == "finite_number":
        return [f"{path}={value} must be a finite number (not nan or inf)"]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return [f"{path}={value!r} must be {_allowed_range(loc, ctx)}"]
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return [f"{path}={value!r} is not one of {choices}{did_you_mean(str(value), choices)}"]
    if kind in _EXPECTED:
        return [f"{path}: expected {_EXPECTED[kind]}, got {value!r}"]
    return [f"{path}={value!r}: {error['msg']}"]


def _suggest(path: str) -> str:
    """Close names among the key's siblings, and the same name in other sections (`lr` → `optim.lr`)."""
    prefix, _, key = path.rpartition(".")
    paths = _all_paths()
    siblings = [p.rpartition(".")[2] for p in paths if p.rpartition(".")[0] == prefix]
    names = [f"{prefix}.{c}" if prefix else c for c in difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)]
    names += [p for p in paths if p.rpartition(".")[2] == key and p != path and p not in names]
    return f"; did you mean {' or '.join(repr(n) for n in names)}?" if names else ""


def _validated(data: Mapping, source: str) -> TrainConfig:
    """`TrainConfig` from a plain mapping, or a `ConfigError` listing every problem (dotted keys)."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        problems = [line for item in error.errors(include_url=False) for line in _describe(item)]
        if len(problems) == 1:
            raise ConfigError(f"{source}: {problems[0]}") from None
        raise ConfigError(f"{source}: {len(problems)} problems:\n  " + "\n  ".join(problems)) from None


# ------------------------------------------------------------------------------------------ parsing
def _set_dotted(data: dict, dotted: str, value) -> None:
    """`data["a"]["b"] = value` for `a.b`, creating (or replacing null) intermediate mappings."""
    parts = dotted.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[: depth + 1])} is not a section (it holds {child!r})")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str] | None) -> list[tuple[str, Any]]:
    """`["optim.lr=1e-4", "data.dataset=ucm"]` → `[("optim.lr", "1e-4"), ...]`; values are YAML."""
    parsed = []
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = load_yaml_text(raw, f"--set {key}") if raw.strip() else None
        except FileFormatError as error:
            raise ConfigError(str(error)) from error
        parsed.append((key, value))
    return parsed


def config_from_dict(data: Mapping | None, overrides: Sequence[str] | None = None, source: str = "<dict>") -> TrainConfig:
    """Build and validate a `TrainConfig` from a mapping and `key=value` overrides."""
    raw = json.loads(json.dumps(dict(data or {})))  # deep copy; also rejects non-JSON values early
    for key, value in parse_overrides(overrides):
        _set_dotted(raw, key, value)
    return _validated(raw, source)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] | None = None) -> TrainConfig:
    """Read a YAML/JSON config file (or none: defaults), apply `--set` overrides, validate.

    A bare name like `synthetic_tiny` (or `synthetic_tiny.yaml`) resolves to the configs shipped in
    `mtgfe/training/configs/` when no such file exists in the working directory. A file may start
    from another one with `extends: other.yaml` (relative to the file, or a shipped name); its
    mappings are merged key by key, so an ablation config states only what it changes.
    """
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        data = _read_with_extends(file, seen=())
    return config_from_dict(data, overrides, source)


def _read_mapping(file: Path) -> dict:
    """One config file as a mapping. Read through `read_yaml`, which refuses oversized files and alias bombs
    before expanding them: the deep copy in `config_from_dict` walks every alias as a copy."""
    try:
        data = read_yaml(file, what="config file") or {}
    except FileFormatError as error:
        raise ConfigError(str(error)) from error
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _read_with_extends(file: Path, seen: tuple[Path, ...]) -> dict:
    data = _read_mapping(file)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_file = file.parent / str(parent)
    parent_file = parent_file if parent_file.is_file() else resolve_config_path(str(parent))
    if parent_file.resolve() in seen:
        raise ConfigError(f"{file}: 'extends' loops back to {parent_file}")
    return _merge(_read_with_extends(parent_file, seen + (file.resolve(),)), data)


def _merge(base: dict, child: dict) -> dict:
    """Recursive dict merge; the child's values win, mappings merge key by key."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


__all__ = [
    "BENCHMARK_DATASETS",
    "BackboneCacheConfig",
    "CACHE_DTYPES",
    "CheckpointConfig",
    "ConfigError",
    "CVConfig",
    "DATASETS",
    "DataConfig",
    "EvalConfig",
    "FreezeConfig",
    "InitConfig",
    "LOSS_NAMES",
    "LogConfig",
    "MIXED_PRECISIONS",
    "ModelConfig",
    "OptimConfig",
    "SELECTION_METRICS",
    "ScheduleConfig",
    "SyntheticConfig",
    "TOKENIZER_CHOICES",
    "TwinsConfig",
    "TrainConfig",
    "ViewsConfig",
    "build_view_transforms",
    "check_data_dependent",
    "config_from_dict",
    "load_config",
    "resolve_config_path",
    "parse_overrides",
    "warmup_steps",
]
