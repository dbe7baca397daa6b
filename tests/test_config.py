"""Typed configs: YAML and overrides in, checked dataclasses out, and back again."""

import pytest
import torch

from cloudseg.cli.main import config_overrides
from cloudseg.config import Config, PredictConfig, from_dict, load_config, to_dict
from cloudseg.errors import ConfigError


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
    ],
)
def test_bad_values_fail_at_load_time_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


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
