"""Train/validation split of a labelled folder: seeded from a ratio or as one fold of k, or read from a list file;
saved with a run."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudseg.errors import DataError
from cloudseg.files import atomic_path


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps({"train": list(self.train), "val": list(self.val)}, indent=1))


def make_split(names: list[str], val_fraction: float, seed: int) -> Split:
    """A seeded random split: the same names, fraction and seed always give the same split. Both sides get at
    least one name when there are two or more, however small or large the fraction."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(max(1, round(len(names) * val_fraction)), len(names) - 1) if val_fraction > 0 else 0
    return _validating(names, {names[i] for i in order[:n_val]})


def fold_split(names: list[str], folds: int, fold: int, seed: int) -> Split:
    """Fold `fold` of a seeded k-fold partition as the validation split: over folds 0..k-1 every name is validated
    exactly once, and fold sizes differ by at most one."""
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(f"data.fold {fold} of data.folds {folds}: expected folds >= 2 and 0 <= fold < folds")
    if folds > len(names):
        raise DataError(f"data.folds {folds}: only {len(names)} labelled images to divide")
    order = np.random.default_rng(seed).permutation(len(names))
    return _validating(names, {names[i] for i in np.array_split(order, folds)[fold]})


def _validating(names: list[str], val: set[str]) -> Split:
    """`val` as the validation split and every other name for training, both in the order of `names`."""
    return Split(tuple(n for n in names if n not in val), tuple(n for n in names if n in val))


def load_split(path: str | Path, names: list[str]) -> Split:
    """A split from a JSON file {"train": [...], "val": [...]}; every name must be in the dataset."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        split = Split(tuple(data["train"]), tuple(data["val"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f'{path}: expected JSON {{"train": [names], "val": [names]}} ({error})') from error
    unknown = sorted(set(split.train + split.val) - set(names))
    if unknown:
        raise DataError(f"{path}: {len(unknown)} names are not in the dataset, e.g. {unknown[0]!r}")
    if both := set(split.train) & set(split.val):
        raise DataError(f"{path}: {len(both)} names are in both train and val")
    return split
