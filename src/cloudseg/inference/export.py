"""`cloudseg export`: a trained model as ONNX with dynamic batch, height and width."""

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from cloudseg.config import PredictConfig
from cloudseg.errors import CloudsegError, ConfigError
from cloudseg.files import atomic_path
from cloudseg.inference.predictor import Predictor


def export_onnx(
    checkpoints: str | Path | Sequence[str | Path],
    output: str | Path,
    opset: int = 17,
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
    model, aux_channels = predictor.model, predictor.release.config.model.aux_channels
    example = (torch.randn(1, 3, 256, 256), torch.randn(1, aux_channels, 256, 256))
    dynamic = {0: "batch", 2: "height", 3: "width"}
    try:
        with atomic_path(output) as temporary, torch.no_grad():
            torch.onnx.export(
                model,
                example,
                str(temporary),
                input_names=["rgb", "aux"],
                output_names=["logits"],
                dynamic_axes={"rgb": dynamic, "aux": dynamic, "logits": dynamic},
                opset_version=opset,
                # The legacy exporter: the torch.export-based one exports this model more slowly, its graph runs more
                # slowly (docs/PERFORMANCE.md), and it needs onnxscript.
                dynamo=False,
            )
    except ImportError as error:
        raise CloudsegError(f"ONNX export needs the onnx extra: pip install 'cloudseg[onnx]' ({error})") from error
    return output
