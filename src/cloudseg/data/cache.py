"""`cloudseg cache`: the training images decoded once into uint8 arrays, so loading skips PNG decoding.

One `<name>.npy` per scene of shape (H, W, 5): R, G, B, NIR, class ids; read memory-mapped. `index.json` records
each source file's size and modification time and the label rule, so a stale cache is refused, never used.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cloudseg.config import DataConfig, UnknownColours
from cloudseg.data.io import SampleFiles, codec_workers, read_sample
from cloudseg.errors import DataError
from cloudseg.files import atomic_path


def _stamp(files: SampleFiles) -> list[list[int]]:
    return [[(stat := os.stat(path)).st_size, stat.st_mtime_ns] for path in (files.rgb, files.ngr, files.label)]


def build_cache(
    samples: list[SampleFiles], folder: str | Path, unknown_colours: UnknownColours = DataConfig.unknown_colours
) -> Path:
    """Decodes every sample into `folder`; returns the folder. Samples that cannot be read are all named in one
    error, and no index is written."""
    folder = Path(folder)

    def cache_one(files: SampleFiles) -> list[list[int]] | DataError:
        try:
            rgb, nir, mask = read_sample(files, unknown_colours)
        except DataError as error:
            return error
        with atomic_path(folder / f"{files.name}.npy") as temporary, temporary.open("wb") as handle:
            np.save(handle, np.dstack((rgb, nir, mask)))
        return _stamp(files)

    # Threads: OpenCV releases the GIL while it decodes, and so does writing.
    with ThreadPoolExecutor(codec_workers()) as pool:
        stamps = list(pool.map(cache_one, samples))
    problems = [str(stamp) for stamp in stamps if isinstance(stamp, DataError)]
    if problems:
        raise DataError(f"{len(problems)} of {len(samples)} scenes cannot be read: " + "; ".join(problems))
    index = {"unknown_colours": unknown_colours, "samples": {f.name: s for f, s in zip(samples, stamps, strict=True)}}
    with atomic_path(folder / "index.json") as temporary:
        temporary.write_text(json.dumps(index))
    return folder


class SampleCache:
    """Reads cached samples; refuses a cache that is missing any sample or older than its source files."""

    def __init__(self, folder: str | Path, samples: list[SampleFiles], unknown_colours: UnknownColours):
        self.folder = Path(folder)
        try:
            index = json.loads((self.folder / "index.json").read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{self.folder}: no readable cache index; build it with `cloudseg cache`") from error
        stale = [f.name for f in samples if index["samples"].get(f.name) != _stamp(f)]
        if stale or index["unknown_colours"] != unknown_colours:
            reason = f"{len(stale)} scenes changed or are missing, e.g. {stale[0]}" if stale else "another label rule"
            raise DataError(f"{self.folder}: the cache is out of date ({reason}); rebuild it with `cloudseg cache`")

    def size(self, name: str) -> tuple[int, int]:
        """(height, width) of a cached scene, from its file's header."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r").shape[:2]

    def read(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Views of the mapped file, not copies: the first step that needs the pixels (the augmentation) reads them.
        stack = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return stack[..., :3], stack[..., 3:4], stack[..., 4]
