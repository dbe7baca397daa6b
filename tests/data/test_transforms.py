"""Augmentation: RGB, NIR and mask stay aligned under any geometry; copy-paste changes only what it pastes."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cloudseg.config import AugmentConfig
from cloudseg.data.transforms import CopyPaste, TrainTransform, find_objects
from cloudseg.schema import IGNORE_INDEX

SIZE = 128


def position_coded_sample():
    """R = row, G = column, NIR = their mean, mask = quadrant: every value says where the pixel came from."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] * 2  # 0..254
    rgb = np.dstack((rows, cols, np.zeros_like(rows))).astype(np.uint8)
    nir = ((rows + cols) // 2).astype(np.uint8)[..., None]
    mask = ((rows >= SIZE) * 2 + (cols >= SIZE)).astype(np.uint8)
    return rgb, nir, mask


@pytest.mark.parametrize("seed", range(6))
def test_geometry_moves_rgb_nir_and_mask_together(seed):
    cfg = AugmentConfig(
        crop_size=96,
        affine=1.0,
        rotate90=0.5,
        brightness_contrast=0,
        hue_saturation=0,
        clahe=0,
        gamma=0,
        noise=0,
        blur=0,
        nir_brightness_contrast=0,
        copy_paste=0,
    )
    np.random.seed(seed)
    rgb, nir, mask = TrainTransform(cfg)(*position_coded_sample())
    assert rgb.shape == (96, 96, 3) and nir.shape == (96, 96, 1) and mask.shape == (96, 96)
    # Pixels brought in from outside are ignored; their neighbours (also across the crop's edge) blend with the
    # zero fill, so 2 px more are skipped.
    inside = (mask != IGNORE_INDEX).astype(np.uint8)
    valid = cv2.erode(inside, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    row, col = rgb[..., 0].astype(float), rgb[..., 1].astype(float)
    # NIR was the mean of R and G before the move; bilinear resampling keeps that up to rounding.
    assert np.abs(nir[..., 0] - (row + col) / 2)[valid].max() <= 1.5
    # The mask's quadrant agrees with the position RGB carries, except within resampling reach of a boundary.
    expected = (row >= SIZE) * 2 + (col >= SIZE)
    far = valid & (np.abs(row - SIZE) > 6) & (np.abs(col - SIZE) > 6)
    assert np.array_equal(mask[far], expected[far])


def test_transform_is_reproducible_from_numpy_seed():
    transform = TrainTransform(AugmentConfig(crop_size=64))
    outputs = []
    for _ in range(2):
        np.random.seed(3)
        outputs.append(transform(*position_coded_sample()))
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))


def donor_with_objects(area_small=99):
    """A donor with one 20x30 thin-cloud object of distinctive values, and one object just under 100 px."""
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    nir = np.zeros((SIZE, SIZE, 1), np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:30, 40:70] = 2
    rgb[10:30, 40:70] = (11, 22, 33)
    nir[10:30, 40:70] = 44
    mask[100 : 100 + 9, 100 : 100 + 11] = 3  # 99 px
    return rgb, nir, mask


def target():
    rng = np.random.default_rng(0)
    return (
        rng.integers(100, 200, (SIZE, SIZE, 3), dtype=np.uint8),
        rng.integers(100, 200, (SIZE, SIZE, 1), dtype=np.uint8),
        np.zeros((SIZE, SIZE), np.uint8),
    )


def test_pasted_pixels_carry_source_values_and_class_and_nothing_else_changes():
    np.random.seed(0)
    rgb, nir, mask = target()
    out_rgb, out_nir, out_mask = CopyPaste(p=1.0, scale=(1.0, 1.0), min_area=100, max_objects=3)(
        rgb, nir, mask, *donor_with_objects()
    )
    changed = out_mask != mask
    assert changed.sum() == 20 * 30
    assert (out_mask[changed] == 2).all()
    assert (out_rgb[changed] == (11, 22, 33)).all() and (out_nir[changed] == 44).all()
    assert np.array_equal(out_rgb[~changed], rgb[~changed]) and np.array_equal(out_nir[~changed], nir[~changed])
    rows, cols = np.nonzero(changed)
    assert rows.max() - rows.min() == 19 and cols.max() - cols.min() == 29  # pasted whole, inside the image


def test_rescaled_objects_keep_their_class_and_stay_inside_the_image():
    for seed in range(20):
        np.random.seed(seed)
        rgb, nir, mask = target()
        _, _, out_mask = CopyPaste(p=1.0, scale=(0.4, 1.2), min_area=100, max_objects=1)(
            rgb, nir, mask, *donor_with_objects()
        )
        changed = out_mask != mask
        assert changed.any() and (out_mask[changed] == 2).all()


def test_objects_under_the_minimum_area_are_never_pasted():
    donor_rgb, donor_nir, donor_mask = donor_with_objects()
    donor_mask[donor_mask == 2] = 0
    assert find_objects(donor_mask, 100) == [] and len(find_objects(donor_mask, 99)) == 1
    rgb, nir, mask = target()
    out = CopyPaste(p=1.0, scale=(1.0, 1.0), min_area=100, max_objects=3)(
        rgb, nir, mask, donor_rgb, donor_nir, donor_mask
    )
    assert all(np.array_equal(a, b) for a, b in zip(out, (rgb, nir, mask), strict=True))


def test_importing_the_augmentation_asks_nothing_of_the_network():
    probe = (
        "import urllib.request as request\n"
        "opened = []\n"
        "request.OpenerDirector.open = lambda self, url, *args, **kwargs: opened.append(url)\n"
        "import cloudseg.data.transforms\n"
        "print(opened)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    result = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def no_geometry(**colour) -> AugmentConfig:
    """A transform whose crop is the whole image and that moves nothing: only the colour changes act."""
    still = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "hflip": 0, "vflip": 0, "rotate90": 0, "affine": 0}
    off = {k: 0.0 for k in ("brightness_contrast", "hue_saturation", "clahe", "gamma", "noise", "blur",
                            "nir_brightness_contrast", "copy_paste")}  # fmt: skip
    return AugmentConfig(crop_size=SIZE, **still, **{**off, **colour})


@pytest.mark.parametrize("seed", range(4))
def test_photometric_changes_touch_rgb_only_and_nir_only_by_its_mild_change(seed):
    rgb, nir, mask = target()
    every_rgb_change = {k: 1.0 for k in ("brightness_contrast", "hue_saturation", "clahe", "gamma", "noise", "blur")}
    np.random.seed(seed)
    out_rgb, out_nir, out_mask = TrainTransform(no_geometry(**every_rgb_change))(rgb, nir, mask)
    assert not np.array_equal(out_rgb, rgb)
    assert np.array_equal(out_nir, nir) and np.array_equal(out_mask, mask)  # NIR and mask untouched
    np.random.seed(seed)
    out_rgb, out_nir, _ = TrainTransform(no_geometry(nir_brightness_contrast=1.0, nir_limit=0.1))(rgb, nir, mask)
    assert np.array_equal(out_rgb, rgb) and not np.array_equal(out_nir, nir)
    # brightness and contrast within 10%: out = alpha * in + beta * 255, alpha in [0.9, 1.1], |beta| <= 0.1
    change = np.abs(out_nir.astype(int) - nir.astype(int))
    assert (change <= np.ceil(0.1 * nir.astype(int) + 0.1 * 255) + 1).all()


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_copy_paste_rescales_each_object_by_a_factor_of_its_range(factor):
    np.random.seed(0)
    rgb, nir, mask = target()
    _, _, out_mask = CopyPaste(p=1.0, scale=(factor, factor), min_area=100, max_objects=1)(
        rgb, nir, mask, *donor_with_objects()
    )
    rows, cols = np.nonzero(out_mask != mask)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (round(20 * factor), round(30 * factor))


@pytest.mark.parametrize("cap", [1, 2, 4])
def test_copy_paste_pastes_at_most_its_cap_of_the_donors_objects(cap):
    donor_rgb, donor_nir = np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((SIZE, SIZE, 1), np.uint8)
    donor_mask = np.zeros((SIZE, SIZE), np.uint8)
    for i in range(5):  # five 10x10 shadow objects, each with its own NIR value
        donor_mask[5 + 24 * i : 15 + 24 * i, 5:15] = 3
        donor_nir[5 + 24 * i : 15 + 24 * i, 5:15] = 10 + i
    counts = []
    for seed in range(10):
        np.random.seed(seed)
        rgb, nir, mask = target()
        _, out_nir, out_mask = CopyPaste(p=1.0, scale=(1.0, 1.0), min_area=100, max_objects=cap)(
            rgb, nir, mask, donor_rgb, donor_nir, donor_mask
        )
        pasted = set(np.unique(out_nir[out_mask == 3]).tolist())
        assert pasted <= {10, 11, 12, 13, 14}  # the donor's objects and nothing else
        assert (out_mask == 3).sum() <= 100 * cap
        counts.append(len(pasted))
    assert max(counts) == cap and min(counts) >= 1  # one may hide another, never more than the cap
