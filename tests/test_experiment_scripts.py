"""The experiment scripts under benchmarks/: the seeded ablation runner, the ukis-csmask comparison, the
ensembling comparison and the wall-time recorder."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloudseg.schema import CLASS_NAMES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import records.py by name, as they do when run from benchmarks/


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


def test_wall_time_records_the_commands_time_and_what_it_wrote(tmp_path):
    written = tmp_path / "scores.json"
    command = [sys.executable, str(BENCHMARKS / "wall_time.py"), "--repeats", "2", "--json", str(tmp_path / "r.json"),
               "--collect", str(tmp_path / "*.json"), "--", sys.executable, "-c",
               f"import json; json.dump({{'mIoU': 0.5}}, open({str(written)!r}, 'w'))"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["command"].startswith("python benchmarks/wall_time.py --repeats 2") and record["commit"]
    assert len(record["wall_s"]) == 2 and record["median_wall_s"] > 0 and record["timed"][0] == sys.executable
    assert record["collected"] == {str(written): {"mIoU": 0.5}}


def test_ensembling_scores_each_mean_and_members_on_a_split(synth_root, tmp_path):
    import torch

    from cloudseg.models import build_model
    from cloudseg.models.checkpoint import save_release
    from cloudseg.sections import to_dict
    from tests.conftest import B0

    ensembling = script("ensembling")
    torch.manual_seed(0)
    same = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "a.safetensors")
    result = ensembling.compare([same, same], synth_root, "test", list(ensembling.MEANS))
    # Two copies of one model: each mean is that model, whichever way it averages.
    assert result["images"] == 2 and result["members"][0]["mIoU"] == result["members"][1]["mIoU"]
    for mean in ("logit_mean", "probability_mean"):
        assert result[mean] == {k: v for k, v in result["members"][0].items() if k != "checkpoint"}
    other = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "b.safetensors")
    assert "probability_mean" not in ensembling.compare([same, other], synth_root, "test", ["logit_mean"])


def test_scaling_times_each_process_count_and_compares_their_outputs(tmp_path):
    import os

    import torch

    from cloudseg.models import build_model
    from cloudseg.models.checkpoint import save_release
    from cloudseg.sections import to_dict
    from tests.conftest import B0

    torch.manual_seed(0)
    checkpoint = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "best.safetensors")
    command = [sys.executable, str(BENCHMARKS / "scaling.py"), "--checkpoint", str(checkpoint), "--scenes", "3",
               "--size", "80", "--processes", "1", "2", "--json", str(tmp_path / "r.json"), "--predict-options",
               "--predict.tile", "64", "--predict.overlap", "16"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent / "src")}
    subprocess.run(command, check=True, capture_output=True, env=environment)
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["outputs_identical"] is True and record["megapixels"] == 3 * 80 * 80 / 1e6
    assert record["predict_options"] == ["--predict.tile", "64", "--predict.overlap", "16"]
    assert record["speedup"]["1"] == 1.0 and set(record["wall_s"]) == {"1", "2"}
    scaling = script("scaling")
    masks = {"a.png": b"\x00\x01", "submission.csv": b"a.png,1 2"}
    assert scaling.all_identical([masks, dict(masks)]) and not scaling.all_identical([masks, {**masks, "a.png": b"\0"}])


def test_predict_variants_scores_each_way_to_run_and_its_difference_from_fp32(synth_root, tmp_path):
    import os

    import torch

    from cloudseg.models import build_model
    from cloudseg.models.checkpoint import save_release
    from cloudseg.sections import to_dict
    from tests.conftest import B0

    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    checkpoint = save_release(build_model("cmx_b0").eval(), to_dict(B0), tmp_path / "best.safetensors")
    command = [sys.executable, str(BENCHMARKS / "predict_variants.py"), "--checkpoint", str(checkpoint), "--root",
               str(synth_root), "--split", "test", "--json", str(tmp_path / "r.json")]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent / "src")}
    subprocess.run(command, check=True, capture_output=True, env=environment)
    test = json.loads((tmp_path / "r.json").read_text())["test"]
    assert set(test["mIoU"]) == {"torch_32", "torch_bf16", "onnx", "onnx_int8"}
    onnx, fp32 = test["mIoU"]["onnx"][0], test["mIoU"]["torch_32"][0]
    assert test["difference_from_torch_32"]["onnx"][0] == pytest.approx(onnx - fp32)
    assert test["largest_difference"]["onnx"] < 1e-3  # the same graph, to float rounding
