"""Several checkpoints as one model (e.g. the k runs of a cross-validation): `predict` and `evaluate`."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import Config, ModelConfig
from cloudseg.data.dataset import find_samples, stack_chw
from cloudseg.data.io import read_sample
from cloudseg.data.split import Split
from cloudseg.errors import DataError, WeightsError
from cloudseg.inference.evaluate import default_folder, evaluate
from cloudseg.inference.predictor import Predictor
from cloudseg.models import build_model
from cloudseg.models.checkpoint import Ensemble, add_to_header, load_ensemble, save_release
from cloudseg.schema import CLASSES
from cloudseg.sections import to_dict


def release(folder, name: str, seed: int, num_classes: int = 4):
    """A run folder holding an untrained `name` model as checkpoints/best.safetensors."""
    torch.manual_seed(seed)
    config = to_dict(Config(model=ModelConfig(name=name, num_classes=num_classes)))
    return save_release(
        build_model(name, num_classes=num_classes).eval(), config, folder / "checkpoints" / "best.safetensors"
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # Seeds whose untrained models each disagree with their mean somewhere (checked below), so the mean is tested.
    return [release(root / "cmx", "cmx_b0", 0), release(root / "segformer", "segformer_b0", 2)]


class Fixed(torch.nn.Module):
    """A model whose logits are given."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, rgb, aux):
        return self.logits


def test_an_ensemble_averages_logits_so_it_predicts_the_mean_log_probability():
    generator = torch.Generator().manual_seed(0)
    outputs = [torch.randn(2, 4, 5, 6, generator=generator) * scale for scale in (1.0, 3.0, 0.5)]
    outputs[0] = outputs[0].bfloat16()  # as under autocast: averaged in float32
    averaged = Ensemble([Fixed(o) for o in outputs])(None, None)
    assert averaged.dtype == torch.float32
    floats = [o.float() for o in outputs]
    torch.testing.assert_close(averaged, (floats[0] + floats[1] + floats[2]) / 3)
    mean_log_probability = torch.stack([o.log_softmax(1) for o in floats]).mean(0)
    torch.testing.assert_close(averaged.softmax(1), mean_log_probability.softmax(1))


def test_predict_with_several_checkpoints_writes_the_classes_of_their_mean(runs, synth_root, tmp_path):
    output = tmp_path / "masks"
    code = main(["predict", "--checkpoint", *map(str, runs), "--input", str(synth_root), "--output", str(output),
                 "--device", "cpu", "--predict.index_masks", "true"])  # fmt: skip
    assert code == 0
    samples = find_samples(synth_root / "test", None)
    images = [read_sample(s)[:2] for s in samples]
    rgb, nir = stack_chw([i[0] for i in images]), stack_chw([i[1] for i in images])
    each = [Predictor.from_checkpoint(run, "cpu").logits(rgb, nir) for run in runs]
    expected = ((each[0] + each[1]) / 2).argmax(1).byte().numpy()
    written = np.stack([cv2.imread(str(output / "index" / f"{s.name}.png"), 0) for s in samples])
    assert np.array_equal(written, expected)
    # a real mixture: each model alone disagrees with the mean somewhere
    assert all((e.argmax(1).numpy() != expected).any() for e in each)


def test_an_ensemble_refuses_checkpoints_that_predict_different_classes(runs, tmp_path):
    renamed = release(tmp_path / "renamed", "cmx_b0", 2)
    classes = [{"id": c.id, "name": c.name, "bgr": list(c.bgr)} for c in CLASSES]
    add_to_header(renamed, classes=[{**classes[0], "name": "snow"}, *classes[1:]])
    with pytest.raises(WeightsError, match=rf"{renamed}: its classes.*differ from those of {runs[0]}"):
        Predictor.from_checkpoint([runs[0], renamed], "cpu")


def test_a_checkpoint_of_another_class_count_is_refused_in_one_line(synth_root, tmp_path, capsys, user_view):
    six = release(tmp_path / "six", "cmx_b0", 2, num_classes=6)
    assert main(["predict", "--checkpoint", str(six), "--input", str(synth_root), "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"cloudseg: error: {six}: a model of 6 classes; cloudseg's masks and submissions have 4 (clear, thick_cloud, "
        "thin_cloud, cloud_shadow)\n"
    )


def test_evaluate_scores_an_ensemble_on_test_and_refuses_a_val_split_it_trained_on(runs, synth_root):
    names = [s.name for s in find_samples(synth_root / "train", None)]
    for fold, run in enumerate(runs):  # two folds: each run validated on the half the other trained on
        Split(tuple(names[1 - fold :: 2]), tuple(names[fold::2])).save(run.parent.parent / "split.json")
    result = evaluate(runs, synth_root, "test")
    (output,) = runs[0].parent.parent.parent.glob("eval_ensemble-*_test")
    assert json.loads((output / "metrics.json").read_text()) == result
    assert default_folder(runs[::-1], "test") == output  # the same members in another order
    assert default_folder([runs[0], runs[0]], "test") != output  # another ensemble does not replace this one
    assert default_folder([Path("r/checkpoints/best_ema.safetensors")], "test") == Path("r/eval_best_ema_test")
    assert default_folder([Path("r/checkpoints/best.safetensors")], "val") == Path("r/eval_val")
    assert result["checkpoints"] == [str(r) for r in runs] and result["images"] == 2
    with pytest.raises(DataError, match="different val splits"):
        evaluate(runs, synth_root, "val")
    single = evaluate(runs[1:], synth_root, "val")  # one run: its own validation half
    assert single["images"] == 4 and (runs[1].parent.parent / "eval_val" / "metrics.json").is_file()
    shared = Split(tuple(names[2:]), tuple(names[:2]))  # runs of one split (seeds): its val scores the ensemble
    for run in runs:
        shared.save(run.parent.parent / "split.json")
    assert evaluate(runs, synth_root, "val")["images"] == 2


def test_an_exported_ensemble_computes_the_mean_of_its_models(runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert main(["export", "--checkpoint", *map(str, runs), "--output", str(tmp_path / "ensemble.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "ensemble.onnx"), providers=["CPUExecutionProvider"])
    models = [load_ensemble(run)[0] for run in runs]
    rgb, aux = torch.randn(2, 3, 64, 96), torch.randn(2, 1, 64, 96)
    (logits,) = session.run(None, {"rgb": rgb.numpy(), "aux": aux.numpy()})
    with torch.no_grad():
        reference = (models[0](rgb, aux) + models[1](rgb, aux)) / 2
    assert logits.shape == (2, 4, 64, 96) and np.abs(logits - reference.numpy()).max() < 1e-3
