"""docs/RELIABILITY.md's table of cases, each run as its row says: cloudseg must print that line and exit with that
code, so the document cannot drift from what users see."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.data.io import index_to_colour, write_image
from cloudseg.models import build_model
from cloudseg.models.checkpoint import save_release
from cloudseg.sections import to_dict
from tests.conftest import B0
from tests.training.helpers import ROOT, cloudseg, run_folder, tiny_run

DOC = ROOT / "docs" / "RELIABILITY.md"


def cases() -> dict[str, tuple[str, int]]:
    """{case: (the line's pattern, exit code)} from the table between the <!-- cases --> markers."""
    table = DOC.read_text().split("<!-- cases -->")[1].split("<!-- /cases -->")[0]
    found = {}
    for row in table.strip().splitlines()[2:]:
        case, _, printed, code, _ = (cell.strip() for cell in row.strip("|").split(" | "))
        fence = "`` " if printed.startswith("`` ") else "`"
        text = printed[len(fence) :].split(fence[::-1])[0]
        found[case] = (".*".join(map(re.escape, text.split("…"))), int(code))
    return found


CASES = cases()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run")
    return save_release(build_model("cmx_b0").eval(), to_dict(B0), folder / "checkpoints" / "best.safetensors")


@contextlib.contextmanager
def small_disk(folder: Path, options: str):
    """A tmpfs mounted at `folder` (root only; the test skips elsewhere)."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def in_process(capsys, *arguments: str) -> tuple[str, int]:
    code = main([str(a) for a in arguments])
    captured = capsys.readouterr()
    return captured.out + captured.err, code


def labels_with_one_row(tmp_path: Path, row: str) -> list[str]:
    write_image(tmp_path / "labels" / "a.png", index_to_colour(np.zeros((4, 4), np.uint8)))
    (tmp_path / "bad.csv").write_text("Image_Label,EncodedPixels\n" + row)
    return ["score", tmp_path / "bad.csv", "--labels", tmp_path / "labels"]


def signalled_training(synth_root: Path, tmp_path: Path, name: str, step: int = 4) -> tuple[str, int]:
    # 3 steps an epoch: step 4 is the second epoch's second batch, step 5 its last
    arguments = tiny_run(synth_root, tmp_path, "run", "--trainer.callbacks", "[tests.training.helpers:SignalAtStep]")
    result = cloudseg(*arguments, CLOUDSEG_TEST_SIGNAL=name, CLOUDSEG_TEST_SIGNAL_STEP=str(step), CLOUDSEG_DEBUG="")
    return result.stdout + result.stderr, result.returncode


def run_case(case: str, capsys, tmp_path: Path, synth_root: Path, checkpoint: Path) -> tuple[str, int]:
    """Does what the row's user does; returns the output and the exit code."""
    predict = ["predict", "--checkpoint", checkpoint, "--input", synth_root]
    if case == "score-long-rows":
        ids = (np.indices((1024, 1024)).sum(0) % 2).astype(np.uint8) * 3
        write_image(tmp_path / "labels" / "board.png", index_to_colour(ids))
        assert main(["submit", str(tmp_path / "labels"), "-o", str(tmp_path / "s.csv")]) == 0
        assert len((tmp_path / "s.csv").read_text()) > 1_000_000
        return in_process(capsys, "score", tmp_path / "s.csv", "--labels", tmp_path / "labels")
    if case == "score-odd-row":
        return in_process(capsys, *labels_with_one_row(tmp_path, "a.png,1 2 3\n"))
    if case == "score-duplicate-row":
        return in_process(capsys, *labels_with_one_row(tmp_path, "a.png,1 2\na.png,\n"))
    if case in ("predict-full-disk", "predict-read-only"):
        # 32 scenes of 32² with their class-id maps need more than 64 KB: tmpfs gives each file a 4-KB page
        data = tmp_path / "data"
        from cloudseg.data.synth import synthesize

        synthesize(data, 1, 32, 32, seed=0)
        options = "size=64k" if case == "predict-full-disk" else "size=64k,ro"
        with small_disk(tmp_path / "disk", options) as disk:
            output, code = in_process(
                capsys, "predict", "--checkpoint", checkpoint, "--input", data, "--output", disk / "masks",
                "--predict.index_masks", "true",
            )  # fmt: skip
            written = list((disk / "masks").rglob("*")) if (disk / "masks").exists() else []
            assert all(cv2.imread(str(p)) is not None for p in written if p.suffix == ".png")  # each one whole
            assert not [p for p in written if p.name.startswith(".")]  # no temporary file left behind
            manifest = disk / "masks" / "manifest.jsonl"
            for line in manifest.read_text().splitlines() if manifest.is_file() else []:
                with contextlib.suppress(ValueError):  # a line the full disk cut short lists nothing
                    assert all((disk / "masks" / file).is_file() for file in json.loads(line)["outputs"])
        return output, code
    if case in ("resume-truncated", "resume-fallback"):
        if case == "resume-truncated":
            checkpoints = tmp_path / "run" / "checkpoints"
            checkpoints.mkdir(parents=True)
            (checkpoints / "last.ckpt").write_bytes(b"PK\x03\x04" + bytes(1000))
            folder = tmp_path / "run"
        else:
            two_epochs = tiny_run(synth_root, tmp_path, "run", "--trainer.max_epochs", "2")
            assert cloudseg(*two_epochs, "--trainer.checkpoint_every_s", "0").returncode == 0
            folder = run_folder(tmp_path, "run")
            last = folder / "checkpoints" / "last.ckpt"
            last.write_bytes(last.read_bytes()[:5000])
        result = cloudseg("train", "--resume", str(folder), CLOUDSEG_DEBUG="")
        return result.stdout + result.stderr, result.returncode
    if case == "resume-release":
        return in_process(capsys, "train", "--resume", checkpoint)
    if case in ("sigterm-train", "ctrl-c-train"):
        return signalled_training(synth_root, tmp_path, "SIGTERM" if case == "sigterm-train" else "SIGINT")
    if case == "signal-epoch-end":
        return signalled_training(synth_root, tmp_path, "SIGTERM", step=5)
    if case == "sigterm-command":
        environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLOUDSEG_DEBUG": ""}
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudseg", "demo", "--output", str(tmp_path / "demo")],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        process.stdout.readline()  # the demo is under way
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        out, error = process.communicate(timeout=600)
        return out + error, process.returncode
    if case == "no-cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        return in_process(capsys, *predict, "--output", tmp_path / "m", "--device", "cuda")
    if case == "synth-not-empty":
        return in_process(capsys, "synth", synth_root)
    if case == "predict-rgb-folder":
        return in_process(capsys, "predict", "--checkpoint", checkpoint, "--input", synth_root / "test" / "rgb",
                          "--output", tmp_path / "m")  # fmt: skip
    if case == "submit-photos":
        photo = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
        write_image(tmp_path / "photos" / "holiday.jpg", photo)
        return in_process(capsys, "submit", tmp_path / "photos", "-o", tmp_path / "s.csv")
    if case == "export-folder":
        pytest.importorskip("onnx")
        return in_process(capsys, "export", "--checkpoint", checkpoint, "--output", f"{tmp_path / 'outdir'}/")
    train = ["train", "--data.root", synth_root, "--run.output_dir", tmp_path / "runs"]
    arguments = {
        "epochs-negative": [*train, "--trainer.max_epochs", "-3"],
        "batch-zero": [*train, "--data.batch_size", "0"],
        "lr-nan": [*train, "--optim.lr_head", "nan"],
        "crop-too-large": [*train, "--data.augment.crop_size", "4096"],
        "memory-train": [*train, "--data.augment.crop_size", "2048", "--data.augment.upscale", "true",
                         "--data.batch_size", "64"],
        "memory-predict": [*predict, "--output", tmp_path / "m", "--predict.tile", "8192",
                           "--predict.tile_batch", "64"],
        "tile-alone": [*predict, "--output", tmp_path / "m", "--predict.tile", "64"],
        "strategy-typo": [*train, "--trainer.strategy", "dpp"],
        "strategy-fork": [*train, "--trainer.strategy", "ddp_notebook"],
        "submit-missing": ["submit", "nothere"],
        "models-aux-zero": ["models", "--model.aux_channels", "0"],
        "synth-typo": ["synth", tmp_path / "data", "--nn", "2"],
        "synth-size-typo": ["synth", tmp_path / "data", "--sizee", "64"],
        "check-data-spelling": ["check-data", synth_root, "--unknown-colors", "ignore"],
        "score-stray": ["score", "s.csv", "--labels", "l", "--data.unknown_colours", "ignore", "--whatever", "3"],
        "unknown-model": ["config", "--model.name", "cmx_b9"],
        "evaluate-root": ["evaluate", "--checkpoint", checkpoint, "--root", synth_root],
        "evaluate-tta": ["evaluate", "--checkpoint", checkpoint, "--tta", "d4"],
        "wrong-section": [*predict, "--output", tmp_path / "m", "--trainer.max_epochs", "3"],
        "predict-output-file": [*predict, "--output", "one.png"],
        "predict-missing": ["predict", "--checkpoint", checkpoint, "--input", "nothere", "--output", tmp_path / "m"],
    }[case]  # fmt: skip
    return in_process(capsys, *arguments)


@pytest.mark.parametrize("case", list(CASES))
def test_each_documented_case_prints_its_line_and_exit_code(case, capsys, tmp_path, synth_root, checkpoint, user_view):
    pattern, code = CASES[case]
    output, exit_code = run_case(case, capsys, tmp_path, synth_root, checkpoint)
    lines = output.strip().splitlines()
    assert exit_code == code, output[-3000:]
    if code:  # a failure ends with its one line
        assert re.fullmatch(pattern, lines[-1]), lines[-1]
    else:
        assert any(re.fullmatch(pattern, line) for line in lines), output[-3000:]


def test_the_table_covers_every_exit_code_but_the_unforeseen():
    assert {code for _, code in CASES.values()} == {0, 2, 3, 130, 143}  # 141 in tests/test_boundary.py


def test_the_exit_codes_documented_are_the_ones_the_command_line_gives():
    from cloudseg.cli.boundary import EXIT_CODES

    table = DOC.read_text().split("| code | meaning |")[1].split("\n\n")[0]
    assert [int(row.strip("|").split(" | ")[0]) for row in table.strip().splitlines()[1:]] == list(EXIT_CODES)


def test_the_memory_table_is_the_committed_record():
    import json

    record = json.loads((ROOT / "benchmarks" / "results" / "memory_estimate_cpu.json").read_text())
    table = DOC.read_text().split("| setting | estimate MiB | measured MiB | error |")[1].split("\n\n")[0]
    rows = [row.strip("|").split(" | ") for row in table.strip().splitlines()[1:]]
    assert [(int(r[1]), int(r[2].strip(" |"))) for r in rows] == [
        (row["estimate_mib"], row["measured_mib"]) for row in record["rows"]
    ]
    assert f"The largest error is {record['largest_error']:.0%}." in DOC.read_text()
