"""What `predict` writes for each image, written in worker processes.

The process that runs the model needs the GIL between every two operations it launches, and writer threads
beside it (PNG encoding, RLE, file handling) would take it and slow a launch-bound model down (what that cost is
in docs/PERFORMANCE.md); writer processes take nothing from it. This module imports no torch, so that a worker
starts in a fraction of a second.
"""

import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudseg.config import PredictConfig
from cloudseg.data.io import index_to_colour, write_image
from cloudseg.inference.rle import rle_encode
from cloudseg.schema import CLASS_NAMES
from cloudseg.signals import ignore_stop_signals


@dataclass
class ImageOutputs:
    """One batch's arrays to write, all uint8: class ids (B, H, W); where asked for, probabilities scaled to
    0..255 (B, K, H, W) and an uncertainty map (B, H, W)."""

    names: list[str]
    ids: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def chunks(self, count: int) -> Iterator["ImageOutputs"]:
        """The batch in at most `count` consecutive parts, each of ceil(B / count) images but the last."""
        size = -(-len(self) // count)
        fields = (self.names, self.ids, self.probabilities, self.uncertainty)
        for start in range(0, len(self), size):
            yield ImageOutputs(*(None if field is None else field[start : start + size] for field in fields))


Written = tuple[tuple[str, str] | None, dict]  # an image's submission row (None for a scene), its manifest entry


def image_entry(name: str, height: int, width: int, counts: np.ndarray, outputs: dict[str, str]) -> dict:
    """An image's manifest entry: its size, the share of each class among the pixels `counts` counted (per class
    id), and the files written with their SHA-256."""
    shares = np.round(counts[: len(CLASS_NAMES)] / max(1, counts.sum()), 6).tolist()
    return {"name": name, "height": height, "width": width, "mpx": round(height * width / 1e6, 6),
            "shares": dict(zip(CLASS_NAMES, shares, strict=True)), "outputs": outputs}  # fmt: skip


def write_batch(batch: ImageOutputs, output: Path, cfg: PredictConfig) -> list[Written]:
    """Writes each image's colour mask and the maps `cfg` asks for; returns their submission rows and manifest
    entries (size, class shares, and each file written with its SHA-256)."""
    written = []
    for i, name in enumerate(batch.names):
        ids = batch.ids[i]
        colour = index_to_colour(ids)
        files = {f"{name}.png": colour}
        if cfg.index_masks:
            files[f"index/{name}.png"] = ids
        if batch.probabilities is not None:
            for class_name, plane in zip(CLASS_NAMES, batch.probabilities[i], strict=True):
                files[f"probabilities/{name}_{class_name}.png"] = plane
        if batch.uncertainty is not None:
            files[f"uncertainty/{name}.png"] = batch.uncertainty[i]
        hashes = {file: write_image(output / file, image) for file, image in files.items()}
        entry = image_entry(name, *ids.shape, np.bincount(ids.ravel(), minlength=len(CLASS_NAMES)), hashes)
        written.append(((f"{name}.png", rle_encode(colour)), entry))
    return written


def _context() -> multiprocessing.context.BaseContext:
    # Not fork: the parent runs CUDA and threads, and forking such a process may hang the child.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class OutputWriters:
    """`workers` processes that write each batch in parts, one per worker; what each wrote comes back in order.

    At most `pending` images wait to be written (their arrays held in memory) before `submit` waits for the
    oldest part; an error in a worker is raised by the `submit` or `remaining` that collects its part.
    """

    def __init__(self, output: Path, cfg: PredictConfig, workers: int, pending: int):
        self.output, self.cfg, self.workers, self.pending = output, cfg, workers, pending
        self.pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=ignore_stop_signals)
        self.parts: deque[tuple[int, Future]] = deque()  # (images, what they wrote, to come)

    def __enter__(self) -> "OutputWriters":
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown(wait=True, cancel_futures=exc_info[0] is not None)

    def submit(self, batch: ImageOutputs) -> list[Written]:
        """Queues the batch's parts; returns what the oldest parts that have finished meanwhile wrote."""
        for part in batch.chunks(self.workers):
            self.parts.append((len(part), self.pool.submit(write_batch, part, self.output, self.cfg)))
        written = []
        while self.parts and (self.parts[0][1].done() or sum(size for size, _ in self.parts) > self.pending):
            written += self.parts.popleft()[1].result()
        return written

    def remaining(self) -> Iterator[list[Written]]:
        """What each part still queued wrote, in order, as it finishes."""
        while self.parts:
            yield self.parts.popleft()[1].result()
