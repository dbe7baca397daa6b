"""Lightning callbacks of a run: release checkpoints, panels, curves, the validation table, throughput."""

import logging
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from cloudseg.data.dataset import prepare_sample
from cloudseg.errors import InterruptError
from cloudseg.files import atomic_path
from cloudseg.metrics import class_ids, class_names, flat_scores, format_table
from cloudseg.models.checkpoint import save_release
from cloudseg.panels import PANEL_COLUMNS, PANEL_MARKS, grid, prediction_row, save_rgb
from cloudseg.plots import plot_curves
from cloudseg.signals import StopRequest

log = logging.getLogger("cloudseg")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: a kill mid-save leaves the old one intact.

    The state is copied to host memory at once and written by a thread, so training goes on meanwhile: CMX-B2's
    state with its optimiser is 0.8 GB, about a second to write. The next save and the end of the fit (teardown,
    on errors too) wait for a write in progress, and raise its error. (Lightning's AsyncCheckpointIO copies the
    state on the GPU and lets its thread move it to the host; before Lightning 2.5.4 it copied nothing.)"""

    def __init__(self):
        super().__init__()
        self._writer: ThreadPoolExecutor | None = None  # made at the first save: a spawned process gets none
        self._pending: Future | None = None

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        self.wait()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))
        self._writer = self._writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = self._writer.submit(_write_atomically, snapshot, Path(path))

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None


PREVIOUS_CHECKPOINT = "previous.ckpt"  # the last.ckpt that the newest one replaced


def _write_atomically(checkpoint: dict, path: Path) -> None:
    """Writes a checkpoint whole or not at all, keeping the one it replaces as previous.ckpt: if the new file is
    ever damaged (a copy cut short), resume falls back one save, not to the start."""
    # Through a file object, so that a full disk is an OSError (torch.save to a path reports it as "unexpected pos")
    with atomic_path(path, previous=path.with_name(PREVIOUS_CHECKPOINT)) as temporary, temporary.open("wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename, so that not even a power cut leaves it half written


class CompilationNotice(L.Callback):
    """Says that torch.compile works during the first training batch, which would otherwise look like a hang (it
    takes minutes for CMX-B2 on a fresh GPU machine), and then how long that batch took: its host time is the
    compilation's, as nothing in it waits for the device."""

    def __init__(self):
        self.started: float | None = None
        self.reported = False

    def on_train_batch_start(self, trainer: L.Trainer, task: L.LightningModule, batch, batch_index: int) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            if trainer.is_global_zero:
                log.info("compiling the model and the loss during the first training batch, a minute or more")

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, outputs, batch, batch_index: int):
        if not self.reported:
            self.reported = True
            if trainer.is_global_zero:
                log.info("first training batch, compilation included: %.1f s", time.perf_counter() - self.started)


class LastCheckpoint(L.Callback):
    """`checkpoints/last.ckpt`: the whole training state at the end of an epoch, validation included, for
    --resume. Written after the first and the last epoch, and after any other once `every_s` seconds have passed
    since the last write: it runs in the background (AtomicCheckpointIO), but after every few-second GPU epoch it
    would still copy a CMX-B2 state with its optimiser, 0.8 GB, to host memory and keep the disk busy."""

    def __init__(self, run_dir: Path, every_s: float = 0.0):
        self.path = run_dir / "checkpoints" / "last.ckpt"
        self.every_s = every_s
        self.written_at: float | None = None
        self.epoch: int | None = None  # the epoch whose end the file holds, once this run has written it

    def on_train_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        last = trainer.current_epoch + 1 >= trainer.max_epochs or trainer.should_stop
        due = self.written_at is None or time.monotonic() - self.written_at >= self.every_s
        if trainer.strategy.broadcast(last or due, src=0):  # writing is collective: every process decides alike
            trainer.save_checkpoint(self.path, weights_only=False)
            self.written_at, self.epoch = time.monotonic(), trainer.current_epoch


class StopOnSignal(L.Callback):
    """Stops the fit at the next safe point after SIGINT or SIGTERM (`StopRequest`), with every file complete.

    In the middle of an epoch, that is the end of the batch: InterruptError, and last.ckpt keeps the end of the
    last epoch it saved (a write in progress is finished by the checkpoint plugin's teardown). At an epoch's last
    batch the epoch is let finish, its validation and checkpoints included, and the fit stops after it. With
    several processes they agree where they all are (the batches where they read the loss, an epoch's end), so
    that all stop at the same step."""

    def __init__(self, request: StopRequest):
        self.request = request
        self.after_epoch: int | None = None  # the epoch after which it stopped the fit, if it did

    def _agreed(self, trainer: L.Trainer) -> bool:
        if trainer.world_size == 1:
            return bool(self.request)
        return trainer.strategy.reduce_boolean_decision(bool(self.request), all=False)

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, outputs, batch, batch_index: int):
        if batch_index + 1 == trainer.num_training_batches:
            return  # the epoch's end is nearer than its last checkpoint
        if (trainer.world_size == 1 or (batch_index + 1) % task.sync_every() == 0) and self._agreed(trainer):
            raise InterruptError(self.request.signum or signal.SIGTERM, f"stopped by {self.request.name}")

    def on_train_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        # Before LastCheckpoint's (it comes first in the list), which then writes this epoch's end.
        if self._agreed(trainer):
            trainer.should_stop = True
            self.after_epoch = trainer.current_epoch


class BestRelease(L.Callback):
    """Keeps `checkpoints/<stem>.safetensors` (+ .json) for the best validation mIoU of `prefix` (val or val_ema)."""

    def __init__(self, run_dir: Path, prefix: str = "val", stem: str = "best"):
        self.path = run_dir / "checkpoints" / f"{stem}.safetensors"
        self.prefix = prefix
        self.best = -1.0

    @property
    def state_key(self) -> str:
        return f"BestRelease[{self.prefix}]"

    def on_validation_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        scores = task.val_scores.get(self.prefix)
        if trainer.sanity_checking or scores is None or float(scores["mIoU"]) <= self.best:
            return
        self.best = float(scores["mIoU"])
        if trainer.is_global_zero:
            model = task.ema.module if self.prefix == "val_ema" else task.model
            info = {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "metrics": flat_scores(scores, class_names(len(scores["iou"]))),
            }
            save_release(model, dict(task.hparams["config"]), self.path, info)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]


class ValidationReport(L.Callback):
    """After each validation prints the per-class table; after each training epoch redraws `curves.png` with
    that epoch's training loss, and its validation scores where it ran (all figures are also in metrics.csv)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.history: list[dict] = []  # one row per training epoch
        self.validated: dict = {}  # the last validation's row, until its epoch ends

    def on_validation_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        scores = task.val_scores.get("val")
        if trainer.sanity_checking or scores is None or not trainer.is_global_zero:
            return
        names = class_names(len(scores["iou"]))
        self.validated = {"epoch": trainer.current_epoch, **flat_scores(scores, names)}
        self.validated["val_loss"] = float(trainer.callback_metrics.get("val/loss", float("nan")))
        log.info("validation after epoch %d\n%s", trainer.current_epoch, format_table(scores, names))

    def on_train_epoch_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        # Lightning runs an epoch's validation before this hook, and reduces the epoch's training loss for it.
        if not trainer.is_global_zero:
            return
        epoch, loss = trainer.current_epoch, trainer.callback_metrics.get("train/loss_epoch")
        row = {"epoch": epoch, "step": trainer.global_step, "train_loss": None if loss is None else float(loss)}
        self.history.append({**row, **(self.validated if self.validated.get("epoch") == epoch else {})})
        validated = [r for r in self.history if r.get("mIoU") is not None]
        title = f"{self.run_dir.parent.name}/{self.run_dir.name}"
        if validated:
            best = max(validated, key=lambda r: r["mIoU"])
            title += f": best validation mIoU {best['mIoU']:.3f} after epoch {best['epoch']}"
        plot_curves(self.history, class_names(task.cfg.model.num_classes), self.run_dir / "curves.png", title)

    def state_dict(self) -> dict:
        return {"history": self.history, "rows": "per training epoch"}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"]
        if "rows" not in state:  # before 2026-11-30 a row was a validation, with the previous epoch's training loss
            self.history = [{**row, "train_loss": None} for row in self.history]


class ValidationPanels(L.Callback):
    """`panels/epoch_XXX.png`: the same few validation images after every validation."""

    def __init__(self, run_dir: Path, count: int):
        self.folder = run_dir / "panels"
        self.count = count

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, task: L.LightningModule) -> None:
        dataset = getattr(trainer.datamodule, "val_set", None)
        if trainer.sanity_checking or not trainer.is_global_zero or dataset is None or self.count <= 0:
            return
        rows = []
        for sample in (dataset[i] for i in range(min(self.count, len(dataset)))):
            batch = prepare_sample(sample, task.device)
            logits = task.eager(batch["rgb"], batch["aux"])
            rows.append(prediction_row(sample, class_ids(logits)[0].cpu().numpy()))
        run, epoch = self.folder.parent, trainer.current_epoch
        title = f"{run.parent.name}/{run.name}: validation after epoch {epoch}"
        if "val" in task.val_scores:
            title += f", mIoU {float(task.val_scores['val']['mIoU']):.3f}"
        picture = grid(title, PANEL_COLUMNS, rows, PANEL_MARKS)
        save_rgb(self.folder / f"epoch_{epoch:03d}.png", picture)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("validation/panels", picture, epoch, dataformats="HWC")


class TrainingProgress(RichProgressBar):
    """Rich's progress bar, which reads the logged values back from the device (a wait for the GPU) only every
    `task.sync_every()` batches and at the epoch's end; it shows the training loss, the images per second over
    that stretch and the learning rate of the fusion and decoder parameters."""

    def __init__(self):
        super().__init__()
        self._metrics: dict = {}
        self._read = True
        self._images, self._since = 0, time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, outputs, batch, batch_index) -> None:
        self._images += batch["rgb"].shape[0] * trainer.world_size
        last = batch_index + 1 == trainer.num_training_batches
        self._read = last or (batch_index + 1) % task.sync_every() == 0
        super().on_train_batch_end(trainer, task, outputs, batch, batch_index)
        self._read = True

    def get_metrics(self, trainer: L.Trainer, task: L.LightningModule) -> dict:
        if self._read:
            self._metrics = super().get_metrics(trainer, task)
            loss = trainer.callback_metrics.get("train/loss_step")
            if loss is not None:
                self._metrics["loss"] = f"{loss.item():.4g}"  # the read that waits for the device
            now = time.perf_counter()
            if trainer.optimizers:
                self._metrics["lr"] = f"{trainer.optimizers[0].param_groups[-1]['lr']:.2e}"
            if self._images:
                self._metrics["img/s"] = f"{self._images / (now - self._since):.1f}"
            self._images, self._since = 0, now
        return self._metrics
