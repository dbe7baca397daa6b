"""Callbacks that tests load into a real `cloudseg train` run through `trainer.callbacks`."""

import json
import os
import signal
from pathlib import Path

import lightning as L
import torch


class KillAtStep(L.Callback):
    """SIGKILLs the training process when it reaches optimiser step $CLOUDSEG_TEST_KILL_STEP (mid-epoch), once the
    last checkpoint written in the background is on disk; does nothing where the variable is unset, as in the
    resumed run, which restores this callback from its config."""

    def on_train_batch_start(self, trainer: L.Trainer, task, batch, batch_index: int) -> None:
        if str(trainer.global_step) == os.environ.get("CLOUDSEG_TEST_KILL_STEP"):
            trainer.strategy.checkpoint_io.wait()
            os.kill(os.getpid(), signal.SIGKILL)


class NanAtStep(L.Callback):
    """Fills the batch of optimiser step $CLOUDSEG_TEST_NAN_STEP with NaN, so that its loss is NaN."""

    def on_train_batch_start(self, trainer: L.Trainer, task, batch, batch_index: int) -> None:
        if str(trainer.global_step) == os.environ.get("CLOUDSEG_TEST_NAN_STEP"):
            batch["rgb"][:] = float("nan")


class HostReads(L.Callback):
    """Counts, per training batch, the calls that read a tensor's value back to the host (`item`, `tolist`,
    `bool`, `float`, `int`), and writes {"batch index": count} to $CLOUDSEG_TEST_READS at the end of the run."""

    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def on_fit_start(self, trainer: L.Trainer, task) -> None:
        self.reads, self.counts, self.batch = 0, {}, None
        self.originals = {name: getattr(torch.Tensor, name) for name in self.METHODS}

        def counting(original):
            def read(tensor, *args, **kwargs):
                self.reads += 1
                return original(tensor, *args, **kwargs)

            return read

        for name, original in self.originals.items():
            setattr(torch.Tensor, name, counting(original))

    def _close(self) -> None:  # a batch's reads run from its start to the next batch's start (or the epoch's end)
        if self.batch is not None:
            self.counts[self.batch] = self.counts.get(self.batch, 0) + self.reads
        self.reads, self.batch = 0, None

    def on_train_batch_start(self, trainer: L.Trainer, task, batch, batch_index: int) -> None:
        self._close()
        self.batch = f"{trainer.current_epoch}/{batch_index}"

    def on_train_epoch_end(self, trainer: L.Trainer, task) -> None:
        self._close()

    def on_fit_end(self, trainer: L.Trainer, task) -> None:
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)
        Path(os.environ["CLOUDSEG_TEST_READS"]).write_text(json.dumps(self.counts))
