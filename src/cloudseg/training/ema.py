"""An exponential moving average of a model's weights, kept beside it during training."""

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


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
        self.lerp = get_ema_multi_avg_fn(decay)  # torch's own update, one fused lerp over every tensor
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
            self.lerp(list(mine), list(theirs), self.updates)
        for mine, theirs in exact:
            mine.copy_(theirs)
        self.updates += 1


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in (*model.parameters(), *model.buffers())]
