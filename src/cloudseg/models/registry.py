"""One registry of model builders by name: `cmx_b0` ... `cmx_b5`, `segformer_b*`, `segformer_early_b*`."""

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cloudseg.errors import ConfigError
from cloudseg.models.cmx import CMX, SegFormer
from cloudseg.models.mit import MIT_VARIANTS, MiTSpec
from cloudseg.models.weights import load_pretrained_encoders
from cloudseg.schema import AUX_BANDS, NUM_CLASSES


@dataclass(frozen=True)
class Architecture:
    summary: str
    build: Callable[..., nn.Module]  # (spec, num_classes, aux_channels, **options) -> model


ARCHITECTURES: dict[str, Architecture] = {
    "cmx": Architecture("CMX: RGB and aux MiT streams, FRM + FFM at every stage", CMX),
    "segformer": Architecture(
        "SegFormer on RGB only (aux ignored)", lambda *args, **kw: SegFormer(*args, early_fusion=False, **kw)
    ),
    "segformer_early": Architecture(
        "SegFormer on RGB + aux stacked (early fusion)", lambda *args, **kw: SegFormer(*args, early_fusion=True, **kw)
    ),
}
MODEL_NAMES = tuple(f"{arch}_{variant}" for arch in ARCHITECTURES for variant in MIT_VARIANTS)


def parse_model_name(name: str) -> tuple[str, str]:
    """`cmx_b2` -> ("cmx", "b2"); an unknown name raises an error that lists the valid ones."""
    arch, _, variant = name.rpartition("_")
    if arch not in ARCHITECTURES or variant not in MIT_VARIANTS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return arch, variant


def build_model(
    name: str,
    num_classes: int = NUM_CLASSES,
    aux_channels: int = len(AUX_BANDS),
    pretrained: str | os.PathLike | None = None,
    *,
    decoder_dim: int = 512,
    drop_path_rate: float = 0.1,
) -> nn.Module:
    """Builds a model by name. Every model's forward takes `(rgb, aux)` and returns logits `(B, K, H, W)`.

    `pretrained`: SegFormer ImageNet weights for every encoder stream: a Hugging Face model folder, a state-dict
    file (Hugging Face or original SegFormer key names), or a hub id such as `nvidia/mit-b2` in the local cache.
    """
    arch, variant = parse_model_name(name)
    return build_from_spec(
        arch,
        MIT_VARIANTS[variant],
        num_classes,
        aux_channels,
        pretrained,
        decoder_dim=decoder_dim,
        drop_path_rate=drop_path_rate,
    )


def build_from_spec(
    arch: str,
    spec: MiTSpec,
    num_classes: int = NUM_CLASSES,
    aux_channels: int = len(AUX_BANDS),
    pretrained: str | os.PathLike | None = None,
    **options,
) -> nn.Module:
    """Like `build_model` for any MiT shape, e.g. the tiny encoders of tests."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    model = ARCHITECTURES[arch].build(spec, num_classes, aux_channels, **options)
    if pretrained is not None:
        load_pretrained_encoders(model, pretrained)
    return model


def count_parameters(name: str, num_classes: int = NUM_CLASSES, aux_channels: int = len(AUX_BANDS)) -> int:
    """Parameter count, from a model built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = build_model(name, num_classes, aux_channels)
    return sum(p.numel() for p in model.parameters())
