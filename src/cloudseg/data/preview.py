"""`cloudseg show-augmentations`: training samples before and after augmentation, as the training run draws them."""

from pathlib import Path

import cv2
import numpy as np

from cloudseg.config import DataConfig
from cloudseg.data.dataset import CloudDataset, find_samples
from cloudseg.data.transforms import CopyPaste, TrainTransform
from cloudseg.panels import PASTED_RGB, colourise, displayable, grid, save_rgb

COLUMNS = ["whole image", "after copy-paste", "augmented RGB", "augmented NIR", "augmented label"]


def outline_changes(before: dict, after: dict) -> np.ndarray:
    """`after`'s RGB with every region that differs from `before` (a pasted object) outlined."""
    changed = (before["rgb"] != after["rgb"]).any(0) | (before["aux"] != after["aux"]).any(0)
    changed |= before["mask"] != after["mask"]
    image = displayable(after["rgb"]).copy()
    contours, _ = cv2.findContours(changed.numpy().astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, PASTED_RGB, max(2, image.shape[1] // 128))  # still seen at thumbnail size
    return image


def show_augmentations(cfg: DataConfig, count: int, output: str | Path, seed: int = 0) -> Path:
    """Writes `count` rows of: the whole image | the same after copy-paste, pasted objects outlined | the
    augmented crop's RGB, NIR and label, the crop of that very copy-paste (one training sample's draws)."""
    root = Path(cfg.root)
    samples = find_samples(root / "train", root / "train" / "label")
    copy_paste = CopyPaste.from_config(cfg.augment)
    plain = CloudDataset(samples, unknown_colours=cfg.unknown_colours)
    pasted = CloudDataset(samples, None, copy_paste, cfg.unknown_colours)
    augmented = CloudDataset(samples, TrainTransform(cfg.augment), copy_paste, cfg.unknown_colours)
    rng = np.random.default_rng(seed)
    rows = []
    for index in rng.choice(len(samples), size=count, replace=count > len(samples)).tolist():
        key = (index, int(rng.integers(2**31)))  # a training sample's key: the same draws in both datasets
        before, whole, after = plain[index], pasted[key], augmented[key]
        crop = [displayable(after["rgb"]), displayable(after["aux"]), colourise(after["mask"].numpy())]
        rows.append((samples[index].name, [displayable(before["rgb"]), outline_changes(before, whole), *crop]))
    side = cfg.augment.crop_size
    title = f"{root}: whole training images, then augmented {side}x{side} crops (seed {seed})"
    save_rgb(output, grid(title, COLUMNS, rows, (("pasted", PASTED_RGB),)))
    return Path(output)
