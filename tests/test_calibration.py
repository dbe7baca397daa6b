"""Temperature scaling and the expected calibration error: known answers, a reference (torchmetrics), and the path
of a fitted temperature from a checkpoint's header to every probability cloudseg writes."""

import json

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from cloudseg.calibration import ReliabilityBins, fit_temperature, sample_pixels
from cloudseg.cli.main import main
from cloudseg.config import Config, ModelConfig
from cloudseg.inference.predictor import Predictor
from cloudseg.models import build_model
from cloudseg.models.checkpoint import add_to_header, read_release, save_release
from cloudseg.schema import IGNORE_INDEX
from cloudseg.sections import to_dict


def calibrated_by_construction(count: int = 60000, classes: int = 4, seed: int = 0):
    """Logits, and labels drawn from their own softmax: probabilities that are calibrated exactly."""
    generator = torch.Generator().manual_seed(seed)
    logits = 1.5 * torch.randn(count, classes, generator=generator)
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    return logits, labels


def ece(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    bins = ReliabilityBins()
    bins.update(probabilities, labels)
    return bins.ece()


def test_the_ece_is_torchmetrics_ece_ignored_pixels_left_out():
    logits, labels = calibrated_by_construction(5000)
    probabilities = (3 * logits).softmax(1)
    labels[::7] = IGNORE_INDEX
    reference = MulticlassCalibrationError(num_classes=4, n_bins=15, norm="l1", ignore_index=IGNORE_INDEX)
    assert ece(probabilities, labels) == pytest.approx(float(reference(probabilities, labels)), abs=1e-6)
    images = probabilities.reshape(50, 100, 4).permute(0, 2, 1)[..., None]  # (B, K, H, W) as images come
    assert ece(images, labels.reshape(50, 100, 1)) == pytest.approx(ece(probabilities, labels), abs=1e-12)


def test_an_over_confident_model_gets_its_temperature_back_and_a_lower_ece():
    logits, labels = calibrated_by_construction()
    temperature = fit_temperature(5 * logits, labels)
    assert temperature.shape == (1,) and temperature.item() == pytest.approx(5, rel=0.05)
    before, after = ece((5 * logits).softmax(1), labels), ece((5 * logits / temperature).softmax(1), labels)
    assert before > 0.1 and after < 0.01


def test_one_temperature_per_class_fits_at_least_as_well_as_one():
    logits, labels = calibrated_by_construction()
    skewed = logits * torch.tensor([5.0, 2.0, 1.0, 0.5])  # each class over- or under-confident in its own way
    one, each = fit_temperature(skewed, labels), fit_temperature(skewed, labels, per_class=True)
    nll = [torch.nn.functional.cross_entropy(skewed / t, labels).item() for t in (one, each)]
    assert each.shape == (4,) and nll[1] <= nll[0] + 1e-6 and each[0] > each[3]


def test_pixels_are_drawn_from_labelled_ones_only_and_repeatably():
    logits = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 4, 3, 3)
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    target[0] = IGNORE_INDEX
    drawn = [sample_pixels(logits, target, 5, torch.Generator().manual_seed(1)) for _ in range(2)]
    (pixels, ids), (again, _) = drawn
    assert pixels.shape == (5, 4) and (ids == 0).all() and torch.equal(pixels, again)
    assert (pixels[:, 0] >= 36).all()  # from the second image, whose logits start at 36
    assert len(sample_pixels(logits, target, 100, torch.Generator())[1]) == 9


@pytest.mark.parametrize(
    ("scale", "separable", "cause"),
    [(100.0, False, "a model confidently wrong"), (0.01, True, "a validation split the model separates perfectly")],
)
def test_an_implausible_temperature_is_not_kept_and_the_warning_says_why(scale, separable, cause, tmp_path,
                                                                          monkeypatch, caplog):  # fmt: skip
    import cloudseg.training.calibration as calibration

    generator = torch.Generator().manual_seed(0)
    logits = scale * torch.randn(20000, 4, generator=generator)
    labels = logits.argmax(1) if separable else torch.randint(0, 4, (20000,), generator=generator)
    monkeypatch.setattr(calibration, "validation_logits", lambda *args: (logits, labels))
    path = save_release(build_model("cmx_b0").eval(), to_dict(Config(model=ModelConfig(name="cmx_b0"))),
                        tmp_path / "best.safetensors")  # fmt: skip
    with caplog.at_level("WARNING", logger="cloudseg"):
        calibration.calibrate(path, None, "temperature", torch.device("cpu"), 0)
    assert f"is outside (0.05, 20.0) ({cause}" in caplog.text and "left uncalibrated" in caplog.text
    assert read_release(path).temperature is None


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "best.safetensors"
    save_release(build_model("cmx_b0").eval(), to_dict(Config(model=ModelConfig(name="cmx_b0"))), path)
    calibrated = path.with_name("calibrated.safetensors")
    calibrated.write_bytes(path.read_bytes())
    add_to_header(calibrated, calibration={"method": "temperature", "temperature": [2.5]})
    return path, calibrated


def test_a_fitted_temperature_reaches_the_probabilities_but_not_the_classes(released, pair):
    plain, calibrated = released
    assert read_release(plain).temperature is None and read_release(calibrated).temperature == (2.5,)
    rgb, aux = (torch.randint(0, 256, t.shape[1:], dtype=torch.uint8) for t in pair)
    raw = Predictor.from_checkpoint(plain, "cpu").logits(rgb, aux)
    scaled = Predictor.from_checkpoint(calibrated, "cpu")
    assert torch.allclose(scaled(rgb, aux), (raw / 2.5).softmax(0), atol=1e-6)
    assert torch.equal(scaled.class_ids(rgb, aux), raw.argmax(0))
    unscaled = Predictor.from_checkpoint(calibrated, "cpu", calibrated=False)
    assert torch.allclose(unscaled.logits(rgb, aux), raw, atol=1e-6)
    assert json.loads(calibrated.with_suffix(".json").read_text())["calibration"]["temperature"] == [2.5]


def test_evaluate_reports_the_ece_with_and_without_the_temperature(released, synth_root, tmp_path):
    plain, calibrated = released
    for path, folder in ((plain, tmp_path / "plain"), (calibrated, tmp_path / "calibrated")):
        arguments = ["evaluate", "--checkpoint", str(path), "--data.root", str(synth_root), "--split", "test"]
        assert main([*arguments, "--output", str(folder)]) == 0
        assert (folder / "reliability.png").is_file()
    plain_scores = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    scores = json.loads((tmp_path / "calibrated" / "metrics.json").read_text())
    assert plain_scores["temperature"] is None and "ece_uncalibrated" not in plain_scores
    assert scores["temperature"] == [2.5] and scores["mIoU"] == plain_scores["mIoU"]
    assert scores["ece_uncalibrated"] == pytest.approx(plain_scores["ece"], abs=1e-6)
    assert scores["ece"] != pytest.approx(plain_scores["ece"], abs=1e-4)


def test_each_class_temperature_divides_its_own_logits_in_predict_and_export(released, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from cloudseg.models.checkpoint import load_model

    plain, _ = released
    per_class = tmp_path / "per_class.safetensors"
    per_class.write_bytes(plain.read_bytes())
    temperature = torch.tensor([1.0, 2.0, 3.0, 4.0])
    add_to_header(per_class, calibration={"method": "class_temperature", "temperature": temperature.tolist()})
    rgb, aux = (
        torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8),
        torch.randint(0, 256, (1, 48, 64), dtype=torch.uint8),
    )
    expected = Predictor.from_checkpoint(plain, "cpu").logits(rgb, aux) / temperature.view(-1, 1, 1)
    assert torch.allclose(Predictor.from_checkpoint(per_class, "cpu").logits(rgb, aux), expected, atol=1e-5)
    normalised = torch.randn(1, 3, 48, 64), torch.randn(1, 1, 48, 64)
    with torch.no_grad():
        raw = load_model(plain)[0](*normalised)
    for setting, divisor in (("true", temperature.view(-1, 1, 1)), ("false", 1.0)):
        output = tmp_path / f"calibrated_{setting}.onnx"
        assert (
            main(["export", "--checkpoint", str(per_class), "--output", str(output), "--predict.calibrated", setting])
            == 0
        )
        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"rgb": normalised[0].numpy(), "aux": normalised[1].numpy()})
        assert torch.allclose(torch.from_numpy(logits), raw / divisor, atol=1e-3), setting
