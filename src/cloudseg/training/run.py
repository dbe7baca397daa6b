"""`cloudseg train` and `cloudseg evaluate`: a run folder in, checkpoints, panels, curves and scores out."""

import csv
import dataclasses
import importlib
import json
import logging
import os
import time
import warnings
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.utilities import rank_zero_only

from cloudseg.config import Config, from_dict, to_dict
from cloudseg.data.datamodule import CloudDataModule
from cloudseg.data.dataset import CloudDataset, find_samples, prepare_sample
from cloudseg.data.split import load_split
from cloudseg.errors import ConfigError, DataError
from cloudseg.files import atomic_path
from cloudseg.inference.sliding import TTA_SETS, class_ids, with_tta
from cloudseg.models.checkpoint import checkpoint_paths, default_device, load_ensemble
from cloudseg.panels import grid, save_rgb
from cloudseg.training.callbacks import (
    PANEL_TITLES,
    AtomicCheckpointIO,
    BestRelease,
    CompilationNotice,
    LastCheckpoint,
    TrainingProgress,
    ValidationPanels,
    ValidationReport,
    prediction_row,
)
from cloudseg.training.losses import sqrt_inverse_weights
from cloudseg.training.metrics import class_names, confusion_metric, confusion_scores, flat_scores, format_table
from cloudseg.training.plots import plot_confusion
from cloudseg.training.task import SegmentationTask

log = logging.getLogger("cloudseg")
RUN_DIR_VARIABLE = "CLOUDSEG_RUN_DIR"


def new_run_dir(cfg: Config) -> Path:
    """runs/<name>/<timestamp>/, the same in every process of a distributed run."""
    if os.environ.get(RUN_DIR_VARIABLE):  # set by the first process; Lightning's DDP launcher passes it on
        return Path(os.environ[RUN_DIR_VARIABLE])
    # Under torchrun or SLURM all ranks start at once: name the run after the job so they agree.
    job = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_JOB_ID")
    stamp = f"job-{job}" if job and job != "none" else datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.run.output_dir) / cfg.run.name / stamp
    os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    return run_dir


def resume_checkpoint(resume: str) -> tuple[Path, Path]:
    """(run folder, last.ckpt) from either of them."""
    path = Path(resume)
    checkpoint = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not checkpoint.is_file():
        raise ConfigError(f"{resume}: no run folder with checkpoints/last.ckpt, nor a .ckpt file, to resume from")
    return checkpoint.parent.parent, checkpoint


def _extra_callbacks(paths: tuple[str, ...]) -> list[L.Callback]:
    callbacks = []
    for path in paths:
        module, _, name = path.partition(":")
        try:
            callbacks.append(getattr(importlib.import_module(module), name)())
        except (ImportError, AttributeError, ValueError) as error:
            raise ConfigError(
                f"trainer.callbacks: cannot load {path!r} ({error}); expected 'package.module:Class'"
            ) from error
    return callbacks


def _precision(cfg: Config) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def train(cfg: Config | None = None, resume: str | None = None) -> Path:
    """Trains a model as `cfg` says, or continues the run `resume` with its saved config; returns the run folder."""
    if (cfg is None) == (resume is None):
        raise ConfigError("train takes either a config or a run to resume, not both")
    if resume:
        run_dir, checkpoint = resume_checkpoint(resume)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        cfg, next_epoch = from_dict(Config, state["hyper_parameters"]["config"]), state["epoch"] + 1
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    else:
        run_dir, checkpoint, next_epoch = new_run_dir(cfg), None, None
    started = time.perf_counter()
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    datamodule = CloudDataModule(cfg.data, seed=cfg.trainer.seed)
    datamodule.setup("fit")  # checks the whole folder (or its cache) before anything is built
    if cfg.loss.class_weights == "sqrt_inverse":
        weights = sqrt_inverse_weights(datamodule.train_class_pixels())
        cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, class_weights=weights))
        log.info("class weights from the training split's pixel shares: %s", weights)
    checked = time.perf_counter()
    task = SegmentationTask(to_dict(cfg), start_weights=checkpoint is None)
    built = time.perf_counter()
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        num_nodes=cfg.trainer.num_nodes,
        precision=_precision(cfg),
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        gradient_clip_val=cfg.optim.grad_clip,
        deterministic=cfg.trainer.deterministic,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        use_distributed_sampler=False,  # EpochSampler splits the data between processes itself
        num_sanity_val_steps=0,
        logger=_csv_logger(run_dir, next_epoch),
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            BestRelease(run_dir),
            *([BestRelease(run_dir, "val_ema", "best_ema")] if cfg.trainer.ema_decay else []),
            ValidationReport(run_dir),
            ValidationPanels(run_dir, cfg.trainer.panels),
            TrainingProgress(),
            *([CompilationNotice()] if cfg.trainer.compile else []),
            LearningRateMonitor(logging_interval="step"),
            *_extra_callbacks(cfg.trainer.callbacks),
            LastCheckpoint(run_dir, cfg.trainer.checkpoint_every_s),  # last: it saves the others' state too
        ],
        enable_checkpointing=False,  # LastCheckpoint and BestRelease write the checkpoints
        enable_model_summary=False,  # its FLOPs column reads 0 without an example input; the log has the counts
        profiler=SimpleProfiler(run_dir, "profile") if cfg.trainer.profiler == "simple" else None,
    )
    if trainer.is_global_zero:
        with atomic_path(run_dir / "config.yaml") as temporary:
            temporary.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        datamodule.split.save(run_dir / "split.json")
        _log_to_file(run_dir / "train.log")
        log.info("run folder %s", run_dir)
        # Where a run's time goes outside its epochs (Lightning's profiler sees only the fit).
        log.info("start-up: dataset checked in %.1f s, model built in %.1f s", checked - started, built - checked)
        log.info("model %s: %s", cfg.model.name, _parameter_counts(task.model))
    fitting = time.perf_counter()
    with warnings.catch_warnings():
        # Not the user's to act on: the run folder holds config.yaml and split.json before the CSV logger starts
        # (it removes only metrics.csv, which _csv_logger carries over on resume), and Lightning 2.6 still uses
        # the pytree API torch 2.13 deprecates.
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    finished = time.perf_counter()
    if trainer.is_global_zero:
        log.info("fit took %.1f s, train() %.1f s in all", finished - fitting, finished - started)
    return run_dir


def _parameter_counts(model: torch.nn.Module) -> str:
    """'12.1M parameters: rgb 3.3M, aux 3.3M, ...', by the model's top-level parts."""

    def millions(module: torch.nn.Module) -> str:
        return f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}M"

    parts = ", ".join(f"{name} {millions(child)}" for name, child in model.named_children())
    return f"{millions(model)} parameters: {parts}"


def _csv_logger(run_dir: Path, next_epoch: int | None) -> CSVLogger:
    """Lightning's CSV logger; when resuming, the rows of finished epochs are kept (it deletes the file)."""
    logger = CSVLogger(run_dir, name="", version="")
    previous = run_dir / "metrics.csv"
    if next_epoch is not None and previous.is_file() and rank_zero_only.rank == 0:
        with previous.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) < next_epoch]
        writer = logger.experiment  # this removes the old file; its rows are handed back to be written again
        writer.metrics_keys = list(rows[0]) if rows else []
        writer.metrics = [{key: value for key, value in row.items() if value != ""} for row in rows]
    return logger


def _log_to_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("cloudseg", "lightning.pytorch"):
        logging.getLogger(name).addHandler(handler)


def evaluation_samples(checkpoints: list[Path], root: Path, split: str) -> list:
    """The samples of `split`: val or train (the runs' saved split, which must be one split for all the
    checkpoints), test (test/ with test_labels/), or a JSON list file of names from train/."""
    if split == "test":
        return find_samples(root / "test", root / "test_labels")
    samples = find_samples(root / "train", root / "train" / "label")
    if split in ("val", "train"):
        all_names, splits = [s.name for s in samples], set()
        for checkpoint in checkpoints:
            split_file = checkpoint.parent.parent / "split.json"
            if not split_file.is_file():
                raise DataError(f"{split_file}: the run's split is missing; pass a list file with --split <file.json>")
            splits.add(getattr(load_split(split_file, all_names), split))
        if len(splits) > 1:
            raise DataError(
                f"the checkpoints come from runs with different {split} splits (k folds?), so there is no one "
                f"{split} split to score them on: use --split test or a JSON list file of names"
            )
        names = set(splits.pop())
    else:
        path = Path(split)
        try:
            names = set(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise DataError(f"{split}: expected val, train, test or a JSON list of names ({error})") from error
    chosen = [s for s in samples if s.name in names]
    if not chosen:
        raise DataError(f"{root}: no images of split {split!r}")
    return chosen


@torch.no_grad()
def evaluate(
    checkpoints: str | Path | list[str | Path],
    root: str | Path,
    split: str = "val",
    output: str | Path | None = None,
    panels: int = 0,
    tta: str = "none",
) -> dict:
    """Scores a release checkpoint, or the average of several (an ensemble), on a split, optionally averaging
    over the flips or all 8 symmetries (`tta`); writes metrics.json, confusion.png (and panels) to `output`
    (default: beside the run, or for an ensemble in the first run's parent folder)."""
    if tta not in TTA_SETS:
        raise ConfigError(f"tta {tta!r}: expected one of {', '.join(TTA_SETS)}")
    checkpoints = checkpoint_paths(checkpoints)
    root = Path(root)
    device = default_device()
    model, headers = load_ensemble(checkpoints, device)
    predict = with_tta(model, tta)
    num_classes = from_dict(Config, headers[0]["config"]).model.num_classes
    names = class_names(num_classes)
    scored = Path(split).stem + ("" if tta == "none" else f"_tta-{tta}")
    run = checkpoints[0].parent.parent
    default = run / f"eval_{scored}" if len(checkpoints) == 1 else run.parent / f"eval_ensemble_{scored}"
    output = Path(output or default)
    dataset = CloudDataset(evaluation_samples(checkpoints, root, split))
    confusion = confusion_metric(num_classes).to(device)
    rows, row_names = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        batch = prepare_sample(sample, device)
        prediction = class_ids(predict(batch["rgb"], batch["aux"]))
        confusion.update(prediction, batch["mask"])
        if i < panels:
            rows.append(prediction_row(sample, prediction[0].cpu().numpy()))
            row_names.append(sample["name"])
    matrix = confusion.compute().cpu()
    scores = confusion_scores(matrix)
    result = {
        "checkpoints": [str(c) for c in checkpoints],
        "root": str(root),
        "split": split,
        "tta": tta,
        "images": len(dataset),
        **flat_scores(scores, names),
        "confusion": matrix.tolist(),
        "classes": list(names),
    }
    with atomic_path(output / "metrics.json") as temporary:
        temporary.write_text(json.dumps(result, indent=2) + "\n")
    plot_confusion(matrix.numpy(), names, output / "confusion.png")
    if rows:
        save_rgb(output / "panels.png", grid(rows, PANEL_TITLES, row_names))
    what = checkpoints[0].name if len(checkpoints) == 1 else f"the mean of {len(checkpoints)} checkpoints"
    log.info("%s on %d images of %s\n%s", what, len(dataset), split, format_table(scores, names))
    log.info("wrote %s and %s", output / "metrics.json", output / "confusion.png")
    return result
