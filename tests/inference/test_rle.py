"""Kaggle run-length encoding: the hand-worked example, round trips, submissions and scoring."""

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudseg.cli.main import main
from cloudseg.data.io import colour_to_index, index_to_colour, write_image
from cloudseg.errors import DataError
from cloudseg.inference.rle import read_submission, rle_decode, rle_encode, score_submission, submission_from_masks
from cloudseg.schema import CLASS_NAMES


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


@st.composite
def colour_masks(draw, max_side: int = 2048) -> np.ndarray:
    """Colour masks of any size up to max_side², random or worst cases for run-length encoding."""
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["random", "checkerboard", "single pixels", "full", "empty", "blobs"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        ids = rng.integers(0, 4, (height, width))
    elif kind == "checkerboard":  # the most runs a mask can have
        ids = (np.indices((height, width)).sum(0) % 2) * rng.integers(1, 4)
    elif kind == "single pixels":
        ids = np.zeros((height, width), int)
        ids.flat[rng.integers(0, height * width, size=min(20, height * width))] = rng.integers(1, 4)
    elif kind == "full":
        ids = np.full((height, width), rng.integers(1, 4))
    elif kind == "empty":
        ids = np.zeros((height, width), int)
    else:
        ids = np.repeat(np.repeat(rng.integers(0, 4, (height // 16 + 1, width // 16 + 1)), 16, 0), 16, 1)
        ids = ids[:height, :width]
    return index_to_colour(ids.astype(np.uint8))


@settings(max_examples=40, deadline=None)
@given(colour_masks())
def test_decoding_inverts_encoding_for_masks_up_to_2048_a_side(colour):
    height, width = colour.shape[:2]
    encoded = rle_encode(colour)
    assert np.array_equal(rle_decode(encoded, height, width), colour)
    if height * width <= 64 * 64:
        assert encoded == reference_rle(colour)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(truth=colour_masks(max_side=300), prediction_seed=st.integers(0, 2**32 - 1))
def test_a_written_submission_scores_as_its_masks_do(truth, prediction_seed, tmp_path_factory):
    """Encode -> write -> read -> decode -> score equals the IoU computed from the masks themselves."""
    folder = tmp_path_factory.mktemp("score")
    height, width = truth.shape[:2]
    rng = np.random.default_rng(prediction_seed)
    predicted_ids = np.where(rng.random((height, width)) < 0.3, rng.integers(0, 4, (height, width)), 0)
    truth_ids = colour_to_index(truth, "truth")
    predicted_ids = np.where(rng.random((height, width)) < 0.5, truth_ids, predicted_ids).astype(np.uint8)
    write_image(folder / "labels" / "scene.png", truth)
    write_image(folder / "masks" / "scene.png", index_to_colour(predicted_ids))
    scores = score_submission(submission_from_masks(folder / "masks", folder / "s.csv"), folder / "labels")
    for class_id, name in enumerate(CLASS_NAMES):
        true, predicted = truth_ids == class_id, predicted_ids == class_id
        union = (true | predicted).sum()
        expected = (true & predicted).sum() / union if union else np.nan
        assert scores[f"iou/{name}"] == pytest.approx(expected, nan_ok=True)
    itself = score_submission(submission_from_masks(folder / "labels", folder / "t.csv"), folder / "labels")
    assert itself["mIoU"] == 1.0 and itself["mean_image_dice"] == 1.0


def test_a_1024_checkerboard_submission_scores_one_against_itself(tmp_path, capsys):
    """Its row is far longer than the csv module's default field limit (131,072 characters)."""
    ids = (np.indices((1024, 1024)).sum(0) % 2).astype(np.uint8) * 3  # shadow and clear, alternating
    write_image(tmp_path / "labels" / "board.png", index_to_colour(ids))
    submission = submission_from_masks(tmp_path / "labels", tmp_path / "submission.csv")
    assert len(submission.read_text().splitlines()[1]) > 10 * 131_072
    assert main(["score", str(submission), "--labels", str(tmp_path / "labels")]) == 0
    assert "mean IoU 1.0000; mean Dice per image 1.0000 (1 images)" in capsys.readouterr().out


OTHERS = "b_scene.png,\nc_scene.png,\n"  # the other two label images, all clear


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a_scene.png,1 2 3\n" + OTHERS, "row a_scene.png: odd number of values (3) in EncodedPixels"),
        ("a_scene.png,1 2 1799 5\n" + OTHERS, "row a_scene.png: runs reach outside the 20x30x3 = 1800 encoded values"),
        ("a_scene.png,1 2 x 4\n" + OTHERS, "row a_scene.png: EncodedPixels holds 'x'; expected whole numbers"),
        ("a_scene.png,0 2\n" + OTHERS, "row a_scene.png: a run starts before pixel 1"),
        ("a_scene.png,1 2\n" + OTHERS + "a_scene.png,3 4\n",
         "line 5: a second row for a_scene.png (the first is line 2)"),
        ("a_scene.png,1 2,3\n" + OTHERS, "line 2: 3 fields; expected Image_Label,EncodedPixels"),
        ("a_scene.png,1 2\n", "no row for 2 label images, e.g. b_scene.png"),
    ],
)  # fmt: skip
def test_a_malformed_submission_is_one_line_naming_the_row(rows, message, labels, tmp_path, capsys, user_view):
    submission = tmp_path / "bad.csv"
    submission.write_text("Image_Label,EncodedPixels\n" + rows)
    assert main(["score", str(submission), "--labels", str(labels)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"cloudseg: error: {submission}") and message in error and error.count("\n") == 1, error


@pytest.mark.parametrize("kind", ["checkerboard", "single pixels", "full"])
def test_worst_case_masks_of_2048_a_side_survive_the_round_trip(kind):
    ids = np.zeros((2048, 2048), np.uint8)
    if kind == "checkerboard":
        ids = (np.indices(ids.shape).sum(0) % 2).astype(np.uint8) * 2
    elif kind == "single pixels":
        ids[::97, ::89] = 1
    else:
        ids[:] = 3
    colour = index_to_colour(ids)
    assert np.array_equal(rle_decode(rle_encode(colour), 2048, 2048), colour)


def test_submit_encodes_masks_of_class_ids_and_refuses_photographs(labels, tmp_path, capsys, user_view):
    ids = colour_to_index(cv2.imread(str(labels / "a_scene.png")), "a")
    write_image(tmp_path / "ids" / "a_scene.png", ids)  # one channel of class ids, as predict's index/ writes
    submission_from_masks(tmp_path / "ids", tmp_path / "ids.csv")
    assert read_submission(tmp_path / "ids.csv")["a_scene.png"] == rle_encode(cv2.imread(str(labels / "a_scene.png")))
    photo = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "photos" / "holiday.jpg", photo)
    assert main(["submit", str(tmp_path / "photos"), "-o", str(tmp_path / "s.csv")]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'photos' / 'holiday.jpg'}: " in error and "pixels are not label colours" in error
    assert not (tmp_path / "s.csv").exists()
