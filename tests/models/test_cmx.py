"""The model registry, CMX and the SegFormer baselines: shapes, gradients, invariances, parameter counts."""

import pytest
import torch
import torch.nn.functional as F

from cloudseg.errors import ConfigError
from cloudseg.models import MODEL_NAMES, build_from_spec, build_model, count_parameters
from cloudseg.models.fusion import FeatureFusionModule, FeatureRectifyModule
from tests.conftest import TINY_SPEC

ARCHITECTURES = ("cmx", "segformer", "segformer_early")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_builder_runs_forward_and_backward_on_an_odd_size(name):
    # On the meta device shapes and autograd run without memory or arithmetic, so b5 costs what b0 does.
    with torch.device("meta"):
        model = build_model(name)
        logits = model(torch.randn(2, 3, 97, 130), torch.randn(2, 1, 97, 130))
        logits.sum().backward()
    assert logits.shape == (2, 4, 97, 130)
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_b0_models_compute_finite_logits_and_gradients(arch, pair):
    model = build_model(f"{arch}_b0")
    logits = model(*pair)
    assert logits.shape == (2, 4, 97, 130)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 4, (2, 97, 130))).backward()
    assert torch.isfinite(logits).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fresh_models_start_near_uniform_class_probabilities(arch, pair):
    # A new decoder (with or without ImageNet encoders) must not start with confident logits: CMX's Kaiming
    # fan-in initialisation of the class conv gives logits of std ~1, so the first cross-entropy is near ln 4.
    torch.manual_seed(0)
    logits = build_model(f"{arch}_b0")(*pair)
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 4, (2, 97, 130)))
    assert 0.3 < logits.std().item() < 3.0
    assert loss.item() < 3.0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_eval_output_does_not_depend_on_batch_composition(arch, pair):
    model = build_from_spec(arch, TINY_SPEC).eval()
    rgb, aux = pair
    with torch.no_grad():
        together = model(rgb, aux)
        alone = model(rgb[1:], aux[1:])
    torch.testing.assert_close(alone, together[1:], rtol=1e-5, atol=1e-4)


def test_only_fusion_models_read_the_aux_input(pair):
    rgb, aux = pair
    for arch, reads_aux in [("cmx", True), ("segformer_early", True), ("segformer", False)]:
        model = build_from_spec(arch, TINY_SPEC).eval()
        with torch.no_grad():
            changed = not torch.equal(model(rgb, aux), model(rgb, aux + 1.0))
        assert changed == reads_aux, arch


@pytest.mark.parametrize("aux_channels", [1, 2, 6])
def test_aux_stream_takes_any_number_of_channels(aux_channels):
    model = build_from_spec("cmx", TINY_SPEC, num_classes=3, aux_channels=aux_channels).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), torch.randn(1, aux_channels, 64, 64))
    assert logits.shape == (1, 3, 64, 64)


def test_cmx_b2_has_the_published_parameter_count():
    # The CMX paper and the reference implementation report 66.6M for CMX (MiT-B2).
    assert count_parameters("cmx_b2", num_classes=4) == pytest.approx(66.6e6, rel=0.01)


def test_unknown_names_are_errors_that_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'cmx_b9'; did you mean 'cmx_b5'\? choose one of cmx_b0, cm"):
        build_model("cmx_b9")
    with pytest.raises(ConfigError, match=r"model\.aux_channels: 0 is out of range; expected a value >= 1"):
        build_model("cmx_b0", aux_channels=0)


def test_rectification_with_zero_weights_is_identity_and_otherwise_mixes_streams():
    rgb, aux = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    frozen = FeatureRectifyModule(8, lambda_c=0.0, lambda_s=0.0)
    out_rgb, out_aux = frozen(rgb, aux)
    assert torch.equal(out_rgb, rgb) and torch.equal(out_aux, aux)
    out_rgb, out_aux = FeatureRectifyModule(8)(rgb, aux)
    # Gates lie in (0, 1) and both lambdas are 0.5: each stream gains at most one copy of the other.
    gain = (out_rgb - rgb) / aux
    assert gain.min() > 0 and gain.max() < 1


def test_fusion_module_maps_two_streams_to_one_map_of_the_same_size():
    fused = FeatureFusionModule(16, heads=2)(torch.randn(2, 16, 9, 11), torch.randn(2, 16, 9, 11))
    assert fused.shape == (2, 16, 9, 11)


@pytest.mark.parametrize("training", [False, True])
def test_decoder_matches_transformers_segformer_decode_head_in_output_and_gradients(training):
    # The decoder folds each projection into its slice of the fuse conv; it must still be SegFormer's head,
    # parameter for parameter. Hugging Face concatenates the coarsest first.
    from transformers import SegformerConfig
    from transformers.models.segformer.modeling_segformer import SegformerDecodeHead

    from cloudseg.models.decoder import AllMLPDecoder

    torch.manual_seed(0)
    widths, dim = (8, 16, 24, 32), 12
    ours = AllMLPDecoder(widths, 4, dim, dropout=0.0).double().train(training)
    config = SegformerConfig(
        hidden_sizes=list(widths), decoder_hidden_size=dim, num_labels=4, classifier_dropout_prob=0
    )
    reference = SegformerDecodeHead(config).double().train(training)
    with torch.no_grad():
        for projection, mlp in zip(ours.project, reference.linear_projections, strict=True):
            projection.weight.normal_()
            projection.bias.normal_()
            mlp.proj.weight.copy_(projection.weight[:, :, 0, 0])
            mlp.proj.bias.copy_(projection.bias)
        ours.fuse[0].weight.normal_()
        reference.linear_fuse.weight.copy_(torch.cat(ours.fuse[0].weight.split(dim, dim=1)[::-1], dim=1))
        reference.classifier.load_state_dict(ours.classify.state_dict())
    features = [torch.randn(2, c, 24 // 2**i, 20 // 2**i, dtype=torch.float64) for i, c in enumerate(widths)]
    logits = ours(features)
    expected = reference(features)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
    target = torch.randn_like(logits)
    (logits * target).sum().backward()
    (expected * target).sum().backward()
    torch.testing.assert_close(
        ours.fuse[0].weight.grad, torch.cat(reference.linear_fuse.weight.grad.split(dim, 1)[::-1], 1)
    )
    for projection, mlp in zip(ours.project, reference.linear_projections, strict=True):
        torch.testing.assert_close(projection.weight.grad[:, :, 0, 0], mlp.proj.weight.grad)
        torch.testing.assert_close(projection.bias.grad, mlp.proj.bias.grad)


def linear(x: torch.Tensor, layer: torch.nn.Module) -> torch.Tensor:
    """A Linear or 1x1 conv layer's map, written as an einsum over the channel axis (last for tokens, 1 for maps)."""
    weight = layer.weight.reshape(layer.weight.shape[0], -1)
    bias = layer.bias if layer.bias is not None else torch.zeros(weight.shape[0])
    if x.ndim == 3:
        return torch.einsum("bnc,oc->bno", x, weight) + bias
    return torch.einsum("bchw,oc->bohw", x, weight) + bias[:, None, None]


def test_rectification_computes_the_papers_equations():
    """CMX's FRM (Zhang et al., eqs. 1-3): channel weights from average- and max-pooled [RGB, X] through an MLP,
    spatial weights from [RGB, X] through two 1x1 convs, each split into a weight per stream; each stream adds the
    other stream times the other stream's weights, scaled by lambda_C and lambda_S."""
    torch.manual_seed(0)
    module = FeatureRectifyModule(6, lambda_c=0.3, lambda_s=0.7).eval()
    rgb, x = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 5, 7)
    both = torch.cat((rgb, x), 1)
    pooled = torch.cat((both.mean((2, 3)), both.flatten(2).max(-1).values), 1)  # (B, 4C)
    first, second = module.channel_gate[0], module.channel_gate[2]
    channel = torch.sigmoid(linear(torch.relu(linear(pooled[:, None], first)), second))[:, 0]  # (B, 2C)
    conv1, conv2 = module.spatial_gate[0], module.spatial_gate[2]
    spatial = torch.sigmoid(linear(torch.relu(linear(both, conv1)), conv2))  # (B, 2, H, W)
    channel_rgb, channel_x = channel[:, :6, None, None], channel[:, 6:, None, None]
    rgb_out = rgb + 0.3 * channel_x * x + 0.7 * spatial[:, 1:] * x
    x_out = x + 0.3 * channel_rgb * rgb + 0.7 * spatial[:, :1] * rgb
    actual_rgb, actual_x = module(rgb, x)
    torch.testing.assert_close(actual_rgb, rgb_out)
    torch.testing.assert_close(actual_x, x_out)


def test_fusion_computes_the_papers_cross_path_and_channel_embedding():
    """CMX's FFM (eqs. 4-8): per stream a linear layer and ReLU give a kept half and an exchanged half; the
    exchanged half's queries read the other stream's global context softmax(K^T V) per head; the halves are merged
    by a linear layer onto a residual, layer-normalised; then [RGB, X] as a map goes through a 1x1 residual plus
    1x1 -> depthwise 3x3 -> ReLU -> 1x1 -> BatchNorm, and a final BatchNorm."""
    torch.manual_seed(0)
    heads, dim = 2, 8
    module = FeatureFusionModule(dim, heads=heads).eval()
    for norm in (module.embed.embed[4], module.embed.norm):  # running statistics other than 0 and 1
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    rgb, x = torch.randn(2, dim, 3, 5), torch.randn(2, dim, 3, 5)
    tokens = [t.flatten(2).transpose(1, 2) for t in (rgb, x)]  # (B, N, C)
    cross = module.cross
    splits = (cross.split_rgb, cross.split_aux)
    halves = [torch.relu(linear(t, layer)).split(dim, -1) for t, layer in zip(tokens, splits, strict=True)]
    d = dim // heads

    def context(stream: torch.Tensor, kv: torch.nn.Module) -> torch.Tensor:
        k, v = linear(stream, kv).split(dim, -1)
        k, v = (t.reshape(2, -1, heads, d).transpose(1, 2) for t in (k, v))  # (B, heads, N, d)
        return torch.softmax(torch.einsum("bhni,bhnj->bhij", k, v) * d**-0.5, dim=-2)

    def read(stream: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        q = stream.reshape(2, -1, heads, d).transpose(1, 2)
        return torch.einsum("bhni,bhij->bhnj", q, ctx).transpose(1, 2).reshape(2, -1, dim)

    exchanged_rgb = read(halves[0][1], context(halves[1][1], cross.cross_attn.kv_aux))
    exchanged_x = read(halves[1][1], context(halves[0][1], cross.cross_attn.kv_rgb))
    merged = [
        F.layer_norm(t + linear(torch.cat((keep, exchanged), -1), merge), (dim,), norm.weight, norm.bias)
        for t, keep, exchanged, merge, norm in zip(
            tokens, (halves[0][0], halves[1][0]), (exchanged_rgb, exchanged_x),
            (cross.merge_rgb, cross.merge_aux), (cross.norm_rgb, cross.norm_aux), strict=True,
        )
    ]  # fmt: skip
    both = torch.cat(merged, -1).transpose(1, 2).reshape(2, 2 * dim, 3, 5)

    def batch_norm(t: torch.Tensor, norm: torch.nn.BatchNorm2d) -> torch.Tensor:
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return (t - norm.running_mean[:, None, None]) * scale[:, None, None] + norm.bias[:, None, None]

    embed = module.embed.embed
    inner = linear(both, embed[0])
    depthwise = F.conv2d(inner, embed[1].weight, embed[1].bias, padding=1, groups=dim)
    branch = batch_norm(linear(torch.relu(depthwise), embed[3]), embed[4])
    expected = batch_norm(linear(both, module.embed.residual) + branch, module.embed.norm)
    torch.testing.assert_close(module(rgb, x), expected)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pointwise_is_the_1x1_convolution(layout):
    from cloudseg.models.pointwise import PointwiseConv

    torch.manual_seed(0)
    conv = PointwiseConv(24, 5)
    x = torch.randn(2, 24, 9, 13).contiguous(memory_format=layout)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias), atol=1e-5)
    assert list(conv.state_dict()) == ["weight", "bias"] and conv.weight.shape == (5, 24, 1, 1)  # as nn.Conv2d's


def test_cmx_gives_the_same_bits_on_one_cpu_thread_and_on_two():
    """So that a prediction is the same bytes in one process and in two, which share the cores (a 1x1
    convolution with 2 outputs, CMX's spatial gate, rounded differently on 1 and 2 threads)."""
    torch.manual_seed(0)
    model = build_model("cmx_b0").eval().to(memory_format=torch.channels_last)
    rgb, aux = (torch.randn(2, c, 256, 256).contiguous(memory_format=torch.channels_last) for c in (3, 1))
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = model(rgb, aux)
            torch.set_num_threads(2)
            two = model(rgb, aux)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
