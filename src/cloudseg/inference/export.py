"""`cloudseg export`: a trained model as ONNX with dynamic batch, height and width."""

import os
from collections.abc import Sequence
from pathlib import Path

from cloudseg.config import PredictConfig
from cloudseg.errors import ConfigError
from cloudseg.files import atomic_path
from cloudseg.inference.onnx_graph import OPSET, write_graph
from cloudseg.inference.predictor import Predictor


def export_onnx(
    checkpoints: str | Path | Sequence[str | Path],
    output: str | Path,
    opset: int = OPSET,
    calibrated: bool = PredictConfig.calibrated,
) -> Path:
    """Writes `output` (inputs `rgb` (B, 3, H, W) and `aux` (B, A, H, W), normalised as in training; output
    `logits` (B, K, H, W)) of one checkpoint, or of several as one graph that averages their logits; with
    `calibrated`, each checkpoint's logits divided by its fitted temperature."""
    folder = str(output).endswith(("/", os.sep)) or Path(output).is_dir()
    output = Path(output) / "model.onnx" if folder else Path(output)
    if output.suffix != ".onnx":
        raise ConfigError(f"--output {output}: expected a file name ending in .onnx, or a folder for model.onnx")
    predictor = Predictor.from_checkpoint(checkpoints, "cpu", precision="32", memory_check="off", calibrated=calibrated)
    with atomic_path(output) as temporary:
        write_graph(predictor.model, predictor.release.config.model.aux_channels, temporary, opset)
    return output
