"""Pictures for people: grids of RGB, NIR and class maps with titles and a colour legend."""

from pathlib import Path

import cv2
import numpy as np
import torch

from cloudseg.data.io import PALETTE_DISPLAY_RGB, write_image
from cloudseg.schema import CLASSES, IGNORE_INDEX

IGNORE_DISPLAY_RGB = (128, 0, 128)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def displayable(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) uint8 tensor, as the dataset serves it -> (H, W, 3) uint8 RGB (one channel is shown as grey)."""
    pixels = image.cpu().permute(1, 2, 0).numpy()
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else np.ascontiguousarray(pixels)


def colourise(ids: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB display colours; the ignore index is purple."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CLASSES)] = PALETTE_DISPLAY_RGB
    palette[IGNORE_INDEX] = IGNORE_DISPLAY_RGB
    return palette[ids]


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    cv2.putText(image, text, origin, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def legend(width: int) -> np.ndarray:
    """A strip naming every class next to its display colour."""
    strip = np.full((24, width, 3), 32, dtype=np.uint8)
    x = 6
    for cls in (*CLASSES, None):
        colour, name = (cls.display_rgb, cls.name) if cls else (IGNORE_DISPLAY_RGB, "ignored")
        cv2.rectangle(strip, (x, 6), (x + 12, 18), tuple(int(c) for c in colour), -1)
        cv2.rectangle(strip, (x, 6), (x + 12, 18), (160, 160, 160), 1)
        _text(strip, name, (x + 16, 17), 0.4)
        x += 22 + 8 * len(name)
    return strip


def grid(rows: list[list[np.ndarray]], titles: list[str], row_names: list[str], tile: int = 192) -> np.ndarray:
    """Tiles (each (H, W, 3) RGB uint8) resized to `tile`² in rows, with column titles, row names and a legend."""
    margin = 110
    header = np.full((22, margin + tile * len(titles), 3), 32, dtype=np.uint8)
    for j, title in enumerate(titles):
        _text(header, title, (margin + j * tile + 4, 16))
    lines = [header]
    for name, row in zip(row_names, rows, strict=True):
        label = np.full((tile, margin, 3), 32, dtype=np.uint8)
        _text(label, name[:14], (4, tile // 2), 0.4)
        tiles = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST) for t in row]
        lines.append(np.hstack([label, *tiles]))
    lines.append(legend(header.shape[1]))
    return np.vstack(lines)


def save_rgb(path: str | Path, image: np.ndarray) -> None:
    write_image(Path(path), np.ascontiguousarray(image[..., ::-1]))


PANEL_TITLES = ["RGB", "NIR", "ground truth", "prediction", "errors"]


def prediction_row(sample: dict, prediction: np.ndarray) -> list[np.ndarray]:
    """RGB | NIR | ground truth | prediction | error map (red where wrong, ignored pixels purple)."""
    truth = sample["mask"].numpy()
    errors = np.zeros((*truth.shape, 3), np.uint8)
    errors[(prediction != truth) & (truth != IGNORE_INDEX)] = (230, 40, 40)
    errors[truth == IGNORE_INDEX] = IGNORE_DISPLAY_RGB
    return [
        displayable(sample["rgb"]),
        displayable(sample["aux"][:1]),
        colourise(truth),
        colourise(prediction.astype(np.uint8)),
        errors,
    ]
