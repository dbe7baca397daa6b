"""Lightning trainers from the `trainer` section, for training and for prediction: where the processes run
(accelerator, devices, strategy, nodes; torchrun and SLURM launches are Lightning's to pick up), Lightning's
refusals as one line, its banners quiet."""

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from cloudseg.config import TrainerConfig
from cloudseg.errors import ConfigError
from cloudseg.models.checkpoint import default_device


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's informational lines (the banner of available devices, each process's registration) left out:
    cloudseg says which devices a command uses."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def lightning_trainer(settings: TrainerConfig, **trainer_arguments) -> L.Trainer:
    """A Lightning trainer on the accelerator, devices, strategy and nodes of `settings`; Lightning checks them
    here, before any data is read."""
    try:
        with quiet_lightning():
            return L.Trainer(
                accelerator=settings.accelerator,
                devices=settings.devices,
                strategy=settings.strategy,
                num_nodes=settings.num_nodes,
                **trainer_arguments,
            )
    except (ValueError, TypeError, MisconfigurationException) as error:  # an unknown strategy, devices it lacks
        raise ConfigError(
            f"Lightning refused trainer.accelerator {settings.accelerator!r}, devices {settings.devices!r}, "
            f"strategy {settings.strategy!r} on this machine: {str(error).strip().splitlines()[0]}"
        ) from error


def on_device(settings: TrainerConfig, device: str | torch.device | None) -> TrainerConfig:
    """`settings` with the accelerator and devices of `--device` (cpu, cuda, cuda:N), where it is given."""
    if device is None:
        return settings
    chosen = default_device(device)  # checked as every command checks --device
    if chosen.type == "cpu":
        return dataclasses.replace(settings, accelerator="cpu", devices=1)
    return dataclasses.replace(settings, accelerator="cuda", devices=f"{chosen.index or 0},")
