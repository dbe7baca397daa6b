"""`cloudseg predict`, `export` and `demo` as a user runs them, including bad input."""

import cv2
import numpy as np
import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import Config, to_dict
from cloudseg.data.io import load_label
from cloudseg.models import build_model
from cloudseg.models.checkpoint import save_release


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_release(
        build_model("cmx_b0").eval(), to_dict(Config()), tmp_path_factory.mktemp("ckpt") / "best.safetensors"
    )


def test_predict_writes_masks_of_the_input_size_and_optional_maps(checkpoint, synth_root, tmp_path):
    output = tmp_path / "masks"
    code = main(["predict", "--checkpoint", str(checkpoint), "--input", str(synth_root), "--output", str(output),
                 "--submission", str(tmp_path / "sub.csv"), "--predict.tile", "48", "--predict.overlap", "16",
                 "--predict.index_masks", "true", "--predict.probabilities", "true",
                 "--predict.uncertainty", "entropy"])  # fmt: skip
    assert code == 0
    masks = sorted(output.glob("*.png"))
    assert [m.name for m in masks] == ["synth_0000.png", "synth_0001.png"]  # the test split
    ids = load_label(masks[0])  # only class colours
    assert ids.shape == (64, 64) and np.array_equal(cv2.imread(str(output / "index" / masks[0].name), 0), ids)
    probabilities = [cv2.imread(str(output / "probabilities" / f"synth_0000_{c}.png"), 0).astype(int) for c in
                     ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")]  # fmt: skip
    assert np.abs(sum(probabilities) - 255).max() <= 3
    assert (output / "uncertainty" / "synth_0000.png").is_file()
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 3


def test_predict_one_pair_of_odd_size(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("rgb", "ngr"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "odd.png"), rng.integers(0, 255, (45, 71, 3), dtype=np.uint8))
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "rgb" / "odd.png"),
                 "--output", str(tmp_path / "out"), "--predict.tile", "32", "--predict.overlap", "8"]) == 0  # fmt: skip
    assert cv2.imread(str(tmp_path / "out" / "odd.png")).shape == (45, 71, 3)


def test_bf16_precision_runs_the_model_in_bf16_on_a_cpu_within_its_rounding():
    from cloudseg.inference.predict import model_predictor

    torch.manual_seed(0)
    model = build_model("cmx_b0").eval()
    rgb, aux = torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64)
    cpu = torch.device("cpu")
    full = model_predictor(model, cpu, "32")(rgb, aux)
    assert torch.equal(model_predictor(model, cpu, "auto")(rgb, aux), full)  # auto is fp32 on a CPU
    half = model_predictor(model, cpu, "bf16")(rgb, aux)
    error = ((half.float() - full).norm() / full.norm()).item()
    assert 1e-4 < error < 5e-2  # really bf16 (not fp32), but only by bf16's rounding


def test_bad_inputs_give_one_line_and_exit_code_2(checkpoint, synth_root, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "not_a_checkpoint.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "a_file").write_text("")
    cases = [
        (["--checkpoint", str(tmp_path / "not_a_checkpoint.safetensors"), "--input", str(synth_root)],
         "not_a_checkpoint.safetensors: cannot read it"),
        (["--checkpoint", str(checkpoint), "--input", str(tmp_path / "empty")], "no rgb/ and ngr/ folders"),
        (["--checkpoint", str(checkpoint), "--input", str(synth_root), "--output", str(tmp_path / "a_file" / "x")],
         "cannot write here"),
    ]  # fmt: skip
    for arguments, message in cases:
        if "--output" not in arguments:
            arguments += ["--output", str(tmp_path / "out")]
        assert main(["predict", *arguments]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("cloudseg: error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_onnx_export_matches_pytorch_on_two_sizes(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "model.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    from cloudseg.models.checkpoint import load_model

    model, _ = load_model(checkpoint)
    for batch, height, width in ((1, 64, 64), (2, 97, 130)):
        rgb, aux = torch.randn(batch, 3, height, width), torch.randn(batch, 1, height, width)
        (logits,) = session.run(None, {"rgb": rgb.numpy(), "aux": aux.numpy()})
        with torch.no_grad():
            reference = model(rgb, aux).numpy()
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 1e-3


def test_fast_demo_runs_the_whole_path(tmp_path, capsys):
    assert main(["demo", "--fast", "--output", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "test mean IoU" in out
    for item in ("submission.csv", "evaluation/metrics.json", "evaluation/confusion.png", "masks/synth_0000.png"):
        assert (tmp_path / "demo" / item).is_file(), item
