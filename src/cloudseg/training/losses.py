"""Segmentation losses on logits (B, K, H, W) and targets (B, H, W); the ignore index is skipped by all."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cloudseg.config import LossConfig
from cloudseg.schema import IGNORE_INDEX


def _mean_of_largest(values: torch.Tensor, count: torch.Tensor, bound: int) -> torch.Tensor:
    """Mean of the `count` largest of the 1-D `values`, where `count` (a 0-d tensor, 1 <= count <= bound) stays on
    the device: taking the static `bound` largest and masking keeps the shapes fixed and the step free of syncs."""
    top = values.topk(bound, sorted=True).values
    kept = torch.arange(bound, device=values.device) < count
    return (top * kept).sum() / count


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    fraction: float,
    ignore_index: int,
    weight: torch.Tensor | None = None,
    threshold: float | None = None,
    min_kept: int = 0,
) -> torch.Tensor:
    """Cross-entropy averaged over the hardest pixels only (online hard example mining).

    Keeps the top `fraction` of valid pixels by loss; or, with `threshold`, the pixels whose probability for
    their true class is below it, and never fewer than `min_kept` of the hardest. No value is read back to the
    host and every shape is fixed by the input's, so a compiled training step neither waits nor recompiles.
    """
    losses = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none").flatten()
    valid = (target != ignore_index).flatten()
    valid_count = valid.sum()
    losses = losses.masked_fill(~valid, -1.0)  # below every real loss (>= 0), so never among the hardest
    if threshold is None:
        count = torch.floor(valid_count.double() * fraction).long().clamp(min=1)
        hardest = _mean_of_largest(losses, count, max(1, int(fraction * losses.numel())))
    else:
        # p(true class) < threshold  <=>  loss > -log(threshold), where a class weight scales both sides
        bar = -math.log(threshold)
        if weight is not None:
            bar = bar * weight[target.masked_fill(target == ignore_index, 0)].flatten()
        hard = losses > bar
        hard_count = hard.sum()
        floor = min(max(min_kept, 1), losses.numel())
        floor_mean = _mean_of_largest(losses, valid_count.clamp(1, floor), floor)
        hard_mean = (losses * hard).sum() / hard_count.clamp(min=1)
        hardest = torch.where(hard_count >= floor, hard_mean, floor_mean)
    return torch.where(valid_count > 0, hardest, logits.sum() * 0.0)


def _valid_one_hot(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Softmax probabilities, one-hot targets and a validity mask, all (B, K, H, W)."""
    valid = (target != ignore_index).unsqueeze(1)
    one_hot = F.one_hot(target.masked_fill(~valid.squeeze(1), 0), logits.shape[1]).permute(0, 3, 1, 2)
    return logits.float().softmax(dim=1) * valid, one_hot * valid, valid


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient, summed over the whole batch."""
    probs, one_hot, _ = _valid_one_hot(logits, target, ignore_index)
    intersection = (probs * one_hot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


def jaccard_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Jaccard index (IoU)."""
    probs, one_hot, _ = _valid_one_hot(logits, target, ignore_index)
    intersection = (probs * one_hot).sum(dim=(0, 2, 3))
    union = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3)) - intersection
    return 1.0 - ((intersection + smooth) / (union + smooth)).mean()


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Lovász-softmax (Berman et al., CVPR 2018): a convex surrogate of IoU, averaged over the classes present.

    All classes are sorted at once. Ignored pixels are kept, not dropped, with an error of -1 that sorts them after
    every valid pixel, past the last positive, where the weights are zero: shapes stay fixed by the input's and
    nothing is read back to the host, so a compiled step neither recompiles nor waits.
    """
    probs, one_hot, valid = _valid_one_hot(logits, target, ignore_index)

    def by_class(t: torch.Tensor) -> torch.Tensor:  # (B, K, H, W) -> (K, B·H·W): each class's row sorted at once
        return t.transpose(0, 1).reshape(t.shape[1], -1)

    errors, order = by_class(torch.where(valid, (one_hot - probs).abs(), -1.0)).sort(dim=1, descending=True)
    truth = by_class(one_hot.float()).gather(1, order)
    positives = truth.sum(dim=1, keepdim=True)  # (K, 1)
    jaccard = 1.0 - (positives - truth.cumsum(1)) / (positives + (1.0 - truth).cumsum(1))  # never 0 / 0
    gradient = torch.cat((jaccard[:, :1], jaccard.diff(dim=1)), dim=1)  # the Lovász extension's weights
    per_class = (errors * gradient).sum(dim=1)
    present = (positives[:, 0] > 0).float()
    return (per_class * present).sum() / present.sum().clamp(min=1.0)


def sqrt_inverse_weights(class_pixels: np.ndarray) -> tuple[float, ...]:
    """Per-class weights sqrt(max share / share): 1 for the commonest class, more for rarer ones; 1 for a class
    with no pixels, which no target would use anyway."""
    counts = np.asarray(class_pixels, dtype=np.float64)
    weights = np.sqrt(counts.max() / np.where(counts > 0, counts, counts.max()))
    return tuple(round(float(w), 4) for w in weights)


class SegmentationLoss(nn.Module):
    """The weighted sum of the terms a `LossConfig` names; `forward` returns (total, {term: value})."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        if isinstance(cfg.class_weights, str):
            raise ValueError(f"class_weights {cfg.class_weights!r} must be resolved into numbers first (train does)")
        weights = torch.tensor(cfg.class_weights) if cfg.class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.terms = {name: w for name in ("ce", "ohem", "dice", "lovasz", "jaccard") if (w := getattr(cfg, name))}

    def _term(self, name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg, ignore = self.cfg, IGNORE_INDEX
        if name == "ce":
            return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=ignore)
        if name == "ohem":
            return ohem_cross_entropy(
                logits, target, cfg.ohem_fraction, ignore, self.class_weights, cfg.ohem_threshold, cfg.ohem_min_kept
            )
        return {"dice": dice_loss, "jaccard": jaccard_loss, "lovasz": lovasz_softmax}[name](logits, target, ignore)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: self._term(name, logits, target) for name in self.terms}
        return sum(self.terms[name] * value for name, value in parts.items()), parts
