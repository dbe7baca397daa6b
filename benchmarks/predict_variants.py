"""The same checkpoints scored on the CPU in each way `predict` can run them (PyTorch in float32 or bf16,
onnxruntime in float32 or with int8 weights), in one run: the mIoU of each, its difference from float32
PyTorch's, and the time `evaluate` took.

    python benchmarks/predict_variants.py --checkpoint runs/cmx_b0/seed*/run/*/checkpoints/best.safetensors \
        --root ../shared/data/l8biome --split val --record variants_l8biome_cmx_b0_val
"""

import argparse
import statistics
import tempfile
import time

from records import add_record_options, report

from cloudseg.config import PredictConfig
from cloudseg.inference.evaluate import evaluate

VARIANTS = {
    "torch_32": PredictConfig(precision="32"),
    "torch_bf16": PredictConfig(precision="bf16"),
    "onnx": PredictConfig(runtime="onnx"),
    "onnx_int8": PredictConfig(runtime="onnx_int8"),
}
REFERENCE = "torch_32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", required=True, help="each scored alone")
    parser.add_argument("--root", required=True, help="the dataset")
    parser.add_argument("--split", nargs="+", default=["val"])
    add_record_options(parser)
    args = parser.parse_args()
    figures = {"variants": list(VARIANTS), "checkpoints": args.checkpoint}
    with tempfile.TemporaryDirectory() as folder:
        for split in args.split:
            scores = {variant: [] for variant in VARIANTS}
            seconds = dict.fromkeys(VARIANTS, 0.0)
            for index, checkpoint in enumerate(args.checkpoint):
                for variant, cfg in VARIANTS.items():
                    started = time.perf_counter()
                    result = evaluate(checkpoint, args.root, split, f"{folder}/{split}_{index}_{variant}", cfg=cfg,
                                      device="cpu")  # fmt: skip
                    seconds[variant] += time.perf_counter() - started
                    scores[variant].append(result["mIoU"])
            differences = {variant: [a - b for a, b in zip(scores[variant], scores[REFERENCE], strict=True)]
                           for variant in VARIANTS if variant != REFERENCE}  # fmt: skip
            figures[split] = {
                "mIoU": scores,
                "mean_mIoU": {variant: statistics.mean(values) for variant, values in scores.items()},
                f"difference_from_{REFERENCE}": differences,
                "largest_difference": {variant: max(map(abs, values)) for variant, values in differences.items()},
                "evaluate_s": {variant: round(value, 2) for variant, value in seconds.items()},
            }
    report(figures, args)


if __name__ == "__main__":
    main()
