"""Figures of a run: training curves and the confusion matrix (matplotlib, written atomically as PNG)."""

from pathlib import Path

import numpy as np

from cloudseg.files import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path, dpi: int) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    _pyplot().close(figure)


def _column(history: list[dict], key: str) -> list[float]:
    return [row[key] if row[key] is not None else np.nan for row in history]


def plot_curves(history: list[dict], names: tuple[str, ...], path: Path) -> None:
    """Loss, mIoU and per-class IoU against epoch."""
    epochs = [row["epoch"] for row in history]
    figure, (losses, ious) = _pyplot().subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "val_loss"):
        losses.plot(epochs, _column(history, key), marker="o", label=key)
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    losses.legend()
    ious.plot(epochs, _column(history, "mIoU"), marker="o", linewidth=2.5, color="black", label="mIoU")
    for name in names:
        ious.plot(epochs, _column(history, f"iou/{name}"), marker=".", label=name)
    ious.set(xlabel="epoch", ylabel="IoU", title="validation IoU", ylim=(0, 1))
    ious.legend(fontsize=8)
    _save(figure, path, dpi=90)


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
