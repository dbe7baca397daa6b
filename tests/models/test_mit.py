"""MiT encoder: stage shapes, variant table, and numerical parity with transformers' SegformerModel."""

import pytest
import torch

from cloudseg.models import MIT_VARIANTS, MiTEncoder, MiTSpec
from cloudseg.models.mit import PATCH_KERNELS, PATCH_STRIDES, DropPath


def conv_out(n: int, kernel: int, stride: int) -> int:
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


@pytest.mark.parametrize("size", [(64, 64), (97, 130), (33, 31)])
def test_stage_shapes_follow_the_patch_embedding_strides(tiny_spec, size):
    features = MiTEncoder(tiny_spec, 3, 0.1, 1e-6).eval()(torch.randn(2, 3, *size))
    h, w = size
    for i, feature in enumerate(features):
        h, w = conv_out(h, PATCH_KERNELS[i], PATCH_STRIDES[i]), conv_out(w, PATCH_KERNELS[i], PATCH_STRIDES[i])
        assert feature.shape == (2, tiny_spec.widths[i], h, w)


@pytest.mark.parametrize("variant", sorted(MIT_VARIANTS))
def test_every_variant_has_its_published_shape(variant):
    spec = MIT_VARIANTS[variant]
    with torch.device("meta"):
        encoder = MiTEncoder(spec, 3, 0.1, 1e-6)
    assert encoder.feature_channels == spec.widths
    assert [len(stage.blocks) for stage in encoder.stages] == list(spec.depths)
    reductions = [stage.blocks[0].attn.sr.stride[0] if stage.blocks[0].attn.sr else 1 for stage in encoder.stages]
    assert reductions == [8, 4, 2, 1]


def test_spec_rejects_widths_not_divisible_by_heads():
    with pytest.raises(ValueError, match="not divisible"):
        MiTSpec(widths=(8, 16, 24, 30), depths=(1, 1, 1, 1), heads=(1, 2, 3, 4))


def test_drop_path_rates_rise_linearly_to_the_given_rate(tiny_spec):
    encoder = MiTEncoder(tiny_spec, 3, drop_path_rate=0.3, norm_eps=1e-6)
    rates = [block.drop_path.p for stage in encoder.stages for block in stage.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, sum(tiny_spec.depths)).tolist())


def test_drop_path_keeps_expectation_and_is_identity_in_eval():
    layer = DropPath(0.25)
    x = torch.ones(20000, 4)
    dropped = layer.train()(x)
    values = dropped.unique().tolist()
    assert values[0] == 0.0 and values[1] == pytest.approx(1 / 0.75) and len(values) == 2
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.03)
    assert torch.equal(layer.eval()(x), x)
