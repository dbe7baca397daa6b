"""Figures of a run: training curves, the confusion matrix and reliability diagrams (matplotlib, written
atomically as PNG)."""

import json
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cloudseg.files import atomic_path
from cloudseg.schema import CLASSES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path | BinaryIO, dpi: int, metadata: dict | None = None) -> None:
    """The figure as PNG: into a file, atomically, or into an open binary stream (a page's inline image)."""
    figure.tight_layout()
    if isinstance(path, Path):
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=dpi, metadata=metadata)
    else:
        figure.savefig(path, format="png", dpi=dpi, metadata=metadata)
    _pyplot().close(figure)


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The epochs that have `key`, and its values there (validation runs only every few epochs)."""
    rows = [row for row in history if row.get(key) is not None and np.isfinite(row[key])]
    return [row["epoch"] for row in rows], [row[key] for row in rows]


def plot_curves(history: list[dict], names: tuple[str, ...], path: Path | BinaryIO, title: str) -> None:
    """Losses, validation mIoU and per-class IoU (in the class colours) against the epoch: one row of `history`
    per training epoch, validation keys where it ran. The PNG's "curves" text holds every line as drawn (JSON)."""
    from matplotlib import patheffects
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    figure, (losses, ious) = _pyplot().subplots(1, 2, figsize=(11, 4))
    outlined = [patheffects.withStroke(linewidth=3, foreground="black")]  # yellow and black both stay visible
    lines = [(losses, key, {"marker": "o"}) for key in ("train_loss", "val_loss")]
    lines.append((ious, "mIoU", {"marker": "o", "linewidth": 3, "color": "grey"}))
    for i, name in enumerate(names):
        colour = np.array(CLASSES[i].rgb) / 255 if i < len(CLASSES) else None
        lines.append((ious, f"iou/{name}", {"marker": "o", "markersize": 3, "color": colour, "path_effects": outlined}))
    drawn = {}
    for axes, key, style in lines:
        x, y = _series(history, key)
        if x:  # no legend entry for a series without a point
            label = key.removeprefix("iou/")
            axes.plot(x, y, label=label, **style)
            drawn[label] = [[float(a), float(b)] for a, b in zip(x, y, strict=True)]
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    ious.set(xlabel="epoch", ylabel="IoU", title="validation IoU", ylim=(0, 1))
    for axes in (losses, ious):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if axes.get_lines():
            axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    _save(figure, path, dpi=90, metadata={"curves": json.dumps(drawn)})


def plot_confusion(matrix: np.ndarray, names: tuple[str, ...], path: Path) -> None:
    """The confusion matrix normalised per true class, with pixel counts."""
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = _pyplot().subplots(figsize=(6, 5))
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(share):
        colour = "white" if value > 0.5 else "black"
        axes.text(j, i, f"{value:.2f}\n{int(matrix[i, j]):,}", ha="center", va="center", fontsize=7, color=colour)
    axes.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
             xlabel="predicted", ylabel="true", title="confusion (share of each true class)")  # fmt: skip
    for label in axes.get_xticklabels():
        label.set(rotation=30, ha="right")
    figure.colorbar(image)
    _save(figure, path, dpi=100)


def plot_reliability(curves: dict, path: Path, title: str) -> None:
    """Reliability diagram of named `ReliabilityBins` (e.g. before and after calibration): each bin's accuracy
    against its mean confidence, where the diagonal is perfect calibration, above the share of pixels in each bin."""
    figure, (accuracy, pixels) = _pyplot().subplots(2, 1, figsize=(6, 6), height_ratios=(3, 1), sharex=True)
    accuracy.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    for (name, bins), marker in zip(curves.items(), "os^", strict=False):
        seen = bins.as_dict()["bins"]
        counts = np.array(seen["pixels"])
        used = counts > 0
        centres = (np.array(seen["edges"][:-1]) + np.array(seen["edges"][1:])) / 2
        confidence, right = np.array(seen["confidence"]), np.array(seen["accuracy"])
        accuracy.plot(confidence[used], right[used], marker=marker, label=f"{name}: ECE {bins.ece():.4f}")
        pixels.plot(centres[used], counts[used] / counts.sum(), marker=marker, label=name)
    accuracy.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    accuracy.set_title(title, fontsize=9)
    accuracy.legend(fontsize=8)
    pixels.set(xlabel="confidence (top-class probability)", ylabel="share of pixels", yscale="log")
    _save(figure, path, dpi=90)


def plot_learning_rates(rows: list[dict], path: Path | BinaryIO) -> bool:
    """Each parameter group's learning rate against the step, from metrics.csv's rows; False if none was logged."""
    columns = sorted({key for row in rows for key, value in row.items() if key.startswith("lr-") and value})
    if not columns:
        return False
    figure, axes = _pyplot().subplots(figsize=(6, 3))
    for column in columns:
        points = [(int(row["step"]), float(row[column])) for row in rows if row.get(column)]
        axes.plot(*zip(*points, strict=True), label=column.removeprefix("lr-"))
    axes.set(xlabel="step", ylabel="learning rate", yscale="log", title="learning rates")
    axes.legend(fontsize=8)
    _save(figure, path, dpi=90)
    return True
