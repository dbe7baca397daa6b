"""`cloudseg predict`: colour masks (and optionally index, probability and uncertainty maps) for image pairs, in
one process or shared by many (Lightning: devices, nodes, torchrun and SLURM launches)."""

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.progress import Progress

from cloudseg.config import PredictConfig, TrainerConfig
from cloudseg.data.io import IMAGE_SUFFIXES, codec_workers
from cloudseg.errors import CloudsegError, ConfigError
from cloudseg.files import check_writable
from cloudseg.inference.engine import MaskWriter, PairPrediction, Prediction, ScenePrediction
from cloudseg.inference.geotiff import GEOTIFF_SUFFIXES, NAME_THE_BANDS, SceneFile, SceneScaling
from cloudseg.inference.manifest import Manifest, input_files, run_identity
from cloudseg.inference.outputs import OutputWriters
from cloudseg.inference.predictor import Predictor, cpu_has_bf16
from cloudseg.inference.rle import mask_row, write_submission
from cloudseg.inference.sources import find_inputs
from cloudseg.launch import lightning_trainer, on_device, quiet_lightning
from cloudseg.models.checkpoint import checkpoint_paths
from cloudseg.schema import CLASS_NAMES
from cloudseg.signals import stop_at_once


def stale_temporaries(output: Path, names: list[str]) -> list[Path]:
    """The temporary files that a killed run left of these images' outputs (`files.atomic_path` names them
    `.<file>.<random>.tmp`; a scene's mask has a `.blocks.tif` beside its own)."""
    endings = (".png.", ".tif.", *(f"_{class_name}.png." for class_name in CLASS_NAMES))  # masks, scenes, maps
    prefixes = tuple(f".{name}{ending}" for name in names for ending in endings)
    found = [*output.rglob(".*.tmp"), *output.rglob(".*.blocks.tif")] if output.is_dir() else []
    return [path for path in found if path.name.startswith(prefixes)]


def predict(
    checkpoints: str | Path | Sequence[str | Path],
    source: str | Path,
    output: str | Path,
    cfg: PredictConfig,
    submission: str | Path | None = None,
    device: str | None = None,
    overwrite: bool = False,
    trainer: TrainerConfig | None = None,
    scaling: SceneScaling | None = None,
) -> Prediction:
    """Writes `<output>/<name>.png` colour masks (label colours, BGR) of every pair, or `<output>/<name>.tif`
    class maps (cloud-optimised GeoTIFFs) of every GeoTIFF scene, that `source` names (`sources.find_inputs`),
    from one checkpoint or the average of several; returns their paths and times. Scenes need their `scaling`.

    `<output>/manifest.jsonl` records each image as its outputs are written; a rerun skips the images it shows
    done by the same checkpoints and settings with their files intact (`overwrite` redoes them), so a killed run
    continues where it stopped and ends with the same files as an uninterrupted one.

    `trainer`'s accelerator, devices, strategy and nodes say where the model runs (default: one device, the GPU
    if there is one; `device` names one); with several processes each predicts its share of the images, and the
    first writes the submission once all are done. The outputs are the same bytes in any number of processes.

    `cfg.io_workers` processes read the next pairs, and as many write the last ones' outputs, while the model
    runs; threads would hold the GIL that the model's thread needs to launch each operation. Pairs of one size
    that fit in a tile go through the model `cfg.tile_batch` at a time, and only uint8 class ids (and maps, where
    asked for) come back from the device.
    """
    started = time.perf_counter()
    result = Prediction([])
    output = Path(output)
    if output.suffix.lower() in (*IMAGE_SUFFIXES, *GEOTIFF_SUFFIXES) or output.is_file():
        raise ConfigError(
            f"--output {output}: predict writes a mask for each image (<name>.png; <name>.tif of a GeoTIFF scene) "
            "into a folder; name a folder"
        )
    inputs = find_inputs(source)
    scenes = isinstance(inputs[0], SceneFile)
    if scenes and scaling is None:
        raise ConfigError(f"{source}: GeoTIFF scenes; {NAME_THE_BANDS}")
    if scenes and submission:
        raise ConfigError("--submission encodes masks of image pairs; GeoTIFF scenes' masks are the GeoTIFFs")
    if submission:
        check_writable(submission)
    if not scenes and scaling is not None:
        raise ConfigError(f"--bands, --sensor, --scale and --offset are for GeoTIFF scenes; {source} holds image pairs")
    trainer = lightning_trainer(
        on_device(trainer or TrainerConfig(devices=1), device),
        precision="32-true",  # the predictor runs its own precision (`cfg.precision`)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # MaskWriter's counts images, not batches
        enable_model_summary=False,
        use_distributed_sampler=False,  # each module deals out its own items (`engine.dealt`)
    )
    with result.timing("loading the model"):
        predictor = Predictor.from_checkpoint(checkpoints, trainer.strategy.root_device, cfg)
    cfg = predictor.cfg
    fp32_cpu = cfg.precision == "auto" and cfg.runtime == "torch" and predictor.device.type == "cpu"
    with result.timing("checking earlier outputs"):
        identity = run_identity(checkpoint_paths(checkpoints), cfg, predictor.device, predictor.bf16, scaling)
        manifest = Manifest(output, identity)
        done = set() if overwrite else {item.name for item in inputs if manifest.done(item)}
        todo = [item for item in inputs if item.name not in done]
        files = {item.name: input_files(item) for item in todo}
    if todo and fp32_cpu and cpu_has_bf16():
        result.notes.append("this CPU has bf16 instructions: --predict.precision bf16 runs the model faster (what "
                            "it gains and changes: docs/PERFORMANCE.md)")  # fmt: skip
    # the reading and writing processes of every process on this machine share its cores
    workers = cfg.io_workers or max(1, codec_workers() // trainer.num_devices)
    progress = Progress(transient=True)
    with OutputWriters(output, cfg, workers, pending=2 * cfg.tile_batch) as writers:
        writer = MaskWriter(writers, manifest, files, result, progress, stale_temporaries(output, list(files)),
                            total=len(inputs), done=len(done))  # fmt: skip
        trainer.callbacks.append(writer)
        if scenes:
            module = ScenePrediction(predictor, todo, scaling, output, result, progress)
        else:
            module = PairPrediction(predictor, todo, workers, result, progress)
        failure = None
        try:
            with quiet_lightning(), stop_at_once(), warnings.catch_warnings():
                # MaskWriter needs no batch indices (a batch names its images), which a loader of whole items lacks
                warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
                warnings.filterwarnings("ignore", ".*LeafSpec.*deprecated")  # inside Lightning
                if todo:  # the same in every process: all of them predict, or none
                    trainer.predict(module, return_predictions=False)
        except CloudsegError as error:  # a damaged image, a full disk, a signal: the other processes hear of it
            failure = error
    written = gathered((writer.rows, result.megapixels, failure), writer.group)
    failures = [failed for _, _, failed in written if failed is not None]
    if failures:  # every process stops with it; the CLI's first process says what failed
        raise failure or failures[0]
    result.megapixels = sum(megapixels for _, megapixels, _ in written)
    result.main = trainer.is_global_zero
    if submission and result.main:
        with result.timing("checking earlier outputs"):
            rows = [mask_row(output / f"{name}.png") for name in sorted(done)]
        write_submission([*rows, *(row for rows, _, _ in written for row in rows)], submission)
    result.masks = [output / f"{item.name}{'.tif' if scenes else '.png'}" for item in inputs]
    result.skipped = len(done)
    result.seconds = time.perf_counter() - started
    return result


def gathered(value: object, group: object | None) -> list:
    """`value` of every process of a distributed run, in rank order, through `group` (of this process alone
    otherwise)."""
    if group is None:
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value, group=group)
    return values
