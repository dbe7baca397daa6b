"""Typed configuration: frozen dataclasses filled from YAML and dotted command-line overrides, checked on load."""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from cloudseg.errors import ConfigError
from cloudseg.schema import AUX_BANDS, IGNORE_INDEX, NUM_CLASSES


@dataclass(frozen=True)
class ModelConfig:
    """Which model to build (see `cloudseg models`) and where its encoders start from."""

    name: str = "cmx_b0"
    num_classes: int = NUM_CLASSES
    aux_channels: int = len(AUX_BANDS)
    pretrained: str | None = None  # SegFormer weights: HF folder, state-dict file, or hub id in the local cache
    init_from: str | None = None  # a cloudseg release checkpoint to fine-tune (same model and classes)
    decoder_dim: int = 512
    drop_path_rate: float = 0.1


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. Probabilities are per sample; geometry is shared by RGB, NIR and mask."""

    crop_size: int = 512
    crop_scale: tuple[float, float] = (0.25, 1.0)  # area fraction of the random resized crop
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.5
    affine: float = 0.3  # shift, scale and rotate
    affine_shift: float = 0.0625
    affine_scale: tuple[float, float] = (0.9, 1.1)
    affine_rotate: float = 15.0  # degrees, either way
    # RGB only
    brightness_contrast: float = 0.5
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    hue_saturation: float = 0.3
    clahe: float = 0.1
    gamma: float = 0.2
    gamma_limit: tuple[float, float] = (80.0, 120.0)
    noise: float = 0.1
    blur: float = 0.1
    # NIR only
    nir_brightness_contrast: float = 0.3
    nir_limit: float = 0.1
    # Copy-paste of cloud and shadow objects from another training image
    copy_paste: float = 0.3
    copy_paste_scale: tuple[float, float] = (0.4, 1.2)
    copy_paste_min_area: int = 100
    copy_paste_max_objects: int = 3


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how train and validation are split, and how they are loaded."""

    root: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    folds: int = 0  # k >= 2: validate on fold `fold` of a seeded k-fold partition instead of val_fraction
    fold: int = 0
    split_file: str | None = None  # JSON {"train": [...], "val": [...]} of names; overrides the ratio and folds
    unknown_colours: Literal["error", "ignore"] = "error"  # "ignore": unknown label colours -> ignore index
    batch_size: int = 4
    num_workers: int = 4
    cache: str | None = None  # a folder written by `cloudseg cache`: training reads decoded arrays from it
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class LossConfig:
    """The loss is the weighted sum of these terms (weight 0 leaves a term out)."""

    ce: float = 0.0
    ohem: float = 0.7  # cross-entropy over the hardest pixels only
    dice: float = 0.3
    lovasz: float = 0.0
    jaccard: float = 0.0
    ohem_fraction: float = 0.25  # keep this fraction of the hardest pixels...
    ohem_threshold: float | None = None  # ...or, if set, the pixels whose true-class probability is below it,
    ohem_min_kept: int = 4096  # but at least this many
    # cross-entropy weight per class, or "sqrt_inverse": sqrt(share of the commonest class / share of the class)
    # over the training split's labels, resolved into numbers when the run starts (and saved in its config)
    class_weights: tuple[float, ...] | Literal["sqrt_inverse"] | None = None
    ignore_index: int = IGNORE_INDEX


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with separate learning rates for the encoders and for fusion + decoder, and the schedule."""

    lr_encoder: float = 3e-5
    lr_head: float = 3e-4
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 1e-6
    poly_power: float = 0.9
    plateau_patience: int = 2  # validations without improvement before the rate drops
    plateau_factor: float = 0.5
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop (Lightning), its numerics and what it records."""

    max_epochs: int = 100
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"  # auto: bf16 on GPUs that have it
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"  # e.g. ddp; torchrun and SLURM launches are picked up by Lightning
    num_nodes: int = 1
    seed: int = 0
    deterministic: bool = False
    # cuDNN times its convolution algorithms once per input shape and keeps the fastest: for the training crops,
    # which have one shape (validation images may have many, so validation runs without it); off if deterministic
    cudnn_benchmark: bool = True
    compile: bool = False
    # torch.compile's mode when compiling; reduce-overhead adds CUDA graphs (GPU only)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    channels_last: bool = False
    ema_decay: float | None = None  # keep an exponential moving average of the weights, evaluated alongside
    log_every_n_steps: int = 10
    # Batches between reads of the loss from the device, each a wait for the GPU; None: 1 on CPUs, else
    # log_every_n_steps. Non-finite losses are caught at these reads and at every epoch's end.
    sync_every: int | None = None
    panels: int = 4  # fixed validation images drawn after every validation
    # last.ckpt (for --resume) after an epoch once this long has passed since the last one (always after the first
    # and last epochs); 0: after every epoch. A killed run loses at most this much work plus an epoch.
    checkpoint_every_s: float = 60.0
    callbacks: tuple[str, ...] = ()  # extra Lightning callbacks by import path, "package.module:Class"
    # simple: Lightning's SimpleProfiler, the time of every loop action (waiting for the next batch, the step, each
    # callback hook) summed over the run, in fit-profile*.txt in the run folder
    profiler: Literal["none", "simple"] = "none"


@dataclass(frozen=True)
class PredictConfig:
    """How `cloudseg predict` runs the model and what it writes besides the colour masks."""

    renamed_keys: ClassVar[dict[str, str]] = {"io_threads": "io_workers"}  # in configs saved before 2026-11-26

    tile: int = 512  # images larger than one tile are predicted in overlapping tiles
    overlap: int = 128
    tile_batch: int = 0  # tiles, or whole images of one size, per forward pass; 0: 16 on a GPU, 4 on a CPU
    io_workers: int = 0  # processes that read images, and as many that write outputs; 0: a core each, up to 8
    window: Literal["gaussian", "ramp"] = "gaussian"  # how overlapping tiles are blended
    tta: Literal["none", "flips", "d4"] = "none"  # d4: flips, 90° rotations and transposes
    precision: Literal["auto", "32", "bf16"] = "auto"  # auto: bf16 on GPUs, fp32 on CPUs
    compile: bool = False  # torch.compile the model (minutes once; pays over many tiles)
    scales: tuple[float, ...] = (1.0,)
    index_masks: bool = False  # also index/<name>.png with class ids 0..3
    probabilities: bool = False  # also probabilities/<name>_<class>.png, 0..255
    uncertainty: Literal["none", "entropy", "max_probability"] = "none"  # also uncertainty/<name>.png

    def for_device(self, device: Any) -> "PredictConfig":
        """The config to run on `device` (a torch.device): an automatic `tile_batch` made concrete. A GPU wants
        many images a pass, and 16 fit a small one: CMX-B2 took 1.5 GB for 4 of 512² uncompiled in fp32 on the
        H100 (docs/PERFORMANCE.md), bf16 halves the activations."""
        return dataclasses.replace(self, tile_batch=self.tile_batch or (16 if device.type == "cuda" else 4))


@dataclass(frozen=True)
class RunConfig:
    name: str = "cloudseg"
    output_dir: str = "runs"  # runs/<name>/<timestamp>/


@dataclass(frozen=True)
class Config:
    """Everything a run needs; each section is filled from YAML and `--section.key value` overrides."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    run: RunConfig = field(default_factory=RunConfig)


SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the shipped config of that name (`cmx_b2` -> configs/cmx_b2.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{path.stem}.yaml"
    if shipped.is_file() and path.suffix in ("", ".yaml") and len(path.parts) <= 2:
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: no such config file, and not a shipped config ({names})")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The config of a YAML file or shipped config name (or the defaults) with `key.path=value` overrides."""
    data = load_yaml(config_path(path)) if path else {}
    return from_dict(Config, apply_overrides(data, list(overrides)), str(path or "config"))


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """`value` as type `kind`, or a ConfigError that names the key and what was expected."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {kind.__name__} fields, got {value!r}")
        return from_dict(kind, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is Any or (isinstance(kind, type) and isinstance(value, kind) and not (kind is int and value is True)):
        return value
    raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys and wrongly typed values are errors. Keys a class has
    renamed (its `renamed_keys`) are read under their new names, so that saved configs keep loading."""
    renamed = getattr(cls, "renamed_keys", {})
    data = {renamed.get(key, key): value for key, value in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()})


def to_dict(config: Any) -> dict:
    """A plain mapping (tuples as lists) that `from_dict` turns back into the same config."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Applies `key.sub=value` overrides (values parsed as YAML) to a nested mapping, returning a new one."""
    result = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(text)
    return result


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the config ({error})") from error
    if not isinstance(data, dict | None):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data or {}
