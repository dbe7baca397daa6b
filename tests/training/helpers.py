"""Real `cloudseg train` runs for tests: the command in a subprocess, a tiny recipe, and callbacks that tests load
into a run through `trainer.callbacks`."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[2]


def cloudseg(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`cloudseg ARGS` in a subprocess of this interpreter, with `env` added to the environment."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environment.pop("CLOUDSEG_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "cloudseg", *args], env=environment, capture_output=True, text=True, timeout=1800
    )


def tiny_run(synth_root: Path, output: Path, name: str, *extra: str) -> list[str]:
    """`train` arguments of a seconds-long deterministic run: 3 epochs of 3 steps on the 64² synthetic set."""
    return [
        "train", "--config", "cmx_b0", "--data.root", str(synth_root), "--data.num_workers", "0",
        "--data.batch_size", "2", "--data.augment.crop_size", "32", "--trainer.max_epochs", "3",
        "--trainer.deterministic", "true", "--trainer.panels", "1", "--trainer.ema_decay", "0.9",
        "--trainer.log_every_n_steps", "2",  # learning-rate rows in metrics.csv, which a resume must carry over
        "--run.output_dir", str(output), "--run.name", name, *extra,
    ]  # fmt: skip


def run_folder(output: Path, name: str) -> Path:
    (folder,) = (output / name).iterdir()
    return folder


def weights(folder: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]


class SignalAtStep(L.Callback):
    """Sends signal $CLOUDSEG_TEST_SIGNAL (e.g. SIGTERM) to the training process as optimiser step
    $CLOUDSEG_TEST_SIGNAL_STEP begins, as a scheduler or Ctrl-C would; nothing where the variables are unset."""

    def on_train_batch_start(self, trainer: L.Trainer, task, batch, batch_index: int) -> None:
        if str(trainer.global_step) == os.environ.get("CLOUDSEG_TEST_SIGNAL_STEP"):
            os.kill(os.getpid(), signal.Signals[os.environ["CLOUDSEG_TEST_SIGNAL"]])


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
