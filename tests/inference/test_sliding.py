"""Sliding windows and test-time augmentation: exact where the model allows it, seamless where it does not."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import model_inputs
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.sliding import sliding_logits, tile_count, tile_starts
from cloudseg.models import build_from_spec
from cloudseg.models.checkpoint import Release
from tests.conftest import B0, TINY_SPEC


def pointwise_model():
    """A 1x1 conv over the stacked inputs: equivariant to translation, flips and rotations by construction."""
    conv = torch.nn.Conv2d(4, 3, 1)
    return lambda rgb, aux: conv(torch.cat((rgb, aux), dim=1))


@pytest.mark.parametrize(("height", "width"), [(97, 130), (64, 200), (31, 45)])
def test_tiles_of_a_translation_equivariant_model_equal_the_whole_image(height, width):
    model = pointwise_model()
    rgb, aux = torch.randn(1, 3, height, width), torch.randn(1, 1, height, width)
    with torch.no_grad():
        whole = model(rgb, aux)
        tiled = sliding_logits(model, rgb, aux, tile=32, overlap=8, batch_size=3)
    assert tiled.shape == (1, 3, height, width)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("height", "width", "tiles"), [(97, 130, 4 * 6), (64, 200, 3 * 8), (31, 45, 1 * 2)])
def test_progress_counts_every_tile_once_in_batches(height, width, tiles):
    """`on_tiles` hears (done, total) after each batch: 3 tiles a batch, up to all of them, which tile_count
    foretells (32² tiles overlapping by 8: starts 0, 24, 48, ... and the last at the edge)."""
    seen, calls = [], []

    def model(rgb, aux):
        calls.append(len(rgb))
        return torch.zeros(len(rgb), 2, *rgb.shape[-2:])

    rgb, aux = torch.zeros(1, 3, height, width), torch.zeros(1, 1, height, width)
    sliding_logits(model, rgb, aux, tile=32, overlap=8, batch_size=3, on_tiles=lambda *a: seen.append(a))
    assert tile_count(height, width, 32, 8) == sum(calls) == tiles
    assert seen == [(min(3 * (i + 1), tiles), tiles) for i in range(len(calls))]
    assert tile_count(32, 20, 32, 8) == 1


def test_the_tiles_of_several_images_share_batches_and_each_image_gets_its_own_logits():
    """Three 50 x 40 images of 4 tiles each (32² overlapping by 8) in batches of 5: 12 tiles in 3 batches (alone,
    each image would take 1 batch and a tile), each image's logits what it gets alone."""
    torch.manual_seed(0)
    model = build_from_spec("cmx", TINY_SPEC).eval()
    calls = []

    def counting(rgb, aux):
        calls.append(len(rgb))
        return model(rgb, aux)

    rgb, aux = torch.randn(3, 3, 50, 40), torch.randn(3, 1, 50, 40)
    with torch.no_grad():
        together = sliding_logits(counting, rgb, aux, tile=32, overlap=8, batch_size=5)
        alone = [
            sliding_logits(model, rgb[i : i + 1], aux[i : i + 1], tile=32, overlap=8, batch_size=5) for i in range(3)
        ]
    assert calls == [5, 5, 2]
    assert together.shape == (3, 4, 50, 40)
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)


def test_a_fixed_batch_shows_the_model_one_shape_and_changes_no_logit():
    model = pointwise_model()
    shapes = set()

    def recording(rgb, aux):
        shapes.add(tuple(rgb.shape))
        return model(rgb, aux)

    rgb, aux = torch.randn(1, 3, 97, 130), torch.randn(1, 1, 97, 130)
    with torch.no_grad():
        reference = sliding_logits(model, rgb, aux, tile=32, overlap=8, batch_size=5)
        padded = sliding_logits(recording, rgb, aux, 32, 8, 5, fixed_batch=True, device=torch.device("cpu"))
    assert shapes == {(5, 3, 32, 32)}  # 24 tiles: four batches of 5, then 4 padded to 5
    torch.testing.assert_close(padded, reference, rtol=0, atol=0)


@pytest.mark.parametrize("length", [1, 31, 32, 33, 100, 257])
def test_tile_starts_cover_every_pixel_with_the_overlap(length):
    starts = tile_starts(length, 32, 8)
    covered = torch.zeros(length, dtype=torch.bool)
    for start in starts:
        covered[start : start + 32] = True
    assert covered.all() and starts[-1] + min(32, length) == length
    assert all(b - a <= 32 - 8 for a, b in itertools.pairwise(starts))


def seam_jump(logits: torch.Tensor, column: int) -> float:
    """The step between two columns, relative to the median step between neighbouring columns."""
    steps = (logits[..., 1:] - logits[..., :-1]).abs().mean(dim=(0, 1, 2))
    return (steps[column - 1] / steps.median()).item()


def test_blending_hides_seams_that_plain_tiling_shows():
    # CMX pools and cross-attends over the whole input, so any tile differs from the whole image everywhere a
    # little; what blending must remove is the visible step where tiles meet (column 64 here).
    torch.manual_seed(0)
    model = build_from_spec("cmx", TINY_SPEC).eval()
    rgb, aux = torch.randn(1, 3, 128, 128), torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        whole = model(rgb, aux)
        blended = sliding_logits(model, rgb, aux, tile=64, overlap=32)
        plain = torch.zeros_like(whole)
        for y in (0, 64):
            for x in (0, 64):
                plain[..., y : y + 64, x : x + 64] = model(
                    rgb[..., y : y + 64, x : x + 64], aux[..., y : y + 64, x : x + 64]
                )
    assert (blended - whole).abs().mean() < (plain - whole).abs().mean()
    assert seam_jump(plain, 64) > 5.0  # a seam several times any ordinary step
    assert seam_jump(blended, 64) < 2.0 and seam_jump(whole, 64) < 2.0


class Pointwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 3, 1)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((rgb, aux), dim=1))


def averaging(model: torch.nn.Module, **settings) -> Predictor:
    return Predictor(model, Release.of(B0), torch.device("cpu"), PredictConfig(**settings))


def pixels(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.randint(0, 256, (shape[0], c, *shape[1:]), dtype=torch.uint8) for c in (3, 1))


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_changes_nothing_for_a_model_equivariant_to_it(tta):
    model = Pointwise()
    rgb, aux = pixels(2, 37, 53)
    with torch.no_grad():
        torch.testing.assert_close(
            averaging(model, tta=tta).logits(rgb, aux), model(*model_inputs(rgb, aux)), rtol=1e-5, atol=1e-5
        )


def test_tta_averages_over_the_transforms_of_a_model_that_is_not_equivariant():
    torch.manual_seed(0)
    model = build_from_spec("cmx", TINY_SPEC).eval()
    rgb8, aux8 = pixels(1, 64, 64)
    averaged = averaging(model, tta="flips").logits(rgb8, aux8)
    rgb, aux = model_inputs(rgb8, aux8)
    with torch.no_grad():
        plain, flipped = model(rgb, aux), model(rgb.flip(-1), aux.flip(-1)).flip(-1)
        hv = model(rgb.flip(-2), aux.flip(-2)).flip(-2) + model(rgb.flip(-2, -1), aux.flip(-2, -1)).flip(-2, -1)
    torch.testing.assert_close(averaged, (plain + flipped + hv) / 4, rtol=1e-5, atol=1e-5)
    scaled = averaging(model, scales=(0.5, 1.0)).logits(rgb8, aux8)
    with torch.no_grad():
        half = model(*(F.interpolate(t, scale_factor=0.5, mode="bilinear", align_corners=False) for t in (rgb, aux)))
    half = F.interpolate(half, size=(64, 64), mode="bilinear", align_corners=False)
    assert not torch.allclose(half, plain, atol=1e-2)  # the scale matters, so the mean tests something
    torch.testing.assert_close(scaled, (plain + half) / 2, rtol=1e-5, atol=1e-5)
