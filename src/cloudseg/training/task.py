"""The LightningModule: model, loss, optimiser groups, schedule, EMA and validation scores of one training run."""

import math
import time

import lightning as L
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from cloudseg.config import WITHOUT_CUDA_GRAPHS, Config, OptimConfig
from cloudseg.errors import CloudsegError
from cloudseg.metrics import class_ids, class_names, confusion_metric, confusion_scores
from cloudseg.models.checkpoint import load_weights_into
from cloudseg.models.registry import build_model
from cloudseg.sections import from_dict
from cloudseg.training.ema import ExponentialAverage
from cloudseg.training.losses import SegmentationLoss


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs fused on `device`: one kernel for all parameters, with the step counts kept on the
    device (unfused AdamW reads them back to the host every step)."""
    return device.type in ("cuda", "cpu")


class NonFiniteLossError(CloudsegError):
    """The training loss became NaN or infinite."""


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float, power: float) -> float:
    """Multiplier of a group's base learning rate after `step` optimiser steps of `total`.

    Linear warmup from 0 over `warmup` steps, then cosine or polynomial decay down to `min_ratio` (min_lr / base).
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule in ("constant", "plateau"):
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else (1.0 - progress) ** power
    return min_ratio + (1.0 - min_ratio) * decay


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Encoders and the rest (fusion, decoder) with their own learning rates; no weight decay on norms, biases
    and other one-dimensional parameters."""
    encoder_ids = {id(p) for encoder, _ in model.encoder_streams().values() for p in encoder.parameters()}
    groups = {(part, decay): [] for part in ("encoder", "head") for decay in (True, False)}
    for param in model.parameters():
        if param.requires_grad:
            groups[("encoder" if id(param) in encoder_ids else "head", param.ndim > 1)].append(param)
    return [
        {
            "name": f"{part}{'' if decay else '_no_decay'}",
            "params": params,
            "lr": cfg.lr_encoder if part == "encoder" else cfg.lr_head,
            "weight_decay": cfg.weight_decay if decay else 0.0,
        }
        for (part, decay), params in groups.items()
        if params
    ]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int):
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    # The floor is min_lr relative to each group's rate; a rate of 0 (a frozen part) stays 0.
    floors = [min(1.0, cfg.min_lr / group["lr"]) if group["lr"] > 0 else 1.0 for group in optimizer.param_groups]
    factors = [
        lambda step, floor=floor: lr_factor(step, total_steps, warmup, cfg.schedule, floor, cfg.poly_power)
        for floor in floors
    ]
    return LambdaLR(optimizer, factors)


class SegmentationTask(L.LightningModule):
    """Trains one model of the registry on (rgb, aux, mask) batches. `config` is the resolved config as a plain
    mapping, saved in every Lightning checkpoint so a run can be resumed and reproduced from it alone;
    `start_weights=False` skips `model.pretrained` and `model.init_from` (for a resume)."""

    def __init__(self, config: dict, start_weights: bool = True):
        super().__init__()
        self.save_hyperparameters("config")
        self.cfg = from_dict(Config, config)
        m = self.cfg.model
        # A resumed run takes every weight from its checkpoint; it must not need the start weights any more.
        self.model = build_model(m, pretrained=m.pretrained if start_weights else None)
        if m.init_from and start_weights:
            load_weights_into(self.model, m.init_from, m.name, m.num_classes, m.aux_channels)
        if self.cfg.trainer.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = SegmentationLoss(self.cfg.loss)
        self.confusions = nn.ModuleDict({"val": confusion_metric(m.num_classes)})  # by the prefix of their scores
        self.ema = None
        if self.cfg.trainer.ema_decay:
            self.ema = ExponentialAverage(self.model, self.cfg.trainer.ema_decay)
            self.confusions["val_ema"] = confusion_metric(m.num_classes)
            self._ema_step = 0
        if self.cfg.trainer.compile:
            # In place, so the state_dict keeps its keys and holds each weight once. Static shapes: the training
            # crops compile once (a dynamic-shape graph is slower, and inductor has failed to lower this model's
            # token reshapes with symbolic sizes); validation runs uncompiled.
            mode = self.cfg.trainer.compile_mode
            self.model.compile(dynamic=False, mode=mode)
            # The loss without CUDA graphs: it launches few kernels, and a graphed function fed by another one's
            # outputs has failed (pytorch/pytorch#160281). The benchmark compiles its step so too.
            self.loss.compile(dynamic=False, mode=WITHOUT_CUDA_GRAPHS.get(mode, mode))
        self.val_scores: dict[str, dict[str, torch.Tensor]] = {}

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.model(rgb, aux)

    def eager(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """The model's forward, never its compiled call: the training crops compile once, but whole validation
        images, a last batch of another size or a single panel image would each be compiled anew, which costs
        far more than running them eagerly."""
        return self.model.forward(rgb, aux)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:
            checkpoint["ema_updates"] = self.ema.updates

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints of cloudseg 0.1.0 also stored every weight a second time, under `network.`, and counted
        # the average's updates on the device (`ema.n_averaged`).
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("network.")]:
            del state[key]
        if self.ema is not None:
            counted = state.pop("ema.n_averaged", None)
            self.ema.updates = checkpoint.get("ema_updates", int(counted) if counted is not None else 0)

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.trainer.channels_last:
            return (batch[k].contiguous(memory_format=torch.channels_last) for k in ("rgb", "aux"))
        return batch["rgb"], batch["aux"]

    def on_train_batch_start(self, batch: dict, batch_index: int) -> None:
        # Dropout and stochastic depth draw from a generator seeded per epoch, so a run resumed at an epoch
        # boundary draws exactly what the uninterrupted run drew. (Not in on_train_epoch_start: Lightning skips
        # that hook for the first epoch after resuming from a checkpoint written at an epoch's end.)
        if batch_index == 0:
            torch.manual_seed(self.cfg.trainer.seed * 100_003 + self.current_epoch)
            self._first_non_finite = torch.full((3,), math.nan, device=self.device, dtype=torch.float64)
            self._epoch_images, self._epoch_started, self._train_seconds = 0, time.perf_counter(), None
            torch.backends.cudnn.benchmark = self.cfg.trainer.cudnn_benchmark and not self.cfg.trainer.deterministic

    def sync_every(self) -> int:
        """Batches between reads of the loss from the device: each read waits for the GPU to finish."""
        every = self.cfg.trainer.sync_every
        return every or (1 if self.device.type == "cpu" else self.cfg.trainer.log_every_n_steps)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        logits = self(*self._inputs(batch))
        loss, parts = self.loss(logits, batch["mask"])
        # The first non-finite loss (step, batch, value) is noted on the device, not read back here: reading it
        # would make the host wait for the GPU every step. on_train_batch_end looks at it every sync_every
        # batches and at the epoch's end, before validation and before any checkpoint. (Python numbers go in
        # as kernel arguments; a tensor made from them on the host would be a blocking copy.)
        first = self._first_non_finite
        new = ~torch.isfinite(loss.detach()) & torch.isnan(first[0])
        values = (self.global_step, batch_index, loss.detach().double())
        self._first_non_finite = torch.stack([torch.where(new, v, old) for v, old in zip(values, first, strict=True)])
        batch_size = batch["mask"].shape[0]
        self._epoch_images += batch_size
        # Logged tensors stay on the device until the logger writes them, except progress-bar ones, which
        # Lightning reads back after every batch: the bar (TrainingProgress) reads the loss itself at sync points.
        # The learning rate, a Python number, would be copied to the device every step: LearningRateMonitor and
        # the bar report it instead.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=batch_size)
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def on_train_epoch_end(self) -> None:
        # Training batches alone (their clock stops at the last batch, which synchronised), and the whole epoch:
        # validation and the callbacks' work at its end (checkpoints, panels) are the difference.
        epoch_seconds = time.perf_counter() - self._epoch_started
        train_seconds = self._train_seconds or epoch_seconds  # None where the epoch stopped early (max_steps)
        self.log("train/images_per_s", self._epoch_images * self.trainer.world_size / train_seconds)
        self.log("time/epoch_s", epoch_seconds)

    def on_validation_epoch_start(self) -> None:
        self._validation_started = time.perf_counter()
        torch.backends.cudnn.benchmark = False  # whole images, perhaps of many sizes: each would be timed anew

    def on_train_batch_end(self, outputs, batch, batch_index: int) -> None:
        last = batch_index + 1 == self.trainer.num_training_batches
        if last or (batch_index + 1) % self.sync_every() == 0:
            step, bad_batch, value = self._first_non_finite.tolist()
            if last:
                self._train_seconds = time.perf_counter() - self._epoch_started
            if not math.isnan(step):
                raise NonFiniteLossError(
                    f"the training loss is {value} at step {int(step)} (epoch {self.current_epoch}, batch "
                    f"{int(bad_batch)}); the run stopped at batch {batch_index}, before validating or saving any "
                    "weights after it. Resume from the last checkpoint with `cloudseg train --resume <run folder>`, or "
                    "start again with a lower learning rate or --trainer.precision 32"
                )
        # global_step counts optimiser steps, so with gradient accumulation the average moves once per step.
        if self.ema is not None and self.global_step != self._ema_step:
            self.ema.update(self.model)
            self._ema_step = self.global_step

    def validation_step(self, batch: dict, batch_index: int) -> None:
        rgb, aux = self._inputs(batch)
        logits = self.eager(rgb, aux)
        loss, _ = self.loss.forward(logits, batch["mask"])
        self.log("val/loss", loss, on_epoch=True, batch_size=batch["mask"].shape[0], sync_dist=True)
        self.confusions["val"].update(class_ids(logits), batch["mask"])
        if self.ema is not None:
            self.confusions["val_ema"].update(class_ids(self.ema(rgb, aux)), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        for prefix, metric in self.confusions.items():
            scores = confusion_scores(metric.compute())
            metric.reset()
            self.val_scores[prefix] = scores
            self.log(f"{prefix}/mIoU", scores["mIoU"].float())
            self.log(f"{prefix}/accuracy", scores["accuracy"].float())
            for name, value in zip(class_names(self.cfg.model.num_classes), scores["iou"], strict=True):
                self.log(f"{prefix}/iou_{name}", torch.nan_to_num(value.float()))
        self.log("time/validation_s", time.perf_counter() - self._validation_started)  # compute() synchronised

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clips the gradients' global norm. Lightning's mixed-precision plugin refuses to clip for a fused
        optimizer, whose step unscales fp16 gradients itself; so they are unscaled here first when a scaler runs
        (the fused step then skips it), and bf16 has none."""
        if not gradient_clip_val:
            return
        if (scaler := getattr(self.trainer.precision_plugin, "scaler", None)) is not None:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)

    def configure_optimizers(self):
        cfg = self.cfg.optim
        groups = parameter_groups(self.model, cfg)
        optimizer = torch.optim.AdamW(groups, betas=cfg.betas, fused=fused_adamw(self.device))
        if cfg.schedule == "plateau":
            scheduler = ReduceLROnPlateau(
                optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
            )
            every = self.cfg.trainer.check_val_every_n_epoch
            stepping = {"monitor": "val/mIoU", "interval": "epoch", "frequency": every, "strict": False}
        else:
            total = int(self.trainer.estimated_stepping_batches)
            per_epoch = max(1, total // max(1, self.trainer.max_epochs))
            scheduler = build_scheduler(optimizer, cfg, total, per_epoch)
            stepping = {"interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **stepping}}
