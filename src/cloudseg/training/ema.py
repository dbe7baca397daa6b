"""An exponential moving average of a model's weights, kept beside it during training."""

import copy

import torch
from torch import nn


class ExponentialAverage(nn.Module):
    """`module` is a copy of the model whose parameters and floating-point buffers (BatchNorm statistics) follow
    the model's as an exponential moving average with `decay`; integer buffers are copied. The first update
    copies everything, as torch's AveragedModel does.

    Unlike AveragedModel, nothing is read back from the device to decide what to do (its update compares a
    device counter on the host twice, which makes a GPU step wait), and BatchNorm statistics are averaged too
    rather than left at their initial values. `updates` is a host number, saved with the training state.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        pairs = list(zip(_state(self.module), _state(model), strict=True))
        floating = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
        exact = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]
        if self.updates == 0:
            exact += floating
        elif floating:
            mine, theirs = zip(*floating, strict=True)
            torch._foreach_lerp_(list(mine), list(theirs), 1.0 - self.decay)
        for mine, theirs in exact:
            mine.copy_(theirs)
        self.updates += 1


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in (*model.parameters(), *model.buffers())]
