"""`Predictor`: a trained model, or an ensemble, ready for images of any size; every command that runs a trained
model (predict, evaluate, GeoTIFF scenes, export, the demo) goes through it."""

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import normalise
from cloudseg.errors import ConfigError, WeightsError
from cloudseg.inference.onnx_graph import OnnxModel
from cloudseg.inference.sliding import TRANSFORMS, TTA_SETS, TileProgress, fits_one_tile, sliding_logits
from cloudseg.memory import MemoryCheck, inference_bytes
from cloudseg.metrics import class_ids
from cloudseg.models.checkpoint import Release, checkpoint_paths, default_device, load_ensemble, read_release
from cloudseg.schema import CLASS_NAMES, MIN_SIDE, NUM_CLASSES


def runs_bf16(precision: str, device: torch.device) -> bool:
    """Whether a `precision` of auto, 32 or bf16 means bf16 autocast on `device`: auto is bf16 on GPUs only, as
    CPUs without bf16 instructions run it slower than fp32."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX), with which bf16 autocast runs faster than
    fp32; read from Linux's /proc/cpuinfo (elsewhere taken as no)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


class Predictor:
    """A model on its device and precision, with its checkpoint's normalisation and `cfg`'s test-time augmentation
    and tiling. It takes uint8 pixels as the dataset serves them, RGB (3, H, W) and aux (A, H, W) or batches of
    them, and decides once per size whether an image runs whole or in blended tiles.

    The model runs channels_last (the layout GPUs' convolutions prefer), under bf16 autocast where
    `cfg.precision` says (auto: on GPUs), and compiled for static shapes if `cfg.compile` (which pays over many
    tiles). Images travel to the device as uint8, a quarter of the bytes, and are normalised there.
    """

    def __init__(self, model: torch.nn.Module, release: Release, device: torch.device, cfg: PredictConfig):
        self.release, self.device = release, device
        self.cfg = cfg.for_device(device)
        self.bf16 = runs_bf16(self.cfg.precision, device)
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        if self.cfg.compile:
            self.model.compile(dynamic=False)
            if device.type == "cuda":
                # A compiled model sees one shape (tile or image size, padded batches), so cuDNN's search for its
                # fastest convolution algorithms is made once and pays over every batch; uncompiled, images of
                # many sizes would each pay for a search.
                torch.backends.cudnn.benchmark = True

    @classmethod
    def from_checkpoint(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        device: str | torch.device | None = None,
        cfg: PredictConfig | None = None,
        **settings,
    ) -> "Predictor":
        """One release checkpoint, or the mean of several (an ensemble), on `device` (default: the GPU if there is
        one) with `cfg` and its fields replaced by `settings` (`tile=256`, `tta="flips"`, ...). The memory the
        forward passes need is checked first (`cfg.memory_check`)."""
        device = default_device(device)
        cfg = dataclasses.replace(cfg or PredictConfig(), **settings).for_device(device)
        checkpoints = checkpoint_paths(paths)
        models = [read_release(path).config.model for path in checkpoints]
        for path, model in zip(checkpoints, models, strict=True):
            if model.num_classes != NUM_CLASSES:
                raise WeightsError(
                    f"{path}: a model of {model.num_classes} classes; cloudseg's masks and submissions have "
                    f"{NUM_CLASSES} ({', '.join(CLASS_NAMES)})"
                )
        side = round(cfg.tile * max(cfg.scales))  # test-time scales above 1 enlarge every tile
        MemoryCheck(
            f"predicting {cfg.tile_batch} image(s) or tiles of up to {side}² at a time",
            inference_bytes(models, side, cfg.tile_batch, runs_bf16(cfg.precision, device)),
            device,
            "predict.tile_batch or predict.tile",
            "predict.memory_check",
        ).apply(cfg.memory_check)
        model, releases = load_ensemble(paths, device, cfg.calibrated)
        if cfg.runtime != "torch":
            if device.type != "cpu":
                raise ConfigError(f"predict.runtime {cfg.runtime} is a CPU path; use --device cpu, or runtime torch")
            model = OnnxModel(model, releases[0].config.model.aux_channels, int8=cfg.runtime == "onnx_int8")
        return cls(model, releases[0], device, cfg)

    def __call__(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """Class probabilities, float32 (K, H, W) or (B, K, H, W), at the input's size."""
        return self.logits(rgb, aux).float().softmax(-3)

    def class_ids(self, rgb: torch.Tensor, aux: torch.Tensor, on_tiles: TileProgress | None = None) -> torch.Tensor:
        """The most likely class of each pixel, (H, W) or (B, H, W)."""
        return class_ids(self.logits(rgb, aux, on_tiles), dim=-3)

    @torch.no_grad()
    def logits(self, rgb: torch.Tensor, aux: torch.Tensor, on_tiles: TileProgress | None = None) -> torch.Tensor:
        """Logits (K, H, W) or (B, K, H, W) of uint8 images: images that fit a tile `tile_batch` at a time, on the
        model's device (padded to `tile_batch` for a compiled model, which then sees one batch shape); larger
        images in blended tiles, the tiles of all of them `tile_batch` at a time, blended on the device when the
        blend fits `sliding.DEVICE_BLEND_BUDGET` there, else on the CPU, each batch of tiles reported to `on_tiles`."""
        self._check_images(rgb, aux)
        if rgb.ndim == 3:
            return self.logits(rgb[None], aux[None], on_tiles)[0]
        if len(rgb) > (size := self.cfg.tile_batch):
            return torch.cat([self.logits(rgb[i : i + size], aux[i : i + size], on_tiles)
                              for i in range(0, len(rgb), size)])  # fmt: skip
        if not fits_one_tile(*rgb.shape[-2:], self.cfg.tile):
            cfg = self.cfg
            return sliding_logits(self._averaged, rgb, aux, cfg.tile, cfg.overlap, cfg.tile_batch, cfg.window,
                                  self.device, fixed_batch=cfg.compile, on_tiles=on_tiles)  # fmt: skip
        padding = self.cfg.tile_batch - len(rgb) if self.cfg.compile else 0
        batch = [torch.cat((t, t[-1:].expand(padding, -1, -1, -1))) for t in (rgb, aux)]
        return self._averaged(*batch)[: len(rgb)]

    def _averaged(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """Logits of uint8 (B, C, H, W) pixels, averaged over the flips and rotations of `cfg.tta` and over
        `cfg.scales`."""
        rgb, aux = (
            normalise(rgb.to(self.device), self.release.rgb_norm),
            normalise(aux.to(self.device), self.release.aux_norm),
        )
        size, names, scales = rgb.shape[-2:], TTA_SETS[self.cfg.tta], self.cfg.scales
        total = None
        for scale in scales:
            scaled = [rgb, aux]
            if scale != 1.0:
                scaled = [F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False) for t in scaled]
            for name in names:
                forward, inverse = TRANSFORMS[name]
                logits = inverse(self._forward(forward(scaled[0]), forward(scaled[1])).float())
                if scale != 1.0:
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                total = logits if total is None else total + logits
        return total / (len(names) * len(scales))

    def _check_images(self, rgb, aux) -> None:
        """The inputs are what `logits` takes: uint8 tensors (C, H, W) or (B, C, H, W) of one batch and size; a
        one-line error otherwise, rather than one from deep inside the model."""
        for name, images, channels in (("rgb", rgb, 3), ("aux", aux, self.release.config.model.aux_channels)):
            if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim in (3, 4)
                    and images.shape[-3] == channels):  # fmt: skip
                got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}"
                raise TypeError(
                    f"Predictor: {name} must be a torch.uint8 tensor ({channels}, H, W) or (B, {channels}, H, W), got "
                    f"{got}; cloudseg.data.dataset.to_chw makes one of an (H, W, C) array"
                )
        if rgb.shape[:-3] != aux.shape[:-3] or rgb.shape[-2:] != aux.shape[-2:]:
            raise ValueError(f"Predictor: rgb {tuple(rgb.shape)} and aux {tuple(aux.shape)} differ in batch or size")

    def _forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """The model on normalised (B, C, H, W) inputs; a side under MIN_SIDE is padded with its edge pixels, and
        their logits cut off again."""
        height, width = rgb.shape[-2:]
        padding = (0, max(0, MIN_SIDE - width), 0, max(0, MIN_SIDE - height))
        if any(padding):
            rgb, aux = (F.pad(t, padding, mode="replicate") for t in (rgb, aux))
        rgb, aux = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, aux))
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            return self.model(rgb, aux)[..., :height, :width]
