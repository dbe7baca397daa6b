"""Release checkpoints: `<name>.safetensors` whose header carries the resolved config, class table and
normalisation (so `load_model` needs no other file), and a `<name>.json` beside it for people and scripts."""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cloudseg.config import Config
from cloudseg.errors import ConfigError, WeightsError
from cloudseg.files import atomic_path
from cloudseg.schema import AUX_NORM, CLASSES, RGB_NORM, CloudClass, Normalisation
from cloudseg.sections import from_dict

FORMAT = "cloudseg-checkpoint-1"


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as given, if this machine has it, else the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"--device {device}: not a device name; expected cpu, cuda or cuda:N") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA device that PyTorch can use; use --device cpu")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    if chosen.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: expected cpu, cuda or cuda:N")
    return chosen


def save_release(model: nn.Module, config: dict, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Writes the model weights with their config atomically; `info` (epoch, metrics, ...) goes in both files."""
    path = Path(path)
    header = {
        "format": FORMAT,
        "config": config,
        "classes": [{"id": c.id, "name": c.name, "bgr": list(c.bgr)} for c in CLASSES],
        "normalisation": {"rgb": vars(RGB_NORM), "aux": vars(AUX_NORM)},
        **(info or {}),
    }
    _write_release({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, header, path)
    return path


def add_to_header(path: str | os.PathLike, **entries) -> None:
    """Rewrites a release checkpoint (and its .json) with `entries` added to its header, the weights unchanged."""
    _write_release(load_file(str(path)), {**read_header(path), **entries}, Path(path))


def _write_release(state: dict[str, torch.Tensor], header: dict, path: Path) -> None:
    """The weights with the header in their metadata, and the header alone in `<name>.json`, each atomically."""
    with atomic_path(path) as temporary:
        save_file(state, temporary, metadata={"cloudseg": json.dumps(header)})
    with atomic_path(path.with_suffix(".json")) as temporary:
        temporary.write_text(json.dumps(header, indent=2, default=float) + "\n")


def read_header(path: str | os.PathLike) -> dict:
    """The header of a release checkpoint; anything else is an error naming the file."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".ckpt":
        what = "a folder" if path.is_dir() else "a training checkpoint (for --resume)"
        raise WeightsError(f"{path}: {what}; expected a release checkpoint, a run's checkpoints/best.safetensors")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError) as error:
        raise WeightsError(f"{path}: cannot read it as a safetensors checkpoint ({error})") from error
    header = json.loads(metadata["cloudseg"]) if "cloudseg" in metadata else {}
    if header.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not a cloudseg checkpoint (no {FORMAT} header); expected the checkpoints/best.safetensors "
            "of a `cloudseg train` run"
        )
    return header


@dataclass(frozen=True)
class Release:
    """What a release checkpoint says of itself: the resolved config, the class table and the normalisation it was
    trained with, and what its run recorded (`info`: epoch, step, validation metrics)."""

    config: Config
    classes: tuple[CloudClass, ...]
    rgb_norm: Normalisation
    aux_norm: Normalisation
    info: dict

    @classmethod
    def from_header(cls, header: dict) -> "Release":
        norms = {
            stream: Normalisation(tuple(values["mean"]), tuple(values["std"]))
            for stream, values in header["normalisation"].items()
        }
        classes = tuple(CloudClass(c["id"], c["name"], tuple(c["bgr"])) for c in header["classes"])
        known = ("format", "config", "classes", "normalisation")
        info = {key: value for key, value in header.items() if key not in known}
        return cls(from_dict(Config, header["config"]), classes, norms["rgb"], norms["aux"], info)

    @classmethod
    def of(cls, config: Config) -> "Release":
        """What a checkpoint of `config` written now says: cloudseg.schema's class table and normalisation."""
        return cls(config, CLASSES, RGB_NORM, AUX_NORM, {})

    @property
    def temperature(self) -> tuple[float, ...] | None:
        """The temperature, or one per class, fitted on the validation split when training ended, if it was."""
        return tuple(self.info["calibration"]["temperature"]) if "calibration" in self.info else None

    def meaning(self) -> tuple:
        """What an ensemble's members must share: the classes they predict from the same inputs."""
        model = self.config.model
        return (
            model.num_classes,
            model.aux_channels,
            [(c.id, c.name, c.bgr) for c in self.classes],
            self.rgb_norm,
            self.aux_norm,
        )


def read_release(path: str | os.PathLike) -> Release:
    """A release checkpoint's own description, from its header alone (no weights read)."""
    return Release.from_header(read_header(path))


def load_weights_into(
    model: nn.Module, path: str | os.PathLike, name: str, num_classes: int, aux_channels: int
) -> None:
    """Starts `model` (built as `name`, `num_classes`, `aux_channels`) from a release checkpoint of the same build."""
    saved = read_release(path).config.model
    if (saved.name, saved.num_classes, saved.aux_channels) != (name, num_classes, aux_channels):
        raise WeightsError(
            f"{path}: trained as {saved.name} with {saved.num_classes} classes and {saved.aux_channels} aux channels; "
            f"this run builds {name} with {num_classes} classes and {aux_channels} aux channels"
        )
    model.load_state_dict(load_file(str(path)))


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Release]:
    """Rebuilds a trained model from its release checkpoint alone; returns (model in eval mode, its Release)."""
    from cloudseg.models.registry import build_model

    release = read_release(path)
    cfg = release.config.model
    model = build_model(cfg, pretrained=None)  # the weights are the checkpoint's
    state = load_file(str(path), device=str(map_location))
    expected = model.state_dict()
    problems = sorted(expected.keys() ^ state.keys()) + [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in expected.keys() & state.keys()
        if state[k].shape != expected[k].shape
    ]
    if problems:
        raise WeightsError(f"{path}: weights do not match its own config ({cfg.name}): {'; '.join(problems[:5])}")
    model.load_state_dict(state)
    return model.to(map_location).eval(), release


class Ensemble(nn.Module):
    """Several models of the same classes as one, e.g. the k models of a cross-validation: the mean of their
    logits. A softmax ignores any per-pixel offset of a model's logits, so this picks the classes that the mean
    of their log-probabilities would (the normalised geometric mean of their probabilities)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(rgb, aux).float() for member in self.members]).mean(0)


class Calibrated(nn.Module):
    """A model's logits divided by its fitted temperature(s), so that their softmax is calibrated. One
    temperature leaves every pixel's class as it was; one per class may change a few."""

    def __init__(self, model: nn.Module, temperature: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.model(rgb, aux) / self.temperature


def checkpoint_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """One checkpoint path or several, as a list."""
    return [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]


def load_ensemble(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    map_location: str | torch.device = "cpu",
    calibrated: bool = True,
) -> tuple[nn.Module, list[Release]]:
    """One release checkpoint's model, or several as an `Ensemble`, in eval mode, and their Releases. The models
    may differ in builder and size but must agree on what their outputs mean: the same classes, inputs and
    normalisation. With `calibrated`, each model's logits are divided by its own fitted temperature, if any."""
    paths = checkpoint_paths(paths)
    if not paths:
        raise WeightsError("no checkpoint given")
    models, releases = zip(*(load_model(path, map_location) for path in paths), strict=True)
    if calibrated:
        models = [
            Calibrated(m, r.temperature).eval() if r.temperature else m for m, r in zip(models, releases, strict=True)
        ]
    for path, release in zip(paths[1:], releases[1:], strict=True):
        if release.meaning() != releases[0].meaning():
            raise WeightsError(
                f"{path}: its classes, aux channels or normalisation differ from those of {paths[0]}; an ensemble "
                "averages models that predict the same classes from the same inputs"
            )
    return (models[0] if len(models) == 1 else Ensemble(models).eval()), list(releases)
