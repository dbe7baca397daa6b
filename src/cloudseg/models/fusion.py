"""CMX's cross-modal fusion (Zhang et al., IEEE T-ITS 2023): Feature Rectification and Feature Fusion Modules."""

import torch
import torch.nn.functional as F
from torch import nn

from cloudseg.models.mit import map_to_tokens, tokens_to_map
from cloudseg.models.pointwise import PointwiseConv


class FeatureRectifyModule(nn.Module):
    """CMX's FRM: each stream adds the other, gated by channel-wise and spatial-wise weights computed from both.

    rgb' = rgb + (lambda_c * Wc_aux + lambda_s * Ws_aux) * aux, and symmetrically for aux.
    """

    def __init__(self, dim: int, lambda_c: float = 0.5, lambda_s: float = 0.5):
        super().__init__()
        self.lambda_c, self.lambda_s = lambda_c, lambda_s
        # Global average and max pooling of both streams (4C) -> one gate per channel and stream (2C).
        self.channel_gate = nn.Sequential(
            nn.Linear(4 * dim, 4 * dim),
            nn.ReLU(inplace=True),
            nn.Linear(4 * dim, 2 * dim),
            nn.Sigmoid(),
        )
        # Both streams (2C) -> one gate per pixel and stream (2).
        self.spatial_gate = nn.Sequential(
            PointwiseConv(2 * dim, dim),
            nn.ReLU(inplace=True),
            PointwiseConv(dim, 2),
            nn.Sigmoid(),
        )

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat((rgb, aux), dim=1)  # (B, 2C, H, W)
        pooled = torch.cat((both.mean((2, 3)), both.amax((2, 3))), dim=1)  # (B, 4C)
        channel_rgb, channel_aux = self.channel_gate(pooled)[..., None, None].chunk(2, dim=1)  # (B, C, 1, 1)
        spatial_rgb, spatial_aux = self.spatial_gate(both).chunk(2, dim=1)  # (B, 1, H, W)
        rgb_out = rgb + (self.lambda_c * channel_aux + self.lambda_s * spatial_aux) * aux
        aux_out = aux + (self.lambda_c * channel_rgb + self.lambda_s * spatial_rgb) * rgb
        return rgb_out, aux_out


class CrossAttention(nn.Module):
    """CMX's efficient cross-attention: each stream's queries read a per-head (d, d) context of the other stream.

    The context is softmax over d of K^T V, so the cost is linear in the number of tokens.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.kv_rgb = nn.Linear(dim, 2 * dim, bias=False)
        self.kv_aux = nn.Linear(dim, 2 * dim, bias=False)

    def _context(self, kv: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        k, v = kv(x).view(B, N, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d)
        return (k.transpose(-2, -1) @ v * self.scale).softmax(dim=-2)  # (B, heads, d, d)

    def _read(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = x.view(B, N, self.heads, C // self.heads).transpose(1, 2)  # (B, heads, N, d)
        return (q @ context).transpose(1, 2).reshape(B, N, C)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._read(rgb, self._context(self.kv_aux, aux)), self._read(aux, self._context(self.kv_rgb, rgb))


class CrossPath(nn.Module):
    """FFM stage 1: per stream, half the projected channels are kept and half exchanged by cross-attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.split_rgb = nn.Linear(dim, 2 * dim)
        self.split_aux = nn.Linear(dim, 2 * dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.merge_rgb = nn.Linear(2 * dim, dim)
        self.merge_aux = nn.Linear(2 * dim, dim)
        self.norm_rgb = nn.LayerNorm(dim)
        self.norm_aux = nn.LayerNorm(dim)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep_rgb, cross_rgb = F.relu(self.split_rgb(rgb)).chunk(2, dim=-1)
        keep_aux, cross_aux = F.relu(self.split_aux(aux)).chunk(2, dim=-1)
        cross_rgb, cross_aux = self.cross_attn(cross_rgb, cross_aux)
        rgb = self.norm_rgb(rgb + self.merge_rgb(torch.cat((keep_rgb, cross_rgb), dim=-1)))
        aux = self.norm_aux(aux + self.merge_aux(torch.cat((keep_aux, cross_aux), dim=-1)))
        return rgb, aux


class ChannelEmbed(nn.Module):
    """FFM stage 2: the concatenated streams (2C) become C channels, by a 1x1 residual plus 1x1 -> 3x3 dw -> 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.residual = PointwiseConv(in_channels, out_channels, bias=False)
        self.embed = nn.Sequential(
            PointwiseConv(in_channels, out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels),
            nn.ReLU(inplace=True),
            PointwiseConv(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
        )
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.residual(x) + self.embed(x))


class FeatureFusionModule(nn.Module):
    """CMX's FFM: cross-path exchange on tokens, then channel embedding into one (B, C, H, W) map."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.cross = CrossPath(dim, heads)
        self.embed = ChannelEmbed(2 * dim, dim)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        h, w = rgb.shape[-2:]
        rgb, aux = self.cross(map_to_tokens(rgb), map_to_tokens(aux))  # (B, N, C) each
        return self.embed(tokens_to_map(torch.cat((rgb, aux), dim=-1), h, w))
