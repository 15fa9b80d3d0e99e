"""TrainConfig: parsing, overrides, validation errors (raised before any data or model work), schedule, groups."""

from __future__ import annotations

import math
import re
import typing

import pytest

from mtgfe.training.config import (
    ConfigError,
    TrainConfig,
    check_data_dependent,
    config_from_dict,
    load_config,
    parse_overrides,
)
from tests.helpers.paths import REPO_ROOT


CONFIG_DIR = REPO_ROOT / "training" / "configs"
TINY = {"model": {"preset": "tiny"}, "data": {"dataset": "synthetic", "image_size": 32, "tokenizer": "wordpiece"}}


def make(overrides=(), data=None) -> TrainConfig:
    return config_from_dict(TINY if data is None else data, list(overrides))


# ------------------------------------------------------------------------------------------ parsing
def test_defaults_and_typed_overrides():
    cfg = make(["optim.lr=1e-4", "max_steps=10", "log.sample_ids=true", "optim.betas=[0.9, 0.98]",
                "model.init.vision=efficientnet-lite0", "model.init.text=minilm-l6", "data.tokenizer=default"])
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)  # YAML reads 1e-4 as a str
    assert cfg.max_steps == 10 and cfg.log.sample_ids is True
    assert cfg.optim.betas == [0.9, 0.98]
    assert cfg.model.init.vision == "efficientnet-lite0"
    assert cfg.to_dict()["model"]["preset"] == "tiny"


def test_parse_overrides_rejects_missing_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("lr=1e-4", r"unknown config key 'lr'.*'optim\.lr'"),  # right name, wrong section
        ("optim.lrr=1e-4", r"unknown config key 'optim\.lrr'.*'optim\.lr'"),
        ("data.datset=ucm", r"'data\.datset'.*'data\.dataset'"),
        ("batchsize=8", r"'batchsize'.*'batch_size'"),
    ],
)
def test_unknown_keys_name_the_key_and_suggest(override, match):
    with pytest.raises(ConfigError, match=match):
        make([override])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"max_steps: expected an integer, got 'ten'"):
        make(["max_steps=ten"])
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number"):
        make(["optim.lr=fast"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("model.itm_weight=-1", r"model\.itm_weight=-1 must be >= 0"),
        ("model.mvjrc_weight=-0.5", r"model\.mvjrc_weight"),
        ("batch_size=1", r"batch_size=1 must be >= 2"),
        ("mixed_precision=fp8", r"mixed_precision='fp8' is not one of"),
        ("optim.lr=0", r"optim\.lr=0 must be > 0"),
        ("optim.head_lr=-1e-5", r"optim\.head_lr"),
        ("data.dataset=ucn", r"data\.dataset='ucn' is not one of \[.*; did you mean 'ucm'\?"),
        ("model.preset=huge", r"model\.preset='huge' is not one of \['base', 'small', 'tiny'\]"),
        ("model.mvjrc_variant=byol", r"model\.mvjrc_variant"),
        ("eval.score=itc", r"eval\.score"),
        ("eval.selection_metric=R@1", r"eval\.selection_metric"),
        ("schedule.min_lr=1", r"schedule\.min_lr"),
        ("views.mvjrc.colour=1", r"views: .*colour"),
        ("model.config.embeddim=8", r"model\.config\.embeddim is not an MTGFEConfig field; did you mean 'model\.config\.embed_dim'"),
        ("model.config.itm_weight=2", r"set it as model\.itm_weight"),
        ("freeze.unfreeze_after_steps=3", r"neither freeze\.vision nor freeze\.text"),
        ("model.num_fusion_layers=3", r"model\.num_fusion_layers=3 needs model\.init"),
        ("eval.alpha_sweep=[-1]", r"eval\.alpha_sweep=\[-1\] must be a non-empty list of numbers >= 0"),
        ("data.synthetic.train_placeless_focus=2", r"data\.synthetic\.train_placeless_focus=2 must be in \[0, 1\]"),
    ],
)
def test_validation_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        make([override])


def test_alpha_sweep_needs_the_itm_score():
    with pytest.raises(ConfigError, match=r"eval\.alpha_sweep=\[1\.0, 2\.0\] needs eval\.score=itm"):
        make(["eval.alpha_sweep=[1,2]", "eval.score=itm+itc", "eval.alpha=1"])
    assert make(["eval.alpha_sweep=[0, 2]", "eval.score=itm"]).eval.alpha_sweep == [0.0, 2.0]


def test_all_weights_zero():
    zero = [f"model.{name}_weight=0" for name in ("itc", "itm", "mlm", "mvjrc")]
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        make(zero)


def test_batch_too_small_for_hard_negatives_with_caption_sampling():
    # k captions per image: a batch of k rows may all show one image, leaving ITM no negative
    with pytest.raises(ConfigError, match=r"batch_size=3 with data\.captions_per_image=3.*batch_size >= 4"):
        make(["batch_size=3", "data.captions_per_image=3"])
    make(["batch_size=3", "data.captions_per_image=3", "model.itm_weight=0"])  # no ITM: fine
    # all captions: decided from the data (largest number of captions of one image)
    cfg = make(["batch_size=5", "data.captions_per_image=null"])
    with pytest.raises(ConfigError, match=r"batch_size=5 but an image contributes up to 5 captions"):
        check_data_dependent(cfg, total_steps=100, max_captions_per_image=5)
    check_data_dependent(cfg, total_steps=100, max_captions_per_image=4)


def test_warmup_longer_than_run():
    with pytest.raises(ConfigError, match=r"warmup_steps=20 is longer than the run \(max_steps=10\)"):
        make(["max_steps=10", "schedule.warmup_steps=20"])
    cfg = make(["schedule.warmup_steps=50"])  # epochs: known only with the data
    with pytest.raises(ConfigError, match=r"warmup_steps=50 is longer than the whole run \(40"):
        check_data_dependent(cfg, total_steps=40, max_captions_per_image=1)


def test_model_source_rules():
    with pytest.raises(ConfigError, match="model needs one of"):
        config_from_dict({"data": {"dataset": "synthetic"}})
    with pytest.raises(ConfigError, match="wordpiece builds a new vocabulary"):
        make(["model.init.vision=efficientnet-lite0", "model.init.text=minilm-l6"])  # TINY uses wordpiece


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {preset: tiny}\noptim: {lr: 1e-4, warmup: 3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'optim\.warmup'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_extends_merges_sections(tmp_path):
    parent = tmp_path / "parent.yaml"
    parent.write_text("model: {preset: tiny, mlm_weight: 1.0}\ndata: {dataset: synthetic, tokenizer: wordpiece}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nmodel: {mlm_weight: 0.0}\n")
    cfg = load_config(child)
    assert cfg.model.preset == "tiny" and cfg.model.mlm_weight == 0.0 and cfg.data.tokenizer == "wordpiece"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_shipped_configs_validate(name):
    cfg = load_config(name)
    assert cfg.batch_size >= 2


def test_ablation_configs_differ_only_in_tasks():
    weights = {name: load_config(name).loss_weights for name in ("ucm_itm", "ucm_itm_mlm", "ucm_itm_mlm_mvjrc")}
    assert weights["ucm_itm"] == {"itc": 1.0, "itm": 1.0, "mlm": 0.0, "mvjrc": 0.0}
    assert weights["ucm_itm_mlm"] == {"itc": 1.0, "itm": 1.0, "mlm": 1.0, "mvjrc": 0.0}
    assert weights["ucm_itm_mlm_mvjrc"] == {"itc": 1.0, "itm": 1.0, "mlm": 1.0, "mvjrc": 1.0}
    a, b = load_config("ucm_itm").to_dict(), load_config("ucm_itm_mlm_mvjrc").to_dict()
    for d in (a, b):
        d.pop("output_dir")
        for key in ("itc_weight", "itm_weight", "mlm_weight", "mvjrc_weight"):
            d["model"].pop(key)
    assert a == b


def test_cli_config_error_exits_before_building_anything(monkeypatch, capsys):
    import mtgfe.training.cli as cli_module

    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("train() must not start on an invalid config")

    monkeypatch.setattr(cli_module, "train", boom)
    rc = cli_module.main(["--config", "synthetic_tiny", "--set", "model.itm_weight=-1"])
    assert rc == 2
    assert "model.itm_weight=-1 must be >= 0" in capsys.readouterr().err


def test_data_dependent_errors_come_before_the_model(monkeypatch, tmp_path):
    import mtgfe.training.train as train_module

    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("the model must not be built")

    monkeypatch.setattr(train_module, "build_model", boom)
    cfg = load_config("synthetic_tiny", [f"output_dir={tmp_path}", "epochs=1", "schedule.warmup_steps=1000",
                                         "data.synthetic.train_scenes=32", "data.synthetic.val_scenes=4"])
    with pytest.raises(ConfigError, match="warmup_steps=1000 is longer than the whole run"):
        train_module.train(cfg)


# ------------------------------------------------------------------------------------------ schedule / groups
def test_lr_scale_warmup_then_cosine_to_floor():
    from mtgfe.training.train import lr_scale

    total, warmup, floor = 100, 10, 0.1
    values = [lr_scale(s, total, warmup, floor) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # monotone decay after warm-up
    assert lr_scale(total, total, warmup, floor) == pytest.approx(floor)
    mid = warmup + (total - warmup) // 2
    assert lr_scale(mid, total, warmup, floor) == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_param_groups_decay_and_head_lr():
    from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
    from mtgfe.training.train import param_groups

    model = MTGFEForPreTraining(MTGFEConfig.from_preset("tiny"))
    scratch = param_groups(model, make())
    assert {g["group"] for g in scratch} == {"pretrained/decay", "pretrained/no_decay"}  # preset: one lr
    assert all(g["lr"] == make().optim.lr for g in scratch)

    cfg = make(["model.init.vision=x", "model.init.text=y", "data.tokenizer=default", "optim.lr=1e-5",
                "optim.head_lr=5e-5"])
    groups = {g["group"]: g for g in param_groups(model, cfg)}
    names = {key: set(g["names"]) for key, g in groups.items()}
    assert groups["new/decay"]["lr"] == 5e-5 and groups["pretrained/decay"]["lr"] == 1e-5
    assert "mtgfe.temp" in names["new/no_decay"]
    assert "mtgfe.embeddings.word_embeddings.weight" in names["pretrained/no_decay"]
    assert "mtgfe.vision_model.embeddings.position_embeddings" in names["pretrained/no_decay"]
    assert any("crossattention.self.query.weight" in n for n in names["new/decay"])
    assert any(n.endswith("LayerNorm.weight") for n in names["pretrained/no_decay"])
    assert any("text_encoder.0.attention.self.query.weight" in n for n in names["pretrained/decay"])
    all_names = [n for g in groups.values() for n in g["names"]]
    assert len(all_names) == len(set(all_names)) == len({id(p) for p in model.parameters()})


def test_head_lr_also_applies_to_a_saved_model_in_model_pretrained(tmp_path):
    """Regression: stage 2 of a two-stage recipe starts from a saved MTGFE whose ITM head and
    cross-attention never trained; they used to get optim.lr (3e-5) and ITM stayed a constant predictor."""
    from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
    from mtgfe.training.train import param_groups

    model = MTGFEForPreTraining(MTGFEConfig.from_preset("tiny"))
    overrides = [f"model.pretrained={tmp_path}", "model.preset=null", "data.tokenizer=default", "optim.lr=1e-5",
                 "optim.head_lr=5e-5"]
    groups = {g["group"]: g for g in param_groups(model, make(overrides))}
    assert any("itm_head" in n for n in groups["new/decay"]["names"]) and groups["new/decay"]["lr"] == 5e-5
    assert any("crossattention" in n for n in groups["new/decay"]["names"])
    one_lr = param_groups(model, make(overrides + ["optim.head_lr=null"]))
    assert {g["lr"] for g in one_lr} == {1e-5}


# ------------------------------------------------------------------------------------------ non-finite floats
@pytest.mark.parametrize("override, key", [
    ("model.itm_weight=nan", "model.itm_weight"),
    ("model.mvjrc_weight=inf", "model.mvjrc_weight"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.weight_decay=-.inf", "optim.weight_decay"),
    ("optim.betas=[0.9, .nan]", "optim.betas[1]"),
    ("schedule.min_lr=nan", "schedule.min_lr"),
    ("eval.alpha=inf", "eval.alpha"),
    ("eval.alpha_sweep=[0.5, inf]", "eval.alpha_sweep[1]"),
    ("model.config={temperature: .nan}", "model.config.temperature"),
])
def test_nan_and_inf_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=r"finite") as info:
        make([override])
    assert key in str(info.value)


def test_every_float_field_of_the_config_refuses_nan():
    """Finiteness is a property of the schema (`allow_inf_nan=False` on every section), so a new float
    field is covered without a new line: try NaN in every float field the schema declares."""
    from mtgfe.training.config_schema import Section, TrainConfig

    def float_fields(cls, prefix=""):
        for name, info in cls.model_fields.items():
            inner = next((t for t in (info.annotation, *typing.get_args(info.annotation))
                          if isinstance(t, type) and issubclass(t, Section)), None)
            if inner is not None:
                yield from float_fields(inner, f"{prefix}{name}.")
            elif typing.get_origin(info.annotation) is not list and float in (info.annotation,
                                                                              *typing.get_args(info.annotation)):
                yield prefix + name

    keys = list(float_fields(TrainConfig))
    assert {"model.itc_weight", "optim.lr", "optim.eps", "schedule.warmup_ratio", "eval.alpha"} <= set(keys)
    for key in keys:
        with pytest.raises(ConfigError, match=rf"{re.escape(key)}=nan must be a finite number"):
            make([f"{key}=.nan"])


@pytest.mark.parametrize("field", ["itm_weight", "temperature", "mlm_probability", "retrieval_alpha",
                                   "itm_near_duplicate_overlap"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_model_config_refuses_non_finite_floats(field, value):
    from modeling_mtgfe import MTGFEConfig

    with pytest.raises(ValueError, match=field):
        MTGFEConfig.from_preset("tiny", **{field: value})


def test_check_finite_helper():
    from mtgfe.utils.validation import check_finite

    assert check_finite("x", 1, low=0.0) == 1.0
    for bad in (float("nan"), float("inf"), -float("inf"), True, "1"):
        with pytest.raises(ValueError, match="x="):
            check_finite("x", bad)
    with pytest.raises(ValueError, match=r">= 0"):
        check_finite("x", -1.0, low=0.0)
    with pytest.raises(ValueError, match=r"> 0"):
        check_finite("x", 0.0, low=0.0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"<= 1"):
        check_finite("x", 2.0, low=0.0, high=1.0)
    with pytest.raises(ConfigError):
        check_finite("x", float("nan"), error=ConfigError)


def test_train_cli_refuses_nan_with_status_2(capsys):
    from mtgfe.training.cli import main

    assert main(["--config", "synthetic_tiny", "--set", "model.itm_weight=nan", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "model.itm_weight=nan must be a finite number" in err and "Traceback" not in err


def test_overwrite_is_a_validated_top_level_field():
    assert make().overwrite is False and make(["overwrite=true"]).overwrite is True
    with pytest.raises(ConfigError, match="overwrite"):
        make(["overwrite=maybe"])


# ------------------------------------------------------------------------------------------ the declarative schema
@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", r"optim\.lr=-1 must be > 0"),
    ("schedule.warmup_ratio=1.5", r"schedule\.warmup_ratio=1\.5 must be in \[0, 1\)"),
    ("model.itm_random_negative_prob=1.5", r"model\.itm_random_negative_prob=1\.5 must be in \[0, 1\]"),
    ("model.itc_perturbation_negatives=9", r"model\.itc_perturbation_negatives=9 must be in \[0, 8\]"),
    ("data.image_size=8", r"data\.image_size=8 must be >= 16"),
    ("data.backbone_cache.dtype=int8", r"data\.backbone_cache\.dtype='int8' is not one of \['float16', 'bfloat16', 'float32'\]"),
    ("eval.score=itm+itx", r"eval\.score='itm\+itx' is not one of \['itm\+itc', 'itm', 'filter'\]; did you mean 'itm\+itc'"),
])
def test_field_constraint_errors_name_key_value_and_range(override, message):
    """Bounds and choices are declared on the fields; the error names the dotted key, the value and what is allowed."""
    with pytest.raises(ConfigError, match=message):
        make([override])


def test_a_boolean_is_not_a_number():
    with pytest.raises(ConfigError, match=r"model\.itm_weight=True is a boolean, not a number"):
        make(["model.itm_weight=true"])
    with pytest.raises(ConfigError, match=r"max_steps=False is a boolean"):
        make(["max_steps=false"])
    assert make(["freeze.vision=yes", "log.tensorboard=false"]).freeze.vision is True


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        make(["optim.lr=0", "data.datset=ucm", "eval.k=0", "max_steps=ten"])
    text = str(info.value)
    assert "4 problems" in text
    for piece in ("optim.lr=0 must be > 0", "unknown config key 'data.datset'", "eval.k=0 must be >= 1",
                  "max_steps: expected an integer"):
        assert piece in text


def test_a_float_written_without_a_dot_in_yaml_is_a_float(tmp_path):
    """YAML 1.1 reads `1e-4` (no dot) as a string; the float fields still take it."""
    file = tmp_path / "run.yaml"
    file.write_text("model: {preset: tiny}\ndata: {tokenizer: wordpiece}\noptim: {lr: 1e-4, eps: 1e-9}\n")
    import yaml

    assert isinstance(yaml.safe_load(file.read_text())["optim"]["lr"], str)
    cfg = load_config(file)
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float) and cfg.optim.eps == 1e-9


def test_set_overrides_nested_keys_and_replaces_null_sections():
    cfg = make(["model.init.vision=efficientnet-lite0", "model.init.text=minilm-l6", "data.tokenizer=default",
                "data.cv.folds=3", "data.cv.fold=2", "eval.alpha_sweep=[0, 0.5]"])
    assert cfg.model.init.text == "minilm-l6" and (cfg.data.cv.folds, cfg.data.cv.fold) == (3, 2)
    assert cfg.eval.alpha_sweep == [0.0, 0.5]
    with pytest.raises(ConfigError, match=r"--set optim\.lr\.x: optim\.lr is not a section"):
        make(["optim.lr=1e-4", "optim.lr.x=1"])


def test_extends_chains_and_refuses_a_loop(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {preset: tiny}\ndata: {tokenizer: wordpiece}\noptim: {lr: 2e-4}\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\noptim: {weight_decay: 0.0}\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\nbatch_size: 12\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.batch_size) == (2e-4, 0.0, 12)
    (tmp_path / "a.yaml").write_text("extends: c.yaml\n")
    with pytest.raises(ConfigError, match="'extends' loops back"):
        load_config(tmp_path / "c.yaml")


def test_task_fields_are_declared_once_by_the_model_config():
    """The `model` section's loss and task fields are built from `MTGFEConfig` (defaults) and its
    `TASK_FIELDS` (bounds/choices): the training config and the model config accept the same values."""
    from modeling_mtgfe.configuration_mtgfe import TASK_FIELDS, MTGFEConfig
    from mtgfe.training.config import ModelConfig

    for name, allowed in TASK_FIELDS.items():
        assert ModelConfig.model_fields[name].default == getattr(MTGFEConfig, name)
        bad = "byol" if "choices" in allowed else allowed.get("le", -1.0) + 1.0 if "le" in allowed else -1.0
        with pytest.raises(ConfigError, match=rf"model\.{name}="):
            make([f"model.{name}={bad}"])
        with pytest.raises(ValueError, match=name):
            MTGFEConfig.from_preset("tiny", **{name: bad})


def test_retrieval_settings_are_resolved_by_one_function():
    """`resolve_retrieval_settings`: the caller's value, else the model config's, else `MTGFEConfig`'s
    defaults; alpha 1.0 for an itm+itc config without one, 0.0 for scores without a cosine term."""
    from types import SimpleNamespace

    from modeling_mtgfe.configuration_mtgfe import MTGFEConfig, resolve_retrieval_settings

    defaults = (MTGFEConfig.retrieval_k, MTGFEConfig.retrieval_score)
    assert resolve_retrieval_settings(None) == (*defaults, 1.0)
    assert resolve_retrieval_settings(SimpleNamespace()) == (*defaults, 1.0)  # a foreign config
    trained = SimpleNamespace(retrieval_k=7, retrieval_score="itm+itc", retrieval_alpha=2.5)
    assert resolve_retrieval_settings(trained) == (7, "itm+itc", 2.5)
    assert resolve_retrieval_settings(trained, k=3, alpha=0.0) == (3, "itm+itc", 0.0)
    assert resolve_retrieval_settings(trained, score="itm") == (7, "itm", 0.0)
    assert resolve_retrieval_settings(SimpleNamespace(retrieval_score="filter")) == (MTGFEConfig.retrieval_k, "filter", 0.0)
    for kwargs, name in (({"k": 0}, "k"), ({"k": True}, "k"), ({"score": "itc"}, "score"),
                         ({"alpha": float("nan")}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"alpha": "1"}, "alpha")):
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            resolve_retrieval_settings(trained, **kwargs)


# ------------------------------------------------------------------------------------------ hostile YAML
def _billion_laughs(levels: int = 9, fan_out: int = 10) -> str:
    """Nested anchors, each a list of `fan_out` aliases of the one before: fan_out**levels leaves."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * fan_out)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + f"\nmodel: {{preset: tiny, extra: *a{levels}}}\n"


# Runs in a fresh process whose address space is capped just above what it uses after imports, so an
# expansion of the alias graph dies at once (MemoryError) instead of filling the machine.
_CAPPED_LOAD = """
import resource, sys, time
from mtgfe.training.config import ConfigError, load_config
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 100 * 2**20, hard))  # the bar: under 1 s and 100 MB
start = time.perf_counter()
try:
    load_config(sys.argv[1])
except ConfigError as error:
    print(f"REFUSED in {time.perf_counter() - start:.3f}s: {error}")
"""


@pytest.mark.parametrize("extends", [False, True])
def test_an_alias_bomb_config_is_refused_fast_and_without_expanding(tmp_path, extends):
    import subprocess
    import sys

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_billion_laughs())
    target = bomb
    if extends:
        target = tmp_path / "child.yaml"
        target.write_text("extends: bomb.yaml\nbatch_size: 4\n")
    result = subprocess.run([sys.executable, "-c", _CAPPED_LOAD, str(target)], capture_output=True, text=True,
                            timeout=120)
    assert "REFUSED" in result.stdout, result.stdout + result.stderr[-2000:]
    seconds = float(re.search(r"REFUSED in ([0-9.]+)s", result.stdout).group(1))
    assert seconds < 1.0
    assert "bomb.yaml" in result.stdout and "aliases" in result.stdout


def test_alias_budget_and_file_bounds(tmp_path):
    from mtgfe.utils.io import MAX_YAML_BYTES, read_yaml

    small = tmp_path / "ok.yaml"
    small.write_text('base: &b {lr: 1.0e-4}\noptim: *b\n')  # ordinary alias use still works
    assert read_yaml(small)["optim"] == {"lr": 1.0e-4}
    with pytest.raises(ConfigError, match=r"--set model\.extra: YAML expands"):
        parse_overrides(["model.extra=" + "{" + _billion_laughs(levels=7).replace("\n", ", ").rstrip(", ") + "}"])
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml is \d+ bytes, over the"):
        load_config(big)
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [*a]\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: a YAML anchor refers to itself"):
        load_config(loop)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: YAML nested"):
        load_config(deep)
