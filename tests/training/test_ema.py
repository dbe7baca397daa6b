"""The exponential average of the weights: a known answer, BatchNorm statistics included."""

import torch
from torch import nn

from cloudseg.training.ema import ExponentialAverage


def test_average_copies_first_then_follows_parameters_and_batchnorm_statistics_exactly():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    average = ExponentialAverage(model, decay=0.75)
    history = []
    for step in range(3):
        with torch.no_grad():
            for tensor in (*model.parameters(), model[1].running_mean, model[1].running_var):
                tensor.add_(step + 1.0)
        model[1].num_batches_tracked += 1
        history.append({name: t.clone() for name, t in model.state_dict().items()})
        average.update(model)
    for name, value in average.module.state_dict().items():
        if value.is_floating_point():  # copy at the first update, then e <- 0.75 e + 0.25 w
            expected = history[0][name]
            for seen in history[1:]:
                expected = 0.75 * expected + 0.25 * seen[name]
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(value, history[-1][name]), name  # integer buffers are copied
    assert average.updates == 3 and not any(p.requires_grad for p in average.parameters())
