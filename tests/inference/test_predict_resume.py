"""`predict` over many images is resumable: its manifest, what a rerun skips and redoes, a killed run continued,
and inputs listed in a text file."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cloudseg.config import PredictConfig
from cloudseg.data.synth import synthesize
from cloudseg.errors import DataError
from cloudseg.files import file_sha256
from cloudseg.inference.manifest import MANIFEST
from cloudseg.inference.predict import predict
from cloudseg.inference.rle import read_submission
from cloudseg.inference.sources import find_inputs
from cloudseg.models import build_model
from cloudseg.models.checkpoint import save_release
from cloudseg.sections import to_dict
from tests.conftest import B0

CPU = PredictConfig(io_workers=1, tile=48, overlap=16)


@pytest.fixture(scope="module")
def scenes_read_only(tmp_path_factory) -> Path:
    """12 test scenes of 64², larger than a 48² tile: each goes through the sliding window."""
    return synthesize(tmp_path_factory.mktemp("scenes"), n_train=1, n_test=12, size=64, seed=3) / "test"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def manifest(folder: Path) -> dict[str, dict]:
    return {entry["name"]: entry for entry in map(json.loads, (folder / MANIFEST).read_text().splitlines())}


@pytest.fixture
def scenes(scenes_read_only, tmp_path) -> Path:
    """A copy of the scenes that a test may touch."""
    return Path(shutil.copytree(scenes_read_only, tmp_path / "scenes"))


def test_a_rerun_skips_what_is_done_and_redoes_what_is_missing_damaged_or_made_otherwise(checkpoint, scenes, tmp_path):
    out, cfg = tmp_path / "masks", PredictConfig(io_workers=1, tile=48, overlap=16, index_masks=True)
    first = predict(checkpoint, scenes, out, cfg, tmp_path / "first.csv")
    assert first.skipped == 0 and len(first.masks) == 12 and first.megapixels == pytest.approx(12 * 64 * 64 / 1e6)
    written, entries = files_of(out), manifest(out)
    entry = entries["synth_0000"]
    assert (entry["height"], entry["width"], entry["mpx"]) == (64, 64, 0.004096) and entry["seconds"] > 0
    assert sum(entry["shares"].values()) == pytest.approx(1.0)
    assert entry["checkpoints"] == [file_sha256(checkpoint)] and entry["settings"]["tile"] == 48
    assert (
        entry["precision"] == "32"
        and entry["device"] == "cpu"
        and str(scenes / "rgb" / "synth_0000.png") in entry["inputs"]
    )
    assert entry["outputs"] == {f: file_sha256(out / f) for f in ("synth_0000.png", "index/synth_0000.png")}

    again = predict(checkpoint, scenes, out, cfg, tmp_path / "again.csv")
    assert again.skipped == 12 and files_of(out) == written
    assert read_submission(tmp_path / "again.csv") == read_submission(tmp_path / "first.csv")  # rows from the masks

    (out / "synth_0003.png").write_bytes(written["synth_0003.png"][:100])  # damaged
    (out / "index" / "synth_0007.png").unlink()  # missing
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + '{"name": "synth_0009", "outp')  # a killed write
    repaired = predict(checkpoint, scenes, out, cfg)
    assert repaired.skipped == 10 and files_of(out) == written
    assert predict(checkpoint, scenes, out, cfg).skipped == 12  # the lines after the cut one read back
    assert predict(checkpoint, scenes, out, dataclasses.replace(cfg, io_workers=2)).skipped == 12  # speed only

    os.utime(scenes / "ngr" / "synth_0005.png")  # an input file changed since
    assert predict(checkpoint, scenes, out, cfg).skipped == 11
    assert predict(checkpoint, scenes, out, CPU).skipped == 0  # other settings: no index masks
    assert predict(checkpoint, scenes, out, CPU).skipped == 12
    assert predict(checkpoint, scenes, out, CPU, overwrite=True).skipped == 0
    torch.manual_seed(1)
    other = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "other.safetensors")
    assert predict(other, scenes, out, CPU).skipped == 0  # another checkpoint


def test_a_killed_run_rerun_ends_with_the_files_of_an_uninterrupted_one(checkpoint, scenes, tmp_path):
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", str(checkpoint), "--input", str(scenes),
                "--output", str(out), "--submission", str(out.with_suffix(".csv")), "--predict.tile", "48",
                "--predict.overlap", "16", "--predict.tile_batch", "1", "--predict.io_workers", "1",
                "--predict.probabilities", "true"]  # fmt: skip

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    subprocess.run(command(tmp_path / "whole"), check=True, env=environment, capture_output=True)
    killed = subprocess.Popen(command(tmp_path / "killed"), env=environment, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    lines = tmp_path / "killed" / MANIFEST
    deadline = time.monotonic() + 600  # a hang guard only
    while not (lines.is_file() and len(lines.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        assert killed.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    finished_before = len(lines.read_text().splitlines())
    assert 3 <= finished_before < 12 and not (tmp_path / "killed.csv").exists()

    rerun = subprocess.run(command(tmp_path / "killed"), check=True, env=environment, capture_output=True, text=True)
    assert f"{finished_before} done before, skipped" in rerun.stdout
    assert files_of(tmp_path / "killed") == files_of(tmp_path / "whole")
    assert (tmp_path / "killed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_a_rerun_removes_the_temporary_files_a_killed_run_left_of_its_own_outputs_only(checkpoint, scenes, tmp_path):
    out = tmp_path / "masks"
    left = [out / ".synth_0000.png.ab12.tmp", out / "probability" / ".synth_0001_thin_cloud.png.x.tmp",
            out / ".synth_0002.tif.x.blocks.tif"]  # fmt: skip
    kept = [out / ".other.png.ab12.tmp", out / ".synth_0000.pngx.tmp", out / "synth_0003.png.tmp"]  # not its own
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"cut short")
    predict(checkpoint, scenes, out, dataclasses.replace(CPU, probabilities=True))
    assert [path.exists() for path in left + kept] == [False] * len(left) + [True] * len(kept)


def test_a_text_file_lists_sources_and_names_must_not_collide(scenes, tmp_path):
    listing = tmp_path / "scenes.txt"
    rgb = sorted((scenes / "rgb").iterdir())
    listing.write_text(f"# a single image, one relative to the list\n{rgb[0]}\n\n{rgb[1].relative_to(tmp_path)}\n")
    assert [p.name for p in find_inputs(listing)] == ["synth_0000", "synth_0001"]
    listing.write_text(f"{rgb[0]}\n{scenes}\n")
    with pytest.raises(
        DataError, match=r"scenes.txt, line 2: a second image named synth_0000 \(the first is from line 1\)"
    ):
        find_inputs(listing)
    listing.write_text("other.txt\n")
    with pytest.raises(DataError, match=r"scenes.txt, line 1: a list of sources cannot list another list"):
        find_inputs(listing)
    listing.write_text("nowhere\n")
    with pytest.raises(DataError, match=r"scenes.txt, line 1: .*nowhere: no such file or folder"):
        find_inputs(listing)


def _append_entries(folder: str, first: int) -> None:
    from cloudseg.inference.manifest import Manifest

    manifest = Manifest(Path(folder), {"run": 1})
    for index in range(first, first + 200):
        manifest.add([{"name": f"image_{index}", "outputs": {"x": "0" * 64}, "padding": "p" * 3000}])


def test_jobs_appending_to_one_manifest_never_interleave_their_lines(tmp_path):
    """Two processes (two jobs of a Slurm array sharing an output folder) append 200 long lines each at once."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=_append_entries, args=(str(tmp_path), first)) for first in (0, 200)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    lines = (tmp_path / MANIFEST).read_text().splitlines()
    assert sorted(json.loads(line)["name"] for line in lines) == sorted(f"image_{i}" for i in range(400))
