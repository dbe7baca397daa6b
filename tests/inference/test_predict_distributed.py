"""`predict` shared between processes by Lightning: the same bytes from 1 process and from 2 (CPU, gloo), one
submission written once, and the manifests of either run continued by the other."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.inference.engine import dealt
from cloudseg.inference.rle import read_submission, rle_decode
from tests.inference.test_predict import write_pairs

ROOT = Path(__file__).resolve().parents[2]
# 9 images: runs of one size batched two at a time, odd sizes, and two larger than the 48² tile (sliding window)
SIZES = {"a": (48, 48), "b": (48, 48), "c": (48, 48), "d": (40, 70), "e": (48, 48), "f": (100, 90),
         "g": (30, 20), "h": (48, 48), "i": (64, 64)}  # fmt: skip


def cloudseg_predict(checkpoint: Path, source: Path, output: Path, *options: str) -> str:
    """The command as a user runs it, in a fresh process (Lightning starts the second process from its command)."""
    command = [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", str(checkpoint), "--input", str(source),
               "--output", str(output), "--submission", str(output / "submission.csv"), "--predict.tile", "48",
               "--predict.overlap", "16", "--predict.tile_batch", "2", "--predict.index_masks", "true",
               *options]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLOUDSEG_DEBUG": "1"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def manifest_names(folder: Path, pattern: str = "manifest*.jsonl") -> list[str]:
    return sorted(json.loads(line)["name"] for path in folder.glob(pattern) for line in path.open())


def second_share(names: list[str], per_item: int) -> list[str]:
    """The names the second of two processes predicts: items of `per_item` names, dealt out in turn."""
    items = [names[start : start + per_item] for start in range(0, len(names), per_item)]
    return sorted(name for index in dealt(len(items), 1, 2) for name in items[index])


def test_two_processes_write_the_bytes_one_process_writes(checkpoint, tmp_path):
    write_pairs(tmp_path / "in", SIZES)
    one, two = tmp_path / "one", tmp_path / "two"
    cloudseg_predict(checkpoint, tmp_path / "in", one)
    out = cloudseg_predict(checkpoint, tmp_path / "in", two, "--trainer.accelerator", "cpu", "--trainer.devices",
                           "2", "--trainer.strategy", "ddp")  # fmt: skip
    assert out.count("9 masks in") == 1  # the first process reports for both
    assert sorted(p.name for p in two.glob("manifest*.jsonl")) == ["manifest.1.jsonl", "manifest.jsonl"]
    assert manifest_names(two, "manifest.1.jsonl") == second_share(sorted(SIZES), 2) == ["c", "d", "g", "h"]
    assert manifest_names(one) == manifest_names(two) == sorted(SIZES)  # each image written once
    masks = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(masks) == 2 * len(SIZES)  # colour and index masks
    assert masks == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    for mask in masks:
        assert (one / mask).read_bytes() == (two / mask).read_bytes(), mask
    assert (one / "submission.csv").read_bytes() == (two / "submission.csv").read_bytes()
    rows = read_submission(two / "submission.csv")
    assert list(rows) == [f"{name}.png" for name in sorted(SIZES)]
    classes = set()
    for name, (height, width) in SIZES.items():  # each row decodes to its mask
        colour = cv2.imread(str(two / f"{name}.png"))
        assert colour.shape == (height, width, 3)
        assert np.array_equal(rle_decode(rows[f"{name}.png"], height, width), colour)
        classes |= set(np.unique(cv2.imread(str(two / "index" / f"{name}.png"), cv2.IMREAD_UNCHANGED)).tolist())
    assert len(classes) > 1  # the masks are not all one class, which would make equality cheap

    # One process continues what two wrote: everything is done, nothing rewritten, the same submission.
    stamps = {p: p.stat().st_mtime_ns for p in two.rglob("*.png")}
    assert "9 of them from an earlier run" in cloudseg_predict(checkpoint, tmp_path / "in", two)
    assert stamps == {p: p.stat().st_mtime_ns for p in two.rglob("*.png")}
    assert (one / "submission.csv").read_bytes() == (two / "submission.csv").read_bytes()


def test_two_processes_share_geotiff_scenes_as_one_does(checkpoint, tmp_path):
    pytest.importorskip("rasterio")
    from tests.inference.test_predict_scenes import SETTINGS, SIZES, write_scenes

    scenes = write_scenes(tmp_path / "scenes")
    options = [*SETTINGS, "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices"]
    one, two, idle = tmp_path / "one", tmp_path / "two", tmp_path / "idle"
    # the third run has one scene for two processes: the second has nothing to do, and says nothing
    for source, output, devices in ((scenes, one, "1"), (scenes, two, "2"), (scenes / "north.tif", idle, "2")):
        command = [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", str(checkpoint), "--input",
                   str(source), "--output", str(output), *options, devices]  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLOUDSEG_DEBUG": "1"}
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        if output == two:
            assert done.stdout.count("3 masks in") == 1, done.stdout  # the first process reports for both
    assert done.stdout.count("1 mask in") == 1 and not done.stderr.strip()  # one report; the idle one is silent
    assert manifest_names(one) == manifest_names(two) == sorted(SIZES)
    assert manifest_names(two, "manifest.1.jsonl") == second_share(sorted(SIZES), 1) == ["south"]
    for name in SIZES:
        assert (one / f"{name}.tif").read_bytes() == (two / f"{name}.tif").read_bytes(), name
    assert manifest_names(idle) == ["north"] and (idle / "north.tif").read_bytes() == (one / "north.tif").read_bytes()


def test_a_damaged_image_in_one_process_stops_every_process_with_one_line(checkpoint, tmp_path):
    """Image g lies in the second process's share: it fails there, the first process hears of it, and the command
    ends with the one line naming the file."""
    assert "g" in second_share(sorted(SIZES), 2)
    write_pairs(tmp_path / "in", SIZES)
    (tmp_path / "in" / "rgb" / "g.png").write_bytes(b"not a png")
    command = [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", str(checkpoint), "--input",
               str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--predict.tile", "48", "--predict.overlap",
               "16", "--predict.tile_batch", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
               "--trainer.strategy", "ddp"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLOUDSEG_DEBUG": ""}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cloudseg: error: ") and "g.png" in lines[0], done.stderr
