"""Probabilities that mean what they say: temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", 2017) fitted by the negative log-likelihood, and the expected calibration error with its reliability
bins."""

import torch
import torch.nn.functional as F

from cloudseg.schema import IGNORE_INDEX

BINS = 15


class ReliabilityBins:
    """Pixels counted in BINS equal-width bins of their top-class probability: how many, their summed
    confidence and how many were right. Streaming (three numbers a bin), so a whole test split fits."""

    def __init__(self):
        self.edges = torch.linspace(0, 1, BINS + 1, dtype=torch.float64)
        self.count, self.confidence, self.correct = (torch.zeros(BINS, dtype=torch.float64) for _ in range(3))

    def update(self, probabilities: torch.Tensor, target: torch.Tensor) -> None:
        """Probabilities (B, K, H, W) or (N, K) and class ids (B, H, W) or (N,); IGNORE_INDEX pixels are left out."""
        confidence, predicted = probabilities.max(dim=1)
        counted = target != IGNORE_INDEX
        confidence = confidence[counted].double().cpu()
        right = (predicted[counted] == target[counted]).double().cpu()
        # A bin holds [low, high); the last also holds a confidence of exactly 1 (torchmetrics counts it apart).
        index = (torch.bucketize(confidence, self.edges, right=True) - 1).clamp(0, len(self.count) - 1)
        self.count += torch.bincount(index, minlength=len(self.count))
        self.confidence += torch.bincount(index, confidence, minlength=len(self.count))
        self.correct += torch.bincount(index, right, minlength=len(self.count))

    def ece(self) -> float:
        """Expected calibration error: the pixel-weighted mean gap between confidence and accuracy over the bins."""
        return float((self.correct - self.confidence).abs().sum() / self.count.sum().clamp(min=1))

    def as_dict(self) -> dict:
        shown = self.count.clamp(min=1)
        return {
            "ece": self.ece(),
            "bins": {
                "edges": self.edges.tolist(),
                "pixels": self.count.long().tolist(),
                "confidence": (self.confidence / shown).tolist(),
                "accuracy": (self.correct / shown).tolist(),
            },
        }


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, per_class: bool = False) -> torch.Tensor:
    """The temperature (shape (1,)), or one per class ((K,)), that minimises the NLL of softmax(logits / T) over
    pixels' logits (N, K) and class ids (N,). Fitted as log T, so T stays positive, with L-BFGS in float64."""
    logits, target = logits.double(), target.long()
    log_temperature = torch.zeros(logits.shape[1] if per_class else 1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_temperature], max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_temperature.exp(), target)
        loss.backward()
        return loss

    optimiser.step(nll)
    return log_temperature.detach().exp().float()


def sample_pixels(
    logits: torch.Tensor, target: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` labelled pixels drawn at random from logits (B, K, H, W) and class ids (B, H, W), as (N, K)
    logits and (N,) ids on the CPU: a fit over every pixel of a split would hold gigabytes."""
    logits = logits.float().movedim(1, -1).reshape(-1, logits.shape[1]).cpu()
    target = target.reshape(-1).cpu()
    labelled = (target != IGNORE_INDEX).nonzero().squeeze(1)
    chosen = labelled[torch.randperm(len(labelled), generator=generator)[:count]]
    return logits[chosen], target[chosen]
