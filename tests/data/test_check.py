"""`check-data`: one report with every problem of a folder, and the class summary."""

import shutil

import cv2
import numpy as np
import pytest

from cloudseg.cli.main import main
from cloudseg.data.check import check_dataset
from cloudseg.data.io import index_to_colour, write_image


@pytest.fixture
def broken_root(synth_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synth_root, root)
    train = root / "train"
    (train / "ngr" / "synth_0000.png").unlink()  # missing partner
    write_image(train / "label" / "synth_0001.png", index_to_colour(np.zeros((32, 64), np.uint8)))  # wrong size
    data = (train / "rgb" / "synth_0002.png").read_bytes()
    (train / "rgb" / "synth_0002.png").write_bytes(data[: len(data) // 2])  # truncated
    label = cv2.imread(str(train / "label" / "synth_0003.png"))
    label[:5, :5] = (9, 9, 9)
    write_image(train / "label" / "synth_0003.png", label)  # unknown colour
    cv2.imwrite(str(train / "rgb" / "synth_0004.png"), np.zeros((64, 64), np.uint8))  # single-channel rgb
    for path in (root / "test" / "ngr").iterdir():
        path.unlink()  # empty folder
    return root


def test_a_mixed_folder_reports_every_problem_at_once(broken_root):
    report = check_dataset(broken_root)
    text = "\n".join(report.problems)
    assert f"{broken_root / 'train' / 'rgb' / 'synth_0000.png'}: no file named synth_0000.* in" in text
    assert "synth_0001: sizes differ" in text and "label/synth_0001.png is 64x32" in text
    assert "rgb/synth_0002.png: " in text
    assert "label/synth_0003.png: 25 pixels have colours outside the class table (25 px of (9, 9, 9))" in text
    assert "rgb/synth_0004.png: 1-channel uint8 image; expected a 3-channel colour image" in text
    assert f"{broken_root / 'test' / 'ngr'}: no images" in text
    assert not report.ok and len(report.problems) == 6 + 2  # and each test image lacks its ngr partner


def test_cli_prints_the_report_and_exits_with_2(broken_root, capsys):
    assert main(["check-data", str(broken_root)]) == 2
    out = capsys.readouterr().out
    assert "problems (8):" in out and "train: 7 samples" in out


def test_summary_counts_every_class(synth_root, capsys):
    report = check_dataset(synth_root)
    assert report.ok and report.splits["train"].samples == 8 and report.splits["test"].samples == 2
    assert report.splits["train"].sizes == {(64, 64): 8}
    assert report.splits["train"].class_pixels.sum() == 8 * 64 * 64
    assert main(["check-data", str(synth_root)]) == 0
    assert "cloud_shadow" in capsys.readouterr().out


def test_shared_landsat_sample_has_the_class_shares_of_its_sources(l8biome):
    report = check_dataset(l8biome)
    assert report.ok, report.format()
    train = report.splits["train"]
    shares = train.class_pixels / train.class_pixels.sum()
    assert train.samples == 24 and report.splits["test"].samples == 5
    assert shares.round(4).tolist() == [0.5626, 0.3116, 0.1049, 0.0208]  # SOURCES.md
