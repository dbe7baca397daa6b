"""One registry of model builders by name: `cmx_b0` ... `cmx_b5`, `segformer_b*`, `segformer_early_b*`."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from cloudseg.config import ModelConfig
from cloudseg.errors import ConfigError
from cloudseg.models.cmx import CMX, SegFormer
from cloudseg.models.mit import MIT_VARIANTS, MiTSpec
from cloudseg.models.weights import load_pretrained_encoders


@dataclass(frozen=True)
class Architecture:
    summary: str
    build: Callable[[MiTSpec, ModelConfig], nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "cmx": Architecture("CMX: RGB and aux MiT streams, FRM + FFM at every stage", CMX),
    "segformer": Architecture("SegFormer on RGB only (aux ignored)", partial(SegFormer, early_fusion=False)),
    "segformer_early": Architecture(
        "SegFormer on RGB + aux stacked (early fusion)", partial(SegFormer, early_fusion=True)
    ),
}
MODEL_NAMES = tuple(f"{arch}_{variant}" for arch in ARCHITECTURES for variant in MIT_VARIANTS)


def parse_model_name(name: str) -> tuple[str, str]:
    """`cmx_b2` -> ("cmx", "b2"); an unknown name raises an error that lists the valid ones."""
    arch, _, variant = name.rpartition("_")
    if arch not in ARCHITECTURES or variant not in MIT_VARIANTS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return arch, variant


def build_model(model: str | ModelConfig, **settings) -> nn.Module:
    """Builds a model by name (`build_model("cmx_b2", num_classes=4, pretrained="nvidia/mit-b2")`) or from a
    ModelConfig, whose fields `settings` replace; every default is ModelConfig's. Every model's forward takes
    `(rgb, aux)` and returns logits `(B, K, H, W)`.

    `pretrained`: SegFormer ImageNet weights for every encoder stream: a Hugging Face model folder, a state-dict
    file (Hugging Face or original SegFormer key names), or a hub id such as `nvidia/mit-b2` in the local cache.
    """
    cfg = ModelConfig(name=model, **settings) if isinstance(model, str) else dataclasses.replace(model, **settings)
    arch, variant = parse_model_name(cfg.name)
    return build_from_spec(arch, MIT_VARIANTS[variant], cfg)


def build_from_spec(arch: str, spec: MiTSpec, cfg: ModelConfig | None = None, **settings) -> nn.Module:
    """Like `build_model` for any MiT shape, e.g. the tiny encoders of tests; the name in `cfg` is not read."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cfg = dataclasses.replace(cfg or ModelConfig(), **settings)
    model = ARCHITECTURES[arch].build(spec, cfg)
    if cfg.pretrained is not None:
        load_pretrained_encoders(model, cfg.pretrained)
    return model


def count_parameters(name: str, **settings) -> int:
    """Parameter count, from a model built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = build_model(name, **settings)
    return sum(p.numel() for p in model.parameters())
