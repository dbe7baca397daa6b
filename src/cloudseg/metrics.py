"""Class predictions and their scores: the class of each pixel, and scores from one confusion matrix accumulated over
a whole split (never averaged per batch). Training and inference both read them here."""

from typing import TYPE_CHECKING

import torch

from cloudseg.schema import CLASS_NAMES, IGNORE_INDEX

if TYPE_CHECKING:
    from torchmetrics.classification import MulticlassConfusionMatrix


def class_ids(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The most likely class of each pixel (the first, on a tie), as argmax. `max` finds the same: on CPUs in
    torch 2.13, argmax over the channels of a contiguous (B, K, H, W) tensor takes 10 times longer."""
    return logits.max(dim).indices


def class_names(num_classes: int) -> tuple[str, ...]:
    """The class table's names, or generic ones for a model trained with another number of classes."""
    return CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(f"class_{i}" for i in range(num_classes))


def confusion_metric(num_classes: int) -> "MulticlassConfusionMatrix":
    """Rows are true classes, columns predicted; ignored pixels are skipped; syncs across DDP processes."""
    # Imported here: torchmetrics takes about 2 s to import (it loads transformers where that is installed), and
    # `predict` and `score`, which read this module for `confusion_scores`, do not need it.
    from torchmetrics.classification import MulticlassConfusionMatrix

    return MulticlassConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)


def confusion_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class IoU, Dice (F1), precision and recall, their means over classes, and pixel accuracy.

    A class that is neither present nor predicted has no score (NaN) and is left out of the means.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    fp = confusion.sum(dim=0) - tp
    fn = confusion.sum(dim=1) - tp
    iou = tp / (tp + fp + fn)
    dice = 2 * tp / (2 * tp + fp + fn)
    return {
        "iou": iou,
        "dice": dice,
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "mIoU": iou.nanmean(),
        "mDice": dice.nanmean(),
        "accuracy": tp.sum() / confusion.sum(),
    }


def confusion_counts(prediction: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) pixel counts of one prediction (rows true, columns predicted), ignored pixels skipped."""
    counted = target != IGNORE_INDEX
    pairs = target[counted].long() * classes + prediction[counted].long()
    return torch.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def image_scores(prediction: torch.Tensor, target: torch.Tensor, names: tuple[str, ...]) -> dict:
    """One image's pixel count, accuracy, mIoU and per-class IoU, from its own confusion matrix (H, W) ids."""
    confusion = confusion_counts(prediction, target, len(names))
    scores = flat_scores(confusion_scores(confusion), names)
    return {"pixels": int(confusion.sum()), "accuracy": scores["accuracy"], "mIoU": scores["mIoU"],
            **{f"iou/{name}": scores[f"iou/{name}"] for name in names}}  # fmt: skip


def flat_scores(scores: dict[str, torch.Tensor], names: tuple[str, ...] = CLASS_NAMES) -> dict[str, float | None]:
    """{"mIoU": .., "accuracy": .., "iou/clear": .., "dice/thick_cloud": ..} as plain floats."""
    flat = {}
    for key, value in scores.items():
        if value.ndim == 0:
            flat[key] = _number(value)
        else:
            flat.update({f"{key}/{name}": _number(v) for name, v in zip(names, value, strict=True)})
    return flat


def _number(value: torch.Tensor) -> float | None:
    return None if torch.isnan(value) else float(value)  # JSON has no NaN


def format_table(scores: dict[str, torch.Tensor], names: tuple[str, ...] = CLASS_NAMES) -> str:
    """A per-class table of IoU, Dice, precision and recall, with the means and accuracy below."""
    lines = [f"{'class':<14} {'IoU':>7} {'Dice':>7} {'prec.':>7} {'recall':>7}"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<14} " + " ".join(f"{float(scores[k][i]):>7.4f}" for k in ("iou", "dice", "precision", "recall"))
        )
    lines.append(f"{'mean':<14} {float(scores['mIoU']):>7.4f} {float(scores['mDice']):>7.4f}")
    lines.append(f"pixel accuracy {float(scores['accuracy']):.4f}")
    return "\n".join(lines)
