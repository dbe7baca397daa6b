"""Segmentation models: CMX and single-stream SegFormer baselines on Mix Transformer encoders."""

from cloudseg.models.cmx import CMX, SegFormer
from cloudseg.models.mit import MIT_VARIANTS, MiTEncoder, MiTSpec
from cloudseg.models.registry import MODEL_NAMES, build_from_spec, build_model, count_parameters

__all__ = [
    "CMX",
    "MIT_VARIANTS",
    "MODEL_NAMES",
    "MiTEncoder",
    "MiTSpec",
    "SegFormer",
    "build_from_spec",
    "build_model",
    "count_parameters",
]
