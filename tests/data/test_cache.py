"""`cloudseg cache`: cached samples equal decoded ones, and a stale cache is refused."""

import os
import shutil
from pathlib import Path

import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import AugmentConfig
from cloudseg.data.cache import build_cache
from cloudseg.data.dataset import CloudDataset, find_samples
from cloudseg.data.transforms import CopyPaste, TrainTransform
from cloudseg.errors import DataError

SMALL_CROP = AugmentConfig(crop_size=32)  # the synthetic scenes are 64²


def test_training_samples_from_the_cache_equal_decoded_ones(synth_root, tmp_path, capsys):
    assert main(["cache", str(synth_root), "-o", str(tmp_path / "cache")]) == 0
    samples = find_samples(synth_root / "train", synth_root / "train" / "label")
    augment = AugmentConfig(crop_size=48, copy_paste=1.0)
    plain = CloudDataset(samples, TrainTransform(augment), CopyPaste.from_config(augment))
    cached = CloudDataset(samples, TrainTransform(augment), CopyPaste.from_config(augment), cache=tmp_path / "cache")
    for key in [(0, 11), (3, 12), (7, 13)]:  # (index, seed) keys as the training sampler gives them
        a, b = plain[key], cached[key]
        assert a["name"] == b["name"] and all(torch.equal(a[k], b[k]) for k in ("rgb", "aux", "mask"))


def test_validation_reads_the_cache_too_and_gets_the_decoded_images(synth_root, tmp_path, capsys):
    from cloudseg.config import DataConfig
    from cloudseg.data.datamodule import CloudDataModule

    assert main(["cache", str(synth_root), "-o", str(tmp_path / "cache")]) == 0
    modules = []
    for cache in (None, str(tmp_path / "cache")):
        modules.append(
            CloudDataModule(DataConfig(root=str(synth_root), augment=SMALL_CROP, num_workers=0, cache=cache))
        )
        modules[-1].setup("fit")
    plain, cached = (m.val_set for m in modules)
    assert plain.cache is None and cached.cache is not None and len(cached) == 2
    for a, b in zip(plain, cached, strict=True):
        assert a["name"] == b["name"] and all(torch.equal(a[k], b[k]) for k in ("rgb", "aux", "mask"))


def test_every_scene_that_cannot_be_read_is_named_at_once_and_no_index_is_written(synth_root, tmp_path):
    root = Path(shutil.copytree(synth_root, tmp_path / "data"))
    damaged = [*sorted((root / "train" / "rgb").iterdir())[:2], sorted((root / "train" / "label").iterdir())[3]]
    for path in damaged:
        path.write_bytes(b"not a png")
    samples = find_samples(root / "train", root / "train" / "label")
    with pytest.raises(DataError, match=r"^3 of 8 scenes cannot be read: ") as caught:
        build_cache(samples, tmp_path / "cache")
    assert all(str(path) in str(caught.value) for path in damaged)
    assert not (tmp_path / "cache" / "index.json").exists()


def test_a_stale_or_missing_cache_is_refused(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    samples = find_samples(root / "train", root / "train" / "label")
    assert main(["cache", str(root), "-o", str(tmp_path / "cache")]) == 0
    label = root / "train" / "label" / "synth_0002.png"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=r"cache is out of date \(1 scenes changed or are missing, e\.g\. synth_0002\)"):
        CloudDataset(samples, cache=tmp_path / "cache")
    with pytest.raises(DataError, match="no readable cache index"):
        CloudDataset(samples, cache=tmp_path / "nowhere")


def test_a_valid_cache_stands_for_the_full_check_of_the_folder(synth_root, tmp_path, monkeypatch):
    import cloudseg.data.datamodule as datamodule
    from cloudseg.config import DataConfig

    assert main(["cache", str(synth_root), "-o", str(tmp_path / "cache")]) == 0
    checked = datamodule.CloudDataModule(DataConfig(root=str(synth_root), augment=SMALL_CROP, num_workers=0))
    checked.setup("fit")
    pixels = checked.train_class_pixels()

    def decode_everything(*args, **kwargs):
        raise AssertionError("the dataset was checked again, decoding every image")

    monkeypatch.setattr(datamodule, "check_dataset", decode_everything)
    monkeypatch.setattr(datamodule, "load_label", decode_everything)
    cached = datamodule.CloudDataModule(
        DataConfig(root=str(synth_root), augment=SMALL_CROP, num_workers=0, cache=str(tmp_path / "cache"))
    )
    cached.setup("fit")
    assert cached.uniform_size is checked.uniform_size is True
    assert cached.split == checked.split
    assert (cached.train_class_pixels() == pixels).all()
    assert pixels.sum() == 6 * 64 * 64  # the 6 training scenes' pixels, each counted once
