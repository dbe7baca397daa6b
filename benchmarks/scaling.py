"""`cloudseg predict` over an archive of synthetic scenes in 1 process and in N (Lightning DDP on this machine's
CPUs, or its GPUs), each run as a user runs it, start-up included, all in one run of this script; and whether
every mask and the submission came out the same bytes.

    python benchmarks/scaling.py --checkpoint best.safetensors --scenes 16 --size 2048 --processes 1 2 \
        --record cpu_scaling_cmx_b0_2048
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from records import add_record_options, report

from cloudseg.data.synth import make_scene, write_pair


def run(checkpoint: str, source: Path, output: Path, processes: int, accelerator: str, options: list[str]) -> float:
    command = [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", checkpoint, "--input", str(source),
               "--output", str(output), "--submission", str(output / "submission.csv"), "--trainer.accelerator",
               accelerator, "--trainer.devices", str(processes), "--trainer.strategy", "ddp", *options]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048, help="each scene's side in pixels")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    parser.add_argument("--predict-options", nargs=argparse.REMAINDER, default=[], help="passed on to predict")
    add_record_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for index in range(args.scenes):
            image, _ = make_scene(np.random.default_rng(index), args.size)
            write_pair(root / "scenes", f"scene_{index:03d}.png", image)
        seconds, outputs = {}, {}
        for processes in args.processes:
            output = root / f"masks_{processes}"
            seconds[processes] = run(args.checkpoint, root / "scenes", output, processes, args.accelerator,
                                     args.predict_options)  # fmt: skip
            outputs[processes] = {p.name: p.read_bytes() for p in sorted(output.glob("*.png"))}
            outputs[processes]["submission.csv"] = (output / "submission.csv").read_bytes()
        first = args.processes[0]
        identical = all(outputs[p] == outputs[first] for p in args.processes)
    megapixels = args.scenes * args.size**2 / 1e6
    figures = {"scenes": args.scenes, "size": args.size, "megapixels": megapixels, "accelerator": args.accelerator,
               "predict_options": args.predict_options, "outputs_identical": identical,
               "wall_s": {str(p): round(s, 2) for p, s in seconds.items()},
               "megapixels_per_s": {str(p): round(megapixels / s, 4) for p, s in seconds.items()},
               "speedup": {str(p): round(seconds[first] / s, 3) for p, s in seconds.items()}}  # fmt: skip
    report(figures, args)


if __name__ == "__main__":
    main()
