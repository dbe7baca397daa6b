"""Logits for images of any size: whole-image or sliding windows blended with a smooth weight, and TTA."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

# (rgb, aux) -> logits, all (B, C, H, W)
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def window_weight(height: int, width: int, kind: str = "gaussian") -> torch.Tensor:
    """(height, width) blending weight, highest in the middle and small but positive at the edges, so where
    tiles overlap each pixel is led by the tile that sees it most centrally and seams do not show."""

    def profile(n: int) -> torch.Tensor:
        x = (torch.arange(n, dtype=torch.float32) + 0.5) / n - 0.5  # -0.5 .. 0.5
        if kind == "ramp":
            return (1.0 - 2.0 * x.abs()).clamp_min(1.0 / n)
        return torch.exp(-0.5 * (x / 0.2) ** 2)

    return profile(height)[:, None] * profile(width)[None, :]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window starts covering 0..length with at least `overlap` shared pixels; the last one ends at the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


@torch.no_grad()
def sliding_logits(
    predict: Predictor,
    rgb: torch.Tensor,
    aux: torch.Tensor,
    tile: int,
    overlap: int,
    batch_size: int = 4,
    window: str = "gaussian",
) -> torch.Tensor:
    """(1, K, H, W) logits of one image: whole if it fits in one tile, else blended tiles run `batch_size` at a
    time. The blend is accumulated on the CPU in float32, so device memory is bounded by the tile batch."""
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    height, width = rgb.shape[-2:]
    if height <= tile and width <= tile:
        return predict(rgb, aux).float().cpu()
    tile_h, tile_w = min(tile, height), min(tile, width)
    boxes = [(y, x) for y in tile_starts(height, tile_h, overlap) for x in tile_starts(width, tile_w, overlap)]
    weight = window_weight(tile_h, tile_w, window)
    total, norm = None, torch.zeros(height, width)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        rgb_tiles = torch.cat([rgb[..., y : y + tile_h, x : x + tile_w] for y, x in chunk])
        aux_tiles = torch.cat([aux[..., y : y + tile_h, x : x + tile_w] for y, x in chunk])
        logits = predict(rgb_tiles, aux_tiles).float().cpu()  # (b, K, tile_h, tile_w)
        if total is None:
            total = torch.zeros(1, logits.shape[1], height, width)
        for (y, x), tile_logits in zip(chunk, logits, strict=True):
            total[0, :, y : y + tile_h, x : x + tile_w] += tile_logits * weight
            norm[y : y + tile_h, x : x + tile_w] += weight
    return total / norm


# Test-time augmentations as (forward, inverse) pairs on (B, C, H, W) tensors.
_FLIPS = {
    "identity": (lambda t: t, lambda t: t),
    "hflip": (lambda t: t.flip(-1), lambda t: t.flip(-1)),
    "vflip": (lambda t: t.flip(-2), lambda t: t.flip(-2)),
    "hvflip": (lambda t: t.flip(-2, -1), lambda t: t.flip(-2, -1)),
}
_ROTATIONS = {
    f"rot{k * 90}": (lambda t, k=k: t.rot90(k, (-2, -1)), lambda t, k=k: t.rot90(-k, (-2, -1))) for k in (1, 2, 3)
}
_TRANSPOSED = {
    "transpose": (lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1)),
    "antitranspose": (lambda t: t.rot90(1, (-2, -1)).flip(-1), lambda t: t.flip(-1).rot90(-1, (-2, -1))),
}
TTA_SETS = {
    "none": ("identity",),
    "flips": tuple(_FLIPS),
    "d4": (*_FLIPS, *_ROTATIONS, *_TRANSPOSED),  # all 8 symmetries of the square
}
_ALL = {**_FLIPS, **_ROTATIONS, **_TRANSPOSED}


def with_tta(predict: Predictor, tta: str = "none", scales: tuple[float, ...] = (1.0,)) -> Predictor:
    """A predictor that averages logits over the flips/rotations of `tta` and the resize factors `scales`."""
    names = TTA_SETS[tta]

    def averaged(rgb: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        size = rgb.shape[-2:]
        total = None
        for scale in scales:
            if scale != 1.0:
                scaled = [
                    F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False) for t in (rgb, aux)
                ]
            else:
                scaled = [rgb, aux]
            for name in names:
                forward, inverse = _ALL[name]
                logits = inverse(predict(forward(scaled[0]), forward(scaled[1])).float())
                if scale != 1.0:
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                total = logits if total is None else total + logits
        return total / (len(names) * len(scales))

    return averaged
