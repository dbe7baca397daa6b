"""`cloudseg check-data`: every problem of a dataset folder in one report, and a summary of what it holds."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloudseg.config import DataConfig, UnknownColours
from cloudseg.data.dataset import pair_files
from cloudseg.data.io import SampleFiles, class_pixels, codec_workers, load_label, load_nir, load_rgb, size_problem
from cloudseg.errors import DataError
from cloudseg.schema import CLASSES, IGNORE_INDEX


@dataclass
class SplitSummary:
    samples: int = 0
    labelled: bool = False
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(len(CLASSES), dtype=np.int64))
    ignored_pixels: int = 0

    def format(self, name: str) -> list[str]:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common())
        lines = [f"{name}: {self.samples} samples{'' if self.labelled else ' (no labels)'}; sizes {sizes or '-'}"]
        total = self.class_pixels.sum() + self.ignored_pixels
        if self.labelled and total:
            lines.append(f"  {'class':<14} {'pixels':>13} {'share':>8}")
            for cls, count in zip(CLASSES, self.class_pixels, strict=True):
                lines.append(f"  {cls.name:<14} {count:>13,} {count / total:>8.2%}")
            if self.ignored_pixels:
                lines.append(f"  {'(ignored)':<14} {self.ignored_pixels:>13,} {self.ignored_pixels / total:>8.2%}")
        return lines


@dataclass
class DataReport:
    root: Path
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"dataset {self.root}"]
        for name, summary in self.splits.items():
            lines += summary.format(name)
        if self.notes:
            lines.append(f"conversions applied ({len(self.notes)}):")
            lines += [f"  {note}" for note in self.notes]
        lines.append(f"problems ({len(self.problems)}):" if self.problems else "no problems found")
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)

    def raise_if_problems(self) -> None:
        if len(self.problems) == 1:
            raise DataError(f"{self.problems[0]} (`cloudseg check-data {self.root}` reports the whole dataset)")
        if self.problems:
            raise DataError(f"{self.root}: {len(self.problems)} problems in the dataset:\n" + self.format())


@dataclass
class _SampleCheck:
    """What reading one sample found, merged into the report in the samples' order."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    class_pixels: np.ndarray | None = None
    ignored_pixels: int = 0
    size: tuple[int, int] | None = None  # (width, height)


def _check_sample(files: SampleFiles, unknown_colours: UnknownColours) -> _SampleCheck:
    found, arrays = _SampleCheck(), []
    for path, load in ((files.rgb, load_rgb), (files.ngr, load_nir)):
        try:
            arrays.append((path, load(path, found.notes)))
        except DataError as error:
            found.problems.append(str(error))
    if files.label is not None:
        try:
            ids = load_label(files.label, unknown_colours, found.notes)
            arrays.append((files.label, ids))
            found.class_pixels = class_pixels(ids)
            found.ignored_pixels = int((ids == IGNORE_INDEX).sum())
        except DataError as error:
            found.problems.append(str(error))
    shapes = {path: array.shape for path, array in arrays}
    problem = size_problem(files.name, shapes)
    if problem:
        found.problems.append(problem)
    elif shapes:
        h, w = next(iter(shapes.values()))[:2]
        found.size = (w, h)
    return found


def check_dataset(
    root: str | Path,
    unknown_colours: UnknownColours = DataConfig.unknown_colours,
    splits: tuple[str, ...] = ("train", "test"),
) -> DataReport:
    """Reads every file of the dataset under `root` and reports all problems at once."""
    root = Path(root)
    report = DataReport(root)
    # Each split's label folder: test labels are kept apart, in test_labels/.
    test_labels = root / "test_labels" if (root / "test_labels").is_dir() else None
    labels = {"train": root / "train" / "label", "test": test_labels}
    found = {name: label for name, label in labels.items() if name in splits and (root / name).is_dir()}
    if not root.is_dir():
        report.problems.append(f"{root}: no such folder")
    elif not found:
        report.problems.append(
            f"{root}: no {' or '.join(f'{s}/' for s in splits)} folder; expected <root>/train/{{rgb,ngr,label}}/"
        )
    for name, label_dir in found.items():
        samples, problems = pair_files(root / name, label_dir)
        report.problems += problems
        summary = report.splits[name] = SplitSummary(samples=len(samples), labelled=label_dir is not None)
        # Threads: decoding is most of the work and OpenCV releases the GIL while it decodes.
        with ThreadPoolExecutor(codec_workers()) as pool:
            for sample in pool.map(lambda files: _check_sample(files, unknown_colours), samples):
                report.problems += sample.problems
                report.notes += sample.notes
                if sample.class_pixels is not None:
                    summary.class_pixels += sample.class_pixels
                summary.ignored_pixels += sample.ignored_pixels
                if sample.size is not None:
                    summary.sizes[sample.size] += 1
    return report
