"""Dataset folders (`<root>/<split>/{rgb,ngr,label}/<name>.<ext>`) as lists of samples and as a torch Dataset."""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cloudseg.config import DataConfig, UnknownColours
from cloudseg.data.cache import SampleCache
from cloudseg.data.io import IMAGE_SUFFIXES, SampleFiles, read_sample
from cloudseg.errors import DataError
from cloudseg.schema import AUX_NORM, RGB_NORM, Normalisation

if TYPE_CHECKING:
    from cloudseg.data.transforms import CopyPaste

MODALITIES = ("rgb", "ngr")


def _images_by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    if not folder.is_dir():
        problems.append(f"{folder}: folder is missing")
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in found:
            problems.append(f"{folder}: two files for the name {path.stem!r} ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    if not found:
        problems.append(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def pair_files(split_dir: Path, label_dir: Path | None) -> tuple[list[SampleFiles], list[str]]:
    """Pairs rgb/, ngr/ (and the label folder) by name stem: the complete samples, and a message per problem."""
    problems: list[str] = []
    folders = {name: split_dir / name for name in MODALITIES}
    if label_dir is not None:
        folders["label"] = label_dir
    by_folder = {name: _images_by_stem(folder, problems) for name, folder in folders.items()}
    samples = []
    for name in sorted(set().union(*by_folder.values())):
        missing = [str(folders[f]) for f, files in by_folder.items() if name not in files]
        if missing:
            present = next(files[name] for files in by_folder.values() if name in files)
            problems.append(f"{present}: no file named {name}.* in {', '.join(missing)}")
            continue
        samples.append(SampleFiles(name, *(files[name] for files in by_folder.values())))
    return samples, problems


def find_samples(split_dir: str | Path, label_dir: str | Path | None) -> list[SampleFiles]:
    """Complete samples of a split folder; any pairing problem is an error that lists them all."""
    samples, problems = pair_files(Path(split_dir), Path(label_dir) if label_dir else None)
    if problems:
        raise DataError(f"{split_dir}: {len(problems)} problems: " + "; ".join(problems))
    return samples


def to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 array -> (C, H, W) uint8 tensor (a view of the array where it is contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def stack_chw(images: list[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """(H, W, C) uint8 arrays or tensors of one shape -> (B, C, H, W) uint8 tensor in channels_last memory: one
    plain copy, where stacking (C, H, W) views would transpose every image on the host."""
    return torch.stack([torch.as_tensor(image) for image in images]).permute(0, 3, 1, 2)


@functools.cache
def _scale_and_shift(norm: Normalisation, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building them from Python numbers at every batch would be a blocking host copy.
    mean = torch.tensor(norm.mean).view(-1, 1, 1)
    std = torch.tensor(norm.std).view(-1, 1, 1)
    return (1 / (255 * std)).to(device), (-mean / std).to(device)


def normalise(image: torch.Tensor, norm: Normalisation) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 (x / 255 - mean) / std per channel, in one pass on the image's device."""
    scale, shift = _scale_and_shift(norm, image.device)
    return torch.addcmul(shift, image, scale)


def model_inputs(rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (..., 3, H, W) and aux (..., A, H, W) -> the model's normalised inputs, on their device."""
    return normalise(rgb, RGB_NORM), normalise(aux, AUX_NORM)


def prepare_batch(batch: dict) -> dict:
    """A batch as the loader serves it (uint8 `rgb`, `aux` and `mask`) -> the model's normalised float inputs and
    int64 class ids, on the batch's device. Batches travel as uint8 and become float only there: the loader's
    workers do no float arithmetic and move a quarter of the bytes (an eighth for the mask)."""
    rgb, aux = model_inputs(batch["rgb"], batch["aux"])
    prepared = {**batch, "rgb": rgb, "aux": aux}
    if "mask" in batch:
        prepared["mask"] = batch["mask"].long()
    return prepared


def prepare_sample(sample: dict, device: torch.device) -> dict:
    """One dataset sample as a prepared batch of one on `device`."""
    return prepare_batch({k: v[None].to(device) for k, v in sample.items() if isinstance(v, torch.Tensor)})


# (rgb, nir, mask) -> (rgb, nir, mask): augmentation on uint8 arrays, mask may be None
SampleTransform = Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray, np.ndarray]]


class CloudDataset(Dataset):
    """Samples as dicts of uint8 tensors, `rgb` (3, H, W), `aux` (1, H, W) and `mask` (H, W) class ids (absent for
    unlabelled samples), and `name`; `prepare_batch` turns them into the model's inputs.

    `copy_paste`, if given, pastes objects of another sample (read only when it fires) before `transform`. With
    `cache` (a folder written by `cloudseg cache`) samples are read from pre-decoded arrays instead of image files.
    """

    def __init__(
        self,
        samples: list[SampleFiles],
        transform: SampleTransform | None = None,
        copy_paste: "CopyPaste | None" = None,
        unknown_colours: UnknownColours = DataConfig.unknown_colours,
        cache: str | Path | None = None,
    ):
        if not samples:
            raise DataError("the dataset has no samples")
        self.samples = samples
        self.transform = transform
        self.copy_paste = copy_paste
        self.unknown_colours = unknown_colours
        self.cache = SampleCache(cache, samples, unknown_colours) if cache is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.cache is not None:
            return self.cache.read(self.samples[index].name)
        return read_sample(self.samples[index], self.unknown_colours)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # (index, seed) keys come from `EpochSampler`: augmentation then depends on the seed alone, not on
        # which worker process draws the sample or how many there are.
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:
            np.random.seed(seed)
        rgb, nir, mask = self.read(index)
        if self.copy_paste is not None and mask is not None and len(self) > 1 and self.copy_paste.fires():
            donor = (index + np.random.randint(1, len(self))) % len(self)  # any other sample
            rgb, nir, mask = self.copy_paste.paste(rgb, nir, mask, *self.read(donor))
        if self.transform is not None:
            rgb, nir, mask = self.transform(rgb, nir, mask)
        sample = {"rgb": to_chw(rgb), "aux": to_chw(nir), "name": self.samples[index].name}
        if mask is not None:
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask))
        return sample


class EpochSampler(Sampler):
    """Shuffled `(index, seed)` keys, a pure function of (seed, epoch, rank): resumable and worker-independent.

    Each of `world_size` processes takes every world_size-th key of one shared permutation (padded by wrapping
    around, as DistributedSampler does, so every process runs the same number of steps).
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, epoch: int = 0):
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.length // self.world_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.length)
        order = np.resize(order, len(self) * self.world_size)[self.rank :: self.world_size]
        seeds = rng.integers(0, 2**31, size=len(order) * self.world_size)[self.rank :: self.world_size]
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))
