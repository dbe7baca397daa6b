"""Loading SegFormer weights: parity with transformers through every file layout, strictness, and the hub cache."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from cloudseg.errors import WeightsError
from cloudseg.models import MIT_VARIANTS, MiTEncoder, build_from_spec
from cloudseg.models.weights import adapt_first_conv, convert_segformer_keys, load_encoder_state, read_state_dict
from tests.conftest import TINY_SPEC

transformers = pytest.importorskip("transformers")


def hf_config(spec, num_labels=10):
    return transformers.SegformerConfig(
        depths=list(spec.depths),
        hidden_sizes=list(spec.widths),
        num_attention_heads=list(spec.heads),
        sr_ratios=list(spec.sr_ratios),
        mlp_ratios=[spec.mlp_ratio] * 4,
        num_labels=num_labels,
    )


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random SegformerForImageClassification saved like `nvidia/mit-b*`, and its encoder for reference."""
    torch.manual_seed(0)
    model = transformers.SegformerForImageClassification(hf_config(TINY_SPEC)).eval()
    with torch.no_grad():  # noise everywhere, so swapped norms or biases cannot hide behind ones and zeros
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    folder = tmp_path_factory.mktemp("mit-tiny")
    model.save_pretrained(folder)
    return folder, model.segformer


def reference_features(hf_encoder, x):
    with torch.no_grad():
        return hf_encoder(x, output_hidden_states=True).hidden_states


def to_original_release(state):
    """Hugging Face file keys -> the original SegFormer release's (`patch_embed1.proj.weight`, `block1.0.attn.kv`)."""
    parts_map = [
        ("attention.self.query", "attn.q"),
        ("attention.self.sr", "attn.sr"),
        ("attention.self.layer_norm", "attn.norm"),
        ("attention.output.dense", "attn.proj"),
        ("layer_norm_1", "norm1"),
        ("layer_norm_2", "norm2"),
        ("mlp.dense1", "mlp.fc1"),
        ("mlp.dense2", "mlp.fc2"),
    ]
    out = {}
    for key, tensor in state.items():
        key = key.removeprefix("segformer.")
        parts = key.split(".")
        if parts[0] == "classifier":
            out[f"head.{parts[1]}"] = tensor
        elif parts[1] == "patch_embeddings":
            out[f"patch_embed{int(parts[2]) + 1}.{'norm' if parts[3] == 'layer_norm' else 'proj'}.{parts[4]}"] = tensor
        elif parts[1] == "layer_norm":
            out[f"norm{int(parts[2]) + 1}.{parts[3]}"] = tensor
        else:
            rest = ".".join(parts[4:])
            for old, new in parts_map:
                rest = rest.replace(old, new)
            out[f"block{int(parts[2]) + 1}.{parts[3]}.{rest}"] = tensor
    for key in [k for k in out if "attention.self.key" in k]:
        value = out.pop(key.replace("key", "value"))
        out[key.replace("attention.self.key", "attn.kv")] = torch.cat((out.pop(key), value))
    return out


def assert_features_match(ours, reference):
    assert len(ours) == len(reference) == 4
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-4


@pytest.fixture
def rgb():
    return torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(1))


def test_hugging_face_folder_gives_transformers_features(hf_model, rgb):
    folder, hf_encoder = hf_model
    model = build_from_spec("segformer", TINY_SPEC, pretrained=folder, norm_eps=1e-5).eval()
    with torch.no_grad():
        assert_features_match(model.encoder(rgb), reference_features(hf_encoder, rgb))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_original_release_file_gives_transformers_features(hf_model, rgb, tmp_path, suffix):
    folder, hf_encoder = hf_model
    original = to_original_release(read_state_dict(folder / "model.safetensors"))
    assert "block2.1.attn.kv.weight" in original and "patch_embed1.proj.weight" in original
    path = tmp_path / f"mit_tiny{suffix}"
    torch.save(original, path) if suffix == ".pth" else save_file(original, path)
    model = build_from_spec("segformer", TINY_SPEC, pretrained=path, norm_eps=1e-5).eval()
    with torch.no_grad():
        assert_features_match(model.encoder(rgb), reference_features(hf_encoder, rgb))


def test_single_hugging_face_bin_file_loads(hf_model, rgb, tmp_path):
    folder, hf_encoder = hf_model
    path = tmp_path / "pytorch_model.bin"
    torch.save(read_state_dict(folder / "model.safetensors"), path)
    model = build_from_spec("segformer", TINY_SPEC, pretrained=path, norm_eps=1e-5).eval()
    with torch.no_grad():
        assert_features_match(model.encoder(rgb), reference_features(hf_encoder, rgb))


def test_cmx_streams_both_get_the_weights_and_aux_sees_nir_as_grey_rgb(hf_model, rgb):
    folder, hf_encoder = hf_model
    model = build_from_spec("cmx", TINY_SPEC, aux_channels=1, pretrained=folder, norm_eps=1e-5).eval()
    rgb_state, aux_state = model.rgb.state_dict(), model.aux.state_dict()
    first_conv = "stages.0.patch_embed.proj.weight"
    assert all(torch.equal(rgb_state[k], aux_state[k]) for k in rgb_state if k != first_conv)
    assert torch.equal(aux_state[first_conv], rgb_state[first_conv].sum(dim=1, keepdim=True))
    nir = rgb[:, :1]
    with torch.no_grad():
        assert_features_match(model.aux(nir), reference_features(hf_encoder, nir.repeat(1, 3, 1, 1)))


def test_early_fusion_starts_as_the_pretrained_rgb_model(hf_model, rgb):
    folder, hf_encoder = hf_model
    model = build_from_spec("segformer_early", TINY_SPEC, aux_channels=1, pretrained=folder, norm_eps=1e-5).eval()
    stacked = torch.cat((rgb, torch.randn(2, 1, 67, 45)), dim=1)
    with torch.no_grad():
        assert_features_match(model.encoder(stacked), reference_features(hf_encoder, rgb))


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_adapted_first_conv_keeps_the_response_to_a_grey_input(channels):
    weight = torch.randn(8, 3, 7, 7)
    grey = torch.randn(1, 1, 16, 16)
    expected = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), weight)
    adapted = adapt_first_conv(weight, channels, rgb_channels=0)
    assert adapted.shape == (8, channels, 7, 7)
    actual = torch.nn.functional.conv2d(grey.repeat(1, channels, 1, 1), adapted)
    assert torch.allclose(actual, expected, atol=1e-4)


@pytest.fixture(scope="module")
def published_layouts(tmp_path_factory):
    """Files with the exact key names and shapes of `nvidia/mit-b0` and `nvidia/mit-b2` (random weights)."""
    folders = {}
    for variant in ("b0", "b2"):
        config = hf_config(MIT_VARIANTS[variant], num_labels=1000)
        folders[variant] = tmp_path_factory.mktemp(f"mit-{variant}")
        transformers.SegformerForImageClassification(config).save_pretrained(folders[variant])
    return folders


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_key_map_covers_the_published_checkpoint_layout(published_layouts, variant):
    state = read_state_dict(published_layouts[variant] / "model.safetensors")
    converted, dropped, unrecognised = convert_segformer_keys(state)
    assert sorted(dropped) == ["classifier.bias", "classifier.weight"]
    assert unrecognised == []
    encoder = MiTEncoder(MIT_VARIANTS[variant], 3, 0.1, 1e-6)
    load_encoder_state(encoder, converted, 3, "file", unrecognised)
    # Every tensor of the file arrives in the encoder (kv counts once for key + value).
    kv_pairs = sum(".attn.kv." in k for k in converted)
    assert len(converted) == len(state) - len(dropped) - kv_pairs


def test_wrong_variant_is_an_error_that_names_both_shapes(published_layouts):
    with pytest.raises(WeightsError) as error:
        build_from_spec("cmx", MIT_VARIANTS["b2"], pretrained=published_layouts["b0"])
    message = str(error.value)
    assert str(published_layouts["b0"] / "model.safetensors") in message
    assert "= mit-b0" in message and "= mit-b2" in message
    assert "missing stages.0.blocks.2.attn.kv.weight" in message


def test_unexpected_key_is_an_error_that_names_it(hf_model, tmp_path):
    folder, _ = hf_model
    state = read_state_dict(folder / "model.safetensors")
    state["segformer.encoder.extra_block.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "extra.safetensors")
    with pytest.raises(WeightsError, match=r"unexpected segformer\.encoder\.extra_block\.weight"):
        build_from_spec("segformer", TINY_SPEC, pretrained=tmp_path / "extra.safetensors")


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pth"])
def test_corrupt_file_is_an_error_that_names_it(hf_model, tmp_path, name):
    folder, _ = hf_model
    path = tmp_path / name
    path.write_bytes((folder / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(WeightsError, match=rf"{name}: cannot read weights"):
        build_from_spec("segformer", TINY_SPEC, pretrained=path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "callback": print}, path)
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_state_dict(path)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(WeightsError, match="no such file or folder"):
        build_from_spec("segformer", TINY_SPEC, pretrained=tmp_path / "nothing" / "mit_b2.pth")
    with pytest.raises(WeightsError, match=r"holds none of model\.safetensors"):
        build_from_spec("segformer", TINY_SPEC, pretrained=tmp_path)


def test_hub_id_resolves_from_the_cache_under_hf_home_and_fails_clearly_offline(hf_model, tmp_path):
    folder, _ = hf_model
    repo = tmp_path / "hf" / "hub" / "models--nvidia--mit-tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    script = textwrap.dedent(
        """
        from cloudseg.errors import WeightsError
        from cloudseg.models.weights import resolve_weights
        print(resolve_weights("nvidia/mit-tiny"))
        try:
            resolve_weights("nvidia/mit-b9")
        except WeightsError as error:
            print(error)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    found, error = result.stdout.strip().splitlines()
    assert found == str(snapshot / "model.safetensors")
    assert error.startswith("nvidia/mit-b9: not in the Hugging Face cache") and "HF_HUB_OFFLINE is set" in error
    assert "hf download nvidia/mit-b9" in error
