"""A model as an ONNX graph: written by `cloudseg export`, and run by onnxruntime for `predict.runtime onnx` (a
faster CPU path than PyTorch's eager kernels), optionally with its weights quantised to int8."""

import importlib.util
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from cloudseg.errors import CloudsegError

ONNX_EXTRA = "pip install 'cloudseg[onnx]'"
OPSET = 17  # the ONNX operator set graphs are written in, unless asked otherwise


def write_graph(model: torch.nn.Module, aux_channels: int, path: Path, opset: int = OPSET) -> None:
    """`path`: the model (inputs `rgb` (B, 3, H, W) and `aux` (B, A, H, W), normalised; output `logits`
    (B, K, H, W)) with dynamic batch, height and width."""
    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it, and says so only as it fails
        raise CloudsegError(f"ONNX export needs the onnx package: {ONNX_EXTRA}")
    example = (torch.randn(1, 3, 256, 256), torch.randn(1, aux_channels, 256, 256))
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=["rgb", "aux"],
            output_names=["logits"],
            dynamic_axes={"rgb": dynamic, "aux": dynamic, "logits": dynamic},
            opset_version=opset,
            # The legacy exporter: the torch.export-based one exports this model more slowly, its graph runs
            # more slowly (docs/PERFORMANCE.md), and it needs onnxscript.
            dynamo=False,
        )


def quantised(graph: Path, output: Path) -> Path:
    """`graph` with the weights of its matrix products in int8, their inputs quantised on the fly at each run
    (dynamic quantisation). The products are the bulk of a MiT's work; its convolutions stay float (the decoder's
    take weights computed in the graph, which dynamic quantisation cannot)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph first, printed on every call
    try:
        quantize_dynamic(graph, output, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return output


class OnnxModel(torch.nn.Module):
    """A float32 CPU model run by onnxruntime: tensors in, tensors out, so the `Predictor` runs it as it runs a
    PyTorch model (tiles, test-time augmentation, blending)."""

    def __init__(self, model: torch.nn.Module, aux_channels: int, int8: bool = False):
        super().__init__()
        try:
            import onnxruntime
        except ImportError as error:
            raise CloudsegError(f"predict.runtime onnx needs onnxruntime: {ONNX_EXTRA}") from error
        with tempfile.TemporaryDirectory() as folder:
            graph = Path(folder) / "model.onnx"
            write_graph(model.float().cpu().eval(), aux_channels, graph)
            if int8:
                graph = quantised(graph, Path(folder) / "int8.onnx")
            self.session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        feed = {name: np.ascontiguousarray(t.float().numpy()) for name, t in (("rgb", rgb), ("aux", aux))}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])
