"""`cloudseg predict`: colour masks (and optionally index, probability and uncertainty maps) for image pairs."""

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import find_samples, stack_chw
from cloudseg.data.io import IMAGE_SUFFIXES, SampleFiles, codec_workers, read_sample
from cloudseg.errors import ConfigError, DataError
from cloudseg.inference.manifest import Manifest, input_files, run_identity
from cloudseg.inference.outputs import ImageOutputs, OutputWriters, Written
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.rle import mask_row, write_submission
from cloudseg.inference.sliding import fits_one_tile
from cloudseg.metrics import class_ids
from cloudseg.models.checkpoint import checkpoint_paths
from cloudseg.signals import ignore_stop_signals


def find_pairs(source: str | Path) -> list[SampleFiles]:
    """Image pairs from a dataset root (its test/ split), a folder with rgb/ and ngr/, one rgb/<name> file, or a
    text file (.txt) that lists any of these, one a line (so an archive can be split between jobs)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.suffix.lower() == ".txt":
        return listed_pairs(source)
    if source.is_dir() and source.name in ("rgb", "ngr"):
        raise DataError(
            f"{source}: this is the {source.name}/ folder of a pair; pass the folder above it, {source.parent}"
        )
    if source.is_file():
        candidates = [source.parent.parent / "ngr" / f"{source.stem}{s}" for s in IMAGE_SUFFIXES]
        ngr = next((c for c in candidates if c.is_file()), None)
        if source.parent.name != "rgb" or ngr is None:
            raise DataError(f"{source}: a single image must lie in an rgb/ folder with its pair in ../ngr/")
        return [SampleFiles(source.stem, source, ngr)]
    split = source / "test" if (source / "test" / "rgb").is_dir() else source
    if not (split / "rgb").is_dir():
        raise DataError(f"{source}: no rgb/ and ngr/ folders (nor test/rgb/); expected image pairs to predict")
    return find_samples(split, None)


def listed_pairs(listing: Path) -> list[SampleFiles]:
    """The pairs of every source a text file lists, one a line (relative to the file's folder; blank lines and
    lines starting with # are skipped); two pairs of one name are an error, as their masks would collide."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{listing}: not a text file of paths, one a line ({error})") from error
    pairs, where = [], {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().endswith(".txt"):
            raise DataError(f"{listing}, line {number}: a list of sources cannot list another list ({line})")
        try:
            found = find_pairs(listing.parent / line)
        except DataError as error:
            raise DataError(f"{listing}, line {number}: {error}") from error
        for files in found:
            if files.name in where:
                raise DataError(f"{listing}, line {number}: a second image named {files.name} (the first is from "
                                f"line {where[files.name]}); their masks would overwrite each other")  # fmt: skip
            where[files.name] = number
        pairs += found
    if not pairs:
        raise DataError(f"{listing}: lists no images")
    return pairs


def remove_stale_temporaries(output: Path, names: list[str]) -> None:
    """Removes the temporary files that a killed run left of these images' outputs (`files.atomic_path` names
    them `.<file>.<random>.tmp`)."""
    prefixes = tuple(f".{name}{after}" for name in names for after in (".png.", "_"))
    for path in output.rglob(".*.tmp") if output.is_dir() else ():
        if path.name.startswith(prefixes):
            path.unlink(missing_ok=True)


def uncertainty_map(probabilities: torch.Tensor, kind: str) -> torch.Tensor:
    """(..., K, H, W) probabilities -> (..., H, W) uint8: normalised entropy, or 1 - max probability, scaled to
    0..255."""
    if kind == "entropy":
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-3)
        value = entropy / math.log(probabilities.shape[-3])
    else:
        value = 1.0 - probabilities.max(-3).values
    return (value.clamp(0, 1) * 255).round().byte()


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


class PairRuns(Dataset):
    """Image pairs, `batch_size` consecutive ones to an item, read in a DataLoader's worker process: the item is
    their runs (names, RGB (B, 3, H, W), NIR (B, 1, H, W)), uint8 and channels_last, each either images of one
    size that fit in a tile, stacked, or a larger image alone. One transfer a batch, not one an image, and the
    stacking done in the worker: the process that runs the model only receives. A pair that cannot be read
    makes the item its error message, which `read_runs` raises."""

    def __init__(self, pairs: list[SampleFiles], batch_size: int, tile: int):
        self.pairs, self.batch_size, self.tile = pairs, batch_size, tile

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def __getitem__(self, index: int) -> list[tuple[list[str], torch.Tensor, torch.Tensor]] | str:
        chunk = self.pairs[index * self.batch_size : (index + 1) * self.batch_size]
        try:
            images = [(files, read_sample(files)[:2]) for files in chunk]
        except DataError as error:
            return str(error)
        return [
            (
                [files.name for files, _ in run],
                stack_chw([rgb for _, (rgb, _) in run]),
                stack_chw([nir for _, (_, nir) in run]),
            )
            for run in _same_size_runs(images, self.batch_size, self.tile)
        ]


def read_runs(pairs: list[SampleFiles], cfg: PredictConfig, workers: int) -> Iterator[tuple]:
    """The runs of `PairRuns`, in order, read by `workers` processes (0: this one), each a batch ahead."""
    dataset = PairRuns(pairs, cfg.tile_batch, cfg.tile)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=1 if workers else None,
        worker_init_fn=ignore_stop_signals,  # the parent stops them, after SIGINT or SIGTERM too
    )
    for item in loader:
        if isinstance(item, str):
            raise DataError(item)
        yield from item


def image_outputs(names: list[str], logits: torch.Tensor, cfg: PredictConfig) -> ImageOutputs:
    """What to write of a batch's logits, made on their device: class ids, and the probability and uncertainty
    maps `cfg` asks for, as uint8 arrays (the host receives a quarter of float32's bytes and does no arithmetic)."""
    probabilities = uncertainty = None
    if cfg.probabilities or cfg.uncertainty != "none":
        softmax = logits.float().softmax(1)
        if cfg.probabilities:
            probabilities = (softmax * 255).round().byte().cpu().numpy()
        if cfg.uncertainty != "none":
            uncertainty = uncertainty_map(softmax, cfg.uncertainty).cpu().numpy()
    return ImageOutputs(names, class_ids(logits).byte().cpu().numpy(), probabilities, uncertainty)


@dataclass
class Prediction:
    """What `predict` wrote, and where its wall time went: `masks` of every image, `skipped` of them done by an
    earlier run; `seconds` in all; `times` the parts the main thread spent loading the model, checking an earlier
    run's outputs, waiting for images to be read, running the model on the first batch and on the rest (the host
    copies, forward pass and class ids back: it waits for the device) and waiting for outputs to be written."""

    masks: list[Path]
    seconds: float = 0.0
    times: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    skipped: int = 0  # images done by an earlier run, as the manifest shows
    megapixels: float = 0.0  # of the images predicted by this run

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
        done = len(self.masks) - self.skipped
        rate = f"{done / self.seconds:.1f} img/s, {self.megapixels / self.seconds:.2f} Mpx/s"
        skipped = f"; {self.skipped} done before, skipped" if self.skipped else ""
        return f"{done} images in {self.seconds:.1f} s, {rate} ({parts}){skipped}"


def predict(
    checkpoints: str | Path | Sequence[str | Path],
    source: str | Path,
    output: str | Path,
    cfg: PredictConfig,
    submission: str | Path | None = None,
    device: str | None = None,
    overwrite: bool = False,
) -> Prediction:
    """Writes `<output>/<name>.png` colour masks (label colours, BGR) of every pair, from one checkpoint or the
    average of several; returns their paths and times.

    `<output>/manifest.jsonl` records each image as its outputs are written; a rerun skips the images it shows
    done by the same checkpoints and settings with their files intact (`overwrite` redoes them), so a killed run
    continues where it stopped and ends with the same files as an uninterrupted one.

    `cfg.io_workers` processes read the next images, and as many write the last ones' outputs, while the model
    runs; threads would hold the GIL that the model's thread needs to launch each operation. Images of one size
    that fit in a tile go through the model `cfg.tile_batch` at a time, and only uint8 class ids (and maps, where
    asked for) come back from the device.
    """
    started = time.perf_counter()
    result = Prediction([])
    output = Path(output)
    if output.suffix.lower() in IMAGE_SUFFIXES or output.is_file():
        raise ConfigError(
            f"--output {output}: predict writes a <name>.png mask for each image into a folder; name a folder"
        )
    pairs = find_pairs(source)
    with result.timing("loading the model"):
        predictor = Predictor.from_checkpoint(checkpoints, device, cfg)
    cfg = predictor.cfg
    with result.timing("checking earlier outputs"):
        identity = run_identity(checkpoint_paths(checkpoints), cfg, predictor.device, predictor.bf16)
        manifest = Manifest(output, identity)
        done = set() if overwrite else {files.name for files in pairs if manifest.done(files)}
        todo = [files for files in pairs if files.name not in done]
        remove_stale_temporaries(output, [files.name for files in todo])
        rows = [mask_row(output / f"{name}.png") for name in sorted(done)] if submission else []
    inputs = {files.name: input_files(files) for files in todo}
    seconds: dict[str, float] = {}  # each image's share of its batch's model time (a batch is of one size)

    def record(written: list[Written]) -> None:
        rows.extend(row for row, _ in written)
        manifest.add([
            entry | {"seconds": round(seconds.pop(entry["name"]), 4), "inputs": inputs[entry["name"]]}
            for _, entry in written
        ])  # fmt: skip
        result.megapixels += sum(entry["mpx"] for _, entry in written)
        progress.advance(task, len(written))

    workers = cfg.io_workers or codec_workers()
    with (
        OutputWriters(output, cfg, workers, pending=2 * cfg.tile_batch) as writers,
        Progress(transient=True) as progress,
    ):
        task = progress.add_task("predicting", total=len(pairs), completed=len(done))
        runs = result.timed(read_runs(todo, cfg, workers), "waiting for images")
        for index, (names, rgb, aux) in enumerate(runs):
            # The first batch also pays for the device's lazy start (kernels loaded, libraries set up) and for any
            # compilation: apart, so that the rest shows the steady pace.
            batch_started = time.perf_counter()
            with result.timing("model" if index else "model, first batch"):
                outputs = image_outputs(names, predictor.logits(rgb, aux), cfg)
            seconds.update(dict.fromkeys(names, (time.perf_counter() - batch_started) / len(names)))
            with result.timing("waiting for writes"):
                record(writers.submit(outputs))
        with result.timing("waiting for writes"):
            for finished in writers.remaining():
                record(finished)
    if submission:
        write_submission(rows, submission)
    result.masks = [output / f"{files.name}.png" for files in pairs]
    result.skipped = len(done)
    result.seconds = time.perf_counter() - started
    return result
