"""The segmentation models: CMX (two MiT streams fused at every stage) and single-stream SegFormer baselines."""

import torch
import torch.nn.functional as F
from torch import nn

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

    def __init__(
        self,
        spec: MiTSpec,
        num_classes: int,
        aux_channels: int,
        decoder_dim: int = 512,
        drop_path_rate: float = 0.1,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        if aux_channels < 1:
            raise ValueError(f"CMX needs at least one auxiliary channel, got aux_channels={aux_channels}")
        self.rgb = MiTEncoder(spec, 3, drop_path_rate, norm_eps)
        self.aux = MiTEncoder(spec, aux_channels, drop_path_rate, norm_eps)
        self.rectify = nn.ModuleList(FeatureRectifyModule(c) for c in spec.widths)
        self.fuse = nn.ModuleList(FeatureFusionModule(c, h) for c, h in zip(spec.widths, spec.heads, strict=True))
        self.decoder = AllMLPDecoder(spec.widths, num_classes, decoder_dim)  # initialises itself
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

    def __init__(
        self,
        spec: MiTSpec,
        num_classes: int,
        aux_channels: int,
        early_fusion: bool,
        decoder_dim: int = 512,
        drop_path_rate: float = 0.1,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.early_fusion = early_fusion
        self.encoder = MiTEncoder(spec, 3 + aux_channels if early_fusion else 3, drop_path_rate, norm_eps)
        self.decoder = AllMLPDecoder(spec.widths, num_classes, decoder_dim)  # initialises itself
        self.encoder.apply(init_weights)

    def encoder_streams(self) -> dict[str, tuple[MiTEncoder, int]]:
        return {"rgb": (self.encoder, 3)}

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        x = torch.cat((rgb, aux), dim=1) if self.early_fusion else rgb
        return _upsample_to(self.decoder(self.encoder(x)), rgb)  # (B, K, H, W)
