"""Bilinear upsampling with a gathering backward: F.interpolate's function and gradients, without its scatter."""

import pytest
import torch
import torch.nn.functional as F

from cloudseg.models.resample import upsample_bilinear


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("size_in", "size_out"), [((16, 16), (128, 128)), ((5, 7), (17, 30)), ((6, 4), (6, 4))])
def test_values_and_gradients_are_f_interpolates(size_in, size_out, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size_in, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    upsampled = upsample_bilinear(ours, size_out)
    expected = F.interpolate(reference, size=size_out, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsampled, expected, rtol=0, atol=0)
    gradient = torch.randn_like(expected)
    upsampled.backward(gradient)
    expected.backward(gradient)
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-12, atol=1e-12)
    if channels_last:  # the layout the GPU's compiled step runs in is kept
        assert ours.grad.is_contiguous(memory_format=torch.channels_last)


def test_gradcheck_and_no_autograd_node_without_gradients():
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: upsample_bilinear(t, (7, 9)), (x,))
    with torch.no_grad():
        assert upsample_bilinear(x, (7, 9)).grad_fn is None
    assert upsample_bilinear(x.detach(), (7, 9)).grad_fn is None  # inference and export see plain F.interpolate
