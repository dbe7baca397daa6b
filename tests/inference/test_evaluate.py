"""`cloudseg evaluate`'s scores against a confusion matrix computed here, independently, from the model's argmax:
files read with OpenCV, normalised with the published constants, TTA and ensembles averaged by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cloudseg.cli.main import main
from cloudseg.config import Config, ModelConfig
from cloudseg.models import build_model
from cloudseg.models.checkpoint import save_release
from cloudseg.sections import to_dict
from tests.inference.reference import NAMES, inputs, labels


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    paths = []
    for seed, name in ((0, "cmx_b0"), (2, "segformer_b0")):
        torch.manual_seed(seed)
        config = to_dict(Config(model=ModelConfig(name=name)))
        folder = tmp_path_factory.mktemp(name)
        paths.append(save_release(build_model(name).eval(), config, folder / "checkpoints" / "best.safetensors"))
    return paths


def expected_scores(models: list, root: Path, flips: bool) -> dict[str, float]:
    confusion = np.zeros((4, 4), np.int64)
    for path in sorted((root / "test" / "rgb").iterdir()):
        rgb, aux = inputs(root / "test", path.stem)
        total = 0
        for model in models:
            for dims in ([], [-1], [-2], [-2, -1]) if flips else ([],):
                with torch.no_grad():
                    logits = model(rgb.flip(dims), aux.flip(dims)).flip(dims) if dims else model(rgb, aux)
                total = total + logits
        predicted = total.argmax(1)[0].numpy()
        truth = labels(root, path.stem)
        confusion += np.bincount(truth.ravel() * 4 + predicted.ravel(), minlength=16).reshape(4, 4)
    tp, predicted_total, true_total = np.diag(confusion), confusion.sum(0), confusion.sum(1)
    iou = tp / (predicted_total + true_total - tp)
    return {"accuracy": tp.sum() / confusion.sum(), **{f"iou/{n}": v for n, v in zip(NAMES, iou, strict=True)}}


@pytest.mark.parametrize(("members", "tta"), [(1, "none"), (2, "none"), (1, "flips")])
def test_evaluate_scores_the_models_argmax_as_computed_independently(members, tta, checkpoints, synth_root, tmp_path):
    from cloudseg.models.checkpoint import load_model

    used = checkpoints[:members]
    arguments = ["evaluate", "--checkpoint", *map(str, used), "--data.root", str(synth_root), "--split", "test",
                 "--output", str(tmp_path), "--predict.tta", tta]  # fmt: skip
    assert main(arguments) == 0
    scores = json.loads((tmp_path / "metrics.json").read_text())
    expected = expected_scores([load_model(path)[0] for path in used], synth_root, flips=tta == "flips")
    assert scores["images"] == 2 and scores["tta"] == tta
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-9) if not np.isnan(value) else scores[key] is None, key
