"""`cloudseg predict` as a Lightning run, so that one process or many (devices, nodes, torchrun or SLURM launches)
share the images: `PairPrediction` runs the `Predictor` on its process's share, `MaskWriter` writes each batch's
outputs as it finishes and records them in the manifest.

A process's share is whole items of `PairRuns` (`dealt` deals them out), each a fixed run of consecutive images:
every image goes through the model in the same batch, tile for tile, whatever the number of processes, so the
outputs are the same bytes.
"""

import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import stack_chw
from cloudseg.data.io import SampleFiles, read_sample
from cloudseg.errors import DataError
from cloudseg.inference.geotiff import SceneFile, SceneScaling, predict_scene, scene_entry
from cloudseg.inference.manifest import Manifest
from cloudseg.inference.outputs import ImageOutputs, OutputWriters, Written
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.sliding import TileProgress, tile_count
from cloudseg.metrics import class_ids
from cloudseg.signals import ignore_stop_signals

log = logging.getLogger("cloudseg")
GATHER_TIMEOUT = timedelta(days=7)


def uncertainty_map(probabilities: torch.Tensor, kind: str) -> torch.Tensor:
    """(..., K, H, W) probabilities -> (..., H, W) uint8: normalised entropy, or 1 - max probability, scaled to
    0..255."""
    if kind == "entropy":
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-3)
        value = entropy / math.log(probabilities.shape[-3])
    else:
        value = 1.0 - probabilities.max(-3).values
    return (value.clamp(0, 1) * 255).round().byte()


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


def _same_size_runs(images: Iterable[tuple], batch_size: int, tile: int, overlap: int) -> Iterator[list[tuple]]:
    """Consecutive images of one size, up to `batch_size` of them, whose tiles share the model's batches: images
    that fit in a tile, or larger ones of fewer tiles than a batch (a GPU's batch stays full with images of a
    few tiles each); an image of a batch of tiles or more goes alone."""
    for shape, same in itertools.groupby(images, key=lambda image: image[1][0].shape):  # (files, (rgb, nir))
        same = list(same)
        size = 1 if tile_count(*shape[:2], tile, overlap) >= batch_size else batch_size
        for start in range(0, len(same), size):
            yield same[start : start + size]


class PairRuns(Dataset):
    """Image pairs, `batch_size` consecutive ones to an item, read in a DataLoader's worker process: the item is
    their runs (names, RGB (B, 3, H, W), NIR (B, 1, H, W)), uint8 and channels_last, each images of one size
    stacked (`_same_size_runs`). One transfer a batch, not one an image, and the stacking done in the worker: the
    process that runs the model only receives. A pair that cannot be read makes the item its error message,
    which `PairPrediction` raises."""

    def __init__(self, pairs: list[SampleFiles], batch_size: int, tile: int, overlap: int):
        self.pairs, self.batch_size, self.tile, self.overlap = pairs, batch_size, tile, overlap

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
            for run in _same_size_runs(images, self.batch_size, self.tile, self.overlap)
        ]


@dataclass
class Prediction:
    """What `predict` wrote, and where its wall time went: `masks` of every image, `skipped` of them done by an
    earlier run; `seconds` in all; `times` the parts this process spent loading the model, checking an earlier
    run's outputs, waiting for images to be read, running the model on the first batch and on the rest (the host
    copies, forward pass and class ids back: it waits for the device) and waiting for outputs to be written.
    `main`: whether this is the process that reports (the first of a distributed run)."""

    masks: list[Path]
    seconds: float = 0.0
    times: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    skipped: int = 0  # images done by an earlier run, as the manifest shows
    megapixels: float = 0.0  # of the images predicted by this run
    main: bool = True
    notes: list[str] = field(default_factory=list)  # advice to print after the summary
    since: float = 0.0  # when the wait for the next batch began

    @contextmanager
    def timing(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.times[part] += time.perf_counter() - started

    def waited(self, part: str) -> None:
        """Adds the time since `since` to `part`, and starts the next wait."""
        now = time.perf_counter()
        self.times[part] += now - self.since
        self.since = now

    def summary(self) -> str:
        parts = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in self.times.items())
        done = len(self.masks) - self.skipped
        rate = f"{done / self.seconds:.1f} img/s, {self.megapixels / self.seconds:.2f} Mpx/s"
        skipped = f"; {self.skipped} done before, skipped" if self.skipped else ""
        return f"{done} images in {self.seconds:.1f} s, {rate} ({parts}){skipped}"


def dealt(items: int, rank: int, processes: int) -> range:
    """The items of process `rank` of `processes`: dealt out in turn, so that shares differ by one item at most;
    a process may have none (fewer items than processes), which Lightning's own prediction sampler refuses."""
    return range(rank, items, processes)


@contextmanager
def tile_task(progress: Progress, name: str) -> Iterator[TileProgress]:
    """A progress line of one image's tiles, under the count of images, there while the image is predicted
    (only an image larger than a tile reports tiles)."""
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task(f"  {name}: tiles", total=total)
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            progress.remove_task(task)


class Predicting(L.LightningModule):
    """What both kinds of input share: the predictor, which keeps its model on its own device and precision (the
    model is not this module's parameter, so Lightning neither moves nor wraps it), and each image's timing and
    tile progress."""

    def __init__(self, predictor: Predictor, result: Prediction, progress: Progress):
        super().__init__()
        self.predictor, self.result, self.progress = predictor, result, progress
        self.allow_zero_length_dataloader_with_multiple_devices = True  # fewer items than processes: some idle
        self.seconds: dict[str, float] = {}  # each image's share of its run's model time (a run is of one size)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return batch  # the predictor moves what runs on the device (a scene's tiles, not the scene)

    @contextmanager
    def predicting(self, names: list[str]) -> Iterator[TileProgress]:
        """Times the model on these images (the first batch apart: it also pays for the device's lazy start and
        any compilation, so that the rest shows the steady pace) and shows their tiles' progress."""
        started = time.perf_counter()
        part = "model" if "model, first batch" in self.result.times else "model, first batch"
        shown = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"
        with self.result.timing(part), tile_task(self.progress, shown) as on_tiles:
            yield on_tiles
        self.seconds.update(dict.fromkeys(names, (time.perf_counter() - started) / len(names)))


class PairPrediction(Predicting):
    """The predictor over the pairs still to do; each batch's outputs are the batch's return value, for
    `MaskWriter`."""

    def __init__(self, predictor: Predictor, pairs: list[SampleFiles], workers: int, result: Prediction,
                 progress: Progress):  # fmt: skip
        super().__init__(predictor, result, progress)
        self.pairs, self.workers = pairs, workers

    def predict_dataloader(self) -> DataLoader:
        cfg = self.predictor.cfg
        runs = PairRuns(self.pairs, cfg.tile_batch, cfg.tile, cfg.overlap)
        return DataLoader(
            runs,
            batch_size=None,
            sampler=dealt(len(runs), self.trainer.global_rank, self.trainer.world_size),
            num_workers=self.workers,
            prefetch_factor=1 if self.workers else None,
            worker_init_fn=ignore_stop_signals,  # the parent stops them, after SIGINT or SIGTERM too
        )

    def images_of(self, rank: int, processes: int) -> int:
        """The number of images of process `rank`."""
        size = self.predictor.cfg.tile_batch
        items = dealt(-(-len(self.pairs) // size), rank, processes)
        return sum(len(self.pairs[i * size : (i + 1) * size]) for i in items)

    def predict_step(self, batch: list[tuple] | str) -> list[ImageOutputs]:
        self.result.waited("waiting for images")
        if isinstance(batch, str):
            raise DataError(batch)
        outputs = []
        for names, rgb, aux in batch:
            with self.predicting(names) as on_tiles:
                outputs.append(image_outputs(names, self.predictor.logits(rgb, aux, on_tiles), self.predictor.cfg))
        return outputs


class ScenePrediction(Predicting):
    """The predictor over GeoTIFF scenes, one an item: the step reads, predicts and writes a scene block by block
    (`predict_scene`: a scene is never whole in memory) and returns its manifest entry for `MaskWriter`."""

    def __init__(self, predictor: Predictor, scenes: list[SceneFile], scaling: SceneScaling, output: Path,
                 result: Prediction, progress: Progress):  # fmt: skip
        super().__init__(predictor, result, progress)
        self.scenes, self.scaling, self.output = scenes, scaling, output

    def predict_dataloader(self) -> DataLoader:
        sampler = dealt(len(self.scenes), self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(self.scenes, batch_size=None, sampler=sampler)

    def images_of(self, rank: int, processes: int) -> int:
        """The number of scenes of process `rank`."""
        return len(dealt(len(self.scenes), rank, processes))

    def predict_step(self, scene: SceneFile) -> list[Written]:
        self.result.waited("waiting for images")
        scaling = self.scaling
        with self.predicting([scene.name]) as on_tiles:
            mask = predict_scene(self.predictor, scene.path, self.output / f"{scene.name}.tif", scaling.bands,
                                 scaling.scale, scaling.offset_of(scene.path), on_tiles=on_tiles)  # fmt: skip
        return [(None, scene_entry(scene, mask))]


class MaskWriter(BasePredictionWriter):
    """Hands each batch's outputs to the writer processes and, as their files land, appends the images to the
    manifest (this process's own file: processes never append to one file) and keeps their submission rows.
    Before the first batch, the first process removes what killed runs left half-written, while the others
    wait."""

    def __init__(self, writers: OutputWriters, manifest: Manifest, inputs: dict[str, dict], result: Prediction,
                 progress: Progress, stale: Iterable[Path], total: int, done: int):  # fmt: skip
        super().__init__(write_interval="batch")
        self.writers, self.manifest, self.inputs, self.result = writers, manifest, inputs, result
        self.progress, self.stale, self.total, self.done = progress, stale, total, done
        self.rows: list[tuple[str, str]] = []
        self.group = None  # of all processes, for `predict.gathered`

    def setup(self, trainer: L.Trainer, pl_module: Predicting, stage: str) -> None:
        if trainer.is_global_zero:
            for path in self.stale:
                path.unlink(missing_ok=True)
        trainer.strategy.barrier()
        if trainer.world_size > 1:
            # The processes meet once more, at the end, to pool their rows and failures; a share may take hours
            # longer than another (shares are even in images, not pixels), beyond the default group's timeout.
            self.group = torch.distributed.new_group(backend="gloo", timeout=GATHER_TIMEOUT)
        self.manifest.write_as(trainer.global_rank)
        # shown by the first process, on a terminal (in a log or a pipe, it would only leave a blank line)
        self.progress.disable = not (trainer.is_global_zero and self.progress.console.is_terminal)
        self.progress.start()
        if trainer.world_size == 1:
            self.task = self.progress.add_task("predicting", total=self.total, completed=self.done)
        else:  # the first process shows its own share
            images = pl_module.images_of(trainer.global_rank, trainer.world_size)
            self.task = self.progress.add_task(f"predicting, process 1 of {trainer.world_size}", total=images)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.result.since = time.perf_counter()  # the first batch's wait includes the readers' start

    def write_on_batch_end(self, trainer, pl_module, prediction: list[ImageOutputs] | list[Written], *_) -> None:
        with self.result.timing("waiting for writes"):
            for outputs in prediction:  # a batch's arrays to write, or a scene's entry: written already
                written = self.writers.submit(outputs) if isinstance(outputs, ImageOutputs) else [outputs]
                self._record(pl_module, written)
        self.result.since = time.perf_counter()

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: Predicting) -> None:
        with self.result.timing("waiting for writes"):
            for written in self.writers.remaining():
                self._record(pl_module, written)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.progress.stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.progress.stop()

    def _record(self, pl_module: Predicting, written: list[Written]) -> None:
        self.rows.extend(row for row, _ in written if row is not None)
        entries = []
        for _, entry in written:
            seconds = pl_module.seconds.pop(entry["name"])
            rate = entry["mpx"] / max(seconds, 1e-9)
            entries.append(entry | {"seconds": round(seconds, 4), "mpx_per_s": round(rate, 4),
                                    "inputs": self.inputs[entry["name"]]})  # fmt: skip
            if entry["mpx"] >= 1:  # a scene: its pace is news; thousands of small tiles' would be noise
                log.info(f"{entry['name']}: {entry['mpx']:.1f} Mpx in {seconds:.1f} s, {rate:.2f} Mpx/s")
        self.manifest.add(entries)
        self.result.megapixels += sum(entry["mpx"] for _, entry in written)
        self.progress.advance(self.task, len(written))
