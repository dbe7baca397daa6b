"""`cloudseg predict`: colour masks (and optionally index, probability and uncertainty maps) for image pairs, in
one process or shared by many (Lightning: devices, nodes, torchrun and SLURM launches)."""

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from cloudseg.config import PredictConfig, TrainerConfig
from cloudseg.data.dataset import find_samples
from cloudseg.data.io import IMAGE_SUFFIXES, SampleFiles, codec_workers
from cloudseg.errors import ConfigError, DataError
from cloudseg.inference.engine import MaskWriter, PairPrediction, Prediction
from cloudseg.inference.manifest import Manifest, input_files, run_identity
from cloudseg.inference.outputs import OutputWriters
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.rle import mask_row, write_submission
from cloudseg.launch import lightning_trainer, on_device, quiet_lightning
from cloudseg.models.checkpoint import checkpoint_paths
from cloudseg.signals import stop_at_once


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


def stale_temporaries(output: Path, names: list[str]) -> list[Path]:
    """The temporary files that a killed run left of these images' outputs (`files.atomic_path` names them
    `.<file>.<random>.tmp`)."""
    prefixes = tuple(f".{name}{after}" for name in names for after in (".png.", "_"))
    return [path for path in (output.rglob(".*.tmp") if output.is_dir() else ()) if path.name.startswith(prefixes)]


def predict(
    checkpoints: str | Path | Sequence[str | Path],
    source: str | Path,
    output: str | Path,
    cfg: PredictConfig,
    submission: str | Path | None = None,
    device: str | None = None,
    overwrite: bool = False,
    trainer: TrainerConfig | None = None,
) -> Prediction:
    """Writes `<output>/<name>.png` colour masks (label colours, BGR) of every pair, from one checkpoint or the
    average of several; returns their paths and times.

    `<output>/manifest.jsonl` records each image as its outputs are written; a rerun skips the images it shows
    done by the same checkpoints and settings with their files intact (`overwrite` redoes them), so a killed run
    continues where it stopped and ends with the same files as an uninterrupted one.

    `trainer`'s accelerator, devices, strategy and nodes say where the model runs (default: one device, the GPU
    if there is one; `device` names one); with several processes each predicts its share of the images, and the
    first writes the submission once all are done. The outputs are the same bytes in any number of processes.

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
    trainer = lightning_trainer(
        on_device(trainer or TrainerConfig(devices=1), device),
        precision="32-true",  # the predictor runs its own precision (`cfg.precision`)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # MaskWriter's counts images, not batches
        enable_model_summary=False,
    )
    with result.timing("loading the model"):
        predictor = Predictor.from_checkpoint(checkpoints, trainer.strategy.root_device, cfg)
    cfg = predictor.cfg
    with result.timing("checking earlier outputs"):
        identity = run_identity(checkpoint_paths(checkpoints), cfg, predictor.device, predictor.bf16)
        manifest = Manifest(output, identity)
        done = set() if overwrite else {files.name for files in pairs if manifest.done(files)}
        todo = [files for files in pairs if files.name not in done]
        inputs = {files.name: input_files(files) for files in todo}
    # the reading and writing processes of every process on this machine share its cores
    workers = cfg.io_workers or max(1, codec_workers() // trainer.num_devices)
    with OutputWriters(output, cfg, workers, pending=2 * cfg.tile_batch) as writers:
        writer = MaskWriter(writers, manifest, inputs, result, stale_temporaries(output, list(inputs)),
                            total=len(pairs), done=len(done))  # fmt: skip
        trainer.callbacks.append(writer)
        with quiet_lightning(), stop_at_once(), warnings.catch_warnings():
            # MaskWriter needs no batch indices (a batch names its images), which a loader of whole items lacks
            warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
            warnings.filterwarnings("ignore", ".*LeafSpec.*deprecated")  # inside Lightning
            if todo:  # the same in every process: all of them predict, or none
                trainer.predict(PairPrediction(predictor, todo, workers, result), return_predictions=False)
    written = gathered((writer.rows, result.megapixels))
    result.megapixels = sum(megapixels for _, megapixels in written)
    result.main = trainer.is_global_zero
    if submission and result.main:
        with result.timing("checking earlier outputs"):
            rows = [mask_row(output / f"{name}.png") for name in sorted(done)]
        write_submission([*rows, *(row for rows, _ in written for row in rows)], submission)
    result.masks = [output / f"{files.name}.png" for files in pairs]
    result.skipped = len(done)
    result.seconds = time.perf_counter() - started
    return result


def gathered(value: object) -> list:
    """`value` of every process of a distributed run, in rank order (of this process alone otherwise)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values
