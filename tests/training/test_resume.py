"""Runs that stop before their end — a signal, a damaged checkpoint, a requeued job — continue to exactly the
weights of an uninterrupted run."""

import shutil

import pytest
import torch

from tests.training.helpers import cloudseg, run_folder, tiny_run, weights

EVERY_EPOCH = ("--trainer.checkpoint_every_s", "0")  # last.ckpt after each epoch, previous.ckpt the one before
SIGNAL_AT = ("--trainer.callbacks", "[tests.training.helpers:SignalAtStep]")


@pytest.fixture(scope="module")
def whole(synth_root, tmp_path_factory):
    """An uninterrupted run of 3 epochs: the reference every stopped run must end at."""
    output = tmp_path_factory.mktemp("whole")
    result = cloudseg(*tiny_run(synth_root, output, "whole", *EVERY_EPOCH))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_folder(output, "whole")


def same_weights(expected: dict, actual: dict) -> bool:
    return expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


def test_sigterm_stops_at_the_next_batch_and_a_requeued_job_continues_exactly(synth_root, whole, tmp_path):
    job = {"SLURM_JOB_ID": "4242", "CLOUDSEG_DEBUG": ""}  # the same job id after a requeue: the same run folder
    command = tiny_run(synth_root, tmp_path, "job", *EVERY_EPOCH, *SIGNAL_AT)
    # 3 steps an epoch: the signal comes as step 4, epoch 1's second batch, begins
    stopped = cloudseg(*command, CLOUDSEG_TEST_SIGNAL="SIGTERM", CLOUDSEG_TEST_SIGNAL_STEP="4", **job)
    folder = tmp_path / "job" / "job-4242"
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"cloudseg: stopped by SIGTERM in epoch 1; checkpoints/last.ckpt holds the end of epoch 0: continue with "
        f"`cloudseg train --resume {folder}`"
    )
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    requeued = cloudseg(*command, **job)  # Slurm runs the same command again
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "job restarted: continuing" in requeued.stderr
    assert same_weights(weights(whole), weights(folder))
    other = cloudseg(*command, "--optim.lr_head", "0.5", **job)  # the same job id, another run
    assert other.returncode == 2 and "this job's run folder holds a run with another config" in other.stderr


def test_ctrl_c_stops_with_130_and_resume_continues_exactly(synth_root, whole, tmp_path):
    command = tiny_run(synth_root, tmp_path, "interrupted", *EVERY_EPOCH, *SIGNAL_AT)
    stopped = cloudseg(*command, CLOUDSEG_TEST_SIGNAL="SIGINT", CLOUDSEG_TEST_SIGNAL_STEP="7", CLOUDSEG_DEBUG="")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "cloudseg: stopped by SIGINT in epoch 2; checkpoints/last.ckpt holds the end of epoch 1" in stopped.stderr
    folder = run_folder(tmp_path, "interrupted")
    resumed = cloudseg("train", "--resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(weights(whole), weights(folder))


def test_a_damaged_last_checkpoint_costs_one_epoch_not_the_run(whole, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(whole, folder)
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    resumed = cloudseg("train", "--resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{last}: damaged or truncated, it cannot be read" in resumed.stderr
    assert f"resuming from {folder / 'checkpoints' / 'previous.ckpt'} (the end of epoch 1) instead" in resumed.stderr
    assert (folder / "checkpoints" / "last.ckpt.damaged").is_file()
    assert same_weights(weights(whole), weights(folder))  # epoch 2 again, to the same weights
    assert same_weights(weights(whole, "previous.ckpt"), weights(folder, "previous.ckpt"))  # the good one kept


def test_resume_names_what_cannot_be_resumed(whole, tmp_path, user_view):
    folder = tmp_path / "run"
    shutil.copytree(whole, folder)
    for name in ("last.ckpt", "previous.ckpt"):
        (folder / "checkpoints" / name).write_bytes(b"PK\x03\x04 not a whole zip")
    both = cloudseg("train", "--resume", str(folder), CLOUDSEG_DEBUG="")
    assert both.returncode == 2
    line = both.stderr.strip()
    assert (
        line.startswith(f"cloudseg: error: {folder}/checkpoints/last.ckpt: damaged or truncated") and "\n" not in line
    )
    assert f"{folder}/checkpoints/previous.ckpt: damaged or truncated" in line and line.endswith("start again")
    release = whole / "checkpoints" / "best.safetensors"
    weights_only = cloudseg("train", "--resume", str(release), CLOUDSEG_DEBUG="")
    assert weights_only.returncode == 2 and f"start a run with --model.init_from {release}" in weights_only.stderr
    empty = cloudseg("train", "--resume", str(tmp_path), CLOUDSEG_DEBUG="")
    assert empty.returncode == 2 and "no checkpoints/last.ckpt to resume from" in empty.stderr


def test_a_signal_in_an_epochs_last_batch_lets_the_epoch_finish_and_be_saved(synth_root, whole, tmp_path):
    command = tiny_run(synth_root, tmp_path, "last_batch", *SIGNAL_AT)  # last.ckpt only every 60 s, but for this
    stopped = cloudseg(*command, CLOUDSEG_TEST_SIGNAL="SIGTERM", CLOUDSEG_TEST_SIGNAL_STEP="5", CLOUDSEG_DEBUG="")
    folder = run_folder(tmp_path, "last_batch")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"cloudseg: stopped by SIGTERM after epoch 1; checkpoints/last.ckpt holds the end of epoch 1: continue with "
        f"`cloudseg train --resume {folder}`"
    )
    assert (folder / "panels" / "epoch_001.png").is_file()  # epoch 1 was validated before the stop
    resumed = cloudseg("train", "--resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(weights(whole), weights(folder))
