"""SegFormer's all-MLP decoder (Xie et al., NeurIPS 2021), as CMX uses it."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AllMLPDecoder(nn.Module):
    """Projects every stage to `embed_dim`, upsamples to the 1/4 map, concatenates, fuses and classifies.

    A 1x1 conv is the per-pixel Linear of the paper. Logits come out at 1/4 of the input size.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 512, dropout: float = 0.1):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(len(in_channels) * embed_dim, embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        # Project before upsampling: the same result as the other order, at a fraction of the cost. Stages after
        # the first are always coarser, so the choice depends on the index, not on traced shapes (ONNX export).
        maps = [project(f) for project, f in zip(self.project, features, strict=True)]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return self.classify(self.dropout(self.fuse(torch.cat(maps, dim=1))))  # (B, K, H/4, W/4)
