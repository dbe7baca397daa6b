"""Callbacks that tests load into a real `cloudseg train` run through `trainer.callbacks`."""

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILLs the training process when it reaches optimiser step $CLOUDSEG_TEST_KILL_STEP (mid-epoch); does
    nothing where the variable is unset, as in the resumed run, which restores this callback from its config."""

    def on_train_batch_start(self, trainer: L.Trainer, task, batch, batch_index: int) -> None:
        if str(trainer.global_step) == os.environ.get("CLOUDSEG_TEST_KILL_STEP"):
            os.kill(os.getpid(), signal.SIGKILL)


class NanAtStep(L.Callback):
    """Fills the batch of optimiser step $CLOUDSEG_TEST_NAN_STEP with NaN, so that its loss is NaN."""

    def on_train_batch_start(self, trainer: L.Trainer, task, batch, batch_index: int) -> None:
        if str(trainer.global_step) == os.environ.get("CLOUDSEG_TEST_NAN_STEP"):
            batch["rgb"][:] = float("nan")
