"""SegFormer's all-MLP decoder (Xie et al., NeurIPS 2021), as CMX uses it."""

from collections.abc import Sequence

import torch
from torch import nn

from cloudseg.models.pointwise import PointwiseConv, pointwise
from cloudseg.models.resample import upsample_bilinear


class AllMLPDecoder(nn.Module):
    """Projects every stage to `embed_dim`, upsamples to the 1/4 map, concatenates, fuses and classifies.

    A 1x1 conv is the per-pixel Linear of the paper. Logits come out at 1/4 of the input size.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int, dropout: float):
        super().__init__()
        self.project = nn.ModuleList(PointwiseConv(c, embed_dim) for c in in_channels)
        self.fuse = nn.Sequential(
            PointwiseConv(len(in_channels) * embed_dim, embed_dim, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classify = PointwiseConv(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # CMX's decoder initialisation: the convs after the projections Kaiming-normal over their inputs, the
        # projections (the paper's Linear layers) as PyTorch initialises a Linear. SegFormer's encoder rule, normal
        # with std sqrt(2 / fan_out), would give the 4-output class conv a std of 0.71: logits of std ~10 at the
        # start, a first loss near 10 instead of ~ln 4.
        for project in self.project:
            project.reset_parameters()
        for conv in (self.fuse[0], self.classify):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.classify.bias)
        self.fuse[1].reset_parameters()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        # The order above, folded: the fuse conv is linear and, like any 1x1 conv, commutes with bilinear upsampling
        # (which also keeps constants), so each stage's projection is folded with its slice of the fuse weights into
        # one conv run at the stage's own resolution, and the 1/4-resolution maps are only summed: the same function,
        # gradients and parameters, without the (n x D)-channel concatenation and its n*D -> D matmul per pixel (for
        # CMX-B0 at 512², 35 of its 47 forward GFLOP). benchmarks/speed.py keeps the step-by-step order to compare.
        size = features[0].shape[-2:]
        fuse = self.fuse[0].weight.flatten(1).split(self.fuse[0].out_channels, dim=1)  # n x (D, D)
        fused = None
        for index, (project, feature, fuse_part) in enumerate(zip(self.project, features, fuse, strict=True)):
            folded = pointwise(feature, fuse_part @ project.weight.flatten(1), fuse_part @ project.bias)  # (B, D, h, w)
            if index:  # stages after the first are always coarser: an index test keeps the ONNX export general
                folded = upsample_bilinear(folded, size)
            fused = folded if fused is None else fused + folded
        return self.classify(self.dropout(self.fuse[2](self.fuse[1](fused))))  # BatchNorm, ReLU; (B, K, H/4, W/4)
