"""`cloudseg train` and `evaluate` as a user runs them: run folder, exact resume after SIGKILL, DDP on CPU."""

import csv
import json
import re

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from cloudseg.config import AugmentConfig
from cloudseg.models.checkpoint import read_release
from tests.training.helpers import cloudseg, run_folder, tiny_run, weights

SMALL_CROP = AugmentConfig(crop_size=32)  # the synthetic scenes are 64²


def test_a_run_killed_mid_epoch_and_resumed_ends_exactly_like_an_uninterrupted_one(synth_root, tmp_path):
    whole = cloudseg(*tiny_run(synth_root, tmp_path, "whole", "--trainer.profiler", "simple"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = cloudseg(
        *tiny_run(synth_root, tmp_path, "killed", "--trainer.callbacks", "[tests.training.helpers:KillAtStep]"),
        CLOUDSEG_TEST_KILL_STEP="4",  # 3 steps per epoch: the kill lands inside the second epoch
    )
    assert killed.returncode == -9
    interrupted = run_folder(tmp_path, "killed")
    assert not (interrupted / "panels" / "epoch_002.png").exists()
    resumed = cloudseg("train", "--resume", str(interrupted))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    reference = run_folder(tmp_path, "whole")
    expected, actual = weights(reference), weights(interrupted)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    best = [json.loads((f / "checkpoints" / "best.json").read_text()) for f in (reference, interrupted)]
    epochs = [
        [row.split(",")[0] for row in (f / "metrics.csv").read_text().splitlines()[1:]]
        for f in (reference, interrupted)
    ]
    assert epochs[0] == epochs[1]  # the resumed run's log holds every epoch once
    logged = list(csv.DictReader((reference / "metrics.csv").open()))
    epoch_seconds = [float(r["time/epoch_s"]) for r in logged if r["time/epoch_s"]]
    validation_seconds = [float(r["time/validation_s"]) for r in logged if r["time/validation_s"]]
    speeds = [float(r["train/images_per_s"]) for r in logged if r["train/images_per_s"]]
    assert len(epoch_seconds) == len(validation_seconds) == len(speeds) == 3
    (profile,) = reference.glob("fit-profile*.txt")  # the SimpleProfiler's table of loop actions
    assert (
        "train_dataloader_next" in profile.read_text() and "ValidationPanels.on_validation_end" in profile.read_text()
    )
    # 6 training images an epoch: the training batches alone are faster than the whole epoch, validation included
    assert all(v < e and s * e > 6 for v, e, s in zip(validation_seconds, epoch_seconds, speeds, strict=True))
    assert best[0]["metrics"] == best[1]["metrics"] and best[0]["epoch"] == best[1]["epoch"]
    # curves.png draws what metrics.csv holds: each epoch's own training loss, and its validation scores
    drawn = json.loads(Image.open(reference / "curves.png").text["curves"])
    for series, column in (("train_loss", "train/loss_epoch"), ("val_loss", "val/loss"), ("mIoU", "val/mIoU"),
                           ("cloud_shadow", "val/iou_cloud_shadow")):  # fmt: skip
        expected = [[float(r["epoch"]), float(r[column])] for r in logged if r.get(column)]
        assert len(expected) == 3 and np.allclose(drawn[series], expected, rtol=1e-6), series
    for item in ("config.yaml", "split.json", "metrics.csv", "curves.png", "panels/epoch_002.png",
                 "checkpoints/best_ema.safetensors", "train.log"):  # fmt: skip
        assert (reference / item).is_file(), item
    log = (reference / "train.log").read_text()  # where the time outside the epochs went
    timed = re.search(r"fit took ([\d.]+) s, calibration ([\d.]+) s, train\(\) ([\d.]+) s in all", log)
    fit, calibration, whole = map(float, timed.groups())
    assert "start-up: dataset checked in" in log and fit > 0 and calibration >= 0 and fit + calibration <= whole + 0.1
    for stem in ("best", "best_ema"):  # each release calibrated on the validation split, its diagram beside it
        fitted = read_release(reference / "checkpoints" / f"{stem}.safetensors").info["calibration"]
        assert fitted["method"] == "temperature" and fitted["split"] == "val" and fitted["temperature"][0] > 0
        assert 0 <= fitted["after"]["ece"] <= 1 and sum(fitted["before"]["bins"]["pixels"]) == fitted["pixels"]
        assert (reference / "checkpoints" / f"{stem}_calibration.png").is_file()

    evaluated = cloudseg(
        "evaluate", "--checkpoint", str(reference / "checkpoints" / "best.safetensors"), "--data.root", str(synth_root),
        "--split", "test", "--output", str(tmp_path / "eval"), "--panels", "1",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0 and (tmp_path / "eval" / "confusion.png").is_file()
    assert metrics["tta"] == "none"
    with_tta = cloudseg(
        "evaluate", "--checkpoint", str(reference / "checkpoints" / "best.safetensors"), "--data.root", str(synth_root),
        "--split", "test", "--predict.tta", "d4",
    )  # fmt: skip
    assert with_tta.returncode == 0, with_tta.stderr[-3000:]
    assert json.loads((reference / "eval_test_tta-d4" / "metrics.json").read_text())["tta"] == "d4"
    wrong = cloudseg(
        "evaluate", "--checkpoint", "x.safetensors", "--data.root", str(synth_root), "--predict.tta", "flip"
    )
    assert wrong.returncode == 2 and "predict.tta: 'flip' is not one of 'none', 'flips', 'd4'" in wrong.stderr


def test_a_non_finite_loss_stops_the_run_before_anything_after_it_is_validated_or_saved(synth_root, tmp_path):
    # 3 batches per epoch; the loss is read back every 2nd batch, so the NaN of epoch 1's first batch (step 3)
    # is seen at its second, with the bad update already made but never validated or written.
    result = cloudseg(
        *tiny_run(synth_root, tmp_path, "nan", "--trainer.sync_every", "2",
                  "--trainer.callbacks", "[tests.training.helpers:NanAtStep]"),
        CLOUDSEG_TEST_NAN_STEP="3",
    )  # fmt: skip
    assert result.returncode == 2  # a cloudseg error: one line, no traceback
    assert "the training loss is nan at step 3 (epoch 1, batch 0); the run stopped at batch 1" in result.stderr
    folder = run_folder(tmp_path, "nan")
    state = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(w).all() for w in state["state_dict"].values())
    assert (folder / "panels" / "epoch_000.png").exists() and not (folder / "panels" / "epoch_001.png").exists()
    resumed = cloudseg("train", "--resume", str(folder))  # the last checkpoint carries on (no NaN this time)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_the_training_step_reads_nothing_back_from_the_device_between_sync_points(synth_root, tmp_path):
    # A read (item, bool, ...) makes the host wait for the GPU. With sync_every 2 and 3 batches per epoch the
    # reads belong to batches 1 (the sync point) and 2 (the epoch's end, validation included), never to batch 0.
    reads = tmp_path / "reads.json"
    result = cloudseg(
        *tiny_run(synth_root, tmp_path, "reads", "--trainer.sync_every", "2", "--trainer.max_epochs", "2",
                  "--trainer.log_every_n_steps", "50", "--trainer.callbacks", "[tests.training.helpers:HostReads]"),
        CLOUDSEG_TEST_READS=str(reads),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(reads.read_text())
    assert counts["0/0"] == 0 and counts["1/0"] == 0, counts
    assert all(counts[f"{epoch}/{batch}"] > 0 for epoch in (0, 1) for batch in (1, 2)), counts


def test_a_run_without_validation_keeps_its_last_weights_as_releases(synth_root, tmp_path):
    """No validation split, so no best epoch: the releases are the last epoch's weights and their moving average,
    which predict takes like any release."""
    result = cloudseg(*tiny_run(synth_root, tmp_path, "all", "--data.val_fraction", "0", "--trainer.max_epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run_folder(tmp_path, "all")
    assert sorted(p.name for p in (folder / "checkpoints").glob("*.safetensors")) == [
        "final.safetensors", "final_ema.safetensors"
    ]  # fmt: skip
    last = weights(folder)
    for stem, prefix in (("final", "model."), ("final_ema", "ema.module.")):
        saved = load_file(str(folder / "checkpoints" / f"{stem}.safetensors"))
        expected = {key[len(prefix) :]: value for key, value in last.items() if key.startswith(prefix)}
        assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved), stem
    assert json.loads((folder / "checkpoints" / "final.json").read_text())["epoch"] == 0
    predicted = cloudseg("predict", "--checkpoint", str(folder / "checkpoints" / "final.safetensors"), "--input",
                         str(synth_root), "--output", str(tmp_path / "masks"))  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch built without gloo")
def test_two_process_ddp_on_cpu_trains_and_writes_one_checkpoint(synth_root, tmp_path):
    result = cloudseg(
        *tiny_run(synth_root, tmp_path, "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                  "--trainer.strategy", "ddp", "--trainer.max_epochs", "1", "--trainer.ema_decay", "null")
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "ddp").iterdir())) == 1  # both processes wrote into one run folder
    folder = run_folder(tmp_path, "ddp")
    assert [p.name for p in (folder / "checkpoints").glob("*.safetensors")] == ["best.safetensors"]
    # 6 images: 3 per process, one full batch of 2 each, so the epoch is one optimiser step
    assert json.loads((folder / "checkpoints" / "best.json").read_text())["step"] == 1


def test_resume_refuses_other_options(tmp_path):
    result = cloudseg("train", "--resume", str(tmp_path), "--trainer.max_epochs", "5")
    assert result.returncode == 2 and "--resume continues a run exactly" in result.stderr


def test_training_refuses_a_broken_dataset_with_one_line(tmp_path):
    (tmp_path / "train" / "rgb").mkdir(parents=True)
    result = cloudseg("train", "--data.root", str(tmp_path), CLOUDSEG_DEBUG="")  # as a user sees it
    assert result.returncode == 2
    assert result.stderr.startswith(f"cloudseg: error: {tmp_path}: ")


def test_training_from_segformer_weights_starts_both_encoders_from_them(synth_root, tmp_path):
    transformers = pytest.importorskip("transformers")
    from cloudseg.models import MIT_VARIANTS, build_model
    from cloudseg.models.checkpoint import load_model
    from tests.models.test_weights import hf_config

    folder = tmp_path / "mit-b0"  # a random checkpoint with the layout of `nvidia/mit-b0`
    transformers.SegformerForImageClassification(hf_config(MIT_VARIANTS["b0"], num_labels=1000)).save_pretrained(folder)
    frozen_encoders = ("--model.pretrained", str(folder), "--optim.lr_encoder", "0", "--trainer.max_epochs", "1")
    result = cloudseg(*tiny_run(synth_root, tmp_path, "pretrained", *frozen_encoders))
    assert result.returncode == 0, result.stderr[-3000:]
    trained, _ = load_model(run_folder(tmp_path, "pretrained") / "checkpoints" / "best.safetensors")
    expected = build_model("cmx_b0", pretrained=folder)
    for stream in ("rgb", "aux"):
        started, loaded = getattr(expected, stream).state_dict(), getattr(trained, stream).state_dict()
        assert all(torch.equal(started[k], loaded[k]) for k in started), stream


def test_sqrt_inverse_class_weights_are_resolved_from_the_training_split_into_the_saved_config(synth_root, tmp_path):
    from cloudseg.config import DataConfig
    from cloudseg.data.datamodule import CloudDataModule
    from cloudseg.training.losses import sqrt_inverse_weights

    balanced = ("--loss.class_weights", "sqrt_inverse", "--trainer.max_epochs", "1", "--trainer.ema_decay", "null")
    result = cloudseg(*tiny_run(synth_root, tmp_path, "balanced", *balanced))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = yaml.safe_load((run_folder(tmp_path, "balanced") / "config.yaml").read_text())["loss"]["class_weights"]
    module = CloudDataModule(DataConfig(root=str(synth_root), augment=SMALL_CROP))
    module.setup("fit")
    assert tuple(saved) == sqrt_inverse_weights(module.train_class_pixels()) and max(saved) > 1.0


def test_tensorboard_holds_what_metrics_csv_holds_and_the_panels(synth_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = cloudseg(*tiny_run(synth_root, tmp_path, "tb", "--trainer.logger", "[csv, tensorboard]"))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run_folder(tmp_path, "tb")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0}).Reload()
    logged = list(csv.DictReader((folder / "metrics.csv").open()))
    for tag in ("train/loss_epoch", "val/loss", "val/mIoU", "val/iou_thin_cloud", "val/iou_cloud_shadow"):
        expected = [float(row[tag]) for row in logged if row.get(tag)]
        assert len(expected) == 3 and np.allclose([e.value for e in events.Scalars(tag)], expected, rtol=1e-6), tag
    rates = [tag for tag in events.Tags()["scalars"] if tag.startswith("lr-")]
    assert rates and all(events.Scalars(tag) for tag in rates)
    panels = events.Images("validation/panels")
    assert [image.step for image in panels] == [0, 1, 2]
    drawn = cv2.imdecode(np.frombuffer(panels[-1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(drawn, cv2.imread(str(folder / "panels" / "epoch_002.png")))


def test_a_logger_that_is_not_there_is_one_line_before_any_work(synth_root, tmp_path):
    result = cloudseg(*tiny_run(synth_root, tmp_path, "nolog", "--trainer.logger", "[csv, wandb]"))
    assert result.returncode == 2
    assert "trainer.logger: 'wandb'; expected csv or tensorboard or 'package.module:Class'" in result.stderr
    assert not (tmp_path / "nolog").exists()
