"""`cloudseg predict`: colour masks (and optionally index, probability and uncertainty maps) for image pairs."""

import math
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import SampleFiles, normalise_pair, pair_files, read_sample
from cloudseg.data.io import IMAGE_SUFFIXES, index_to_colour, write_image
from cloudseg.errors import DataError
from cloudseg.inference.rle import rle_encode, write_submission
from cloudseg.inference.sliding import Predictor, sliding_logits, with_tta
from cloudseg.models.checkpoint import default_device, load_model
from cloudseg.schema import CLASS_NAMES


def find_pairs(source: str | Path) -> list[SampleFiles]:
    """Image pairs from a dataset root (its test/ split), a folder with rgb/ and ngr/, or one rgb/<name> file."""
    source = Path(source)
    if source.is_file():
        candidates = [source.parent.parent / "ngr" / f"{source.stem}{s}" for s in IMAGE_SUFFIXES]
        ngr = next((c for c in candidates if c.is_file()), None)
        if source.parent.name != "rgb" or ngr is None:
            raise DataError(f"{source}: a single image must lie in an rgb/ folder with its pair in ../ngr/")
        return [SampleFiles(source.stem, source, ngr)]
    split = source / "test" if (source / "test" / "rgb").is_dir() else source
    if not (split / "rgb").is_dir():
        raise DataError(f"{source}: no rgb/ and ngr/ folders (nor test/rgb/); expected image pairs to predict")
    samples, problems = pair_files(split, None)
    if problems:
        raise DataError(f"{split}: {len(problems)} problems: " + "; ".join(problems))
    return samples


def runs_bf16(precision: str, device: torch.device) -> bool:
    """Whether a `precision` of auto, 32 or bf16 means bf16 autocast on `device`: auto is bf16 on GPUs only, as
    CPUs without bf16 instructions run it slower than fp32."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def model_predictor(
    model: torch.nn.Module, device: torch.device, precision: str = "auto", compile: bool = False
) -> Predictor:
    """The model as a predictor on `device`: channels_last (25% faster on a CPU too); bf16 autocast where
    `precision` says (auto: on GPUs); compiled for static shapes if asked, which pays over many tiles."""
    model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(dynamic=False)
    bf16 = runs_bf16(precision, device)

    @torch.no_grad()
    def predict(rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        rgb, aux = (t.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last) for t in (rgb, aux))
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return model(rgb, aux)

    return predict


def checkpoint_predictor(
    checkpoint: str | Path, cfg: PredictConfig, device: str | torch.device | None = None
) -> Predictor:
    """A release checkpoint's model as a predictor with the precision and TTA of `cfg`, on `device` (default: GPU
    if any)."""
    device = default_device(device)
    model, _ = load_model(checkpoint, device)
    return with_tta(model_predictor(model, device, cfg.precision, cfg.compile), cfg.tta, cfg.scales)


def uncertainty_map(probabilities: torch.Tensor, kind: str) -> np.ndarray:
    """(K, H, W) probabilities -> (H, W) uint8: normalised entropy, or 1 - max probability, scaled to 0..255."""
    if kind == "entropy":
        value = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(0) / math.log(probabilities.shape[0])
    else:
        value = 1.0 - probabilities.max(0).values
    return (value.clamp(0, 1) * 255).round().byte().numpy()


def predict(
    checkpoint: str | Path,
    source: str | Path,
    output: str | Path,
    cfg: PredictConfig,
    submission: str | Path | None = None,
    device: str | None = None,
) -> list[Path]:
    """Writes `<output>/<name>.png` colour masks (label colours, BGR) of every pair; returns their paths."""
    pairs = find_pairs(source)
    device = default_device(device)
    predictor = checkpoint_predictor(checkpoint, cfg, device)
    output = Path(output)
    written, rows = [], []
    for files in track(pairs, description="predicting", transient=True):
        rgb, aux = (t[None] for t in normalise_pair(*read_sample(files)[:2]))
        logits = sliding_logits(
            predictor, rgb, aux, cfg.tile, cfg.overlap, cfg.tile_batch, cfg.window, device, fixed_batch=cfg.compile
        )[0]
        probabilities = logits.softmax(0)
        ids = probabilities.argmax(0).byte().numpy()
        colour = index_to_colour(ids)
        path = output / f"{files.name}.png"
        write_image(path, colour)
        written.append(path)
        rows.append((path.name, rle_encode(colour)))
        if cfg.index_masks:
            write_image(output / "index" / f"{files.name}.png", ids)
        if cfg.probabilities:
            for name, plane in zip(CLASS_NAMES, probabilities, strict=False):
                write_image(output / "probabilities" / f"{files.name}_{name}.png", (plane * 255).round().byte().numpy())
        if cfg.uncertainty != "none":
            write_image(output / "uncertainty" / f"{files.name}.png", uncertainty_map(probabilities, cfg.uncertainty))
    if submission:
        write_submission(rows, submission)
    return written
