"""`cloudseg predict` over many GeoTIFF scenes: a folder, a glob or a list of them, each written as the one-scene
path writes it, recorded in the manifest, resumable, and shared between processes."""

import json
import shutil

import numpy as np
import pytest

from cloudseg.cli.main import main
from cloudseg.errors import DataError
from cloudseg.inference.geotiff import SceneFile
from cloudseg.inference.manifest import MANIFEST
from cloudseg.inference.sources import find_inputs
from tests.inference.test_predict import write_pairs

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

SIZES = {"north": (150, 170), "south": (60, 40), "west": (90, 130)}
SETTINGS = ["--sensor", "landsat8", "--predict.tile", "64", "--predict.overlap", "16"]


def write_scenes(folder, sizes=SIZES, seed=0):
    """5-band uint16 Landsat-like scenes with a no-data corner."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (height, width) in sizes.items():
        data = rng.integers(5000, 45000, (5, height, width), dtype=np.uint16)
        data[:, :5, :7] = 0
        profile = {"driver": "GTiff", "height": height, "width": width, "count": 5, "dtype": "uint16", "nodata": 0,
                   "crs": "EPSG:32632", "transform": from_origin(500000.0, 5200000.0, 30.0, 30.0)}  # fmt: skip
        with rasterio.open(folder / f"{name}.tif", "w", **profile) as dst:
            dst.write(data)
    return folder


def test_folders_globs_and_lists_name_scenes_of_one_kind(tmp_path):
    scenes = write_scenes(tmp_path / "scenes")
    names = sorted(SIZES)
    assert find_inputs(scenes) == [SceneFile(n, scenes / f"{n}.tif") for n in names]
    assert [s.name for s in find_inputs(tmp_path / "scenes" / "*th.tif")] == ["north", "south"]
    assert [s.name for s in find_inputs(scenes / "west.tif")] == ["west"]
    listing = tmp_path / "archive.txt"
    listing.write_text("scenes/north.tif\n# a glob, relative to the list\nscenes/w*.tif\n")
    assert [s.name for s in find_inputs(listing)] == ["north", "west"]
    write_pairs(tmp_path / "pairs", {"pair": (32, 32)})
    listing.write_text("scenes/north.tif\npairs\n")
    with pytest.raises(DataError, match=r"archive.txt, line 2: lists GeoTIFF scenes and image pairs"):
        find_inputs(listing)
    with pytest.raises(DataError, match=r"nothing\*.tif: matches no GeoTIFF scene"):
        find_inputs(tmp_path / "nothing*.tif")


def test_a_folder_of_scenes_gives_the_masks_the_one_scene_command_gives(checkpoint, tmp_path, capsys):
    scenes = write_scenes(tmp_path / "scenes")
    out = tmp_path / "masks"
    arguments = ["predict", "--checkpoint", str(checkpoint), "--input", str(scenes), "--output", str(out)]
    assert main([*arguments, *SETTINGS]) == 0
    assert "3 masks in" in capsys.readouterr().out
    entries = {json.loads(line)["name"]: json.loads(line) for line in (out / MANIFEST).read_text().splitlines()}
    assert sorted(entries) == sorted(SIZES)
    for name, (height, width) in SIZES.items():
        single = tmp_path / f"{name}_alone.tif"
        assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(scenes / f"{name}.tif"),
                     "--output", str(single), *SETTINGS]) == 0  # fmt: skip
        with rasterio.open(out / f"{name}.tif") as mask, rasterio.open(single) as alone:
            ids = mask.read(1)
            assert np.array_equal(ids, alone.read(1)) and mask.transform == alone.transform
            assert mask.profile["tiled"] and mask.nodata == 255
        entry = entries[name]
        assert (entry["height"], entry["width"]) == (height, width)
        assert entry["mpx_per_s"] == pytest.approx(entry["mpx"] / entry["seconds"], rel=1e-2, abs=1e-3)
        counts = np.bincount(ids[ids != 255], minlength=4)
        assert list(entry["shares"].values()) == pytest.approx(counts / counts.sum(), abs=1e-6)
    # A rerun skips all three; a changed scene is redone, and only it.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    shutil.copy(scenes / "south.tif", tmp_path / "south.tif")
    write_scenes(scenes, {"south": SIZES["south"]}, seed=1)
    assert main([*arguments, *SETTINGS]) == 0
    assert "3 masks in" in capsys.readouterr().out
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    assert [name for name in stamps if now[name] != stamps[name]] == ["south.tif"]
    # Other scaling is another run: everything is redone.
    assert main([*arguments, *SETTINGS, "--offset", "0"]) == 0
    assert "from an earlier run" not in capsys.readouterr().out


def test_scenes_need_bands_and_pairs_refuse_them(checkpoint, tmp_path, capsys, synth_root):
    scenes = write_scenes(tmp_path / "scenes", {"one": (40, 40)})
    base = ["predict", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")]
    assert main([*base, "--input", str(scenes)]) == 2
    assert "GeoTIFF scenes; say which bands are R, G, B and NIR" in capsys.readouterr().err
    assert main([*base, "--input", str(synth_root), "--sensor", "landsat8"]) == 2
    assert "are for GeoTIFF scenes;" in capsys.readouterr().err
    assert main([*base, "--input", str(scenes), "--sensor", "landsat8", "--submission", "s.csv"]) == 2
    assert "--submission encodes masks of image pairs" in capsys.readouterr().err


def test_two_scenes_of_one_name_are_refused_and_device_and_devices_do_not_mix(checkpoint, tmp_path, capsys):
    write_scenes(tmp_path / "x", {"a": (40, 40)})
    write_scenes(tmp_path / "y", {"a": (40, 40), "b": (40, 40)})
    with pytest.raises(DataError, match=r"two images named a, .*x/a\.tif and .*y/a\.tif; their masks would overwrite"):
        find_inputs(f"{tmp_path}/*/*.tif")
    arguments = ["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "y"), "--output",
                 str(tmp_path / "out"), "--sensor", "landsat8", "--device", "cpu"]  # fmt: skip
    assert main([*arguments, "--trainer.devices", "2"]) == 2
    assert "--device names one device; with --trainer.devices, drop it" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
