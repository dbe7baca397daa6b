"""The Lightning DataModule: checks the folder, splits it, and serves augmented training and plain validation."""

from collections.abc import Iterator
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from cloudseg.config import DataConfig
from cloudseg.data.check import check_dataset
from cloudseg.data.dataset import CloudDataset, EpochSampler, find_samples, prepare_batch
from cloudseg.data.io import class_pixels, load_label
from cloudseg.data.split import Split, fold_split, load_split, make_split
from cloudseg.data.transforms import CopyPaste, TrainTransform
from cloudseg.errors import ConfigError
from cloudseg.schema import CLASSES
from cloudseg.signals import ignore_stop_signals


class EpochAheadLoader(DataLoader):
    """The training loader: as it hands out an epoch's last batch, its workers start on the next epoch's batches.

    With persistent workers the next epoch would begin only when Lightning asks for it, after the last step,
    validation and the checkpoints, and its first batch is made by one worker alone while the GPU waits.
    `EpochSampler`'s keys are a function of (seed, epoch), so the batches are the same either way; a next epoch
    other than the one begun (a resumed run) is begun afresh.
    """

    _ahead: tuple[int, Iterator] | None = None  # the epoch the workers were started on, and its batches

    @property
    def epoch_ahead(self) -> int | None:
        """The epoch whose batches the workers have begun, if any."""
        return self._ahead[0] if self._ahead is not None else None

    def __iter__(self):
        if not (self.persistent_workers and isinstance(self.sampler, EpochSampler)):
            return super().__iter__()
        return self._epoch()

    def _epoch(self):
        # A generator: it starts at the first batch, after Lightning's set_epoch, not at iter().
        ahead, self._ahead = self._ahead, None
        batches = ahead[1] if ahead is not None and ahead[0] == self.sampler.epoch else super().__iter__()
        for count, batch in enumerate(batches, 1):
            if count == len(self):
                # Every batch of the epoch is in: the persistent iterator can be reset for the next one. The reset
                # draws the next epoch's keys at once (its workers are sent their first batches); the sampler
                # is then left at this epoch for Lightning's set_epoch.
                epoch = self.sampler.epoch
                self.sampler.set_epoch(epoch + 1)
                self._ahead = epoch + 1, super().__iter__()
                self.sampler.set_epoch(epoch)
                yield batch
                return
            yield batch


class CloudDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig, seed: int = 0):
        super().__init__()
        self.seed = seed
        if cfg.root is None:
            raise ConfigError("data.root is not set; pass --data.root <folder with train/{rgb,ngr,label}>")
        self.cfg = cfg
        self.root = Path(cfg.root)
        self.split: Split | None = None
        self.image_sizes: set[tuple[int, int]] = set()  # (height, width) of the training folder's images
        self.start_epoch = 0

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        if self.cfg.cache is None:
            report = check_dataset(self.root, self.cfg.unknown_colours, splits=("train",))
            report.raise_if_problems()
            self.image_sizes = {(h, w) for w, h in report.splits["train"].sizes}
        samples = find_samples(self.root / "train", self.root / "train" / "label")
        names = [s.name for s in samples]
        if self.cfg.split_file:
            self.split = load_split(self.cfg.split_file, names)
        elif self.cfg.folds:
            self.split = fold_split(names, self.cfg.folds, self.cfg.fold, self.cfg.split_seed)
        else:
            self.split = make_split(names, self.cfg.val_fraction, self.cfg.split_seed)
        by_name = {s.name: s for s in samples}
        self.train_set = CloudDataset(
            [by_name[n] for n in self.split.train],
            TrainTransform(self.cfg.augment),
            CopyPaste.from_config(self.cfg.augment),
            self.cfg.unknown_colours,
            self.cfg.cache,
        )
        self.val_set = (
            CloudDataset([by_name[n] for n in self.split.val], None, None, self.cfg.unknown_colours, self.cfg.cache)
            if self.split.val
            else None
        )
        if self.cfg.cache is not None:
            # The datasets have checked that the cache holds every scene (one folder for both), newer than its files.
            # It was made by reading every file by the same rules, so it stands for the check, which would decode
            # them all again.
            self.image_sizes = {self.train_set.cache.size(files.name) for files in samples}
        self._check_crop()

    @property
    def uniform_size(self) -> bool:
        return len(self.image_sizes) == 1

    def _check_crop(self) -> None:
        """Crops larger than an image would enlarge it to fit: refused unless asked for (data.augment.upscale),
        since a typo here (4096 for 256² images) makes every sample 256 times larger."""
        crop, (height, width) = self.cfg.augment.crop_size, min(self.image_sizes, key=min)
        if crop > min(height, width) and not self.cfg.augment.upscale:
            raise ConfigError(
                f"data.augment.crop_size {crop} is larger than the smallest training image ({width}x{height}); "
                f"lower it to at most {min(height, width)}, or set --data.augment.upscale true to enlarge the images"
            )

    def train_class_pixels(self) -> np.ndarray:
        """Pixels of each class over the training split's labels (validation excluded), from the cache if any."""
        counts = np.zeros(len(CLASSES), dtype=np.int64)
        cache = self.train_set.cache
        for files in self.train_set.samples:
            ids = cache.read(files.name)[2] if cache else load_label(files.label, self.cfg.unknown_colours)
            counts += class_pixels(ids)
        return counts

    def _loader(self, dataset: CloudDataset, batch_size: int, train: bool) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        workers = self.cfg.num_workers
        if workers > 0:
            # One worker is one process on one core: OpenCV's own thread pool would oversubscribe the cores. It is
            # set here, before the workers fork, because changing it inside a forked worker can deadlock.
            cv2.setNumThreads(1)
        # Each process validates its own share, every image once (the confusion matrix sums across processes);
        # with fewer images than processes all validate all, as a process with none would log nothing to reduce.
        validation = range(rank, len(dataset), world) if len(dataset) >= world else None
        return (EpochAheadLoader if train else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=EpochSampler(len(dataset), self.seed, rank, world, self.start_epoch) if train else validation,
            drop_last=train and len(dataset) >= batch_size * world,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=ignore_stop_signals,  # the trainer stops them, after SIGINT or SIGTERM too
        )

    # Lightning builds the first training iterator of a resumed run before it calls `set_epoch`, so the sampler
    # starts from the epoch saved in the checkpoint (LastCheckpoint saves at the end of an epoch).
    def state_dict(self) -> dict:
        return {"next_epoch": self.trainer.current_epoch + 1 if self.trainer is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        self.start_epoch = state["next_epoch"]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return prepare_batch(batch)  # uint8 to the model's inputs, on the device

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.cfg.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        # Validation sees whole images; images of different sizes cannot share a batch.
        return self._loader(self.val_set, self.cfg.batch_size if self.uniform_size else 1, train=False)
