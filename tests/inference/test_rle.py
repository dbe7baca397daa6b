"""Kaggle run-length encoding: the hand-worked example, round trips, submissions and scoring."""

import numpy as np
import pytest

from cloudseg.cli.main import main
from cloudseg.data.io import index_to_colour, write_image
from cloudseg.errors import DataError
from cloudseg.inference.rle import read_submission, rle_decode, rle_encode, score_submission, submission_from_masks


def test_hand_worked_two_by_two_example():
    # (row, col): (0,0) thick cloud, (0,1) clear, (1,0) thin cloud, (1,1) cloud shadow, as BGR colours.
    ids = np.array([[1, 0], [2, 3]], dtype=np.uint8)
    colour = index_to_colour(ids)
    # 3 x W x H flattening: B = 0 0 0 0 | G = 0 255 0 255 | R = 255 0 0 255 -> non-zero at 6, 8, 9, 12 (1-based)
    assert rle_encode(colour) == "6 1 8 2 12 1"
    assert np.array_equal(rle_decode("6 1 8 2 12 1", 2, 2), colour)


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_over_random_masks(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 60, size=2)
    colour = index_to_colour(rng.integers(0, 4, (height, width)).astype(np.uint8))
    assert np.array_equal(rle_decode(rle_encode(colour), height, width), colour)


def reference_rle(colour: np.ndarray) -> str:
    """The competition's encoding written the plain way, one run at a time."""
    flat = np.concatenate(([0], colour.transpose(2, 1, 0).ravel() != 0, [0]))
    pairs, start = [], None
    for position in range(1, len(flat)):
        if flat[position] and not flat[position - 1]:
            start = position
        elif not flat[position] and flat[position - 1]:
            pairs.append(f"{start} {position - start}")
    return " ".join(pairs)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (200, 300)])
def test_encoding_matches_the_plain_one_run_at_a_time(shape):
    # run starts and lengths of one to six digits; long runs and single pixels
    rng = np.random.default_rng(sum(shape))
    ids = rng.integers(0, 4, shape).astype(np.uint8)
    ids[: shape[0] // 2] = rng.integers(0, 2)  # a long run of one class across columns
    colour = index_to_colour(ids)
    assert rle_encode(colour) == reference_rle(colour)


def test_empty_mask_encodes_as_nothing_and_bad_runs_are_errors():
    assert rle_encode(np.zeros((3, 4, 3), np.uint8)) == ""
    with pytest.raises(DataError, match="reach outside the 2x2x3 = 12 encoded values"):
        rle_decode("11 3", 2, 2, "row a.png")
    with pytest.raises(DataError, match="odd number"):
        rle_decode("1 2 3", 2, 2)


@pytest.fixture
def labels(tmp_path):
    folder = tmp_path / "labels"
    rng = np.random.default_rng(0)
    for name in ("b_scene", "a_scene", "c_scene"):
        write_image(folder / f"{name}.png", index_to_colour(rng.integers(0, 4, (20, 30)).astype(np.uint8)))
    return folder


def test_submission_of_the_labels_themselves_scores_one(labels, tmp_path, capsys):
    submission = submission_from_masks(labels, tmp_path / "submission.csv")
    lines = submission.read_text().splitlines()
    assert lines[0] == "Image_Label,EncodedPixels"
    assert [line.split(",")[0] for line in lines[1:]] == ["a_scene.png", "b_scene.png", "c_scene.png"]
    scores = score_submission(submission, labels)
    assert scores["mean_image_dice"] == 1.0 and scores["mIoU"] == 1.0 and scores["images"] == 3
    assert main(["score", str(submission), "--labels", str(labels)]) == 0
    assert "mean Dice per image 1.0000" in capsys.readouterr().out


def test_scoring_finds_missing_rows_and_wrong_headers(labels, tmp_path):
    submission = submission_from_masks(labels, tmp_path / "submission.csv")
    rows = read_submission(submission)
    (tmp_path / "short.csv").write_text("Image_Label,EncodedPixels\n" + f"a_scene.png,{rows['a_scene.png']}\n")
    with pytest.raises(DataError, match=r"no row for 2 label images, e\.g\. b_scene\.png"):
        score_submission(tmp_path / "short.csv", labels)
    (tmp_path / "header.csv").write_text("id,rle\n")
    with pytest.raises(DataError, match="expected Image_Label,EncodedPixels"):
        score_submission(tmp_path / "header.csv", labels)


def test_a_wrong_prediction_scores_below_one(labels, tmp_path):
    masks = tmp_path / "masks"
    for path in labels.iterdir():
        write_image(masks / path.name, index_to_colour(np.zeros((20, 30), np.uint8)))
    scores = score_submission(submission_from_masks(masks, tmp_path / "s.csv"), labels)
    assert 0 < scores["iou/clear"] < 1 and scores["iou/thick_cloud"] == 0.0 and scores["mean_image_dice"] < 0.5
