"""How each command takes its options and settings: its own options (argparse), and `--section.key value`
settings of the config sections it declares; anything else is refused, naming what it was probably meant to be."""

import argparse
import difflib

from cloudseg.config import Config
from cloudseg.errors import ConfigError
from cloudseg.sections import setting_keys

ALL_SETTINGS = ("*",)
SETTINGS_HELP = """\
Settings are given as --section.key value (or --section.key=value); values are read as YAML (true, null, [1, 2]).
`cloudseg config` prints every key with its default. Wrong keys, types or ranges are refused before anything runs.
"""


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that remembers its option names, to suggest one for a mistyped option."""

    def __init__(self, *args, **kwargs):
        self.option_names: list[str] = []
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.set_defaults(option_names=self.option_names)

    def add_argument(self, *names, **kwargs):
        self.option_names += [name for name in names if name.startswith("--")]
        return super().add_argument(*names, **kwargs)


def config_overrides(tokens: list[str], command: str = "") -> list[str]:
    """`--data.root x --data.augment.hflip=0` -> ["data.root=x", "data.augment.hflip=0"]; errors name `command`."""
    overrides, rest = [], list(tokens)
    while rest:
        token = rest.pop(0)
        key, equals, value = token[2:].partition("=")
        if not token.startswith("--") or "." not in key:
            where = f"{command}: " if command else ""
            raise ConfigError(f"{where}unrecognised argument {token!r}; config keys are given as --section.key value")
        if not equals:
            if not rest:
                raise ConfigError(f"{token} needs a value")
            value = rest.pop(0)
        overrides.append(f"{key}={value}")
    return overrides


def takes(settings: tuple[str, ...], key: str) -> bool:
    return settings == ALL_SETTINGS or any(key == s or key.startswith(f"{s}.") for s in settings)


def settings_named(settings: tuple[str, ...]) -> str:
    """('predict', 'trainer.devices', 'data.root') -> '--predict.*, --trainer.devices or --data.root'."""
    names = [f"--{s}.*" if "." not in s else f"--{s}" for s in settings]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def suggestion(args: argparse.Namespace, name: str) -> str | None:
    """The option or setting of the command that `name` was probably meant to be: --tta for --predict.tta."""
    bare = name.lstrip("-").replace("-", "_")
    keys = [key for key in setting_keys(Config) if args.settings and takes(args.settings, key)]
    by_leaf = {key.rpartition(".")[2]: f"--{key}" for key in keys}
    if bare in by_leaf:
        return by_leaf[bare]
    close = difflib.get_close_matches(name, args.option_names, n=1)
    if close:
        return close[0]
    close = difflib.get_close_matches(bare, by_leaf, n=1)
    return by_leaf[close[0]] if close else None


def unrecognised(args: argparse.Namespace, token: str) -> ConfigError:
    """The error for a token the command does not take, with the option it was probably meant to be."""
    name = token.partition("=")[0]
    if not name.startswith("--"):
        return ConfigError(f"{args.command}: unrecognised argument {token!r}; see `cloudseg {args.command} --help`")
    close = suggestion(args, name)
    hint = f"; did you mean {close}?" if close else f"; see `cloudseg {args.command} --help`"
    return ConfigError(f"{args.command}: unrecognised option {name}{hint}")


def command_overrides(args: argparse.Namespace, tokens: list[str]) -> list[str]:
    """The config overrides among the tokens argparse did not recognise, each checked against the settings the
    command takes; anything else is an error that names it."""
    for token in tokens[:1] if not args.settings else [t for t in tokens if "." not in t.partition("=")[0]]:
        if token.startswith("--") or not args.settings:
            raise unrecognised(args, token)
    overrides = config_overrides(tokens, args.command)
    for item in overrides:
        key = item.partition("=")[0]
        if not takes(args.settings, key):
            raise ConfigError(
                f"{args.command}: --{key} is not a setting of this command; it takes {settings_named(args.settings)}"
            )
    return overrides


TRAIN_HELP = f"""{SETTINGS_HELP}
Main settings (all of them: `cloudseg config --config cmx_b0`):
  --data.root PATH                 dataset folder with train/{{rgb,ngr,label}}/ (required)
  --model.name NAME                cmx_b0 ... cmx_b5, segformer_b*, segformer_early_b* (`cloudseg models`)
  --model.pretrained PATH_OR_ID    SegFormer ImageNet weights: a folder, a file or a hub id such as nvidia/mit-b2
  --trainer.max_epochs N           epochs to train
  --data.batch_size N              images per step (per device)
  --data.augment.crop_size N       training crops, in pixels a side
  --optim.lr_encoder / lr_head X   learning rates of the encoders and of fusion + decoder
  --trainer.accelerator, --trainer.devices, --trainer.strategy, --trainer.num_nodes   Lightning's devices and DDP
  --run.output_dir, --run.name     where the run folder goes: <output_dir>/<name>/<timestamp>/
"""
PREDICT_HELP = f"""{SETTINGS_HELP}
Prediction settings (--predict.*; also in the predict section of a --config file):
  --predict.tile N, --predict.overlap N    images larger than a tile run in overlapping tiles
  --predict.tile_batch N                   tiles or images per forward pass (0: as many as suit the device)
  --predict.tta none|flips|d4              test-time augmentation
  --predict.precision auto|32|bf16         auto: bf16 on GPUs
  --predict.index_masks true, --predict.probabilities true, --predict.uncertainty entropy|max_probability
  --predict.calibrated false               the raw softmax, without the checkpoint's fitted temperature
  --predict.runtime onnx|onnx_int8         on a CPU: the model's graph in onnxruntime (extra `onnx`), int8 weights
  --predict.compile true, --predict.io_workers N, --predict.scales [1.0, 1.5]   (all keys: `cloudseg config`)
Where it runs (Lightning, as for training; each process predicts a share of the images):
  --trainer.accelerator cpu|gpu, --trainer.devices N, --trainer.num_nodes N, --trainer.strategy ddp
"""
EVALUATE_HELP = f"""{SETTINGS_HELP}
  --data.root PATH                 dataset folder (required)
  --data.unknown_colours ignore    label colours outside the class table count as ignored pixels
  --predict.tta none|flips|d4      score the prediction averaged over flips or all 8 symmetries
  --predict.tile N, --predict.overlap N, --predict.tile_batch N, --predict.precision P   as for predict
"""
