"""Mix Transformer (MiT), the hierarchical encoder of SegFormer (Xie et al., NeurIPS 2021)."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PATCH_KERNELS = (7, 3, 3, 3)
PATCH_STRIDES = (4, 2, 2, 2)  # features at 1/4, 1/8, 1/16, 1/32 of the input


@dataclass(frozen=True)
class MiTSpec:
    """Shape of one MiT variant: per-stage widths, depths, heads and key/value reduction ratios."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4

    def __post_init__(self):
        for width, heads in zip(self.widths, self.heads, strict=True):
            if width % heads:
                raise ValueError(f"width {width} is not divisible by {heads} attention heads")


MIT_VARIANTS: dict[str, MiTSpec] = {
    "b0": MiTSpec(widths=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": MiTSpec(widths=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": MiTSpec(widths=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": MiTSpec(widths=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": MiTSpec(widths=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": MiTSpec(widths=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}


def tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, C), N = h*w -> (B, C, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, N, C), N = h*w."""
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel is larger than its stride, so neighbouring patches overlap; then LayerNorm."""

    def __init__(self, in_channels: int, width: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(width)  # eps 1e-5 here in both SegFormer releases

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(map_to_tokens(x)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a sequence shrunk by a strided conv (PVT's SRA)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.sr_norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.heads, -1).transpose(1, 2)  # (B, heads, N, d)
        if self.sr is not None:
            x = self.sr_norm(map_to_tokens(self.sr(tokens_to_map(x, h, w))))  # (B, M, C), M = N / sr²
        kv = self.kv(x).view(B, -1, 2, self.heads, C // self.heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, M, d)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class MixFFN(nn.Module):
    """Linear -> 3x3 depthwise conv -> GELU -> Linear; the conv gives position cues in place of embeddings."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = map_to_tokens(self.dwconv(tokens_to_map(self.fc1(x), h, w)))
        return self.fc2(F.gelu(x))


class DropPath(nn.Module):
    """Stochastic depth: while training, drops a sample's whole residual branch with probability p."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MiTBlock(nn.Module):
    """Pre-norm transformer block: efficient self-attention, then Mix-FFN, each residual with stochastic depth."""

    def __init__(self, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.ffn = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.ffn(self.norm2(x), h, w))


class MiTStage(nn.Module):
    """Patch embedding, a stack of blocks, and a closing LayerNorm; (B, C_in, H, W) -> (B, C, H/s, W/s)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        heads: int,
        sr_ratio: int,
        mlp_ratio: int,
        kernel: int,
        stride: int,
        drop_paths: list[float],  # one block per rate
        norm_eps: float,
    ):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, width, kernel, stride)
        self.blocks = nn.ModuleList(MiTBlock(width, heads, sr_ratio, mlp_ratio, p, norm_eps) for p in drop_paths)
        self.norm = nn.LayerNorm(width, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return tokens_to_map(self.norm(x), h, w)


class MiTEncoder(nn.Module):
    """Four MiT stages; `forward` returns each stage's feature map, at 1/4, 1/8, 1/16 and 1/32 of the input.

    `norm_eps` is the block and stage LayerNorm epsilon: 1e-6 in the original SegFormer release that trained
    the ImageNet weights, 1e-5 in the Hugging Face port.
    """

    def __init__(self, spec: MiTSpec, in_channels: int, drop_path_rate: float, norm_eps: float):
        super().__init__()
        total = sum(spec.depths)
        # Stochastic depth grows linearly with block index across the whole encoder.
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(spec.depths[:i]) for i in range(4)]
        channels_in = (in_channels, *spec.widths[:3])
        self.stages = nn.ModuleList(
            MiTStage(
                channels_in[i],
                spec.widths[i],
                spec.heads[i],
                spec.sr_ratios[i],
                spec.mlp_ratio,
                PATCH_KERNELS[i],
                PATCH_STRIDES[i],
                rates[starts[i] : starts[i] + spec.depths[i]],
                norm_eps,
            )
            for i in range(4)
        )
        self.in_channels = in_channels
        self.feature_channels = spec.widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def init_weights(module: nn.Module) -> None:
    """SegFormer's initialisation of an encoder (and CMX's of its fusion modules), applied by `module.apply`."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
