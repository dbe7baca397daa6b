"""Callbacks on their own, with a stand-in trainer."""

import threading
from types import SimpleNamespace

import pytest
import torch

from cloudseg.errors import CloudsegError
from cloudseg.training import callbacks
from cloudseg.training.callbacks import AtomicCheckpointIO, CompilationNotice, LastCheckpoint
from tests.conftest import B0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_last_checkpoint_is_written_after_the_first_and_last_epochs_and_once_its_interval_has_passed(
    tmp_path, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "monotonic", clock)
    written = []
    trainer = SimpleNamespace(
        max_epochs=8,
        should_stop=False,
        strategy=SimpleNamespace(broadcast=lambda decision, src: decision),
        save_checkpoint=lambda path, weights_only: written.append(trainer.current_epoch),
    )
    callback = LastCheckpoint(tmp_path, every_s=60.0)
    for epoch, seconds in enumerate([25, 25, 25, 25, 5, 70, 10, 10]):  # each epoch's length
        clock.now += seconds
        trainer.current_epoch = epoch
        callback.on_train_epoch_end(trainer, None)
    # epoch 0: the first; 3: 75 s after it; 5: 75 s after that; 7: the last
    assert written == [0, 3, 5, 7]

    written.clear()
    every_epoch = LastCheckpoint(tmp_path, every_s=0.0)
    for epoch in range(3):
        trainer.current_epoch = epoch
        every_epoch.on_train_epoch_end(trainer, None)
    assert written == [0, 1, 2]


def test_validation_panels_run_the_model_uncompiled(tmp_path):
    # A compiled training model would compile again for the panels' batch of one (and for eval mode).
    import numpy as np
    import torch

    from cloudseg.sections import to_dict
    from cloudseg.training.callbacks import ValidationPanels
    from cloudseg.training.task import SegmentationTask

    config = to_dict(B0)
    config["trainer"]["compile"] = True
    task = SegmentationTask(config).eval()

    def compiled_call(*args, **kwargs):
        raise AssertionError("the compiled model was called")

    task.model._compiled_call_impl = compiled_call
    rng = np.random.default_rng(0)
    sample = {
        "rgb": torch.from_numpy(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)),
        "aux": torch.from_numpy(rng.integers(0, 256, (1, 64, 64), dtype=np.uint8)),
        "mask": torch.from_numpy(rng.integers(0, 4, (64, 64))),
        "name": "scene",
    }
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(val_set=[sample]),
        sanity_checking=False,
        is_global_zero=True,
        current_epoch=2,
        loggers=[],
    )
    ValidationPanels(tmp_path, count=1).on_validation_end(trainer, task)
    assert (tmp_path / "panels" / "epoch_002.png").is_file()


def test_the_compilation_notice_comes_before_the_first_batch_and_its_time_after_it(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    trainer, notice = SimpleNamespace(is_global_zero=True), CompilationNotice()
    with caplog.at_level("INFO", logger="cloudseg"):
        for batch_index, seconds in enumerate([143.25, 0.1, 0.1]):
            notice.on_train_batch_start(trainer, None, None, batch_index)
            clock.now += seconds
            notice.on_train_batch_end(trainer, None, None, None, batch_index)
    assert caplog.messages == [
        "compiling the model and the loss during the first training batch, a minute or more",
        "first training batch, compilation included: 143.2 s",
    ]


def test_checkpoints_are_written_as_they_were_when_saved_while_training_goes_on(tmp_path, monkeypatch):
    release = threading.Event()
    write = callbacks._write_atomically
    monkeypatch.setattr(callbacks, "_write_atomically", lambda *args: (release.wait(10), write(*args)))
    weights = torch.zeros(4)
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": weights}, "epoch": 3}, tmp_path / "last.ckpt")
    weights += 1  # the next optimiser step, while the write waits
    assert not (tmp_path / "last.ckpt").exists()
    release.set()
    io.teardown()
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 3 and torch.equal(saved["state_dict"]["w"], torch.zeros(4))


def test_a_failed_checkpoint_write_is_raised_at_the_next_save_and_leaves_no_file(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 0}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(CloudsegError, match=r"/checkpoints: a file is in the way of this folder"):
        io.save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
    io.save_checkpoint({"epoch": 2}, tmp_path / "last.ckpt")
    io.teardown()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"epoch": 2}
