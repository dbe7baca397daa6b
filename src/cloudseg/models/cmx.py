"""The segmentation models: CMX (two MiT streams fused at every stage) and single-stream SegFormer baselines."""

import torch
import torch.nn.functional as F
from torch import nn

from cloudseg.config import ModelConfig
from cloudseg.models.decoder import AllMLPDecoder
from cloudseg.models.fusion import FeatureFusionModule, FeatureRectifyModule
from cloudseg.models.mit import MiTEncoder, MiTSpec, init_weights


def _upsample_to(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(logits, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class CMX(nn.Module):
    """CMX (Zhang et al., "CMX: Cross-Modal Fusion for RGB-X Semantic Segmentation with Transformers").

    An RGB and an auxiliary MiT stream; after every stage an FRM rectifies each stream with the other (and the
    rectified features feed the next stage), and an FFM fuses the pair into the map the decoder reads.
    """

    def __init__(self, spec: MiTSpec, cfg: ModelConfig):
        super().__init__()
        self.rgb = MiTEncoder(spec, 3, cfg.drop_path_rate, cfg.norm_eps)
        self.aux = MiTEncoder(spec, cfg.aux_channels, cfg.drop_path_rate, cfg.norm_eps)
        widths = self.rgb.feature_channels
        self.rectify = nn.ModuleList(FeatureRectifyModule(c) for c in widths)
        self.fuse = nn.ModuleList(FeatureFusionModule(c, h) for c, h in zip(widths, spec.heads, strict=True))
        # initialises itself
        self.decoder = AllMLPDecoder(widths, cfg.num_classes, cfg.decoder_dim, cfg.decoder_dropout)
        for part in (self.rgb, self.aux, self.rectify, self.fuse):
            part.apply(init_weights)

    def encoder_streams(self) -> dict[str, tuple[MiTEncoder, int]]:
        """Each encoder with the number of RGB channels leading its input (for loading ImageNet weights)."""
        return {"rgb": (self.rgb, 3), "aux": (self.aux, 0)}

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        x, y = rgb, aux
        fused = []
        for rgb_stage, aux_stage, rectify, fuse in zip(
            self.rgb.stages, self.aux.stages, self.rectify, self.fuse, strict=True
        ):
            x, y = rectify(rgb_stage(x), aux_stage(y))
            fused.append(fuse(x, y))
        return _upsample_to(self.decoder(fused), rgb)  # (B, K, H, W)


class SegFormer(nn.Module):
    """Single-stream baseline: one MiT on RGB, or on RGB and the auxiliary channels stacked (early fusion)."""

    def __init__(self, spec: MiTSpec, cfg: ModelConfig, early_fusion: bool):
        super().__init__()
        self.early_fusion = early_fusion
        in_channels = 3 + cfg.aux_channels if early_fusion else 3
        self.encoder = MiTEncoder(spec, in_channels, cfg.drop_path_rate, cfg.norm_eps)
        widths = self.encoder.feature_channels
        # initialises itself
        self.decoder = AllMLPDecoder(widths, cfg.num_classes, cfg.decoder_dim, cfg.decoder_dropout)
        self.encoder.apply(init_weights)

    def encoder_streams(self) -> dict[str, tuple[MiTEncoder, int]]:
        return {"rgb": (self.encoder, 3)}

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        x = torch.cat((rgb, aux), dim=1) if self.early_fusion else rgb
        return _upsample_to(self.decoder(self.encoder(x)), rgb)  # (B, K, H, W)
