"""The `cloudseg` command line: version, help, the model summary and the printed config."""

import subprocess
import sys
from pathlib import Path

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
    script = Path(sys.executable).parent / "cloudseg"  # the environment's own, not whichever is first on PATH
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
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


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["synth", "x", "--nn", "2"], "synth: unrecognised option --nn; did you mean --n?"),
        (["synth", "x", "--sizee", "64"], "synth: unrecognised option --sizee; did you mean --size?"),
        (["check-data", "x", "--unknown-colors", "ignore"],
         "check-data: unrecognised option --unknown-colors; did you mean --data.unknown_colours?"),
        (["score", "s.csv", "--labels", "l", "--whatever", "3"],
         "score: unrecognised option --whatever; see `cloudseg score --help`"),
        (["evaluate", "--checkpoint", "c", "--root", "r"],
         "evaluate: unrecognised option --root; did you mean --data.root?"),
        (["evaluate", "--checkpoint", "c", "--tta", "d4"],
         "evaluate: unrecognised option --tta; did you mean --predict.tta?"),
        (["predict", "--checkpoint", "c", "--input", "i", "--output", "o", "--tta", "d4"],
         "predict: unrecognised option --tta; did you mean --predict.tta?"),
        (["train", "--epochs", "3"], "train: unrecognised option --epochs; did you mean --trainer.max_epochs?"),
        (["models", "--aux-channels", "0"],
         "models: unrecognised option --aux-channels; did you mean --model.aux_channels?"),
        (["export", "--checkpoint", "c", "--output", "m.onnx", "stray"], "export: unrecognised argument 'stray'"),
        (["predict", "--checkpoint", "c", "--input", "i", "--output", "o", "--trainer.max_epochs", "3"],
         "predict: --trainer.max_epochs is not a setting of this command; it takes --predict.*"),
        (["score", "s.csv", "--labels", "l", "--data.root", "r"],
         "score: --data.root is not a setting of this command; it takes --data.unknown_colours"),
        (["config", "--model.name", "cmx_b9"], "model.name: unknown model 'cmx_b9'; did you mean 'cmx_b5'?"),
        (["config", "--data.batchsize", "2"], "data.batchsize: unknown key; did you mean 'batch_size'?"),
        (["models", "--model.aux_channels", "0"], "model.aux_channels: 0 is out of range; expected a value >= 1"),
        (["synth", "x", "--n", "0"], "--n 0: expected at least 1"),
    ],
)  # fmt: skip
def test_a_mistyped_or_misplaced_option_is_refused_naming_it(arguments, line, capsys, user_view, tmp_path):
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"cloudseg: error: {line}") and error.count("\n") == 1, error
    assert not (tmp_path / "x").exists()


def test_each_command_lists_its_main_settings_in_its_help(capsys):
    for command, settings in [
        ("train", ["--data.root", "--trainer.max_epochs", "--model.name", "--data.batch_size", "--section.key"]),
        ("predict", ["--predict.tile", "--predict.tta", "--predict.tile_batch"]),
        ("evaluate", ["--data.root", "--predict.tta"]),
        ("check-data", ["--data.unknown_colours"]),
    ]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert all(setting in text for setting in settings), (command, text)
