"""The `cloudseg` command line: version, help, the model summary and the printed config."""

import subprocess

import pytest

from cloudseg import __version__
from cloudseg.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cloudseg {__version__}"


def test_models_lists_every_builder_with_its_parameters(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert len(rows) == 18 and rows["cmx_b2"] == "66.56M" and rows["segformer_b0"] == "4.64M"


def test_console_script_is_installed():
    result = subprocess.run(["cloudseg", "--help"], capture_output=True, text=True, check=True)
    assert "models" in result.stdout


def test_public_api_is_importable_from_the_package():
    import cloudseg
    from cloudseg.models.checkpoint import load_model
    from cloudseg.models.registry import build_model

    assert cloudseg.build_model is build_model and cloudseg.load_model is load_model


def test_the_printed_config_is_a_file_that_loads_back_to_the_same_config(capsys, tmp_path):
    from cloudseg.config import Config, load_config

    assert main(["config", "--config", "cmx_b2", "--data.batch_size", "8", "--predict.tta", "d4"]) == 0
    (tmp_path / "run.yaml").write_text(capsys.readouterr().out)
    printed = load_config(tmp_path / "run.yaml")
    assert printed == load_config("cmx_b2", ["data.batch_size=8", "predict.tta=d4"])
    assert printed.data.batch_size == 8 and printed.model.name == "cmx_b2"
    assert main(["config"]) == 0  # without --config: the one `train` starts from
    (tmp_path / "default.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "default.yaml") == load_config("cmx_b0") != Config()
