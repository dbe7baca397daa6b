"""Callbacks on their own, with a stand-in trainer."""

from types import SimpleNamespace

from cloudseg.training import callbacks
from cloudseg.training.callbacks import LastCheckpoint


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
