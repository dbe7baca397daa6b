"""GeoTIFF scenes: georeference kept, blocks agree with the whole scene, no-data and band errors."""

import numpy as np
import pytest
import torch

from cloudseg.config import PredictConfig
from cloudseg.errors import DataError
from cloudseg.inference.geotiff import NODATA, predict_scene
from cloudseg.inference.predictor import Predictor
from cloudseg.inference.sliding import tile_count
from cloudseg.models.checkpoint import Release
from cloudseg.schema import CLASSES
from tests.conftest import B0

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402


class Convolution(torch.nn.Module):
    """A seeded k x k conv over RGB and NIR. With k = 1 a pixel's answer is its own, whether it is predicted whole
    or in tiles; with a larger k it depends on its neighbours up to k // 2 pixels away."""

    def __init__(self, kernel: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 4, kernel, padding=kernel // 2)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((rgb, aux), dim=1))


def pointwise_predictor(**settings) -> Predictor:
    return Predictor(Convolution(), Release.of(B0), torch.device("cpu"), PredictConfig(**settings))


@pytest.fixture
def scene(tmp_path):
    """A 5-band uint16 scene (Landsat-like DNs) in UTM zone 32N with a known transform and a no-data corner."""
    rng = np.random.default_rng(0)
    data = rng.integers(5000, 45000, (5, 150, 170), dtype=np.uint16)
    data[:, :10, :12] = 0
    path = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "height": 150, "width": 170, "count": 5, "dtype": "uint16", "crs": "EPSG:32632",
               "transform": from_origin(500000.0, 5200000.0, 30.0, 30.0), "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_the_output_is_a_valid_cloud_optimised_geotiff_with_class_overviews(tmp_path):
    cog = pytest.importorskip("rio_cogeo.cogeo")
    path = tmp_path / "big.tif"
    rng = np.random.default_rng(1)
    profile = {"driver": "GTiff", "height": 700, "width": 900, "count": 4, "dtype": "uint16", "crs": "EPSG:32632",
               "transform": from_origin(500000.0, 5200000.0, 30.0, 30.0), "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(5000, 45000, (4, 700, 900), dtype=np.uint16))
    output = predict_scene(pointwise_predictor(tile=256), path, tmp_path / "mask.tif", (3, 2, 1, 4), 2e-5, -0.1)
    valid, errors, warnings = cog.cog_validate(output)
    assert valid and not errors, (errors, warnings)
    with rasterio.open(output) as mask:
        assert mask.overviews(1) and mask.nodata == NODATA and mask.tags(1)["class_3"] == "cloud_shadow"
        assert all(mask.colormap(1)[c.id][:3] == c.rgb for c in CLASSES)
        ids = mask.read(1)
        factor = mask.overviews(1)[0]
        overview = mask.read(1, out_shape=(700 // factor, 900 // factor))  # the first overview level
    assert set(np.unique(overview)) <= set(np.unique(ids))  # nearest: classes are picked, never averaged
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_output_keeps_the_georeference_and_blocks_agree_with_the_whole_scene(scene, tmp_path):
    whole = predict_scene(pointwise_predictor(tile=256), scene, tmp_path / "whole.tif", (4, 3, 2, 5), 2e-5, -0.1)
    tiled = pointwise_predictor(tile=32, overlap=8)
    blocks = predict_scene(tiled, scene, tmp_path / "blocks.tif", (4, 3, 2, 5), 2e-5, -0.1,
                           block=48)  # fmt: skip
    with rasterio.open(scene) as src, rasterio.open(whole) as a, rasterio.open(blocks) as b:
        assert a.crs == src.crs and a.transform == src.transform and (a.width, a.height) == (170, 150)
        assert a.count == 1 and a.dtypes[0] == "uint8" and a.nodata == NODATA
        assert a.profile["tiled"] and a.profile["compress"] == "deflate"
        assert all(a.colormap(1)[c.id][:3] == c.bgr[::-1] for c in CLASSES)  # the label colours
        ids_a, ids_b = a.read(1), b.read(1)
    assert np.array_equal(ids_a, ids_b)
    assert (ids_a[:10, :12] == NODATA).all() and (ids_a[10:, 12:] < 4).all()


def test_blocks_read_with_a_halo_see_the_neighbours_a_whole_scene_would(scene, tmp_path):
    """Each block is read with `overlap` pixels around it, so a model that looks 2 pixels around gives the classes
    of the whole scene at every block's edge. The blocks here fit one tile, so tiling plays no part, and none is
    under MIN_SIDE, so none is padded."""

    def classes(block: int) -> np.ndarray:
        predictor = Predictor(Convolution(5), Release.of(B0), torch.device("cpu"), PredictConfig(tile=256, overlap=8))
        output = predict_scene(predictor, scene, tmp_path / f"{block}.tif", (4, 3, 2, 5), 2e-5, -0.1, block=block)
        with rasterio.open(output) as mask:
            return mask.read(1)

    whole, blocks = classes(256), classes(60)  # 150 x 170 in blocks of 60 x 60, 60 x 50, 30 x 60 and 30 x 50
    edges = np.zeros_like(whole, dtype=bool)
    edges[59::60] = edges[60::60] = True
    edges[:, 59::60] = edges[:, 60::60] = True
    assert len(np.unique(whole[edges])) > 2  # the pixels a halo matters for hold several classes
    assert np.array_equal(whole, blocks)


def test_a_scenes_tile_progress_runs_over_all_its_blocks_to_the_end(scene, tmp_path):
    seen = []
    predict_scene(pointwise_predictor(tile=32, overlap=8, tile_batch=4), scene, tmp_path / "m.tif", (4, 3, 2, 5),
                  2e-5, -0.1, block=64, on_tiles=lambda *a: seen.append(a))  # fmt: skip
    totals = {total for _, total in seen}
    done = [d for d, _ in seen]
    # 150 x 170 in 64² blocks read with an 8-pixel halo: 3 x 3 blocks, each in 32² tiles
    assert totals == {sum(tile_count(h, w, 32, 8) for h in (72, 80, 30) for w in (72, 80, 50))}
    assert done == sorted(done) and done[-1] == totals.pop()


def test_too_few_bands_is_an_error_naming_the_file(scene, tmp_path):
    with pytest.raises(DataError, match=r"scene\.tif: has 5 bands; bands 4,3,2,8 \(R, G, B, NIR\) were asked for"):
        predict_scene(pointwise_predictor(), scene, tmp_path / "x.tif", (4, 3, 2, 8), 1e-4, 0.0)
    assert not (tmp_path / "x.tif").exists()


def test_predict_command_reads_a_scene_with_a_sensor_preset(scene, tmp_path, capsys):
    from cloudseg.cli.main import main
    from cloudseg.models import build_model
    from cloudseg.models.checkpoint import save_release
    from cloudseg.sections import to_dict

    torch.manual_seed(0)
    checkpoint = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "best.safetensors")
    output = tmp_path / "mask.tif"
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(scene), "--output", str(output),
                 "--sensor", "landsat8", "--predict.tile", "64", "--predict.overlap", "16"]) == 0  # fmt: skip
    with rasterio.open(output) as mask:
        assert mask.shape == (150, 170) and mask.read(1)[0, 0] == NODATA
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(scene), "--output", str(output),
                 "--sensor", "sentinel2"]) == 2  # fmt: skip
    assert "has 5 bands; bands 4,3,2,8" in capsys.readouterr().err


class Recording(Predictor):
    """A predictor that keeps the uint8 pixels of every block it is given and predicts class 0 everywhere."""

    def __init__(self, **settings):
        super().__init__(Convolution(), Release.of(B0), torch.device("cpu"), PredictConfig(**settings))
        self.rgb, self.aux = [], []

    def logits(self, rgb: torch.Tensor, aux: torch.Tensor, on_tiles=None) -> torch.Tensor:
        self.rgb.append(rgb.clone())
        self.aux.append(aux.clone())
        logits = torch.zeros(rgb.shape[0], 4, *rgb.shape[-2:])
        logits[:, 0] = 1
        return logits


def stretched(reflectance: np.ndarray) -> np.ndarray:
    """The 8-bit square-root stretch of the training images, written out here."""
    return np.round(255 * np.sqrt(np.clip(reflectance, 0, 1))).astype(np.uint8)


@pytest.mark.parametrize(
    ("bands", "scale", "offset"),
    [((4, 3, 2, 5), 2e-5, -0.1), ((3, 2, 1, 4), 1e-4, 0.0), ((1, 2, 3, 5), 3e-5, 0.05)],
)
def test_the_model_sees_each_bands_reflectance_in_the_training_stretch(scene, tmp_path, bands, scale, offset):
    recording = Recording(tile=256)
    predict_scene(recording, scene, tmp_path / "m.tif", bands, scale, offset, block=4096)
    with rasterio.open(scene) as src:
        values = src.read().astype(np.float64)
    expected = stretched(values[[b - 1 for b in bands]] * scale + offset)  # (4, H, W): R, G, B, NIR
    expected[:, :10, :12] = 0  # no-data pixels are fed as zero reflectance
    (rgb,), (aux,) = recording.rgb, recording.aux
    assert np.array_equal(rgb[0].numpy(), expected[:3]) and np.array_equal(aux[0, 0].numpy(), expected[3])


def test_float_files_are_reflectance_and_no_data_in_one_band_is_no_data(tmp_path):
    rng = np.random.default_rng(1)
    reflectance = rng.uniform(0, 0.8, (4, 40, 50)).astype(np.float32)
    path = tmp_path / "reflectance.tif"
    reflectance[3, 5:9, 20:30] = -1.0  # the file's no-data value in the NIR band only
    profile = {"driver": "GTiff", "height": 40, "width": 50, "count": 4, "dtype": "float32", "crs": "EPSG:4326",
               "transform": from_origin(10.0, 50.0, 0.001, 0.001), "nodata": -1.0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(reflectance)
    recording = Recording(tile=64, overlap=16)
    output = predict_scene(recording, path, tmp_path / "m.tif", (1, 2, 3, 4), 7.0, 3.0)
    expected = stretched(reflectance.astype(np.float64))  # float input: scale and offset do not apply
    expected[:, 5:9, 20:30] = 0  # no data in one band: the pixel has no data, in every band
    assert np.array_equal(recording.rgb[0][0].numpy(), expected[:3])
    assert np.array_equal(recording.aux[0][0, 0].numpy(), expected[3])
    with rasterio.open(output) as mask:
        ids = mask.read(1)
    assert (ids[5:9, 20:30] == NODATA).all() and (np.delete(ids, np.s_[5:9], 0) == 0).all()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sensor", "landsat8"], ((4, 3, 2, 5), 2e-5, -0.1)),
        (["--sensor", "landsat9"], ((4, 3, 2, 5), 2e-5, -0.1)),
        (["--sensor", "sentinel2"], ((4, 3, 2, 8), 1e-4, -0.1)),  # no metadata to say otherwise
        (["--sensor", "sentinel2", "--offset", "0"], ((4, 3, 2, 8), 1e-4, 0.0)),
        (["--sensor", "landsat8", "--bands", "1,2,3,4"], ((1, 2, 3, 4), 2e-5, -0.1)),
        (["--bands", "3,2,1,4", "--scale", "0.5"], ((3, 2, 1, 4), 0.5, 0.0)),
        (["--bands", "3,2,1,4"], ((3, 2, 1, 4), 1.0, 0.0)),
    ],
)
def test_command_line_presets_and_flags_resolve_to_bands_scale_and_offset(flags, expected, tmp_path, monkeypatch):
    import cloudseg.inference.geotiff
    from cloudseg.cli.main import main
    from cloudseg.models import build_model
    from cloudseg.models.checkpoint import save_release
    from cloudseg.sections import to_dict

    seen = {}

    def capture(predictor, source, output, bands, scale, offset, *args, **kwargs):
        seen["call"] = (bands, scale, offset)
        return output

    monkeypatch.setattr(cloudseg.inference.geotiff, "predict_scene", capture)
    torch.manual_seed(0)
    checkpoint = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "best.safetensors")
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "scene.tif"),
                 "--output", str(tmp_path / "mask.tif"), *flags]) == 0  # fmt: skip
    assert seen["call"] == expected


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--scale", "0"], "--scale 0.0: expected a number above 0"),
        (["--scale", "-1"], "--scale -1.0: expected a number above 0"),
        (["--scale", "nan"], "--scale nan: expected a number above 0"),
        (["--offset", "inf"], "--offset inf: expected a finite number"),
    ],
)
def test_a_scale_or_offset_that_would_blank_the_scene_is_refused_before_any_work(
    flags, line, scene, tmp_path, capsys, user_view
):
    from cloudseg.cli.main import main

    arguments = ["predict", "--checkpoint", str(tmp_path / "none.safetensors"), "--input", str(scene), "--output",
                 str(tmp_path / "mask.tif"), "--sensor", "landsat8", *flags]  # fmt: skip
    assert main(arguments) == 2
    assert capsys.readouterr().err.startswith(f"cloudseg: error: {line}")
    assert not (tmp_path / "mask.tif").exists()


@pytest.mark.parametrize(
    ("tags", "offset", "rule"),
    [
        ({"RADIO_ADD_OFFSET": "-1000"}, -0.1, "RADIO_ADD_OFFSET -1000 in its metadata"),
        ({"BOA_ADD_OFFSET": "-1000"}, -0.1, "BOA_ADD_OFFSET -1000 in its metadata"),
        ({"PROCESSING_BASELINE": "05.11"}, -0.1, "processing baseline 05.11"),
        ({"PROCESSING_BASELINE": "N0400"}, -0.1, "processing baseline N0400"),
        ({"PROCESSING_BASELINE": "02.09"}, 0.0, "processing baseline 02.09"),
        ({"PROCESSING_BASELINE": "N0301"}, 0.0, "processing baseline N0301"),
        ({}, -0.1, "no offset or readable processing baseline in its metadata"),
        ({"PROCESSING_BASELINE": "04.00.01"}, -0.1, "no offset or readable processing baseline in its metadata"),
        ({"PROCESSING_BASELINE": "0²"}, -0.1, "no offset or readable processing baseline in its metadata"),
    ],
)
def test_the_sentinel2_offset_comes_from_the_products_metadata(tags, offset, rule, tmp_path, caplog):
    from cloudseg.inference.geotiff import sentinel2_offset

    path = tmp_path / "s2.tif"
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 13, "dtype": "uint16", "crs": "EPSG:32632",
               "transform": from_origin(500000.0, 5200000.0, 10.0, 10.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((13, 8, 8), 1000 + 1234, dtype=np.uint16))  # reflectance 0.1234 in the modern encoding
        if tags:  # an offset on a band, a baseline on the dataset: where each is found, both are read
            dst.update_tags(*([] if "PROCESSING_BASELINE" in tags else [4]), **tags)
    found, said = sentinel2_offset(path, (4, 3, 2, 8), 1e-4)
    assert found == pytest.approx(offset) and said.startswith(rule)


def test_the_sentinel2_rule_applied_is_logged_and_a_bad_offset_tag_is_an_error(tmp_path, monkeypatch, caplog):
    import logging

    import cloudseg.inference.geotiff as geotiff
    from cloudseg.errors import DataError

    path = tmp_path / "s2.tif"
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 13, "dtype": "uint16"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((13, 8, 8), dtype=np.uint16))
        dst.update_tags(4, RADIO_ADD_OFFSET="-1000")
        dst.update_tags(8, RADIO_ADD_OFFSET="0")  # NIR's, read before the red band's, which wins
        dst.update_tags(13, RADIO_ADD_OFFSET="0")  # a band not used: it does not count
    seen = {}
    monkeypatch.setattr(geotiff, "predict_scene", lambda _, source, output, bands, scale, offset: seen.update(
        offset=offset) or output)  # fmt: skip
    monkeypatch.setattr("cloudseg.inference.predictor.Predictor.from_checkpoint", lambda *args: None)
    with caplog.at_level(logging.INFO, logger="cloudseg"):
        scaling = geotiff.SceneScaling.of("sentinel2", None, None, None)
        geotiff.predict_scene_from_checkpoint("ckpt", path, tmp_path / "m.tif", scaling, None)
    assert seen["offset"] == pytest.approx(-0.1)
    assert "Sentinel-2 offset -0.1 (RADIO_ADD_OFFSET -1000 in its metadata); --offset sets another" in caplog.text
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(4, RADIO_ADD_OFFSET="minus a thousand")
    with pytest.raises(DataError, match="RADIO_ADD_OFFSET 'minus a thousand' is not a number; give --offset"):
        geotiff.sentinel2_offset(path, (4, 3, 2, 8), 1e-4)
