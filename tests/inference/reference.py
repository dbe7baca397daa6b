"""The model's inputs and the labels computed independently of cloudseg: files read with OpenCV and normalised with
the published constants, written out here rather than read from cloudseg.schema, so tests check the product's
constants instead of themselves."""

from pathlib import Path

import cv2
import numpy as np
import torch

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
NIR_MEAN, NIR_STD = 0.5, 0.25
LABEL_COLOURS_BGR = {(0, 0, 0): 0, (0, 0, 255): 1, (0, 255, 0): 2, (0, 255, 255): 3}
NAMES = ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")


def inputs(split: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    bgr = cv2.imread(str(split / "rgb" / f"{name}.png")).astype(np.float64) / 255
    nir = cv2.imread(str(split / "ngr" / f"{name}.png"))[..., 2].astype(np.float64) / 255  # NIR is channel 2
    rgb = (bgr[..., ::-1] - IMAGENET_MEAN) / IMAGENET_STD
    aux = (nir - NIR_MEAN) / NIR_STD
    return (torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), torch.from_numpy(aux)[None, None].float())


def labels(root: Path, name: str) -> np.ndarray:
    colours = cv2.imread(str(root / "test_labels" / f"{name}.png"))
    ids = np.full(colours.shape[:2], 255, np.int64)
    for colour, class_id in LABEL_COLOURS_BGR.items():
        ids[(colours == colour).all(-1)] = class_id
    return ids


def colours(ids: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) BGR label colours."""
    palette = np.zeros((4, 3), np.uint8)
    for colour, class_id in LABEL_COLOURS_BGR.items():
        palette[class_id] = colour
    return palette[ids]
