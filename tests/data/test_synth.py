"""Synthetic scenes: deterministic, all four classes, and band responses that look like the real thing."""

import numpy as np

from cloudseg.cli.main import main
from cloudseg.data.check import check_dataset
from cloudseg.data.dataset import find_samples
from cloudseg.data.io import read_sample
from cloudseg.data.synth import make_scene, synthesize


def test_same_seed_gives_identical_files_with_any_workers_and_another_seed_does_not(tmp_path):
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        synthesize(tmp_path / name, n_train=3, n_test=1, size=48, seed=seed, workers=workers)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 3 * 3 + 1 * 3
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)


def test_written_dataset_is_valid_and_holds_every_class(synth_root):
    report = check_dataset(synth_root)
    assert report.ok, report.format()
    per_image = [
        np.bincount(read_sample(s)[2].ravel(), minlength=4)
        for s in find_samples(synth_root / "train", synth_root / "train" / "label")
    ]
    assert sum((counts > 0).all() for counts in per_image) >= 0.75 * len(per_image)


def test_classes_have_the_band_responses_of_real_scenes():
    image, ids = make_scene(np.random.default_rng(1), 128)
    clear, thick, shadow = (image[ids == c].mean(axis=0) for c in (0, 1, 3))
    assert (thick > clear).all()  # thick cloud is brighter in every band
    assert (shadow < clear).all()  # shadow is darker in every band
    vegetation = image[(ids == 0) & (image[..., 3] > 2 * image[..., 0])]
    assert len(vegetation) > 0  # vegetation: NIR far above red


def test_synth_command_writes_the_dataset(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "--n", "2", "--test", "1", "--size", "32"]) == 0
    assert "wrote 2 training and 1 test scenes of 32x32" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "test_labels").glob("*.png"))) == 1


def test_synth_refuses_to_mix_new_scenes_into_a_full_folder(tmp_path, capsys, user_view):
    assert main(["synth", str(tmp_path / "d"), "--n", "2", "--size", "32"]) == 0
    assert main(["synth", str(tmp_path / "d"), "--n", "3", "--size", "32"]) == 2
    assert "the folder is not empty; choose a new one, or --overwrite" in capsys.readouterr().err
    assert len(list((tmp_path / "d" / "train" / "rgb").iterdir())) == 2  # nothing was added
    assert main(["synth", str(tmp_path / "d"), "--n", "3", "--size", "32", "--overwrite"]) == 0
    assert len(list((tmp_path / "d" / "train" / "rgb").iterdir())) == 3  # replaced, not mixed
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("months of work")
    assert main(["synth", str(tmp_path / "mine"), "--n", "2", "--overwrite"]) == 2
    assert "--overwrite replaces only a synthetic dataset" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "months of work"
