"""How `predict`'s writer threads slow the thread that runs the model: an eager model's forward time alone, then
beside threads that write outputs as `predict` does (colour mask, PNG, submission row) non-stop, for the label
masks of a dataset folder. The model's thread needs the GIL between its operations, and the writers' Python work
holds it, so a launch-bound model (a small one on a CPU, an uncompiled one on a GPU) feels it most.

    python benchmarks/writer_contention.py <root>/train/label                   # cmx_b0, 32², on the CPU
    python benchmarks/writer_contention.py <root>/train/label --model cmx_b2 --side 512 --batch 64 --writers 8
"""

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from cloudseg.benchmark import timed_steps
from cloudseg.config import PredictConfig
from cloudseg.data.dataset import SampleFiles
from cloudseg.data.io import load_label
from cloudseg.inference.predict import model_predictor, write_outputs
from cloudseg.models.checkpoint import default_device
from cloudseg.models.registry import build_model


def forward_ms(predict, rgb, aux, device, repeats: int = 10) -> float:
    _, seconds = timed_steps(lambda: predict(rgb, aux), repeats, warmup=1, dev=device)
    return 1000 * seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="a folder of label masks, written again as predictions")
    parser.add_argument("--model", default="cmx_b0")
    parser.add_argument("--side", type=int, default=32, help="the model's input side")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--device", help="default: the GPU if there is one")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    device = default_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the cores are the writers'
    # predict's own way: channels_last, bf16 on a GPU, uncompiled
    predict = model_predictor(build_model(args.model).to(device).eval(), device)
    rgb, aux = (torch.randn(args.batch, c, args.side, args.side, device=device) for c in (3, 1))
    masks = [load_label(path) for path in sorted(args.labels.glob("*.png"))[:16]]
    output, cfg = Path(tempfile.mkdtemp()), PredictConfig()
    stop, written = threading.Event(), [0]

    def keep_writing(writers: ThreadPoolExecutor) -> None:
        while not stop.is_set():
            for ids in masks:
                writers.submit(write_outputs, SampleFiles("mask", None, None), ids, None, output, cfg).result()
                written[0] += 1

    alone = forward_ms(predict, rgb, aux, device)
    with ThreadPoolExecutor(args.writers) as writers:
        feeders = [threading.Thread(target=keep_writing, args=(writers,)) for _ in range(args.writers)]
        for feeder in feeders:
            feeder.start()
        time.sleep(0.5)
        started, before = time.perf_counter(), written[0]
        ms = forward_ms(predict, rgb, aux, device)
        rate = (written[0] - before) / (time.perf_counter() - started)
        stop.set()
        for feeder in feeders:
            feeder.join()
    result = {
        "benchmark": "writer_contention", "model": args.model, "side": args.side, "batch": args.batch,
        "device": device.type, "writers": args.writers, "forward_ms_alone": alone, "forward_ms_beside_writers": ms,
        "masks_per_s": rate,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
