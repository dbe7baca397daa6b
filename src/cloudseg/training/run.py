"""`cloudseg train` and `cloudseg evaluate`: a run folder in, checkpoints, panels, curves and scores out."""

import csv
import dataclasses
import importlib
import logging
import os
import signal
import time
import warnings
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.profilers import SimpleProfiler
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cloudseg.config import Config
from cloudseg.data.datamodule import CloudDataModule
from cloudseg.errors import ConfigError, InterruptError, WeightsError
from cloudseg.files import atomic_path
from cloudseg.launch import lightning_trainer
from cloudseg.memory import MemoryCheck, training_bytes
from cloudseg.models.checkpoint import read_header, save_release
from cloudseg.models.weights import resolve_weights
from cloudseg.sections import from_dict, to_dict
from cloudseg.signals import StopRequest
from cloudseg.training.calibration import calibrate
from cloudseg.training.callbacks import (
    PREVIOUS_CHECKPOINT,
    AtomicCheckpointIO,
    BestRelease,
    CompilationNotice,
    LastCheckpoint,
    StopOnSignal,
    TrainingProgress,
    ValidationPanels,
    ValidationReport,
)
from cloudseg.training.losses import sqrt_inverse_weights
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


CHECKPOINT_FILES = ("last.ckpt", PREVIOUS_CHECKPOINT)  # newest first


def read_training_state(checkpoint: Path) -> dict:
    """A `cloudseg train` checkpoint's state; a damaged or foreign file is an error naming it."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or damaged file raises many types; all mean the same to a user
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"{checkpoint}: damaged or truncated, it cannot be read ({reason})") from error
    if not isinstance(state, dict) or "epoch" not in state or "config" not in state.get("hyper_parameters", {}):
        raise WeightsError(f"{checkpoint}: not a checkpoint of `cloudseg train`")
    return state


def resume_state(resume: str | Path) -> tuple[Path, Path, dict]:
    """(run folder, checkpoint, its state) to continue from: the run's last.ckpt, or where that is damaged or
    missing, the one it replaced (previous.ckpt), saying so."""
    path = Path(resume)
    if path.suffix == ".safetensors":
        raise WeightsError(
            f"{path}: a release checkpoint holds weights only; --resume takes a run folder (or its "
            f"checkpoints/last.ckpt). To train on from these weights, start a run with --model.init_from {path}"
        )
    if path.is_dir():
        run_dir, candidates = path, [path / "checkpoints" / name for name in CHECKPOINT_FILES]
    elif path.is_file():
        run_dir, candidates = path.parent.parent, [path]
        if path.name == CHECKPOINT_FILES[0]:
            candidates.append(path.with_name(PREVIOUS_CHECKPOINT))
    else:
        raise ConfigError(f"{resume}: no such run folder or checkpoint to resume from")
    existing = [c for c in candidates if c.is_file()]
    if not existing:
        raise ConfigError(
            f"{resume}: no checkpoints/last.ckpt to resume from (a run writes it when its first epoch ends)"
        )
    damaged: list[str] = []
    for checkpoint in existing:
        try:
            state = read_training_state(checkpoint)
        except WeightsError as error:
            damaged.append(str(error))
            continue
        if damaged:
            # Set aside, so that the next save keeps this good checkpoint as previous.ckpt, not the damaged one.
            aside = existing[0].with_suffix(".ckpt.damaged")
            existing[0].replace(aside)
            log.warning(
                "%s; resuming from %s (the end of epoch %d) instead; the damaged file is kept as %s",
                damaged[0], checkpoint, state["epoch"], aside.name,
            )  # fmt: skip
        return run_dir, checkpoint, state
    fallback = "" if len(existing) > 1 else "; there is no earlier checkpoint to fall back to"
    raise WeightsError("; ".join(damaged) + f"{fallback}: the run must start again")


def job_restart(run_dir: Path, cfg: Config) -> tuple[Path, dict] | None:
    """The checkpoint to continue from when this is a job that its scheduler restarted (Slurm's requeue, a
    torchrun restart): the same job id names the same run folder, which holds the first attempt's last.ckpt."""
    if not run_dir.name.startswith("job-") or not any((run_dir / "checkpoints").glob("*.ckpt")):
        return None
    _, checkpoint, state = resume_state(run_dir)
    saved = from_dict(Config, state["hyper_parameters"]["config"])
    if cfg.loss.class_weights == "sqrt_inverse":  # they were resolved into numbers when the run started
        cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, class_weights=saved.loss.class_weights))
    if saved != cfg:
        raise ConfigError(
            f"{run_dir}: this job's run folder holds a run with another config; continue it with `cloudseg train "
            f"--resume {run_dir}`, or give this run another run.name"
        )
    log.info("job restarted: continuing %s from %s (the end of epoch %d)", run_dir, checkpoint.name, state["epoch"])
    return checkpoint, state


def _instance(path: str, setting: str):
    """An object of the class named by import path, "package.module:Class", built without arguments."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError, ValueError, TypeError) as error:
        raise ConfigError(f"{setting}: cannot load {path!r} ({error}); expected 'package.module:Class'") from error


def _loggers(cfg: Config, run_dir: Path, resumed: dict | None) -> list[Logger]:
    loggers = []
    for name in cfg.trainer.logger:
        if name == "csv":
            loggers.append(_csv_logger(run_dir, resumed))
        elif name == "tensorboard":
            try:
                # A resumed run drops what was logged after its checkpoint, as metrics.csv does.
                purge = resumed["global_step"] if resumed is not None else None
                loggers.append(TensorBoardLogger(run_dir, "", "", default_hp_metric=False, purge_step=purge))
            except ModuleNotFoundError as error:
                raise ConfigError(
                    "trainer.logger: tensorboard needs TensorBoard: pip install 'cloudseg[tensorboard]'"
                ) from error
        else:
            logger = _instance(name, "trainer.logger")
            if not isinstance(logger, Logger):
                raise ConfigError(
                    f"trainer.logger: {name!r} is not a Lightning logger (lightning.pytorch.loggers.Logger)"
                )
            loggers.append(logger)
    return loggers


def _precision(cfg: Config) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(cfg: Config, run_dir: Path, resumed: dict | None, stop: StopRequest) -> L.Trainer:
    """The Lightning trainer of a run, with cloudseg's callbacks, loggers and checkpoint writing."""
    extra_callbacks = [_instance(path, "trainer.callbacks") for path in cfg.trainer.callbacks]
    loggers = _loggers(cfg, run_dir, resumed)
    return lightning_trainer(
        cfg.trainer,
        default_root_dir=run_dir,
        max_epochs=cfg.trainer.max_epochs,
        precision=_precision(cfg),
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        gradient_clip_val=cfg.optim.grad_clip,
        deterministic=cfg.trainer.deterministic,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        use_distributed_sampler=False,  # EpochSampler splits the data between processes itself
        num_sanity_val_steps=0,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            StopOnSignal(stop),
            BestRelease(run_dir),
            *([BestRelease(run_dir, "val_ema", "best_ema")] if cfg.trainer.ema_decay else []),
            ValidationReport(run_dir),
            ValidationPanels(run_dir, cfg.trainer.panels),
            TrainingProgress(),
            *([CompilationNotice()] if cfg.trainer.compile else []),
            LearningRateMonitor(logging_interval="step"),
            *extra_callbacks,
            LastCheckpoint(run_dir, cfg.trainer.checkpoint_every_s),  # last: it saves the others' state too
        ],
        enable_checkpointing=False,  # LastCheckpoint and BestRelease write the checkpoints
        enable_model_summary=False,  # its FLOPs column reads 0 without an example input; the log has the counts
        profiler=SimpleProfiler(run_dir, "profile") if cfg.trainer.profiler == "simple" else None,
    )


def stopped(signum: int, run_dir: Path, trainer: L.Trainer) -> InterruptError:
    """The one line for a run that a signal stopped: what is kept, and how to go on."""
    saved = next((c.epoch for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    after = next(c.after_epoch for c in trainer.callbacks if isinstance(c, StopOnSignal))
    when = f"after epoch {after}" if after is not None else f"in epoch {trainer.current_epoch}"
    what = f"stopped by {signal.Signals(signum).name} {when}"
    if saved is None and not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return InterruptError(signum, f"{what}, before its first epoch ended: there is nothing to resume")
    kept = "checkpoints/last.ckpt " + (f"holds the end of epoch {saved}" if saved is not None else "is kept")
    return InterruptError(signum, f"{what}; {kept}: continue with `cloudseg train --resume {run_dir}`")


def train(cfg: Config | None = None, resume: str | None = None) -> Path:
    """Trains a model as `cfg` says, or continues the run `resume` with its saved config; returns the run folder.

    Everything that can be checked before the work starts is: settings (on loading the config), start weights,
    Lightning's device settings, the dataset and the crop against its images, and the memory the run will need.
    SIGINT or SIGTERM ends the run at the next batch with every file complete."""
    if (cfg is None) == (resume is None):
        raise ConfigError("train takes a config, or a run to resume: one of the two")
    inherited = os.environ.get(RUN_DIR_VARIABLE)
    try:
        with warnings.catch_warnings():
            # Not the user's to act on: the run folder holds config.yaml and split.json before the CSV logger
            # starts (it removes only metrics.csv, which _csv_logger carries over on resume), and Lightning 2.6
            # still uses the pytree API torch 2.13 deprecates.
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            return _train(cfg, resume)
    finally:  # the run folder is this run's: a later train() in the process starts a folder of its own
        if inherited is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)


def _train(cfg: Config | None, resume: str | None) -> Path:
    if resume:
        run_dir, checkpoint, state = resume_state(resume)
        cfg = from_dict(Config, state["hyper_parameters"]["config"])
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    else:
        run_dir = new_run_dir(cfg)
        checkpoint, state = job_restart(run_dir, cfg) or (None, None)
        # Start weights that cannot be found or read are refused before any data is read.
        if checkpoint is None and cfg.model.pretrained is not None:
            resolve_weights(cfg.model.pretrained)
        if checkpoint is None and cfg.model.init_from is not None:
            read_header(cfg.model.init_from)
    started = time.perf_counter()
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    stop = StopRequest()
    trainer = build_trainer(cfg, run_dir, state, stop)
    datamodule = CloudDataModule(cfg.data, seed=cfg.trainer.seed)
    datamodule.setup("fit")  # checks the whole folder (or its cache) before anything is built
    if cfg.loss.class_weights == "sqrt_inverse":
        weights = sqrt_inverse_weights(datamodule.train_class_pixels())
        cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, class_weights=weights))
        log.info("class weights from the training split's pixel shares: %s", weights)
    # Every process on a CPU shares the machine's memory; each GPU has its own.
    processes = trainer.num_devices if trainer.strategy.root_device.type == "cpu" else 1
    crop, batch = cfg.data.augment.crop_size, cfg.data.batch_size
    MemoryCheck(
        f"training {cfg.model.name} on batches of {batch} crops of {crop}² ({trainer.precision})"
        + (f" in {processes} processes" if processes > 1 else ""),
        processes * training_bytes(cfg.model, crop, batch, trainer.precision),
        trainer.strategy.root_device,
        "data.batch_size or data.augment.crop_size",
        "trainer.memory_check",
    ).apply(cfg.trainer.memory_check)
    checked = time.perf_counter()
    task = SegmentationTask(to_dict(cfg), start_weights=checkpoint is None)
    built = time.perf_counter()
    if trainer.is_global_zero:
        with atomic_path(run_dir / "config.yaml") as temporary:
            temporary.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        datamodule.split.save(run_dir / "split.json")
        _log_to_file(run_dir / "train.log")
        log.info("run folder %s", run_dir)
        # Where a run's time goes outside its epochs (Lightning's profiler sees only the fit).
        log.info("start-up: dataset checked in %.1f s, model built in %.1f s", checked - started, built - checked)
        log.info("model %s: %s", cfg.model.name, _parameter_counts(task.model))
        devices = f"{trainer.num_nodes} x {trainer.num_devices}" if trainer.num_nodes > 1 else trainer.num_devices
        log.info("on %s %s device(s), precision %s", devices, trainer.strategy.root_device.type, trainer.precision)
    fitting = time.perf_counter()
    with stop.handling():
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        except (InterruptError, SIGTERMException) as error:  # Lightning raises the latter on SIGTERM by itself
            raise stopped(getattr(error, "signum", signal.SIGTERM), run_dir, trainer) from error
    if stop:  # the fit stopped after an epoch, as StopOnSignal asked
        raise stopped(stop.signum, run_dir, trainer)
    fitted = time.perf_counter()
    validation = getattr(datamodule, "val_set", None)
    if validation is None and trainer.is_global_zero:
        _save_final(task, run_dir, trainer)
    if trainer.is_global_zero and cfg.trainer.calibration != "none" and validation is not None:
        for release in sorted((run_dir / "checkpoints").glob("best*.safetensors")):
            calibrate(release, validation, cfg.trainer.calibration, trainer.strategy.root_device, cfg.trainer.seed)
    finished = time.perf_counter()
    if trainer.is_global_zero:
        log.info(
            "fit took %.1f s, calibration %.1f s, train() %.1f s in all",
            fitted - fitting, finished - fitted, finished - started,
        )  # fmt: skip
    return run_dir


def _save_final(task: SegmentationTask, run_dir: Path, trainer: L.Trainer) -> None:
    """A run without a validation split has no best epoch: its releases are the last epoch's weights (and their
    moving average), as `final.safetensors` and `final_ema.safetensors`."""
    info = {"epoch": trainer.current_epoch - 1, "step": trainer.global_step}
    models = {"final": task.model, **({"final_ema": task.ema.module} if task.ema is not None else {})}
    for stem, model in models.items():
        save_release(model, dict(task.hparams["config"]), run_dir / "checkpoints" / f"{stem}.safetensors", info)
    log.info("no validation split, so no best epoch: checkpoints/final.safetensors holds the last epoch's weights")


def _parameter_counts(model: torch.nn.Module) -> str:
    """'12.1M parameters: rgb 3.3M, aux 3.3M, ...', by the model's top-level parts."""

    def millions(module: torch.nn.Module) -> str:
        return f"{sum(p.numel() for p in module.parameters()) / 1e6:.1f}M"

    parts = ", ".join(f"{name} {millions(child)}" for name, child in model.named_children())
    return f"{millions(model)} parameters: {parts}"


def _logged_before(row: dict, resumed: dict) -> bool:
    """Whether a metrics.csv row was logged before the checkpoint `resumed` was saved: a row of an epoch by its
    epoch, a learning rate (logged every few steps, with no epoch) by its step."""
    if row["epoch"]:
        return int(row["epoch"]) <= resumed["epoch"]
    return int(row["step"]) < resumed["global_step"]


def _csv_logger(run_dir: Path, resumed: dict | None) -> CSVLogger:
    """Lightning's CSV logger, keeping the rows logged before the checkpoint state `resumed` when resuming."""
    logger = CSVLogger(run_dir, name="", version="")
    previous = run_dir / "metrics.csv"
    if resumed is not None and previous.is_file() and rank_zero_only.rank == 0:
        with previous.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if _logged_before(row, resumed)]
        for row in rows:  # logged again: the logger removes the old file when it starts writing
            values = {key: int(value) if value.isdigit() else float(value) for key, value in row.items() if value}
            logger.log_metrics(values, step=values.pop("step"))
    return logger


def _log_to_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("cloudseg", "lightning.pytorch"):
        logging.getLogger(name).addHandler(handler)
