"""Typed configs: YAML and overrides in, checked dataclasses out, and back again."""

import re

import pytest
import torch

from cloudseg.cli.options import config_overrides
from cloudseg.config import Config, PredictConfig, load_config
from cloudseg.errors import ConfigError
from cloudseg.sections import from_dict, to_dict


def test_yaml_and_overrides_fill_typed_fields(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  batch_size: 8\n  augment:\n    crop_scale: [0.5, 1]\n")
    cfg = load_config(tmp_path / "c.yaml", ["data.augment.hflip=0", "data.root=/x"])
    assert cfg.data.batch_size == 8 and cfg.data.augment.crop_scale == (0.5, 1.0)
    assert cfg.data.augment.hflip == 0.0 and isinstance(cfg.data.augment.hflip, float) and cfg.data.root == "/x"


def test_round_trip_through_a_plain_mapping():
    cfg = load_config(None, ["data.val_fraction=0.3", "data.augment.copy_paste_scale=[0.5, 1.5]"])
    assert from_dict(Config, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batchsize=3", "data.batchsize: unknown key; did you mean 'batch_size'?"),
        ("data.batch_size=three", "data.batch_size: expected int, got 'three'"),
        ("data.unknown_colours=drop", "data.unknown_colours: 'drop' is not one of 'error', 'ignore'"),
        ("data.augment.crop_scale=[1]", r"data.augment.crop_scale: expected a list of 2 values"),
        (
            "trainer.max_epochs=3",
            "trainer.check_val_every_n_epoch: 5; a run of trainer.max_epochs 3 would never validate and keep no best "
            "checkpoint: give at most 3",
        ),
        (
            "model.num_classes=6",
            "model.num_classes: 6; the labels have 4 classes (clear, thick_cloud, thin_cloud, "
            "cloud_shadow), and so must the model",
        ),
    ],
)
def test_bad_values_fail_at_load_time_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_a_yaml_syntax_error_is_one_line_naming_the_file_line_and_column(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  name: cmx_b0\ndata: [1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert (
        str(caught.value)
        == f"{tmp_path / 'c.yaml'}, line 4, column 1: not valid YAML (expected ',' or ']', but got '<stream end>')"
    )


def test_command_line_overrides_take_both_spellings():
    assert config_overrides(["--data.root", "a", "--data.batch_size=2"]) == ["data.root=a", "data.batch_size=2"]
    with pytest.raises(ConfigError, match="unrecognised argument '--verbose'"):
        config_overrides(["--verbose"])


def test_a_saved_config_with_a_renamed_key_still_loads_under_the_new_name():
    saved = to_dict(Config())
    saved["predict"]["io_threads"] = saved["predict"].pop("io_workers") + 3  # as checkpoints before the rename
    assert from_dict(Config, saved).predict.io_workers == 3
    assert "io_threads" not in to_dict(from_dict(Config, saved))["predict"]  # saved again under the new name


def test_an_automatic_tile_batch_is_made_concrete_for_the_device():
    assert PredictConfig().tile_batch == 0
    assert PredictConfig().for_device(torch.device("cpu")).tile_batch == 4
    assert PredictConfig().for_device(torch.device("cuda")).tile_batch == 16
    assert PredictConfig(tile_batch=7).for_device(torch.device("cuda")) == PredictConfig(tile_batch=7)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=-3", "trainer.max_epochs: -3 is out of range; expected a value >= 1"),
        ("data.batch_size=0", "data.batch_size: 0 is out of range; expected a value >= 1"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches: 0 is out of range"),
        ("optim.lr_head=.nan", "optim.lr_head: nan is not a finite number"),
        ("optim.lr_head=nan", "optim.lr_head: nan is not a finite number"),
        ("optim.lr_head=1e-4", None),  # YAML 1.1 reads this as text; it is a number all the same
        ("optim.lr_encoder=-1e-4", "optim.lr_encoder: -0.0001 is out of range; expected a value >= 0"),
        ("data.augment.hflip=1.5", "data.augment.hflip: 1.5 is out of range; expected a value >= 0 and <= 1"),
        ("data.augment.crop_scale=[0.8, 0.5]", "data.augment.crop_scale: [0.8, 0.5]; expected low <= high"),
        ("data.augment.crop_size=16", "data.augment.crop_size: 16 is out of range; expected a value >= 32"),
        ("predict.tile=64", "predict.overlap: 128 must be smaller than predict.tile (64)"),
        ("predict.scales=[1.0, 0]", "predict.scales[1]: 0.0 is out of range; expected a value > 0"),
        ("optim.warmup_epochs=200", "optim.warmup_epochs: 200; the warm-up cannot outlast the run"),
        ("trainer.ema_decay=1", "trainer.ema_decay: 1.0 is out of range; expected a value > 0 and < 1"),
        ("trainer.devices=0", "trainer.devices: 0; expected a count >= 1"),
        ("trainer.devices=gpu0", "trainer.devices: 'gpu0'; expected a count"),
        ("trainer.accelerator=gpus", "trainer.accelerator: 'gpus' is not one of"),
        ("data.folds=1", "data.folds: 1; expected 0 (a ratio split) or k >= 2 folds"),
        ("data.fold=5", "data.fold 5 needs data.folds"),
        ("loss.class_weights=[1, 2]", "loss.class_weights: 2 weights; expected one per class (4)"),
        ("loss.ohem=0", None),  # with dice 0.3 left, a valid loss
        ("model.name=cmx_b9", "model.name: unknown model 'cmx_b9'"),
        ("run.name=a/b", "run.name: 'a/b'; expected a folder name without '/'"),
        ("trainer.seed=-1", "trainer.seed: -1 is out of range; expected a value >= 0 and <= 4.29497e+09"),
    ],
)
def test_every_setting_is_checked_against_its_range_when_the_config_loads(override, message):
    if message is None:
        load_config("cmx_b2", [override])
        return
    with pytest.raises(ConfigError) as error:
        load_config("cmx_b2", [override])
    assert str(error.value).startswith(message), str(error.value)


def test_sections_built_in_python_are_checked_as_those_loaded_from_yaml():
    with pytest.raises(ConfigError, match=r"predict\.overlap: 64 must be smaller than predict\.tile"):
        PredictConfig(tile=64, overlap=64)
    with pytest.raises(ConfigError, match="every term's weight is 0"):
        from cloudseg.config import LossConfig

        LossConfig(ohem=0, dice=0)


def test_the_command_lines_choices_are_the_configs_own():
    import typing

    from cloudseg.config import Sensor
    from cloudseg.inference.geotiff import SENSORS

    assert tuple(SENSORS) == typing.get_args(Sensor)


def test_values_typed_on_the_command_line_keep_the_type_their_key_wants():
    cfg = load_config(None, ["trainer.precision=32", "run.name=001", "data.root=2024", "trainer.devices=0,1"])
    assert cfg.trainer.precision == "32"  # a choice written as a number
    assert cfg.run.name == "001" and cfg.data.root == "2024"  # text as typed, not the numbers YAML reads
    assert cfg.trainer.devices == "0,1"
    assert load_config(None, ["trainer.devices=2", "model.pretrained=null"]).trainer.devices == 2
    with pytest.raises(ConfigError, match=r"--predict\.scales \[1,: not a value YAML can read"):
        load_config(None, ["predict.scales=[1,"])


def test_a_section_built_in_python_refuses_a_wrong_type_or_choice():
    from cloudseg.config import RunConfig, TrainerConfig

    with pytest.raises(ConfigError, match=r"predict\.tta: 'flip' is not one of 'none', 'flips', 'd4'"):
        PredictConfig(tta="flip")
    with pytest.raises(ConfigError, match=r"trainer\.precision: 32; expected '32'"):
        TrainerConfig(precision=32)
    with pytest.raises(ConfigError, match=r"predict\.tile: expected int, got '512'"):
        PredictConfig(tile="512")
    with pytest.raises(ConfigError, match=r"run\.name: expected str, got 1"):
        RunConfig(name=1)


def test_a_saved_config_with_a_retired_key_still_loads():
    saved = to_dict(Config())
    saved["loss"]["ignore_index"] = 255  # configs saved before the ignore index became the schema's alone
    assert from_dict(Config, saved) == Config()


@pytest.mark.parametrize(
    ("strategy", "message"),
    [("ddp_notebook", "forks processes, which can hang"), ("ddp_fork", "forks processes, which can hang")],
)
def test_strategies_that_fork_are_refused(strategy, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"trainer.strategy={strategy}"])
