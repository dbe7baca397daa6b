"""The training loader's throughput with the full augmentation: images/s overall and per worker, and the wait for
an epoch's first batch.

    python benchmarks/loader.py --data.root data/synth --data.num_workers 2 [--data.augment.crop_size 256 ...]
"""

import argparse
import os
import time

from records import add_record_options, report

from cloudseg.cli.options import config_overrides
from cloudseg.config import DataConfig, load_config
from cloudseg.errors import ConfigError


def benchmark_data(cfg: DataConfig, batches: int = 20, warmup: int = 3) -> dict:
    """Training-loader throughput with the full augmentation: images/s overall and per worker."""
    from cloudseg.data.datamodule import CloudDataModule

    module = CloudDataModule(cfg)
    module.setup("fit")
    loader = module.train_dataloader()
    images, started, epoch = 0, None, 0
    iterator = iter(loader)
    for step in range(warmup + batches):
        try:
            batch = next(iterator)
        except StopIteration:  # a small dataset: start another epoch, as Lightning does
            epoch += 1
            loader.sampler.set_epoch(epoch)
            iterator = iter(loader)
            batch = next(iterator)
        if step == warmup - 1:
            started = time.perf_counter()
        elif step >= warmup:
            images += batch["rgb"].shape[0]
    seconds = time.perf_counter() - started
    # Training's wait for an epoch's first batch: the rest of this epoch, a pause for what ends an epoch
    # (validation, checkpoints), then the next epoch's first batch.
    for _ in iterator:
        pass
    time.sleep(0.5)
    loader.sampler.set_epoch(epoch + 1)
    waited = time.perf_counter()
    next(iter(loader))
    epoch_start_wait = time.perf_counter() - waited
    workers = cfg.num_workers
    return {
        "benchmark": "data",
        "images_per_s": images / seconds,
        "images_per_s_per_worker": images / seconds / max(workers, 1),
        "ms_per_batch": 1000 * seconds / batches,
        "epoch_start_wait_s": epoch_start_wait,
        "batch_size": cfg.batch_size,
        "crop_size": cfg.augment.crop_size,
        "num_workers": workers,
        "timed_batches": batches,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", help="YAML file or shipped config whose data section is used")
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3)
    add_record_options(parser)
    args, settings = parser.parse_known_args()
    try:
        cfg = load_config(args.config, config_overrides(settings))
    except ConfigError as error:
        parser.error(str(error))
    report(benchmark_data(cfg.data, args.batches, args.warmup), args)


if __name__ == "__main__":
    main()
