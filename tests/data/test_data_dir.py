"""Where benchmark data is looked for: an explicit folder, else $MTGFE_DATA_DIR, else a clear error.

No data needed: the rule must hold, and the error must name both settings, wherever the package is
installed (a wheel has no data folder beside its source files to fall back on)."""

import pytest

from mtgfe.data.annotations import DataDirNotSetError, load_rs_benchmark, resolve_data_dir
from mtgfe.data.loading import load_dataset_split


def test_explicit_folder_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MTGFE_DATA_DIR", str(tmp_path / "from_env"))
    assert resolve_data_dir(tmp_path / "given") == tmp_path / "given"
    assert resolve_data_dir(str(tmp_path / "given")) == tmp_path / "given"


def test_environment_is_used_when_no_folder_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("MTGFE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir("") == tmp_path  # an empty --data-dir is no folder
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):  # the folder is set but lacks the files
        load_rs_benchmark("ucm", split="test")


@pytest.mark.parametrize("env", [None, ""])
def test_neither_set_is_an_error_naming_both(monkeypatch, env):
    if env is None:
        monkeypatch.delenv("MTGFE_DATA_DIR", raising=False)
    else:
        monkeypatch.setenv("MTGFE_DATA_DIR", env)
    with pytest.raises(DataDirNotSetError, match=r"data_dir=.*MTGFE_DATA_DIR"):
        resolve_data_dir()
    with pytest.raises(DataDirNotSetError, match="MTGFE_DATA_DIR"):
        load_rs_benchmark("ucm", split="test")
    with pytest.raises(DataDirNotSetError, match="MTGFE_DATA_DIR"):
        load_dataset_split("ucm", "test", "images")


def test_no_folder_is_needed_for_an_annotation_file_alone(monkeypatch, tmp_path):
    monkeypatch.delenv("MTGFE_DATA_DIR", raising=False)
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": "a plane"}]}]}')
    ds = load_rs_benchmark("ucm", annotation_file=ann, layout="karpathy", require_images=False)
    assert ds["caption"] == ["a plane"]


def test_mtgfe_train_reports_a_missing_data_folder_as_a_config_error(monkeypatch, tmp_path, capsys):
    """Exit status 2 and one line naming both settings, before any model is built."""
    from mtgfe.training import cli

    monkeypatch.delenv("MTGFE_DATA_DIR", raising=False)
    rc = cli.main(["--config", "ucm_dual_frozen", "--set", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "data.data_dir" in err and "MTGFE_DATA_DIR" in err
    assert "Traceback" not in err
