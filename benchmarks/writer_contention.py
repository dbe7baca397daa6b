"""What writing outputs beside the model costs the thread that runs it: an eager model's forward time alone, then
while the label masks of a dataset folder are written again non-stop as `predict` writes outputs (colour mask,
PNG, submission row), first by threads of this process, then by writer processes (`predict`'s way since
2026-11-26). The model's thread needs the GIL between its operations and writer threads hold it, so a
launch-bound model (a small one on a CPU, an uncompiled one on a GPU) feels them most.

    python benchmarks/writer_contention.py <root>/train/label                   # cmx_b0, 32², on the CPU
    python benchmarks/writer_contention.py <root>/train/label --model cmx_b2 --side 512 --batch 64 --writers 8
"""

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from records import add_record_options, report
from speed import timed_steps

from cloudseg.config import Config, PredictConfig
from cloudseg.data.io import load_label
from cloudseg.inference.outputs import ImageOutputs, OutputWriters, write_batch
from cloudseg.inference.predictor import Predictor
from cloudseg.models.checkpoint import Release, default_device
from cloudseg.models.registry import build_model


def forward_ms(predict, rgb, aux, device, repeats: int = 30) -> float:
    _, seconds = timed_steps(lambda: predict(rgb, aux), repeats, warmup=1, dev=device)
    return 1000 * seconds


def beside(writing, measure) -> tuple[float, float]:
    """`measure()` while `writing(count)` (which writes the masks once, calling `count(n)` as n are written) runs
    non-stop in another thread; returns its result and the masks written per second meanwhile."""
    stop, written = threading.Event(), [0]

    def count(n: int) -> None:
        written[0] += n

    def keep_writing() -> None:
        while not stop.is_set():
            writing(count)

    feeder = threading.Thread(target=keep_writing)
    feeder.start()
    time.sleep(1.0)  # writer processes started, steady pace
    started, before = time.perf_counter(), written[0]
    result = measure()
    rate = (written[0] - before) / (time.perf_counter() - started)
    stop.set()
    feeder.join()
    return result, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="a folder of label masks, written again as predictions")
    parser.add_argument("--model", default="cmx_b0")
    parser.add_argument("--side", type=int, default=32, help="the model's input side")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--device", help="default: the GPU if there is one")
    add_record_options(parser)
    args = parser.parse_args()
    device = default_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the other cores are the writers'
    # predict's own way: channels_last, bf16 on a GPU, uncompiled
    predictor = Predictor(build_model(args.model), Release.of(Config()), device, PredictConfig(memory_check="off"))
    predict = predictor.logits
    shape = (args.batch, args.side, args.side)
    rgb, aux = (torch.randint(0, 256, (shape[0], c, *shape[1:]), dtype=torch.uint8, device=device) for c in (3, 1))
    ids = np.stack([load_label(path) for path in sorted(args.labels.glob("*.png"))[:16]])
    masks = ImageOutputs([f"mask_{i}" for i in range(len(ids))], ids)
    output, cfg = Path(tempfile.mkdtemp()), PredictConfig()
    measure = lambda: forward_ms(predict, rgb, aux, device)  # noqa: E731

    alone = forward_ms(predict, rgb, aux, device)
    with ThreadPoolExecutor(args.writers) as threads:

        def by_thread(count) -> None:
            for part in [threads.submit(write_batch, part, output, cfg) for part in masks.chunks(args.writers)]:
                count(len(part.result()))

        by_threads, thread_rate = beside(by_thread, measure)
    with OutputWriters(output, cfg, args.writers, pending=len(masks)) as processes:

        def by_process(count) -> None:
            count(len(processes.submit(masks)))
            for rows in processes.remaining():
                count(len(rows))

        by_processes, process_rate = beside(by_process, measure)
    result = {
        "benchmark": "writer_contention", "model": args.model, "side": args.side, "batch": args.batch,
        "device": device.type, "writers": args.writers, "forward_ms_alone": alone,
        "forward_ms_beside_threads": by_threads, "masks_per_s_threads": thread_rate,
        "forward_ms_beside_processes": by_processes, "masks_per_s_processes": process_rate,
    }  # fmt: skip
    report(result, args)


if __name__ == "__main__":
    main()
