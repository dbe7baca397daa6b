"""Kaggle "Clouds Segmentation 2025" submissions: run-length encoding of colour masks, and local scoring.

The competition encodes the H x W x 3 BGR uint8 colour mask transposed to 3 x W x H (channel-major, then
column-major) and flattened, as space-separated 1-based `start length` pairs of the runs of non-zero values.
"""

import csv
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cloudseg.config import DataConfig, UnknownColours
from cloudseg.data.io import IMAGE_SUFFIXES, colour_to_index, index_to_colour, load_label
from cloudseg.errors import DataError, os_error
from cloudseg.files import atomic_path
from cloudseg.schema import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES

HEADER = ("Image_Label", "EncodedPixels")
_NOT_NUMBER_TEXT = re.compile(r"[^0-9 \t\r\n]")  # EncodedPixels holds digits and white space only


def rle_encode(colour_bgr: np.ndarray) -> str:
    """(H, W, 3) colour mask -> "start length start length ..." (1-based, over the 3 x W x H flattening)."""
    flat = colour_bgr.transpose(2, 1, 0).ravel() != 0
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])))) + 1  # 1-based run starts, ends
    starts, ends = edges[::2], edges[1::2]
    return " ".join(map(str, np.column_stack((starts, ends - starts)).ravel().tolist()))


def parse_runs(encoded: str, where: str = "submission") -> tuple[np.ndarray, np.ndarray]:
    """EncodedPixels -> (0-based starts, lengths); anything but whole numbers in pairs is an error naming `where`."""
    if bad := _NOT_NUMBER_TEXT.search(encoded):
        at = bad.start()
        token = encoded[at:].split(maxsplit=1)[0] if not encoded[at].isspace() else encoded[at]
        raise DataError(f"{where}: EncodedPixels holds {token[:20]!r}; expected whole numbers")
    numbers = np.fromstring(encoded, dtype=np.int64, sep=" ") if encoded.strip() else np.zeros(0, np.int64)
    if len(numbers) % 2:
        raise DataError(f"{where}: odd number of values ({len(numbers)}) in EncodedPixels; expected start-length pairs")
    starts, lengths = numbers[::2] - 1, numbers[1::2]
    if len(starts) and (starts.min() < 0 or lengths.min() < 1):
        raise DataError(f"{where}: a run starts before pixel 1 or has a length below 1; expected 1-based starts")
    return starts, lengths


def rle_decode(encoded: str, height: int, width: int, where: str = "submission") -> np.ndarray:
    """The inverse of `rle_encode` for masks whose non-zero values are 255 (all class colours). Runs may come in
    any order and overlap, as a decoder that sets their pixels one run at a time would take them."""
    size = 3 * width * height
    starts, lengths = parse_runs(encoded, where)
    # Compared as a difference, as a sum could overflow; lengths are at least 1, so a start past the end fails too.
    if (lengths > size - starts).any():
        raise DataError(f"{where}: runs reach outside the {height}x{width}x3 = {size} encoded values")
    if not len(starts):
        return np.zeros((height, width, 3), dtype=np.uint8)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], (starts + lengths)[order]
    # Merge overlapping or touching runs: a run begins a new stretch where it starts after every earlier run ended.
    reach = np.maximum.accumulate(ends)
    new = np.ones(len(starts), dtype=bool)
    new[1:] = starts[1:] > reach[:-1]
    last = np.flatnonzero(np.append(new[1:], True))  # the last run of each stretch
    # Each stretch's start and end flip a toggle (stretches are apart, so no two flips share a place); the
    # running XOR of the toggles is 1 inside the stretches.
    toggles = np.zeros(size + 1, dtype=np.uint8)
    toggles[starts[new]] = 1
    toggles[reach[last]] = 1
    flat = np.bitwise_xor.accumulate(toggles[:size]) * np.uint8(255)
    return flat.reshape(3, width, height).transpose(2, 1, 0).copy()


def write_submission(rows: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Writes `Image_Label,EncodedPixels` rows, sorted by image file name, atomically."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(sorted(rows))
    return Path(path)


def submission_from_masks(mask_dir: str | Path, path: str | Path) -> Path:
    """`cloudseg submit`: encodes every mask image of a folder (label colours, or class ids in one channel) into a
    submission file. Anything else, such as a photograph, is an error naming the file."""
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: no such folder; expected a folder of masks (the --output of `cloudseg predict`)")
    masks = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not masks:
        raise DataError(f"{mask_dir}: no mask images ({', '.join(IMAGE_SUFFIXES)})")
    return write_submission(map(mask_row, masks), path)


def mask_row(mask: Path) -> tuple[str, str]:
    """A mask image's submission row: its file name and EncodedPixels. The mask is in label colours or class ids
    in one channel; anything else is an error."""
    ids = load_label(mask, "ignore")
    unknown = int((ids == IGNORE_INDEX).sum())
    if unknown:
        raise DataError(
            f"{mask}: {unknown} of {ids.size} pixels are not label colours; submit encodes masks in the label colours "
            "or class ids, as `cloudseg predict` writes them"
        )
    return mask.name, rle_encode(index_to_colour(ids))


def read_submission(path: str | Path) -> dict[str, str]:
    """{image file name: EncodedPixels} of a submission file; rows may be of any length (a ragged mask's row runs
    to hundreds of thousands of characters). A malformed file is an error naming the row."""
    path = Path(path)
    rows: dict[str, str] = {}
    where: dict[str, int] = {}
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # the csv module's default of 131,072 characters a field is far too small
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, ()))
            if header != HEADER:
                raise DataError(f"{path}: header {','.join(header)!r}; expected {','.join(HEADER)}")
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                if len(row) > 2:
                    raise DataError(f"{path}, line {line}: {len(row)} fields; expected Image_Label,EncodedPixels")
                name = row[0]
                if name in rows:
                    raise DataError(f"{path}, line {line}: a second row for {name} (the first is line {where[name]})")
                rows[name], where[name] = (row[1] if len(row) > 1 else ""), line
    except OSError as error:
        raise os_error(error, path) from error
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from error
    finally:
        csv.field_size_limit(limit)
    return rows


def score_submission(
    path: str | Path, labels: str | Path, unknown_colours: UnknownColours = DataConfig.unknown_colours
) -> dict:
    """Per-class IoU and Dice over all pixels, and the mean over images of the per-image mean Dice."""
    labels = Path(labels)
    if not labels.is_dir():
        raise DataError(f"{labels}: no such folder; expected a folder of label images")
    rows = read_submission(path)
    label_files = sorted(p for p in labels.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not label_files:
        raise DataError(f"{labels}: no label images")
    missing = [p.name for p in label_files if p.name not in rows]
    if missing:
        raise DataError(f"{path}: no row for {len(missing)} label images, e.g. {missing[0]}")
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    image_dice = []
    for label_path in label_files:
        truth = load_label(label_path, unknown_colours)
        height, width = truth.shape
        row = f"{path}, row {label_path.name}"
        predicted = colour_to_index(rle_decode(rows[label_path.name], height, width, row), row)
        scored = truth != IGNORE_INDEX
        confusion = np.bincount(
            truth[scored].astype(np.int64) * NUM_CLASSES + predicted[scored], minlength=NUM_CLASSES**2
        ).reshape(NUM_CLASSES, NUM_CLASSES)
        total += confusion
        sizes = confusion.sum(0) + confusion.sum(1)  # each class's predicted and true pixels
        present = sizes > 0
        image_dice.append(float((2 * np.diag(confusion)[present] / sizes[present]).mean()))
    import torch  # here: `predict`'s writer processes encode rows with this module and need no torch

    from cloudseg.metrics import confusion_scores

    scores = confusion_scores(torch.from_numpy(total))
    return {
        "images": len(label_files),
        "mean_image_dice": float(np.mean(image_dice)),
        "mIoU": float(scores["mIoU"]),
        "accuracy": float(scores["accuracy"]),
        **{f"iou/{n}": float(v) for n, v in zip(CLASS_NAMES, scores["iou"], strict=True)},
        **{f"dice/{n}": float(v) for n, v in zip(CLASS_NAMES, scores["dice"], strict=True)},
    }
