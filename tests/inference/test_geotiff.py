"""GeoTIFF scenes: georeference kept, blocks agree with the whole scene, no-data and band errors."""

import numpy as np
import pytest
import torch

from cloudseg.errors import DataError
from cloudseg.inference.geotiff import NODATA, predict_scene
from cloudseg.inference.predict import pixel_predictor

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402


def pointwise_predictor():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 1)
    return pixel_predictor(lambda rgb, aux: conv(torch.cat((rgb, aux), dim=1)), torch.device("cpu"))


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


def test_output_keeps_the_georeference_and_blocks_agree_with_the_whole_scene(scene, tmp_path):
    predictor = pointwise_predictor()
    whole = predict_scene(predictor, scene, tmp_path / "whole.tif", (4, 3, 2, 5), 2e-5, -0.1, tile=256, block=4096)
    blocks = predict_scene(predictor, scene, tmp_path / "blocks.tif", (4, 3, 2, 5), 2e-5, -0.1, tile=32, overlap=8,
                           block=48)  # fmt: skip
    with rasterio.open(scene) as src, rasterio.open(whole) as a, rasterio.open(blocks) as b:
        assert a.crs == src.crs and a.transform == src.transform and (a.width, a.height) == (170, 150)
        assert a.count == 1 and a.dtypes[0] == "uint8" and a.nodata == NODATA
        assert a.profile["tiled"] and a.profile["compress"] == "deflate"
        assert a.colormap(1)[1][:3] == (255, 255, 255)
        ids_a, ids_b = a.read(1), b.read(1)
    assert np.array_equal(ids_a, ids_b)
    assert (ids_a[:10, :12] == NODATA).all() and (ids_a[10:, 12:] < 4).all()


def test_too_few_bands_is_an_error_naming_the_file(scene, tmp_path):
    with pytest.raises(DataError, match=r"scene\.tif: has 5 bands; bands 4,3,2,8 \(R, G, B, NIR\) were asked for"):
        predict_scene(pointwise_predictor(), scene, tmp_path / "x.tif", (4, 3, 2, 8), 1e-4, 0.0)
    assert not (tmp_path / "x.tif").exists()


def test_predict_command_reads_a_scene_with_a_sensor_preset(scene, tmp_path, capsys):
    from cloudseg.cli.main import main
    from cloudseg.config import Config, to_dict
    from cloudseg.models import build_model
    from cloudseg.models.checkpoint import save_release

    checkpoint = save_release(build_model("cmx_b0").eval(), to_dict(Config()), tmp_path / "best.safetensors")
    output = tmp_path / "mask.tif"
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(scene), "--output", str(output),
                 "--sensor", "landsat8", "--predict.tile", "64", "--predict.overlap", "16"]) == 0  # fmt: skip
    with rasterio.open(output) as mask:
        assert mask.shape == (150, 170) and mask.read(1)[0, 0] == NODATA
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(scene), "--output", str(output),
                 "--sensor", "sentinel2"]) == 2  # fmt: skip
    assert "has 5 bands; bands 4,3,2,8" in capsys.readouterr().err
