"""The `cloudseg` command line: version, help and the model summary."""

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
