"""Pictures for people: grids of RGB, NIR and class maps under a title, every class in its label colour."""

from pathlib import Path

import cv2
import numpy as np
import torch

from cloudseg.data.io import write_image
from cloudseg.schema import CLASSES, IGNORE_INDEX

Colour = tuple[int, int, int]
# The pictures' own marks, in colours apart from every class colour (black, red, green, yellow).
IGNORE_RGB: Colour = (128, 0, 128)
WRONG_RGB: Colour = (255, 255, 255)
PASTED_RGB: Colour = (255, 0, 255)
BACKGROUND = 32
GAP = 6  # between tiles, so that neighbouring masks never read as one
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def displayable(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) uint8 tensor, as the dataset serves it -> (H, W, 3) uint8 RGB (one channel is shown as grey)."""
    pixels = image.cpu().permute(1, 2, 0).numpy()
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else np.ascontiguousarray(pixels)


def colourise(ids: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB in the label colours; the ignore index is purple."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CLASSES)] = [c.rgb for c in CLASSES]
    palette[IGNORE_INDEX] = IGNORE_RGB
    return palette[ids]


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def caption(width: int, text: str, scale: float = 0.45) -> np.ndarray:
    """A dark strip with one line of text (OpenCV draws ASCII only), shortened with "..." to fit."""
    strip = np.full((20, width, 3), BACKGROUND, dtype=np.uint8)
    text = text.encode("ascii", "replace").decode()
    if _text_width(text, scale) > width - 2 * GAP:
        while len(text) > 1 and _text_width(text + "...", scale) > width - 2 * GAP:
            text = text[:-1]
        text += "..."
    cv2.putText(strip, text, (GAP, 14), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def legend(width: int, marks: tuple[tuple[str, Colour], ...] = ()) -> np.ndarray:
    """A strip naming every class next to its colour, then the ignored pixels and `marks` (name, colour)."""
    strip = np.full((24, width, 3), BACKGROUND, dtype=np.uint8)
    x = GAP
    for name, colour in [*((c.name, c.rgb) for c in CLASSES), ("ignored", IGNORE_RGB), *marks]:
        cv2.rectangle(strip, (x, 6), (x + 12, 18), colour, -1)
        cv2.rectangle(strip, (x, 6), (x + 12, 18), (160, 160, 160), 1)
        cv2.putText(strip, name, (x + 16, 17), _FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        x += 28 + _text_width(name, 0.4)
    return strip


def grid(
    title: str,
    columns: list[str],
    rows: list[tuple[str, list[np.ndarray]]],
    marks: tuple[tuple[str, Colour], ...] = (),
    tile: int = 192,
) -> np.ndarray:
    """A title, column names, then each row's name over its tiles (each (H, W, 3) RGB uint8, resized to `tile`²),
    tiles apart by GAP, and a legend of the classes and `marks` at the foot."""
    width = len(columns) * (tile + GAP) + GAP

    def spaced(pieces: list[np.ndarray]) -> np.ndarray:  # GAP before, between and after
        gap = np.full((pieces[0].shape[0], GAP, 3), BACKGROUND, dtype=np.uint8)
        return np.hstack([gap, *(part for piece in pieces for part in (piece, gap))])

    lines = [caption(width, title, 0.5), spaced([caption(tile, name) for name in columns])]
    for name, tiles in rows:
        resized = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_NEAREST) for t in tiles]
        lines += [caption(width, name, 0.4), spaced(resized)]
    lines += [np.full((GAP, width, 3), BACKGROUND, dtype=np.uint8), legend(width, marks)]
    return np.vstack(lines)


def save_rgb(path: str | Path, image: np.ndarray) -> None:
    write_image(Path(path), np.ascontiguousarray(image[..., ::-1]))


PANEL_COLUMNS = ["RGB", "NIR", "ground truth", "prediction", "errors"]
PANEL_MARKS = (("wrong", WRONG_RGB),)


def prediction_row(sample: dict, prediction: np.ndarray) -> tuple[str, list[np.ndarray]]:
    """The sample's name with its pixel accuracy, over RGB | NIR | ground truth | prediction | errors (wrong
    pixels white, ignored pixels purple)."""
    truth = sample["mask"].numpy()
    counted = truth != IGNORE_INDEX
    wrong = (prediction != truth) & counted
    errors = np.zeros((*truth.shape, 3), np.uint8)
    errors[wrong] = WRONG_RGB
    errors[~counted] = IGNORE_RGB
    accuracy = 1 - wrong.sum() / max(counted.sum(), 1)
    tiles = [
        displayable(sample["rgb"]),
        displayable(sample["aux"][:1]),
        colourise(truth),
        colourise(prediction.astype(np.uint8)),
        errors,
    ]
    return f"{sample['name']}   pixel accuracy {accuracy:.3f}", tiles
