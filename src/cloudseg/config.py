"""Typed configuration: frozen dataclasses filled from YAML and dotted command-line overrides. Every field carries
its range or choices and each section the relations between its fields (checked by `sections.Section` however it is
built), so a bad setting fails before any data is read or a model is built."""

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from cloudseg.errors import ConfigError
from cloudseg.schema import AUX_BANDS, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cloudseg.sections import (
    AtLeastOne,
    BelowOne,
    Bounds,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositivePair,
    Probability,
    Section,
    Side,
    UnitOpen,
    apply_overrides,
    from_dict,
    load_yaml,
)

AUX_CHANNELS = len(AUX_BANDS)


UnknownColours = Literal["error", "ignore"]  # label colours outside the class table: an error, or ignored pixels
MemoryCheckMode = Literal["refuse", "warn", "off"]
LOGGERS = ("csv", "tensorboard")  # by name; any other Lightning logger by import path
Sensor = Literal["landsat8", "landsat9", "sentinel2"]  # presets of band numbers and scaling for GeoTIFF scenes


@dataclass(frozen=True)
class ModelConfig(Section):
    """Which model to build (see `cloudseg models`) and where its encoders start from."""

    section: ClassVar[str] = "model"

    name: str = "cmx_b2"
    num_classes: Annotated[int, Bounds(2, IGNORE_INDEX - 1)] = NUM_CLASSES
    aux_channels: AtLeastOne = AUX_CHANNELS
    pretrained: str | None = None  # SegFormer weights: HF folder, state-dict file, or hub id in the local cache
    init_from: str | None = None  # a cloudseg release checkpoint to fine-tune (same model and classes)
    decoder_dim: AtLeastOne = 512  # CMX's (and SegFormer-B2..B5's) all-MLP decoder width, for every variant alike
    decoder_dropout: BelowOne = 0.1
    drop_path_rate: BelowOne = 0.1  # stochastic depth of the last block
    # LayerNorm epsilon of the MiT blocks: 1e-6 in the SegFormer release that trained the ImageNet weights
    norm_eps: Positive = 1e-6

    def check(self) -> None:
        from cloudseg.models.registry import MODEL_NAMES

        if self.name not in MODEL_NAMES:
            close = difflib.get_close_matches(self.name, MODEL_NAMES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"model.name: unknown model {self.name!r}; {hint}choose one of {', '.join(MODEL_NAMES)}")


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Training augmentation. Probabilities are per sample; geometry is shared by RGB, NIR and mask."""

    section: ClassVar[str] = "data.augment"

    crop_size: Side = 512
    # Crops larger than the smallest training image enlarge every image to fit; refused unless this is set.
    upscale: bool = False
    crop_scale: PositivePair = (0.25, 1.0)  # area fraction of the random resized crop
    crop_ratio: PositivePair = (0.75, 1.3333)
    hflip: Probability = 0.5
    vflip: Probability = 0.5
    rotate90: Probability = 0.5
    affine: Probability = 0.3  # shift, scale and rotate
    affine_shift: Probability = 0.0625  # fraction of the side
    affine_scale: PositivePair = (0.9, 1.1)
    affine_rotate: Annotated[float, Bounds(0, 180)] = 15.0  # degrees, either way
    # RGB only
    brightness_contrast: Probability = 0.5
    brightness_limit: Probability = 0.2
    contrast_limit: Probability = 0.2
    hue_saturation: Probability = 0.3
    clahe: Probability = 0.1
    gamma: Probability = 0.2
    gamma_limit: PositivePair = (80.0, 120.0)
    noise: Probability = 0.1
    blur: Probability = 0.1
    # NIR only
    nir_brightness_contrast: Probability = 0.3
    nir_limit: Probability = 0.1
    # Copy-paste of cloud and shadow objects from another training image
    copy_paste: Probability = 0.3
    copy_paste_scale: PositivePair = (0.4, 1.2)
    copy_paste_min_area: AtLeastOne = 100
    copy_paste_max_objects: AtLeastOne = 3

    def check(self) -> None:
        self.ordered("crop_scale", "crop_ratio", "affine_scale", "gamma_limit", "copy_paste_scale")
        if self.crop_scale[1] > 1:
            raise ConfigError(f"{self.key('crop_scale')}: {self.crop_scale[1]:g} is an area fraction; expected <= 1")


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the images are, how train and validation are split, and how they are loaded."""

    section: ClassVar[str] = "data"

    root: str | None = None
    val_fraction: BelowOne = 0.2
    split_seed: NonNegativeInt = 0
    folds: NonNegativeInt = 0  # k >= 2: validate on fold `fold` of a seeded k-fold partition instead of val_fraction
    fold: NonNegativeInt = 0
    split_file: str | None = None  # JSON {"train": [...], "val": [...]} of names; overrides the ratio and folds
    unknown_colours: UnknownColours = "error"  # "ignore": unknown label colours -> ignore index
    batch_size: AtLeastOne = 4
    num_workers: NonNegativeInt = 8
    cache: str | None = None  # a folder written by `cloudseg cache`: training reads decoded arrays from it
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def check(self) -> None:
        if self.folds == 1:
            raise ConfigError("data.folds: 1; expected 0 (a ratio split) or k >= 2 folds")
        if self.fold and not self.folds:
            raise ConfigError(f"data.fold {self.fold} needs data.folds, the number of folds (e.g. --data.folds 5)")
        if self.folds and self.fold >= self.folds:
            raise ConfigError(f"data.fold: {self.fold}; expected 0 <= fold < data.folds ({self.folds})")
        if self.folds and self.split_file:
            raise ConfigError("data.folds and data.split_file both choose the validation split: set one of them")


@dataclass(frozen=True)
class LossConfig(Section):
    """The loss is the weighted sum of these terms (weight 0 leaves a term out)."""

    section: ClassVar[str] = "loss"
    # Saved configs before 2026-11-30 hold loss.ignore_index; labels, losses and metrics all use schema.IGNORE_INDEX
    retired_keys: ClassVar[tuple[str, ...]] = ("ignore_index",)

    ce: NonNegative = 0.0
    ohem: NonNegative = 0.7  # cross-entropy over the hardest pixels only
    dice: NonNegative = 0.3
    lovasz: NonNegative = 0.0
    jaccard: NonNegative = 0.0
    ohem_fraction: Annotated[float, Bounds(0, 1, low_open=True)] = 0.25  # keep this fraction of the hardest pixels...
    ohem_threshold: UnitOpen | None = None  # ...or, if set, the pixels whose true-class probability is below it,
    ohem_min_kept: NonNegativeInt = 4096  # but at least this many
    # cross-entropy weight per class, or "sqrt_inverse": sqrt(share of the commonest class / share of the class)
    # over the training split's labels, resolved into numbers when the run starts (and saved in its config)
    class_weights: tuple[NonNegative, ...] | Literal["sqrt_inverse"] | None = None

    def check(self) -> None:
        if not any((self.ce, self.ohem, self.dice, self.lovasz, self.jaccard)):
            raise ConfigError("loss: every term's weight is 0; give at least one of ce, ohem, dice, lovasz, jaccard")
        if isinstance(self.class_weights, tuple) and not any(self.class_weights):
            raise ConfigError("loss.class_weights: all 0; expected at least one positive weight")


@dataclass(frozen=True)
class OptimConfig(Section):
    """AdamW with separate learning rates for the encoders and for fusion + decoder, and the schedule."""

    section: ClassVar[str] = "optim"

    lr_encoder: NonNegative = 3e-5  # 0 freezes the encoders
    lr_head: NonNegative = 3e-4
    weight_decay: NonNegative = 0.02
    betas: tuple[BelowOne, BelowOne] = (0.9, 0.999)
    schedule: Literal["cosine", "poly", "plateau", "constant"] = "cosine"
    warmup_epochs: NonNegative = 0.0
    min_lr: NonNegative = 1e-6
    poly_power: Positive = 0.9
    plateau_patience: NonNegativeInt = 2  # validations without improvement before the rate drops
    plateau_factor: UnitOpen = 0.5
    grad_clip: Positive | None = 1.0

    def check(self) -> None:
        if self.lr_encoder == 0 and self.lr_head == 0:
            raise ConfigError("optim.lr_encoder and optim.lr_head are both 0: nothing would learn")


# torch.compile's modes that record CUDA graphs, and the same mode without them
WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


@dataclass(frozen=True)
class TrainerConfig(Section):
    """The training loop (Lightning), its numerics and what it records."""

    section: ClassVar[str] = "trainer"

    max_epochs: AtLeastOne = 100
    accumulate_grad_batches: AtLeastOne = 4  # 4 batches of 4: the reference recipe's 16 images a step
    check_val_every_n_epoch: AtLeastOne = 5
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"  # auto: bf16 on GPUs that have it
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"
    devices: Annotated[int, Bounds(-1)] | str = "auto"  # a count (-1: all), "auto", or device ids such as "0,2"
    strategy: str = "auto"  # e.g. ddp; torchrun and SLURM launches are picked up by Lightning
    num_nodes: AtLeastOne = 1
    seed: Annotated[int, Bounds(0, 2**32 - 1)] = 0
    deterministic: bool = False
    # cuDNN times its convolution algorithms once per input shape and keeps the fastest: for the training crops,
    # which have one shape (validation images may have many, so validation runs without it); off if deterministic
    cudnn_benchmark: bool = True
    compile: bool = False
    # torch.compile's mode when compiling; reduce-overhead adds CUDA graphs (GPU only)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    channels_last: bool = False
    ema_decay: UnitOpen | None = None  # keep an exponential moving average of the weights, evaluated alongside
    log_every_n_steps: AtLeastOne = 10
    # Batches between reads of the loss from the device, each a wait for the GPU; None: 1 on CPUs, else
    # log_every_n_steps. Non-finite losses are caught at these reads and at every epoch's end.
    sync_every: AtLeastOne | None = None
    panels: NonNegativeInt = 4  # fixed validation images drawn after every validation
    # last.ckpt (for --resume) after an epoch once this long has passed since the last one (always after the first
    # and last epochs); 0: after every epoch. A killed run loses at most this much work plus an epoch.
    checkpoint_every_s: NonNegative = 60.0
    callbacks: tuple[str, ...] = ()  # extra Lightning callbacks by import path, "package.module:Class"
    # where the logged figures go: csv (metrics.csv), tensorboard (the `tensorboard` extra: scalars, learning rates,
    # the validation panels), or another Lightning logger by import path, "package.module:Class"
    logger: tuple[str, ...] = ("csv",)
    # simple: Lightning's SimpleProfiler, the time of every loop action (waiting for the next batch, the step, each
    # callback hook) summed over the run, in fit-profile*.txt in the run folder
    profiler: Literal["none", "simple"] = "none"
    # Before training, the step's peak memory is estimated (cloudseg.memory); when it exceeds what the device has
    # free, the run is refused, or only warned about
    memory_check: MemoryCheckMode = "refuse"
    # When training ends, the best checkpoints' probabilities are calibrated on the validation split: one
    # temperature (the classes stay as they are) or one per class; the release's header keeps it for predict
    calibration: Literal["none", "temperature", "class_temperature"] = "temperature"

    def check(self) -> None:
        if self.devices == 0:
            raise ConfigError("trainer.devices: 0; expected a count >= 1, -1 for all, 'auto' or ids such as '0,1'")
        if isinstance(self.devices, str) and self.devices != "auto":
            ids = self.devices.rstrip(",").split(",")
            if not all(i.strip().isdigit() for i in ids):
                raise ConfigError(
                    f"trainer.devices: {self.devices!r}; expected a count, -1 for all, 'auto' or ids such as '0,1'"
                )
        if self.compile and self.compile_mode in WITHOUT_CUDA_GRAPHS and self.accumulate_grad_batches > 1:
            raise ConfigError(
                f"trainer.compile_mode {self.compile_mode!r} records CUDA graphs, which fail with accumulated "
                "gradients (pytorch/pytorch#169545): set trainer.accumulate_grad_batches to 1 (a larger "
                f"data.batch_size instead) or trainer.compile_mode to {WITHOUT_CUDA_GRAPHS[self.compile_mode]!r}"
            )
        if "fork" in self.strategy or "notebook" in self.strategy:
            raise ConfigError(
                f"trainer.strategy: {self.strategy!r} forks processes, which can hang once PyTorch has started its "
                "threads; use ddp (Lightning starts the processes) or launch with torchrun"
            )
        if not self.logger or len(set(self.logger)) < len(self.logger):
            raise ConfigError(
                f"trainer.logger: {list(self.logger)}; expected one or more different loggers, e.g. [csv]"
            )
        for setting, paths, names in (("callbacks", self.callbacks, ()), ("logger", self.logger, LOGGERS)):
            for path in paths:
                module, colon, name = path.partition(":")
                if path not in names and not (module and colon and name):
                    expected = " or ".join([*names, "'package.module:Class'"])
                    raise ConfigError(f"trainer.{setting}: {path!r}; expected {expected}")


@dataclass(frozen=True)
class PredictConfig(Section):
    """How `cloudseg predict` runs the model and what it writes besides the colour masks."""

    section: ClassVar[str] = "predict"
    renamed_keys: ClassVar[dict[str, str]] = {"io_threads": "io_workers"}  # in configs saved before 2026-11-26

    tile: Side = 512  # images larger than one tile are predicted in overlapping tiles
    overlap: NonNegativeInt = 128
    # tiles, or whole images of one size, per forward pass; 0: 16 on a GPU, 4 on a CPU
    tile_batch: NonNegativeInt = 0
    # processes that read images, and as many that write outputs; 0: a core each, up to 8
    io_workers: NonNegativeInt = 0
    window: Literal["gaussian", "ramp"] = "gaussian"  # how overlapping tiles are blended
    tta: Literal["none", "flips", "d4"] = "none"  # d4: flips, 90° rotations and transposes
    precision: Literal["auto", "32", "bf16"] = "auto"  # auto: bf16 on GPUs, fp32 on CPUs
    compile: bool = False  # torch.compile the model (minutes once; pays over many tiles)
    # torch, or on CPUs the model's ONNX graph in onnxruntime (the `onnx` extra), its weights optionally int8
    runtime: Literal["torch", "onnx", "onnx_int8"] = "torch"
    scales: tuple[Positive, ...] = (1.0,)
    index_masks: bool = False  # also index/<name>.png with class ids 0..3
    probabilities: bool = False  # also probabilities/<name>_<class>.png, 0..255
    uncertainty: Literal["none", "entropy", "max_probability"] = "none"  # also uncertainty/<name>.png
    memory_check: MemoryCheckMode = "refuse"  # as trainer.memory_check, for the model's forward passes
    # Logits through the checkpoint's fitted temperature, if it has one: calibrated probabilities and uncertainty
    # (one temperature leaves the masks as they are; one per class may change a few pixels' classes)
    calibrated: bool = True

    def check(self) -> None:
        if self.overlap >= self.tile:
            raise ConfigError(
                f"predict.overlap: {self.overlap} must be smaller than predict.tile ({self.tile}); "
                f"lower it, e.g. --predict.overlap {self.tile // 4}"
            )
        if not self.scales:
            raise ConfigError("predict.scales: empty; expected at least one scale, e.g. [1.0]")
        if self.runtime != "torch" and (self.precision == "bf16" or self.compile):
            setting = "predict.precision bf16" if self.precision == "bf16" else "predict.compile true"
            raise ConfigError(f"predict.runtime {self.runtime} runs the float32 graph in onnxruntime; drop {setting}")

    def for_device(self, device: Any) -> "PredictConfig":
        """The config to run on `device` (a torch.device): an automatic `tile_batch` made concrete. A GPU wants
        many images a pass, and 16 of 512² fit a small one; a CPU gains little from more than a few."""
        return dataclasses.replace(self, tile_batch=self.tile_batch or (16 if device.type == "cuda" else 4))


@dataclass(frozen=True)
class RunConfig(Section):
    section: ClassVar[str] = "run"

    name: str = "cloudseg"
    output_dir: str = "runs"  # runs/<name>/<timestamp>/

    def check(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"run.name: {self.name!r}; expected a folder name without '/'")
        if not self.output_dir:
            raise ConfigError("run.output_dir: empty; expected a folder")


@dataclass(frozen=True)
class Config(Section):
    """Everything a run needs; each section is filled from YAML and `--section.key value` overrides. The defaults
    are the reference recipe (CMX-B2, configs/cmx_b2.yaml); shipped configs set only what differs from it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def check(self) -> None:
        if self.optim.warmup_epochs > self.trainer.max_epochs:
            raise ConfigError(
                f"optim.warmup_epochs: {self.optim.warmup_epochs:g}; the warm-up cannot outlast the run "
                f"(trainer.max_epochs {self.trainer.max_epochs})"
            )
        every, epochs = self.trainer.check_val_every_n_epoch, self.trainer.max_epochs
        validated = self.data.val_fraction > 0 or self.data.folds or self.data.split_file
        if validated and every > epochs:
            raise ConfigError(
                f"trainer.check_val_every_n_epoch: {every}; a run of trainer.max_epochs {epochs} would never validate "
                f"and keep no best checkpoint: give at most {epochs}"
            )
        weights = self.loss.class_weights
        if isinstance(weights, tuple) and len(weights) != self.model.num_classes:
            raise ConfigError(
                f"loss.class_weights: {len(weights)} weights; expected one per class ({self.model.num_classes})"
            )


SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the shipped config of that name (`cmx_b2` -> configs/cmx_b2.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{path.stem}.yaml"
    if shipped.is_file() and path.suffix in ("", ".yaml") and len(path.parts) == 1:
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: no such config file, and not a shipped config ({names})")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The config of a YAML file or shipped config name (or the defaults) with `key.path=value` overrides."""
    data = load_yaml(config_path(path)) if path else {}
    config = from_dict(Config, apply_overrides(data, list(overrides)))
    if config.model.num_classes != NUM_CLASSES:  # a library user may build other models; a run trains on the labels
        raise ConfigError(
            f"model.num_classes: {config.model.num_classes}; the labels have {NUM_CLASSES} classes "
            f"({', '.join(CLASS_NAMES)}), and so must the model"
        )
    return config
