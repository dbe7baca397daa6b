"""The end of a run: the best checkpoints' temperatures fitted on the validation split, kept in their headers."""

import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cloudseg.calibration import ReliabilityBins, fit_temperature, sample_pixels
from cloudseg.data.dataset import prepare_sample
from cloudseg.models.checkpoint import add_to_header, load_model
from cloudseg.plots import plot_reliability

log = logging.getLogger(__name__)

PIXELS = 2**21  # drawn evenly from the validation images for the fit: 32 MiB of float32 logits (4 classes)
PLAUSIBLE = (0.05, 20.0)  # temperatures a fit on enough pixels of a model neither perfect nor untrained gives


@torch.no_grad()
def validation_logits(path: Path, dataset: Dataset, device: torch.device, seed: int):
    """Logits (N, K) and class ids (N,) of pixels drawn from each image of `dataset`, by the model at `path`."""
    model, _ = load_model(path, device)
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, PIXELS // len(dataset))
    drawn = []
    for index in range(len(dataset)):  # whole images, of any size
        batch = prepare_sample(dataset[index], device)
        drawn.append(sample_pixels(model(batch["rgb"], batch["aux"]), batch["mask"], per_image, generator))
    logits, target = zip(*drawn, strict=True)
    return torch.cat(logits), torch.cat(target)


def calibrate(path: Path, dataset: Dataset, method: str, device: torch.device, seed: int) -> None:
    """Fits `method` (temperature or class_temperature) to the release checkpoint at `path` on `dataset`, adds it
    to the checkpoint's header with the expected calibration error before and after, and draws
    `<stem>_calibration.png` beside it."""
    logits, target = validation_logits(path, dataset, device, seed)
    temperature = fit_temperature(logits, target, per_class=method == "class_temperature")
    if not (temperature.isfinite().all() and PLAUSIBLE[0] <= temperature.min() <= temperature.max() <= PLAUSIBLE[1]):
        if not temperature.isfinite().all():
            cause = "too few validation pixels"
        elif temperature.min() < PLAUSIBLE[0]:
            cause = "a validation split the model separates perfectly"
        else:
            cause = "a model confidently wrong on much of the validation split, as early in training"
        log.warning(
            "%s: the fitted temperature %s is outside %s (%s); the checkpoint is left uncalibrated",
            path.name, temperature.tolist(), PLAUSIBLE, cause,
        )  # fmt: skip
        return
    before, after = ReliabilityBins(), ReliabilityBins()
    before.update(logits.softmax(1), target)
    after.update((logits / temperature).softmax(1), target)
    record = {
        "method": method,
        "temperature": temperature.tolist(),
        "split": "val",
        "pixels": len(target),
        "before": before.as_dict(),
        "after": after.as_dict(),
    }
    add_to_header(path, calibration=record)
    title = f"{path.name} on the validation split ({len(target):,} pixels drawn)"
    plot_reliability({"before": before, "after": after}, path.with_name(f"{path.stem}_calibration.png"), title)
    shown = ", ".join(f"{t:.3f}" for t in record["temperature"])
    log.info("%s: temperature %s; ECE on validation %.4f -> %.4f", path.name, shown, before.ece(), after.ece())
