"""`cloudseg show-augmentations`: a grid of training samples before and after augmentation."""

from pathlib import Path

import numpy as np

from cloudseg.config import DataConfig
from cloudseg.data.dataset import CloudDataset, find_samples
from cloudseg.data.transforms import CopyPaste, TrainTransform
from cloudseg.panels import colourise, displayable, grid, save_rgb


def show_augmentations(cfg: DataConfig, count: int, output: str | Path, seed: int = 0) -> Path:
    """Writes `count` rows of: original RGB | augmented RGB | augmented NIR | augmented label."""
    root = Path(cfg.root)
    samples = find_samples(root / "train", root / "train" / "label")
    plain = CloudDataset(samples, unknown_colours=cfg.unknown_colours)
    augmented = CloudDataset(
        samples, TrainTransform(cfg.augment), CopyPaste.from_config(cfg.augment), cfg.unknown_colours
    )
    np.random.seed(seed)
    rows, names = [], []
    for index in np.random.choice(len(samples), size=count, replace=count > len(samples)):
        before, after = plain[int(index)], augmented[int(index)]
        images = [displayable(image) for image in (before["rgb"], after["rgb"], after["aux"])]
        rows.append([*images, colourise(after["mask"].numpy())])
        names.append(samples[index].name)
    save_rgb(output, grid(rows, ["original RGB", "augmented RGB", "augmented NIR", "augmented label"], names))
    return Path(output)
