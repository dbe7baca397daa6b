"""1x1 convolutions whose float rounding on a CPU does not depend on the number of threads.

PyTorch's CPU convolution splits a 1x1 convolution with few output channels (CMX's spatial gate has 2) between
threads over its input channels, so its sums round differently with 1 thread and with 2, and a near-tie pixel
of a prediction can change class between a run in one process and in two. The same function as a matrix
product over each pixel's channels splits the pixels instead, which leaves every sum whole. GPUs keep the
convolution: a GPU's process runs the same kernels whatever the number of processes.
"""

import torch
import torch.nn.functional as F
from torch import nn


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, D, H, W) by a (D, C, 1, 1) or (D, C) weight, as `F.conv2d` with a 1x1 kernel."""
    if x.device.type != "cpu":
        return F.conv2d(x, weight.view(*weight.shape[:2], 1, 1), bias)
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)  # channels_last out


class PointwiseConv(nn.Conv2d):
    """`nn.Conv2d(in_channels, out_channels, 1)`, with its parameters and initialisation, run by `pointwise`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias)
