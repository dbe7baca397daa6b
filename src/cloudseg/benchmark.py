"""`cloudseg benchmark`: throughput measurements written as JSON (speed is measured here, never in tests)."""

import json
import os
import platform
import time
from datetime import datetime, timezone

import torch

from cloudseg.config import DataConfig


def benchmark_data(cfg: DataConfig, batches: int = 20, warmup: int = 3) -> dict:
    """Training-loader throughput with the full augmentation: images/s overall and per worker."""
    from cloudseg.data.datamodule import CloudDataModule

    module = CloudDataModule(cfg)
    module.setup("fit")
    loader = module.train_dataloader()
    images, started = 0, None
    iterator = iter(loader)
    for step in range(warmup + batches):
        try:
            batch = next(iterator)
        except StopIteration:  # a small dataset: start another epoch
            iterator = iter(loader)
            batch = next(iterator)
        if step == warmup - 1:
            started = time.perf_counter()
        elif step >= warmup:
            images += batch["rgb"].shape[0]
    seconds = time.perf_counter() - started
    workers = cfg.num_workers
    return {
        "benchmark": "data",
        "images_per_s": images / seconds,
        "images_per_s_per_worker": images / seconds / max(workers, 1),
        "ms_per_batch": 1000 * seconds / batches,
        "batch_size": cfg.batch_size,
        "crop_size": cfg.augment.crop_size,
        "num_workers": workers,
        "timed_batches": batches,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(result: dict, path: str | None) -> str:
    text = json.dumps(result, indent=2)
    if path:
        from cloudseg.files import atomic_path

        with atomic_path(path) as temporary:
            temporary.write_text(text + "\n")
    return text
