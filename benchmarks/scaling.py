"""`cloudseg predict` over an archive of synthetic scenes in 1 process and in N (Lightning DDP on this machine's
CPUs, or its GPUs), each run as a user runs it, start-up included, all in one run of this script; whether every
mask and the submission came out the same bytes; scenes per hour; and on GPUs their mean utilisation, sampled
by nvidia-smi every half second.

    python benchmarks/scaling.py --checkpoint best.safetensors --scenes 16 --size 2048 --processes 1 2 \
        --record cpu_scaling_cmx_b0_2048
    python benchmarks/scaling.py --checkpoint cmx_b2.safetensors --scenes 50 --distinct 5 --size 7000 \
        --accelerator gpu --processes 1 --record gpu_archive_cmx_b2_7000
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from records import add_record_options, report

from cloudseg.data.synth import make_scene, write_pair


def run(checkpoint: str, source: Path, output: Path, processes: int, accelerator: str, options: list[str]):
    """The command's wall seconds, and the GPU utilisation (%) sampled while it ran (empty on CPUs)."""
    command = [sys.executable, "-m", "cloudseg", "predict", "--checkpoint", checkpoint, "--input", str(source),
               "--output", str(output), "--submission", str(output / "submission.csv"), "--trainer.accelerator",
               accelerator, "--trainer.devices", str(processes), "--trainer.strategy", "ddp", *options]  # fmt: skip
    sampler = None
    if accelerator != "cpu":
        sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                    "-lms", "500"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    samples = []
    if sampler is not None:
        sampler.terminate()
        samples = [float(v) for v in sampler.communicate()[0].split() if v.replace(".", "").isdigit()]
    return seconds, samples


def all_identical(outputs) -> bool:
    """Whether every run wrote the same files with the same bytes ({file name: bytes} per run)."""
    first, *others = outputs
    return all(other == first for other in others)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048, help="each scene's side in pixels")
    parser.add_argument("--distinct", type=int, help="scenes generated; the rest repeat them (default: all)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    parser.add_argument("--predict-options", nargs=argparse.REMAINDER, default=[], help="passed on to predict")
    add_record_options(parser)
    args = parser.parse_args()
    if len(set(args.processes)) < len(args.processes):
        parser.error(f"--processes {' '.join(map(str, args.processes))}: each count once, for each has its run")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        distinct = args.distinct or args.scenes
        for index in range(args.scenes):
            name = f"scene_{index:03d}.png"
            if index < distinct:
                image, _ = make_scene(np.random.default_rng(index), args.size)
                write_pair(root / "scenes", name, image)
            else:  # the same pixels under another name: the same work, without generating it
                for band in ("rgb", "ngr"):
                    os.link(root / "scenes" / band / f"scene_{index % distinct:03d}.png", root / "scenes" / band / name)
        seconds, outputs, utilisation = {}, {}, {}
        for processes in args.processes:
            output = root / f"masks_{processes}"
            seconds[processes], samples = run(args.checkpoint, root / "scenes", output, processes, args.accelerator,
                                              args.predict_options)  # fmt: skip
            if samples:
                utilisation[str(processes)] = round(sum(samples) / len(samples), 1)
            outputs[processes] = {p.name: p.read_bytes() for p in sorted(output.glob("*.png"))}
            outputs[processes]["submission.csv"] = (output / "submission.csv").read_bytes()
        first = args.processes[0]
        identical = all_identical(outputs.values())
    megapixels = args.scenes * args.size**2 / 1e6
    figures = {"scenes": args.scenes, "size": args.size, "megapixels": megapixels, "accelerator": args.accelerator,
               "predict_options": args.predict_options, "outputs_identical": identical,
               "wall_s": {str(p): round(s, 2) for p, s in seconds.items()},
               "megapixels_per_s": {str(p): round(megapixels / s, 4) for p, s in seconds.items()},
               "scenes_per_hour": {str(p): round(args.scenes * 3600 / s, 1) for p, s in seconds.items()},
               "gpu_utilisation_mean_percent": utilisation,
               "speedup": {str(p): round(seconds[first] / s, 3) for p, s in seconds.items()}}  # fmt: skip
    report(figures, args)


if __name__ == "__main__":
    main()
