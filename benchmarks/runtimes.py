"""The same checkpoints scored with each `predict.runtime` (torch, onnx, onnx_int8) on the CPU, in one run: the
mIoU of each, its difference from torch's, and the time `evaluate` took.

    python benchmarks/runtimes.py --checkpoint runs/cmx_b0/seed*/run/*/checkpoints/best.safetensors \
        --root ../shared/data/l8biome --split val test --record runtimes_l8biome_cmx_b0
"""

import argparse
import statistics
import tempfile
import time
import typing

from records import add_record_options, report

from cloudseg.config import PredictConfig
from cloudseg.inference.evaluate import evaluate

RUNTIMES = typing.get_args(PredictConfig.__annotations__["runtime"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", required=True, help="each scored alone")
    parser.add_argument("--root", required=True, help="the dataset")
    parser.add_argument("--split", nargs="+", default=["val"])
    add_record_options(parser)
    args = parser.parse_args()
    figures = {"runtimes": list(RUNTIMES), "checkpoints": args.checkpoint}
    with tempfile.TemporaryDirectory() as folder:
        for split in args.split:
            scores = {runtime: [] for runtime in RUNTIMES}
            seconds = {runtime: 0.0 for runtime in RUNTIMES}
            for index, checkpoint in enumerate(args.checkpoint):
                for runtime in RUNTIMES:
                    started = time.perf_counter()
                    result = evaluate(checkpoint, args.root, split, f"{folder}/{split}_{index}_{runtime}",
                                      cfg=PredictConfig(runtime=runtime), device="cpu")  # fmt: skip
                    seconds[runtime] += time.perf_counter() - started
                    scores[runtime].append(result["mIoU"])
            differences = {runtime: [a - b for a, b in zip(scores[runtime], scores["torch"], strict=True)]
                           for runtime in RUNTIMES if runtime != "torch"}  # fmt: skip
            figures[split] = {
                "mIoU": scores,
                "mean_mIoU": {runtime: statistics.mean(values) for runtime, values in scores.items()},
                "difference_from_torch": differences,
                "largest_difference": {runtime: max(map(abs, values)) for runtime, values in differences.items()},
                "evaluate_s": {runtime: round(value, 2) for runtime, value in seconds.items()},
            }
    report(figures, args)


if __name__ == "__main__":
    main()
