"""The class table, band order and per-modality normalisation: the one place these facts live."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CloudClass:
    """One row of the class table."""

    id: int
    name: str
    bgr: tuple[int, int, int]  # label colour as cv2 reads it (the Kaggle "Clouds Segmentation 2025" format)

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The label colour in RGB order: every picture (panels, curves, GeoTIFF colour tables) draws it."""
        return self.bgr[::-1]


CLASSES: tuple[CloudClass, ...] = (
    CloudClass(0, "clear", (0, 0, 0)),
    CloudClass(1, "thick_cloud", (0, 0, 255)),
    CloudClass(2, "thin_cloud", (0, 255, 0)),
    CloudClass(3, "cloud_shadow", (0, 255, 255)),
)
NUM_CLASSES = len(CLASSES)
CLASS_NAMES = tuple(c.name for c in CLASSES)
IGNORE_INDEX = 255  # label value that losses and metrics skip
# The smallest image side the models take: MiT's first stage works at 1/4 scale and shrinks its keys by 8 more.
MIN_SIDE = 32


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std applied to values scaled to 0..1."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


# RGB is fed in R, G, B order (the order of the ImageNet weights), although cv2 reads B, G, R.
RGB_NORM = Normalisation(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# The auxiliary stream: NIR, channel 2 of the BGR array cv2 reads from ngr/<name>.png.
AUX_BANDS = ("nir",)
NGR_NIR_CHANNEL = 2
AUX_NORM = Normalisation(mean=(0.5,), std=(0.25,))


def encode_reflectance(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance (0..1) -> uint8 with the square-root stretch of the training images:
    `uint8(round(255 * clip(r, 0, 1) ** 0.5))` per band (the shared Landsat-8 sample and synthetic scenes)."""
    return np.round(255.0 * np.clip(reflectance, 0.0, 1.0) ** 0.5).astype(np.uint8)
