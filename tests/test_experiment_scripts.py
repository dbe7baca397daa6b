"""The experiment scripts under benchmarks/: the seeded ablation runner and the ukis-csmask comparison."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloudseg.schema import CLASS_NAMES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ablation(*args: str) -> str:
    command = [sys.executable, str(BENCHMARKS / "ablation.py"), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def fake_result(folder: Path, seed: int, miou: float) -> None:
    scores = {"mIoU": miou, "accuracy": 0.9, **{f"iou/{c}": miou for c in CLASS_NAMES}}
    folder.mkdir(parents=True)
    result = {"seed": seed, "train_minutes": 2.0, "val": scores, "test": scores}
    (folder / "result.json").write_text(json.dumps(result))


def test_table_gives_mean_sample_sd_and_range_over_seeds(tmp_path):
    for seed, miou in enumerate((0.40, 0.50, 0.60)):
        fake_result(tmp_path / "cmx_b0" / f"seed{seed}", seed, miou)
    fake_result(tmp_path / "rgb_b0" / "seed0", 0, 0.30)
    rows = ablation("table", "--out", str(tmp_path)).strip().splitlines()
    assert rows[2].startswith("| cmx_b0 | 3 | 0.500 ± 0.100 [0.400, 0.600] | 0.500 ± 0.100 |")
    assert rows[3].startswith("| rgb_b0 | 1 | 0.300 ± 0.000 [0.300, 0.300] |")


def test_run_trains_evaluates_test_once_and_skips_finished_runs(synth_root, tmp_path):
    out = tmp_path / "out"
    tiny = ["--epochs", "1", "--set", "data.augment.crop_size=64", "--set", "data.batch_size=4",
            "--set", "data.num_workers=0", "--set", "trainer.panels=0"]  # fmt: skip
    command = ("run", "rgb_b0", "--seeds", "3", "--root", str(synth_root), "--out", str(out), "--tag", "_t", *tiny)
    ablation(*command)
    result_file = out / "rgb_b0_t" / "seed3" / "result.json"
    result = json.loads(result_file.read_text())
    run_dir = Path(result["run_dir"])
    test = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert test["split"] == "test" and test["images"] == 2
    assert result["test"]["mIoU"] == test["mIoU"] and result["seed"] == 3
    assert "segformer_b0" in result["commands"][0] and "--trainer.seed 3" in result["commands"][0]
    assert json.loads((run_dir / "checkpoints" / "best.json").read_text())["config"]["model"]["name"] == "segformer_b0"
    stamp = result_file.stat().st_mtime_ns
    table = ablation(*command)
    assert result_file.stat().st_mtime_ns == stamp  # finished: not trained again
    assert f"| rgb_b0_t | 1 | {test['mIoU']:.3f} ± 0.000" in table


def test_ukis_comparison_merges_thick_and_thin_into_cloud():
    compare = script("compare_ukis")
    truth = compare.CLOUDSEG_TO_MERGED[np.array([[0, 1], [2, 3]])]
    assert truth.tolist() == [[0, 1], [1, 2]]
    confusion = compare.merged_confusion(truth, np.array([[0, 1], [2, 2]]))
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]  # rows: truth; columns: prediction
    assert compare.scores(confusion)["iou/cloud"] == pytest.approx(0.5)


def test_ukis_comparison_scores_each_seed_alone_and_an_ensemble_as_one_model():
    compare = script("compare_ukis")
    args = compare.argparse.Namespace(model=[["cmx", "s0", "s1"]], ensemble=[["folds", "f0", "f1", "f2"]])
    assert compare.model_runs(args) == {"cmx": ["s0", "s1"], "folds": [["f0", "f1", "f2"]]}
