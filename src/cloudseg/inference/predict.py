"""`cloudseg predict`: colour masks (and optionally index, probability and uncertainty maps) for image pairs."""

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import SampleFiles, model_inputs, pair_files, read_sample, stack_chw
from cloudseg.data.io import IMAGE_SUFFIXES, codec_threads, index_to_colour, write_image
from cloudseg.errors import DataError
from cloudseg.inference.rle import rle_encode, write_submission
from cloudseg.inference.sliding import Predictor, class_ids, fits_one_tile, sliding_logits, with_tta
from cloudseg.models.checkpoint import default_device, load_model
from cloudseg.schema import CLASS_NAMES


def find_pairs(source: str | Path) -> list[SampleFiles]:
    """Image pairs from a dataset root (its test/ split), a folder with rgb/ and ngr/, or one rgb/<name> file."""
    source = Path(source)
    if source.is_file():
        candidates = [source.parent.parent / "ngr" / f"{source.stem}{s}" for s in IMAGE_SUFFIXES]
        ngr = next((c for c in candidates if c.is_file()), None)
        if source.parent.name != "rgb" or ngr is None:
            raise DataError(f"{source}: a single image must lie in an rgb/ folder with its pair in ../ngr/")
        return [SampleFiles(source.stem, source, ngr)]
    split = source / "test" if (source / "test" / "rgb").is_dir() else source
    if not (split / "rgb").is_dir():
        raise DataError(f"{source}: no rgb/ and ngr/ folders (nor test/rgb/); expected image pairs to predict")
    samples, problems = pair_files(split, None)
    if problems:
        raise DataError(f"{split}: {len(problems)} problems: " + "; ".join(problems))
    return samples


# MiT's first stage works at 1/4 scale and shrinks its keys by 8 (later stages: 1/8 and 4, ...): a side of 4 * 8.
MIN_SIDE = 32


def runs_bf16(precision: str, device: torch.device) -> bool:
    """Whether a `precision` of auto, 32 or bf16 means bf16 autocast on `device`: auto is bf16 on GPUs only, as
    CPUs without bf16 instructions run it slower than fp32."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def model_predictor(
    model: torch.nn.Module, device: torch.device, precision: str = "auto", compile: bool = False
) -> Predictor:
    """The model as a predictor on `device`: channels_last (25% faster on a CPU too); bf16 autocast where
    `precision` says (auto: on GPUs); compiled for static shapes if asked, which pays over many tiles. Images
    with a side under MIN_SIDE are padded to it."""
    model = model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(dynamic=False)
        # A compiled model sees one shape (tile or image size, padded batches), so cuDNN's search for its fastest
        # convolution algorithms is made once and pays over every batch; uncompiled, images of many sizes would
        # each pay for a search.
        torch.backends.cudnn.benchmark = device.type == "cuda"
    bf16 = runs_bf16(precision, device)

    @torch.no_grad()
    def predict(rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        padding = (0, max(0, MIN_SIDE - width), 0, max(0, MIN_SIDE - height))
        rgb, aux = (t.to(device, non_blocking=True) for t in (rgb, aux))
        if any(padding):  # edge pixels repeated, and their logits cut off again
            rgb, aux = (F.pad(t, padding, mode="replicate") for t in (rgb, aux))
        rgb, aux = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, aux))
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return model(rgb, aux)[..., :height, :width]

    return predict


def pixel_predictor(predict: Predictor, device: torch.device) -> Predictor:
    """A predictor of uint8 pixels (B, C, H, W), as images are read, normalised on `device`: images and tiles
    travel there as a quarter of the bytes."""

    def from_pixels(rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return predict(*model_inputs(rgb.to(device), aux.to(device)))

    return from_pixels


def checkpoint_predictor(
    checkpoint: str | Path, cfg: PredictConfig, device: str | torch.device | None = None
) -> Predictor:
    """A release checkpoint's model as a predictor of uint8 pixels, with the precision and TTA of `cfg`, on
    `device` (default: GPU if any)."""
    device = default_device(device)
    model, _ = load_model(checkpoint, device)
    model_on_device = model_predictor(model, device, cfg.precision, cfg.compile)
    return pixel_predictor(with_tta(model_on_device, cfg.tta, cfg.scales), device)


def uncertainty_map(probabilities: torch.Tensor, kind: str) -> np.ndarray:
    """(K, H, W) probabilities -> (H, W) uint8: normalised entropy, or 1 - max probability, scaled to 0..255."""
    if kind == "entropy":
        value = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(0) / math.log(probabilities.shape[0])
    else:
        value = 1.0 - probabilities.max(0).values
    return (value.clamp(0, 1) * 255).round().byte().numpy()


def _in_order(pool: ThreadPoolExecutor, work: Callable, items: Iterable, ahead: int) -> Iterator[tuple]:
    """(item, work(item)) in the order of `items`, run in the pool's threads up to `ahead` items in advance."""
    pending = deque()
    for item in items:
        pending.append((item, pool.submit(work, item)))
        if len(pending) > ahead:
            item, future = pending.popleft()
            yield item, future.result()
    for item, future in pending:
        yield item, future.result()


def _same_size_runs(images: Iterable[tuple], batch_size: int, tile: int) -> Iterator[list[tuple]]:
    """Consecutive images of one size that fit in a tile, up to `batch_size` of them; a larger image alone (its
    tiles are batched instead)."""
    run = []
    for image in images:
        shape = image[1][0].shape  # (files, (rgb, nir))
        if run and (not fits_one_tile(*shape[:2], tile) or shape != run[0][1][0].shape or len(run) == batch_size):
            yield run
            run = []
        run.append(image)
    if run:
        yield run


def _logits(
    predictor: Predictor, rgb: torch.Tensor, aux: torch.Tensor, cfg: PredictConfig, device: torch.device
) -> torch.Tensor:
    """Logits (B, K, H, W) of a run of images: whole, as one batch (padded to `tile_batch` for a compiled model,
    which then sees one batch shape), or, for one image larger than a tile, its tiles blended."""
    if not fits_one_tile(*rgb.shape[-2:], cfg.tile):
        tiles = {"batch_size": cfg.tile_batch, "window": cfg.window, "fixed_batch": cfg.compile}
        return sliding_logits(predictor, rgb, aux, cfg.tile, cfg.overlap, device=device, **tiles)
    padding = cfg.tile_batch - len(rgb) if cfg.compile else 0
    return predictor(*(torch.cat((t, t[-1:].expand(padding, -1, -1, -1))) for t in (rgb, aux)))[: len(rgb)]


def write_outputs(
    files: SampleFiles, ids: np.ndarray, probabilities: torch.Tensor | None, output: Path, cfg: PredictConfig
) -> tuple[str, str]:
    """Writes one image's colour mask and the maps `cfg` asks for; returns its submission row."""
    colour = index_to_colour(ids)
    path = output / f"{files.name}.png"
    write_image(path, colour)
    if cfg.index_masks:
        write_image(output / "index" / f"{files.name}.png", ids)
    if cfg.probabilities:
        for name, plane in zip(CLASS_NAMES, probabilities, strict=False):
            write_image(output / "probabilities" / f"{files.name}_{name}.png", (plane * 255).round().byte().numpy())
    if cfg.uncertainty != "none":
        write_image(output / "uncertainty" / f"{files.name}.png", uncertainty_map(probabilities, cfg.uncertainty))
    return path.name, rle_encode(colour)


@dataclass
class Prediction:
    """What `predict` wrote, and where its wall time went: `seconds` in all; `times` the parts the main thread
    spent loading the model, waiting for images to be read, running the model on the first batch and on the rest
    (the host copies, forward pass and class ids back: it waits for the device) and waiting for outputs to be
    written."""

    masks: list[Path]
    seconds: float = 0.0
    times: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.times[part] += time.perf_counter() - started

    def timed(self, items: Iterable, part: str) -> Iterator:
        """`items`, the time spent waiting for each one added to `part`."""
        iterator = iter(items)
        while True:
            with self.timing(part):
                item = next(iterator, None)
            if item is None:
                return
            yield item

    def summary(self) -> str:
        parts = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in self.times.items())
        return f"{len(self.masks)} images in {self.seconds:.1f} s, {len(self.masks) / self.seconds:.1f} img/s ({parts})"


def predict(
    checkpoint: str | Path,
    source: str | Path,
    output: str | Path,
    cfg: PredictConfig,
    submission: str | Path | None = None,
    device: str | None = None,
) -> Prediction:
    """Writes `<output>/<name>.png` colour masks (label colours, BGR) of every pair; returns their paths and times.

    `cfg.io_threads` threads read the next images and write the last ones' outputs while the model runs (OpenCV's
    codecs release the GIL). Images of one size that fit in a tile go through the model `cfg.tile_batch` at a
    time, and only class ids (and probabilities, where asked for) come back from the device.
    """
    started = time.perf_counter()
    result = Prediction([])
    pairs = find_pairs(source)
    device = default_device(device)
    with result.timing("loading the model"):
        predictor = checkpoint_predictor(checkpoint, cfg, device)
    output = Path(output)
    wants_probabilities = cfg.probabilities or cfg.uncertainty != "none"
    rows, writes = [], deque()
    threads = cfg.io_threads or codec_threads()
    with ThreadPoolExecutor(threads) as pool, Progress(transient=True) as progress:
        task = progress.add_task("predicting", total=len(pairs))
        images = _in_order(pool, lambda files: read_sample(files)[:2], pairs, ahead=2 * cfg.tile_batch)
        runs = result.timed(_same_size_runs(images, cfg.tile_batch, cfg.tile), "waiting for images")
        for index, run in enumerate(runs):
            # The first batch also pays for the device's lazy start (kernels loaded, libraries set up) and for any
            # compilation: apart, so that the rest shows the steady pace.
            with result.timing("model" if index else "model, first batch"):
                rgb = stack_chw([rgb for _, (rgb, _) in run])
                aux = stack_chw([nir for _, (_, nir) in run])
                logits = _logits(predictor, rgb, aux, cfg, device)
                ids = class_ids(logits).byte().cpu().numpy()
                probabilities = logits.float().softmax(1).cpu() if wants_probabilities else [None] * len(run)
            for (files, _), image_ids, image_probabilities in zip(run, ids, probabilities, strict=True):
                writes.append(pool.submit(write_outputs, files, image_ids, image_probabilities, output, cfg))
            # Finished writes are collected as they come (an error stops the run at once), and at most a few
            # batches' outputs wait in memory.
            with result.timing("waiting for writes"):
                while writes and (writes[0].done() or len(writes) > 2 * cfg.tile_batch):
                    rows.append(writes.popleft().result())
                    progress.advance(task)
        with result.timing("waiting for writes"):
            for write in writes:
                rows.append(write.result())
                progress.advance(task)
    if submission:
        write_submission(rows, submission)
    result.masks = [output / name for name, _ in rows]
    result.seconds = time.perf_counter() - started
    return result
