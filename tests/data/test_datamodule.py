"""Splits, the dataset object, and the DataModule's loaders."""

import json

import numpy as np
import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import AugmentConfig, DataConfig, PredictConfig
from cloudseg.data.datamodule import CloudDataModule
from cloudseg.data.dataset import CloudDataset, find_samples, prepare_sample
from cloudseg.data.io import read_sample
from cloudseg.data.split import fold_split, load_split, make_split
from cloudseg.errors import ConfigError, DataError
from cloudseg.inference.predictor import Predictor
from cloudseg.models.checkpoint import Release
from cloudseg.schema import AUX_NORM, RGB_NORM
from tests.conftest import B0

SMALL_CROP = AugmentConfig(crop_size=32)  # the synthetic scenes are 64²


def test_split_is_deterministic_disjoint_and_complete():
    names = [f"n{i}" for i in range(50)]
    split = make_split(names, 0.2, seed=7)
    assert split == make_split(names, 0.2, seed=7) and split != make_split(names, 0.2, seed=8)
    assert len(split.val) == 10 and sorted(split.train + split.val) == sorted(names)


@pytest.mark.parametrize(("count", "fraction", "validated"), [(2, 0.99, 1), (3, 0.9, 2), (1, 0.5, 0), (4, 0.01, 1)])
def test_a_split_leaves_at_least_one_name_on_each_side(count, fraction, validated):
    split = make_split([f"n{i}" for i in range(count)], fraction, seed=0)
    assert (len(split.train), len(split.val)) == (count - validated, validated)


def test_folds_validate_every_name_once_in_balanced_seeded_parts():
    names = [f"n{i}" for i in range(23)]
    splits = [fold_split(names, 5, fold, seed=3) for fold in range(5)]
    validated = [name for split in splits for name in split.val]
    assert sorted(validated) == sorted(names)  # each name in exactly one fold's validation
    assert sorted(len(split.val) for split in splits) == [4, 4, 5, 5, 5]
    for split in splits:
        assert sorted(split.train + split.val) == sorted(names) and not set(split.train) & set(split.val)
    assert fold_split(names, 5, 2, seed=3) == splits[2] and fold_split(names, 5, 2, seed=4) != splits[2]
    for folds, fold in ((1, 0), (5, 5), (5, -1), (24, 0)):
        with pytest.raises(DataError, match=r"data\.fold"):
            fold_split(names, folds, fold, seed=0)


def test_datamodule_takes_its_validation_from_the_fold_and_refuses_contradictions(synth_root, tmp_path):
    module = CloudDataModule(
        DataConfig(root=str(synth_root), augment=SMALL_CROP, num_workers=0, folds=4, fold=1, split_seed=2)
    )
    module.setup("fit")
    names = sorted(module.split.train + module.split.val)
    assert module.split == fold_split(names, 4, 1, seed=2) and len(module.split.val) == 2
    with pytest.raises(ConfigError, match=r"data\.fold 1 needs data\.folds"):
        CloudDataModule(DataConfig(root=str(synth_root), augment=SMALL_CROP, fold=1))
    with pytest.raises(ConfigError, match="set one of them"):
        CloudDataModule(
            DataConfig(root=str(synth_root), augment=SMALL_CROP, folds=4, split_file=str(tmp_path / "split.json"))
        )


def test_split_file_round_trip_and_errors(tmp_path):
    names = ["a", "b", "c"]
    make_split(names, 0.34, 0).save(tmp_path / "split.json")
    assert load_split(tmp_path / "split.json", names) == make_split(names, 0.34, 0)
    (tmp_path / "bad.json").write_text(json.dumps({"train": ["a", "zz"], "val": ["b"]}))
    with pytest.raises(DataError, match=r"1 names are not in the dataset, e\.g\. 'zz'"):
        load_split(tmp_path / "bad.json", names)


def test_dataset_serves_the_files_pixels_and_prepare_batch_normalises_them_with_the_schema(synth_root):
    samples = find_samples(synth_root / "train", synth_root / "train" / "label")
    item = CloudDataset(samples)[0]
    rgb, nir, mask = read_sample(samples[0])
    assert all(item[k].dtype == torch.uint8 for k in ("rgb", "aux", "mask"))
    assert np.array_equal(item["rgb"].permute(1, 2, 0).numpy(), rgb) and np.array_equal(item["aux"][0], nir[..., 0])
    assert np.array_equal(item["mask"].numpy(), mask)

    batch = prepare_sample(item, torch.device("cpu"))
    assert batch["rgb"].shape == (1, 3, 64, 64) and batch["rgb"].dtype == torch.float32
    assert batch["mask"].dtype == torch.int64
    for channel in range(3):
        expected = (rgb[5, 7, channel] / 255 - RGB_NORM.mean[channel]) / RGB_NORM.std[channel]
        assert batch["rgb"][0, channel, 5, 7].item() == pytest.approx(expected, abs=1e-6)
    assert batch["aux"][0, 0, 5, 7].item() == pytest.approx((nir[5, 7, 0] / 255 - AUX_NORM.mean[0]) / AUX_NORM.std[0])
    assert torch.equal(batch["mask"][0], item["mask"].long())
    fed = []  # prediction normalises its uint8 images as training does

    class Feeding(torch.nn.Module):
        def forward(self, rgb, aux):
            fed.append((rgb, aux))
            return torch.zeros(1, 4, *rgb.shape[-2:])

    Predictor(Feeding(), Release.of(B0), torch.device("cpu"), PredictConfig()).logits(item["rgb"], item["aux"])
    assert torch.equal(fed[0][0], batch["rgb"]) and torch.equal(fed[0][1], batch["aux"])


def test_datamodule_serves_augmented_crops_and_whole_validation_images(synth_root):
    cfg = DataConfig(root=str(synth_root), batch_size=2, num_workers=0, augment=AugmentConfig(crop_size=32))
    module = CloudDataModule(cfg)
    module.setup("fit")
    assert len(module.split.train) == 6 and len(module.split.val) == 2
    batch = next(iter(module.train_dataloader()))
    assert batch["rgb"].shape == (2, 3, 32, 32) and batch["aux"].shape == (2, 1, 32, 32)
    assert batch["mask"].shape == (2, 32, 32)
    val = next(iter(module.val_dataloader()))
    assert val["rgb"].shape == (2, 3, 64, 64) and set(val["name"]) == set(module.split.val)


def test_the_training_loader_begins_the_next_epoch_early_and_serves_the_same_batches(synth_root):
    def module(workers: int) -> CloudDataModule:
        cfg = DataConfig(root=str(synth_root), batch_size=2, num_workers=workers, augment=AugmentConfig(crop_size=32))
        m = CloudDataModule(cfg)
        m.setup("fit")
        return m

    def epoch(loader, number: int) -> list[torch.Tensor]:
        batches = iter(loader)  # as Lightning: the iterator first, then set_epoch, then the batches
        loader.sampler.set_epoch(number)
        return [torch.cat((b["rgb"].flatten(), b["mask"].flatten())) for b in batches]

    plain, ahead = module(0).train_dataloader(), module(2).train_dataloader()
    for number in (0, 1, 2, 7):  # 7: a resumed run, not the epoch begun
        expected = epoch(plain, number)
        assert len(expected) == 3
        assert all(torch.equal(a, b) for a, b in zip(epoch(ahead, number), expected, strict=True))
        assert ahead.epoch_ahead == number + 1  # the workers are on the next epoch before it is asked for
    assert not all(torch.equal(a, b) for a, b in zip(epoch(plain, 0), epoch(plain, 1), strict=True))


def test_each_ddp_process_validates_its_own_share_and_together_every_image_once(synth_root):
    from types import SimpleNamespace

    cfg = DataConfig(root=str(synth_root), augment=SMALL_CROP, batch_size=1, num_workers=0, val_fraction=0.5)
    module = CloudDataModule(cfg)
    module.setup("fit")
    shares = []
    for rank in range(3):
        module.trainer = SimpleNamespace(global_rank=rank, world_size=3)
        shares.append([name for batch in module.val_dataloader() for name in batch["name"]])
    assert sorted(n for share in shares for n in share) == sorted(module.split.val)
    assert [len(share) for share in shares] == [2, 1, 1]
    module.trainer = SimpleNamespace(global_rank=4, world_size=5)  # more processes than images: all see all
    assert sorted(name for batch in module.val_dataloader() for name in batch["name"]) == sorted(module.split.val)


def test_datamodule_refuses_a_broken_folder_before_training(tmp_path):
    (tmp_path / "train" / "rgb").mkdir(parents=True)
    with pytest.raises(DataError, match="problems in the dataset"):
        CloudDataModule(DataConfig(root=str(tmp_path))).setup("fit")


@pytest.mark.parametrize("copy_paste", [0.0, 1.0])
def test_show_augmentations_outlines_exactly_the_pasted_objects(synth_root, tmp_path, copy_paste):
    import cv2

    from cloudseg.data.preview import COLUMNS
    from cloudseg.panels import GAP, PASTED_RGB

    output = tmp_path / "aug.png"
    args = [
        "-n",
        "3",
        "-o",
        str(output),
        "--data.augment.crop_size",
        "32",
        "--data.augment.copy_paste",
        str(copy_paste),
    ]
    assert main(["show-augmentations", str(synth_root), *args]) == 0
    grid = cv2.imread(str(output))[..., ::-1]
    assert grid.shape[1] == len(COLUMNS) * (192 + GAP) + GAP
    pasted = np.all(grid == PASTED_RGB, axis=2)
    starts = [GAP + j * (192 + GAP) for j in range(len(COLUMNS))]
    columns = [pasted[:-40, start : start + 192].sum() for start in starts]  # the legend's swatch left out
    assert columns[0] == 0 and columns[2:] == [0, 0, 0]  # only the whole image after copy-paste is marked
    assert (columns[1] > 0) == (copy_paste == 1.0)


def test_show_augmentations_on_the_shared_sample_writes_outside_it(l8biome, tmp_path):
    assert (
        main(
            [
                "show-augmentations",
                str(l8biome),
                "-n",
                "2",
                "-o",
                str(tmp_path / "aug.png"),
                "--data.augment.crop_size",
                "256",
            ]
        )
        == 0
    )
    assert (tmp_path / "aug.png").is_file()


def test_files_pair_by_name_across_png_jpg_and_tif(tmp_path):
    import cv2

    from cloudseg.data.io import index_to_colour

    image = np.full((16, 24, 3), 120, np.uint8)
    for folder, suffix in (("rgb", ".jpg"), ("ngr", ".tif"), ("label", ".png")):
        (tmp_path / "train" / folder).mkdir(parents=True)
        data = index_to_colour(np.ones((16, 24), np.uint8)) if folder == "label" else image
        cv2.imwrite(str(tmp_path / "train" / folder / f"scene{suffix}"), data)
    (sample,) = find_samples(tmp_path / "train", tmp_path / "train" / "label")
    assert (sample.rgb.suffix, sample.ngr.suffix, sample.label.suffix) == (".jpg", ".tif", ".png")
    rgb, nir, mask = read_sample(sample)
    assert rgb.shape == (16, 24, 3) and nir.shape == (16, 24, 1) and (mask == 1).all()


def test_class_pixels_count_the_training_split_only(synth_root):
    from cloudseg.data.io import load_label

    module = CloudDataModule(DataConfig(root=str(synth_root), augment=SMALL_CROP, val_fraction=0.25, num_workers=0))
    module.setup("fit")
    by_name = {s.name: s for s in find_samples(synth_root / "train", synth_root / "train" / "label")}
    expected = sum(np.bincount(load_label(by_name[n].label).ravel(), minlength=4) for n in module.split.train)
    assert module.train_class_pixels().tolist() == expected.tolist()
    assert module.train_class_pixels().sum() == len(module.split.train) * 64 * 64 < len(by_name) * 64 * 64


def test_a_crop_larger_than_the_images_is_refused_unless_upscaling_is_asked_for(synth_root):
    too_large = AugmentConfig(crop_size=128)  # the synthetic scenes are 64²
    with pytest.raises(ConfigError, match=r"data.augment.crop_size 128 is larger than the smallest training image "
                       r"\(64x64\); lower it to at most 64, or set --data.augment.upscale true"):  # fmt: skip
        CloudDataModule(DataConfig(root=str(synth_root), augment=too_large, num_workers=0)).setup("fit")
    upscaled = AugmentConfig(crop_size=128, upscale=True)
    module = CloudDataModule(DataConfig(root=str(synth_root), augment=upscaled, num_workers=0))
    module.setup("fit")
    assert module.train_set[0]["rgb"].shape == (3, 128, 128)
