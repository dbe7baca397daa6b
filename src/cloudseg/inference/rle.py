"""Kaggle "Clouds Segmentation 2025" submissions: run-length encoding of colour masks, and local scoring.

The competition encodes the H x W x 3 BGR uint8 colour mask transposed to 3 x W x H (channel-major, then
column-major) and flattened, as space-separated 1-based `start length` pairs of the runs of non-zero values.
"""

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cloudseg.data.io import IMAGE_SUFFIXES, colour_to_index, read_raw
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.schema import CLASS_NAMES, NUM_CLASSES

HEADER = ("Image_Label", "EncodedPixels")


def rle_encode(colour_bgr: np.ndarray) -> str:
    """(H, W, 3) colour mask -> "start length start length ..." (1-based, over the 3 x W x H flattening)."""
    flat = colour_bgr.transpose(2, 1, 0).ravel() != 0
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])))) + 1  # 1-based run starts, ends
    starts, ends = edges[::2], edges[1::2]
    return " ".join(map(str, np.column_stack((starts, ends - starts)).ravel().tolist()))


def rle_decode(encoded: str, height: int, width: int, where: str = "submission") -> np.ndarray:
    """The inverse of `rle_encode` for masks whose non-zero values are 255 (all class colours)."""
    flat = np.zeros(3 * width * height, dtype=np.uint8)
    numbers = np.array(encoded.split(), dtype=np.int64)
    if len(numbers) % 2:
        raise DataError(f"{where}: odd number of values in EncodedPixels; expected start-length pairs")
    starts, lengths = numbers[::2] - 1, numbers[1::2]
    if len(starts) and (starts.min() < 0 or (starts + lengths).max() > flat.size or lengths.min() < 1):
        raise DataError(f"{where}: runs reach outside the {height}x{width}x3 = {flat.size} encoded values")
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        flat[start : start + length] = 255
    return flat.reshape(3, width, height).transpose(2, 1, 0).copy()


def write_submission(rows: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Writes `Image_Label,EncodedPixels` rows, sorted by image file name, atomically."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(sorted(rows))
    return Path(path)


def submission_from_masks(mask_dir: str | Path, path: str | Path) -> Path:
    """`cloudseg submit`: encodes every colour mask image of a folder into a submission file."""
    masks = sorted(p for p in Path(mask_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not masks:
        raise DataError(f"{mask_dir}: no mask images ({', '.join(IMAGE_SUFFIXES)})")
    return write_submission(((p.name, rle_encode(read_raw(p)[..., :3])) for p in masks), path)


def read_submission(path: str | Path) -> dict[str, str]:
    try:
        with Path(path).open(newline="") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            rows = {row[0]: (row[1] if len(row) > 1 else "") for row in reader if row}
    except OSError as error:
        raise DataError(f"{path}: cannot read the submission ({error.strerror})") from error
    if header != HEADER:
        raise DataError(f"{path}: header {','.join(header)!r}; expected {','.join(HEADER)}")
    return rows


def score_submission(path: str | Path, labels: str | Path) -> dict:
    """Per-class IoU and Dice over all pixels, and the mean over images of the per-image mean Dice."""
    rows = read_submission(path)
    label_files = sorted(p for p in Path(labels).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not label_files:
        raise DataError(f"{labels}: no label images")
    missing = [p.name for p in label_files if p.name not in rows]
    if missing:
        raise DataError(f"{path}: no row for {len(missing)} label images, e.g. {missing[0]}")
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    image_dice = []
    for label_path in label_files:
        truth = colour_to_index(read_raw(label_path)[..., :3], label_path)
        height, width = truth.shape
        predicted_colours = rle_decode(rows[label_path.name], height, width, f"{path}, row {label_path.name}")
        predicted = colour_to_index(predicted_colours, f"{path}, row {label_path.name}")
        confusion = np.bincount(truth.ravel() * NUM_CLASSES + predicted.ravel(), minlength=NUM_CLASSES**2)
        confusion = confusion.reshape(NUM_CLASSES, NUM_CLASSES)
        total += confusion
        tp = np.diag(confusion)
        present = confusion.sum(0) + confusion.sum(1) > 0
        image_dice.append(float((2 * tp[present] / (confusion.sum(0) + confusion.sum(1))[present]).mean()))
    import torch  # here: `predict`'s writer processes encode rows with this module and need no torch

    from cloudseg.training.metrics import confusion_scores

    scores = confusion_scores(torch.from_numpy(total))
    return {
        "images": len(label_files),
        "mean_image_dice": float(np.mean(image_dice)),
        "mIoU": float(scores["mIoU"]),
        "accuracy": float(scores["accuracy"]),
        **{f"iou/{n}": float(v) for n, v in zip(CLASS_NAMES, scores["iou"], strict=True)},
        **{f"dice/{n}": float(v) for n, v in zip(CLASS_NAMES, scores["dice"], strict=True)},
    }
