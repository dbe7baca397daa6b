"""Reading and writing the dataset's images, with one documented rule for every unusual file.

Rules (each applied conversion is reported by `cloudseg check-data`):
- 16-bit rgb/ngr images are scaled linearly to 8 bits (value / 257, rounded): the full 16-bit range maps onto
  the full 8-bit range. 16-bit labels are refused: label colours must be exact.
- An alpha channel is dropped.
- A single-channel rgb image is refused. A single-channel ngr image is taken as the NIR band itself.
- A single-channel label holds class ids (0..3) directly instead of colours.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cloudseg.config import DataConfig, UnknownColours
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.schema import CLASSES, IGNORE_INDEX, NGR_NIR_CHANNEL

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# OpenCV's own warnings (a truncated PNG's, say) would precede the one line that names the file and what to do
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
PALETTE_BGR = np.array([c.bgr for c in CLASSES], dtype=np.uint8)
_PALETTE_LUT = np.zeros((256, 1, 3), dtype=np.uint8)  # for cv2.LUT, which releases the GIL: the class colours
_PALETTE_LUT[: len(CLASSES), 0] = PALETTE_BGR


def codec_workers() -> int:
    """Threads (OpenCV's codecs release the GIL) or processes that decode or encode images: a core each, up to 8."""
    return min(8, os.cpu_count() or 1)


def _pack(bgr: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 BGR -> (...) uint32, one code per colour (BGRA bytes read as one little-endian word)."""
    bgra = cv2.cvtColor(np.ascontiguousarray(bgr.reshape(-1, 1, 3)), cv2.COLOR_BGR2BGRA)
    return bgra.view(np.uint32).reshape(bgr.shape[:-1])


_CLASS_CODES = _pack(PALETTE_BGR)
_TABLE = ", ".join(f"{c.name} {c.bgr}" for c in CLASSES)


def _truncated(path: Path, data: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".png":
        return b"IEND" not in data[-16:]
    if suffix in (".jpg", ".jpeg"):
        return b"\xff\xd9" not in data[-64:]
    return False


def read_raw(path: Path) -> np.ndarray:
    """The decoded file as cv2 gives it (BGR order, any depth); unreadable or truncated files are errors."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror})") from error
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise DataError(f"{path}: not a readable image; expected an 8-bit PNG, JPEG or TIFF")
    if _truncated(path, data):
        raise DataError(f"{path}: the file is truncated (no end marker); re-export or re-download it")
    return image


def _to_8bit(image: np.ndarray, path: Path, notes: list[str] | None) -> np.ndarray:
    if image.dtype == np.uint16:
        if notes is not None:
            notes.append(f"{path}: 16-bit image, scaled to 8 bits (value / 257)")
        return np.round(image / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DataError(f"{path}: pixel type {image.dtype}; expected 8-bit (or 16-bit) integers")
    return image


def _drop_alpha(image: np.ndarray, path: Path, notes: list[str] | None) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        if notes is not None:
            notes.append(f"{path}: alpha channel dropped")
        return image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    return image


def load_rgb(path: Path, notes: list[str] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 in R, G, B order."""
    image = _drop_alpha(_to_8bit(read_raw(path), path, notes), path, notes)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"{path}: {_describe(image)}; expected a 3-channel colour image")
    return np.ascontiguousarray(image[..., ::-1])


def load_nir(path: Path, notes: list[str] | None = None) -> np.ndarray:
    """(H, W, 1) uint8 NIR: channel 2 of the BGR array of an ngr image, or a single-channel image itself."""
    image = _drop_alpha(_to_8bit(read_raw(path), path, notes), path, notes)
    if image.ndim == 2:
        if notes is not None:
            notes.append(f"{path}: single-channel ngr image, taken as the NIR band")
        return image[..., None]
    if image.shape[2] != 3:
        raise DataError(f"{path}: {_describe(image)}; expected a 3-channel false-colour (NIR, G, R) image")
    return np.ascontiguousarray(image[..., NGR_NIR_CHANNEL : NGR_NIR_CHANNEL + 1])


def load_label(
    path: Path, unknown_colours: UnknownColours = DataConfig.unknown_colours, notes: list[str] | None = None
) -> np.ndarray:
    """(H, W) uint8 class ids from a colour label (or a single-channel label of ids)."""
    image = read_raw(path)
    if image.dtype != np.uint8:
        raise DataError(f"{path}: {image.dtype} label; expected 8-bit colours ({_TABLE})")
    image = _drop_alpha(image, path, notes)
    if image.ndim == 2:
        if notes is not None:
            notes.append(f"{path}: single-channel label, read as class ids")
        ids = image.copy()
        bad = ids >= len(CLASSES)
        if bad.any():
            if unknown_colours != "ignore":
                values = ", ".join(map(str, np.unique(ids[bad])[:5]))
                raise DataError(f"{path}: {int(bad.sum())} pixels have ids {values}; expected 0..{len(CLASSES) - 1}")
            ids[bad] = IGNORE_INDEX
        return ids
    return colour_to_index(image, path, unknown_colours)


def colour_to_index(
    label_bgr: np.ndarray, source: os.PathLike | str, unknown_colours: UnknownColours = DataConfig.unknown_colours
) -> np.ndarray:
    """(H, W, 3) BGR label colours -> (H, W) uint8 class ids; colours outside the table are an error or ignored."""
    codes = _pack(label_bgr)
    ids = np.full(codes.shape, IGNORE_INDEX, dtype=np.uint8)
    for cls, code in zip(CLASSES, _CLASS_CODES, strict=True):
        ids[codes == code] = cls.id
    unknown = ids == IGNORE_INDEX
    if unknown_colours != "ignore" and unknown.any():
        found, counts = np.unique(codes[unknown], return_counts=True)
        order = np.argsort(-counts)[:3]
        listed = ", ".join(f"{counts[i]} px of {_unpack(found[i])}" for i in order)
        more = f" and {len(found) - 3} more colours" if len(found) > 3 else ""
        raise DataError(
            f"{source}: {int(unknown.sum())} pixels have colours outside the class table ({listed}{more}); "
            f"expected {_TABLE} in BGR order, or pass --data.unknown_colours ignore to count them as ignored pixels"
        )
    return ids


def class_pixels(ids: np.ndarray) -> np.ndarray:
    """Pixels of each class in an id map; ignored pixels are not counted."""
    return np.bincount(ids[ids != IGNORE_INDEX].ravel(), minlength=len(CLASSES))


def index_to_colour(ids: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 BGR label colours."""
    if not ids.size:
        return np.zeros((*ids.shape, 3), dtype=np.uint8)
    if ids.max() >= len(CLASSES):
        raise ValueError(f"class ids must be below {len(CLASSES)}, got {int(ids.max())}")
    # A table lookup in OpenCV: 6 times faster than indexing the palette, and other threads run meanwhile.
    ids = ids.astype(np.uint8, copy=False)
    return cv2.LUT(cv2.merge([ids, ids, ids]), _PALETTE_LUT)


def _unpack(code: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.array([code], dtype=np.uint32).view(np.uint8)[:3])


def _describe(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return f"{channels}-channel {image.dtype} image"


def write_image(path: Path, image: np.ndarray) -> str:
    """Writes an image atomically (encoded in memory, written beside `path`, renamed); returns the file's SHA-256."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise DataError(f"{path}: cannot encode a {_describe(image)} as {path.suffix}")
    data = encoded.tobytes()
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SampleFiles:
    """The files of one scene; `label` is None for unlabelled (test) samples."""

    name: str
    rgb: Path
    ngr: Path
    label: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        """The input files, as a manifest records them."""
        return (self.rgb, self.ngr)


def size_problem(name: str, shapes: dict[Path, tuple[int, ...]]) -> str | None:
    """The message for a scene whose files are not all one size, or None."""
    if len({shape[:2] for shape in shapes.values()}) <= 1:
        return None
    sizes = ", ".join(f"{path} is {shape[1]}x{shape[0]}" for path, shape in shapes.items())
    return f"{name}: sizes differ ({sizes}); rgb, ngr and label must have one size"


def read_sample(
    files: SampleFiles, unknown_colours: UnknownColours = DataConfig.unknown_colours
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(RGB (H, W, 3), NIR (H, W, 1), ids (H, W) or None) as uint8 arrays; sizes must agree."""
    rgb, nir = load_rgb(files.rgb), load_nir(files.ngr)
    mask = load_label(files.label, unknown_colours) if files.label else None
    arrays = {files.rgb: rgb, files.ngr: nir, **({files.label: mask} if mask is not None else {})}
    problem = size_problem(files.name, {path: array.shape for path, array in arrays.items()})
    if problem:
        raise DataError(problem)
    return rgb, nir, mask
