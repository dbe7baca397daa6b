"""SegFormer ImageNet weights into cloudseg's MiT encoders: find the file, read it, rename its keys, load strictly."""

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from cloudseg.errors import WeightsError
from cloudseg.models.mit import MIT_VARIANTS, MiTEncoder

log = logging.getLogger(__name__)

HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")

# Written against the key names in the published files, which are stable: Hugging Face `nvidia/mit-b*`
# (the same on disk in transformers 4.x and 5.x) and the original SegFormer release `mit_b*.pth`.
# Per block: published module path -> ours. HF stores key and value apart; ours are fused into one `kv`.
_HF_BLOCK = {
    "layer_norm_1": "norm1",
    "attention.self.query": "attn.q",
    "attention.self.key": "attn.k",
    "attention.self.value": "attn.v",
    "attention.self.sr": "attn.sr",
    "attention.self.layer_norm": "attn.sr_norm",
    "attention.output.dense": "attn.proj",
    "layer_norm_2": "norm2",
    "mlp.dense1": "ffn.fc1",
    "mlp.dwconv.dwconv": "ffn.dwconv",
    "mlp.dense2": "ffn.fc2",
}
_ORIGINAL_BLOCK = {
    "norm1": "norm1",
    "attn.q": "attn.q",
    "attn.kv": "attn.kv",
    "attn.sr": "attn.sr",
    "attn.norm": "attn.sr_norm",
    "attn.proj": "attn.proj",
    "norm2": "norm2",
    "mlp.fc1": "ffn.fc1",
    "mlp.dwconv.dwconv": "ffn.dwconv",
    "mlp.fc2": "ffn.fc2",
}
# (pattern of a published module path, our module path). `stage1` is the original release's 1-based stage.
KEY_RENAMES: tuple[tuple[str, str], ...] = (
    (r"encoder\.patch_embeddings\.(?P<stage>\d)\.proj", "stages.{stage}.patch_embed.proj"),
    (r"encoder\.patch_embeddings\.(?P<stage>\d)\.layer_norm", "stages.{stage}.patch_embed.norm"),
    (r"encoder\.layer_norm\.(?P<stage>\d)", "stages.{stage}.norm"),
    *(
        (
            rf"encoder\.block\.(?P<stage>\d)\.(?P<block>\d+)\.{re.escape(theirs)}",
            f"stages.{{stage}}.blocks.{{block}}.{ours}",
        )
        for theirs, ours in _HF_BLOCK.items()
    ),
    (r"patch_embed(?P<stage1>\d)\.proj", "stages.{stage}.patch_embed.proj"),
    (r"patch_embed(?P<stage1>\d)\.norm", "stages.{stage}.patch_embed.norm"),
    (r"norm(?P<stage1>\d)", "stages.{stage}.norm"),
    *(
        (rf"block(?P<stage1>\d)\.(?P<block>\d+)\.{re.escape(theirs)}", f"stages.{{stage}}.blocks.{{block}}.{ours}")
        for theirs, ours in _ORIGINAL_BLOCK.items()
    ),
)
_RENAMES = tuple((re.compile(rf"{pattern}\.(?P<param>weight|bias)"), target) for pattern, target in KEY_RENAMES)
# Wrappers around the encoder in whole-model files: HF classification/segmentation, and mmseg / SegFormer.
_PREFIXES = ("segformer.", "backbone.")
# Heads that are not part of the encoder; dropped by name (and logged), everything else must load.
_DROPPED_HEADS = ("classifier.", "head.", "decode_head.")
FIRST_CONV = "stages.0.patch_embed.proj.weight"


def resolve_weights(source: str | os.PathLike) -> Path:
    """A weight file from a file path, a Hugging Face model folder, or a hub id in the local HF cache."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in HUB_FILES:
            if (path / name).is_file():
                return path / name
        raise WeightsError(f"{path}: folder holds none of {', '.join(HUB_FILES)}; expected a Hugging Face model folder")
    if _HUB_ID.fullmatch(str(source)):
        return _from_hub(str(source))
    raise WeightsError(f"{source}: no such file or folder, and not a Hugging Face hub id such as nvidia/mit-b2")


def _from_hub(repo_id: str) -> Path:
    import huggingface_hub
    from huggingface_hub import constants

    for name in HUB_FILES:  # the cache first, so a cached model never touches the network
        cached = huggingface_hub.try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
    problem = "HF_HUB_OFFLINE is set"
    if not constants.HF_HUB_OFFLINE:
        try:
            return Path(huggingface_hub.hf_hub_download(repo_id, HUB_FILES[0]))
        except Exception as error:  # every hub failure ends in the same advice
            problem = f"the hub could not be reached ({type(error).__name__})"
    raise WeightsError(
        f"{repo_id}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {problem}; "
        f"on a machine with internet run `hf download {repo_id}` and copy the cache, or pass the path of the "
        f"model folder or of its {HUB_FILES[0]}"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch pickle, read without unpickling arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt files raise many types; all mean the same to a user
        raise WeightsError(
            f"{path}: cannot read weights ({type(error).__name__}: {error}); "
            "expected a .safetensors file or a torch state dict (.bin/.pth)"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return state


def convert_segformer_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Renames published SegFormer keys to MiTEncoder keys; returns (converted, dropped heads, unrecognised)."""
    converted, dropped, unrecognised = {}, [], []
    for key, tensor in state.items():
        name = next((key[len(p) :] for p in _PREFIXES if key.startswith(p)), key)
        if name.startswith(_DROPPED_HEADS):
            dropped.append(key)
            continue
        for pattern, target in _RENAMES:
            if match := pattern.fullmatch(name):
                groups = match.groupdict()
                stage = int(groups["stage"]) if groups.get("stage") else int(groups["stage1"]) - 1
                converted[target.format(stage=stage, block=groups.get("block")) + "." + groups["param"]] = tensor
                break
        else:
            unrecognised.append(key)
    for key in [k for k in converted if ".attn.k." in k]:
        value_key = key.replace(".attn.k.", ".attn.v.")
        if value_key in converted:
            converted[key.replace(".attn.k.", ".attn.kv.")] = torch.cat((converted.pop(key), converted.pop(value_key)))
    return converted, dropped, unrecognised


def adapt_first_conv(weight: torch.Tensor, in_channels: int, rgb_channels: int) -> torch.Tensor:
    """Fits a (C, 3, k, k) RGB patch-embedding kernel to an input of `in_channels`.

    With RGB leading the input (early fusion) the RGB filters stay and the extra channels start at zero, so the
    network sees its pretrained input at step 0. An input of other bands gets the sum of the RGB filters shared
    equally among its channels: one band behaves as if fed as grey RGB, and any number of equal bands gives
    exactly the pretrained response to grey.
    """
    if weight.shape[1] != 3:
        return weight  # not an RGB kernel; the strict shape check reports it if it does not fit
    if rgb_channels == 3:
        extra = weight.new_zeros(weight.shape[0], in_channels - 3, *weight.shape[2:])
        return torch.cat((weight, extra), dim=1)
    return (weight.sum(dim=1, keepdim=True) / in_channels).repeat(1, in_channels, 1, 1)


def describe_mit(state: dict[str, torch.Tensor]) -> str:
    """Widths and depths of the MiT in a converted state dict, and the variant it matches."""
    embeds = [state.get(f"stages.{i}.patch_embed.proj.weight") for i in range(4)]
    widths = tuple(e.shape[0] for e in embeds if e is not None)
    depths = tuple(len({k.split(".")[3] for k in state if k.startswith(f"stages.{i}.blocks.")}) for i in range(4))
    variant = next((f" = mit-{n}" for n, s in MIT_VARIANTS.items() if (s.widths, s.depths) == (widths, depths)), "")
    return f"widths {list(widths)}, depths {list(depths)}{variant}"


def load_encoder_state(
    encoder: MiTEncoder, converted: dict[str, torch.Tensor], rgb_channels: int, source: str, unrecognised: list[str]
) -> None:
    """Loads converted SegFormer weights into one encoder; any missing, extra or mis-shaped key is an error."""
    state = dict(converted)
    if FIRST_CONV in state:
        state[FIRST_CONV] = adapt_first_conv(state[FIRST_CONV], encoder.in_channels, rgb_channels)
    expected = encoder.state_dict()
    problems = [f"missing {k}" for k in sorted(expected.keys() - state.keys())]
    problems += [f"unexpected {k}" for k in sorted(state.keys() - expected.keys()) + unrecognised]
    problems += [
        f"{k} has shape {list(state[k].shape)}, the model needs {list(expected[k].shape)}"
        for k in sorted(expected.keys() & state.keys())
        if state[k].shape != expected[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise WeightsError(
            f"{source}: does not fit the encoder ({len(problems)} problems: {shown}); the file holds "
            f"{describe_mit(converted)}, the model needs {describe_mit(expected)}"
        )
    encoder.load_state_dict(state, strict=True)


def load_pretrained_encoders(model: nn.Module, source: str | os.PathLike) -> None:
    """Loads SegFormer ImageNet weights into every encoder stream of a cloudseg model (both streams of CMX)."""
    path = resolve_weights(source)
    converted, dropped, unrecognised = convert_segformer_keys(read_state_dict(path))
    if dropped:
        log.info("%s: dropped %d head tensors that are not part of the encoder (%s)", path, len(dropped), dropped[0])
    for name, (encoder, rgb_channels) in model.encoder_streams().items():
        load_encoder_state(encoder, converted, rgb_channels, str(path), unrecognised)
        log.info("%s stream: loaded %d tensors from %s (%s)", name, len(converted), path, describe_mit(converted))
