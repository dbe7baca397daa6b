"""Panels and curves: the label colours everywhere, tiles apart, legends complete, curves as logged."""

import json

import cv2
import numpy as np
import torch
from PIL import Image

from cloudseg.data.io import index_to_colour
from cloudseg.panels import (
    GAP,
    IGNORE_RGB,
    PANEL_COLUMNS,
    PANEL_MARKS,
    WRONG_RGB,
    colourise,
    grid,
    legend,
    prediction_row,
)
from cloudseg.plots import plot_curves
from cloudseg.schema import CLASS_NAMES, CLASSES, IGNORE_INDEX


def test_pictures_draw_each_class_in_its_label_file_colour():
    ids = np.arange(len(CLASSES), dtype=np.uint8).repeat(3).reshape(len(CLASSES), 3)
    assert np.array_equal(colourise(ids), index_to_colour(ids)[..., ::-1])  # what cv2 writes, in RGB order
    assert tuple(colourise(np.full((1, 1), IGNORE_INDEX, np.uint8))[0, 0]) == IGNORE_RGB
    colours = {c.rgb for c in CLASSES}
    assert len(colours) == len(CLASSES) and not colours & {IGNORE_RGB, WRONG_RGB}


def test_tiles_of_one_class_stay_apart_in_the_grid():
    red = colourise(np.ones((40, 40), np.uint8))  # thick cloud
    rows = [(f"scene_{i}", [red] * 3) for i in range(2)]
    picture = grid("title", ["a", "b", "c"], rows, tile=50)
    assert picture.shape[1] == 3 * (50 + GAP) + GAP
    red = np.all(picture == CLASSES[1].rgb, axis=2).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(red, connectivity=8)
    areas = sorted(stats[1:, cv2.CC_STAT_AREA])  # the legend's swatch, then the tiles
    assert areas[1:] == [50 * 50] * 6  # every tile its own region: none touches another across a column or a row


def test_the_legend_shows_every_class_the_ignored_pixels_and_the_marks():
    def swatches(strip: np.ndarray, colour: tuple) -> int:  # solid 7x7 blocks: a swatch, never a letter
        solid = cv2.erode(np.all(strip == colour, axis=2).astype(np.uint8), np.ones((7, 7), np.uint8))
        return cv2.connectedComponents(solid)[0] - 1

    assert all(swatches(legend(900, PANEL_MARKS), c) == 1 for c in [c.rgb for c in CLASSES] + [IGNORE_RGB, WRONG_RGB])
    assert swatches(legend(900), WRONG_RGB) == 0


def test_a_prediction_row_marks_each_wrong_pixel_and_names_its_accuracy():
    truth = torch.zeros(8, 8, dtype=torch.uint8)
    truth[0, :4] = IGNORE_INDEX
    prediction = np.zeros((8, 8), np.uint8)
    prediction[1:3] = 2  # 16 wrong of 60 counted pixels
    prediction[0, :4] = 3  # under ignored truth: not wrong
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    sample = {"name": "s", "rgb": image, "aux": image[:1], "mask": truth}
    name, tiles = prediction_row(sample, prediction)
    assert len(tiles) == len(PANEL_COLUMNS) and name == f"s   pixel accuracy {1 - 16 / 60:.3f}"
    errors = tiles[-1]
    assert np.all(errors == WRONG_RGB, axis=2).sum() == 16 and np.all(errors == IGNORE_RGB, axis=2).sum() == 4


def drawn_curves(path) -> dict:
    return json.loads(Image.open(path).text["curves"])


def test_one_epoch_curves_have_a_point_for_each_series_they_name(tmp_path):
    plot_curves([{"epoch": 0, "train_loss": 1.5}], CLASS_NAMES, tmp_path / "curves.png", "run")
    assert drawn_curves(tmp_path / "curves.png") == {"train_loss": [[0.0, 1.5]]}


def test_validated_epochs_only_carry_validation_points(tmp_path):
    ious = {f"iou/{name}": 0.1 * i for i, name in enumerate(CLASS_NAMES)}
    history = [{"epoch": 0, "train_loss": 3.0}, {"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "mIoU": 0.4, **ious}]
    plot_curves(history, CLASS_NAMES, tmp_path / "curves.png", "run")
    curves = drawn_curves(tmp_path / "curves.png")
    assert curves["train_loss"] == [[0.0, 3.0], [1.0, 2.0]]
    assert curves["val_loss"] == [[1.0, 2.5]] and curves["cloud_shadow"] == [[1.0, 0.1 * 3]]
