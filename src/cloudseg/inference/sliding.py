"""Logits of images larger than a tile, from overlapping tiles blended with a smooth weight; and the flips and
rotations of test-time augmentation."""

from collections.abc import Callable

import torch

# (rgb, aux) -> logits, all (B, C, H, W)
Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (tiles done, tiles in all), called as each batch of tiles is blended
TileProgress = Callable[[int, int], None]

DEVICE_BLEND_BUDGET = 2**31  # bytes of a scene and its blend that may stay on the model's device


def fits_one_tile(height: int, width: int, tile: int) -> bool:
    """Whether an image is predicted whole rather than in tiles."""
    return height <= tile and width <= tile


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
    return [*range(0, length - tile, tile - overlap), length - tile]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """The tiles `sliding_logits` cuts an image into; 1 for one that fits a tile."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


@torch.no_grad()
def sliding_logits(
    predict: Logits,
    rgb: torch.Tensor,
    aux: torch.Tensor,
    tile: int,
    overlap: int,
    batch_size: int = 4,
    window: str = "gaussian",
    device: torch.device | None = None,
    fixed_batch: bool = False,
    on_tiles: TileProgress | None = None,
) -> torch.Tensor:
    """(B, K, H, W) float32 logits on the CPU of B images of one size larger than a tile: the tiles of all of them
    run `batch_size` at a time (so images of a few tiles each still fill a batch), blended. Tiles are cut and
    blended on `device` (the model's) when the images and their blends fit in DEVICE_BLEND_BUDGET bytes there, which
    saves a host copy per tile; else on the CPU, so that device memory stays bounded by the tile batch whatever
    the images' size. `fixed_batch` pads the last batch with repeated tiles, so that a model compiled for static
    shapes sees one batch shape only. `on_tiles` hears of each batch done."""
    images, height, width = rgb.shape[0], *rgb.shape[-2:]
    # the images, the blend weights and the blends of up to 16 classes, in float32
    scene_bytes = images * (rgb.shape[1] + aux.shape[1] + 16) * height * width * 4 + height * width * 4
    blend_on = device if device is not None and scene_bytes <= DEVICE_BLEND_BUDGET else torch.device("cpu")
    rgb, aux = rgb.to(blend_on), aux.to(blend_on)
    tile_h, tile_w = min(tile, height), min(tile, width)
    corners = [(y, x) for y in tile_starts(height, tile_h, overlap) for x in tile_starts(width, tile_w, overlap)]
    weight = window_weight(tile_h, tile_w, window).to(blend_on)
    norm = torch.zeros(height, width, device=blend_on)  # the same for every image: their tiles lie alike
    for y, x in corners:
        norm[y : y + tile_h, x : x + tile_w] += weight
    boxes = [(image, y, x) for image in range(images) for y, x in corners]
    total = None
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        run = chunk + chunk[-1:] * (batch_size - len(chunk)) if fixed_batch else chunk
        tiles = [torch.stack([t[b, :, y : y + tile_h, x : x + tile_w] for b, y, x in run]) for t in (rgb, aux)]
        logits = predict(*tiles)[: len(chunk)].float().to(blend_on)  # (b, K, tile_h, tile_w)
        if total is None:
            total = torch.zeros(images, logits.shape[1], height, width, device=blend_on)
        for (b, y, x), tile_logits in zip(chunk, logits, strict=True):
            total[b, :, y : y + tile_h, x : x + tile_w] += tile_logits * weight
        if on_tiles is not None:
            on_tiles(i + len(chunk), len(boxes))
    return (total / norm).cpu()


# Test-time augmentations by name, as (forward, inverse) pairs on (B, C, H, W) tensors.
TRANSFORMS = {
    "identity": (lambda t: t, lambda t: t),
    "hflip": (lambda t: t.flip(-1), lambda t: t.flip(-1)),
    "vflip": (lambda t: t.flip(-2), lambda t: t.flip(-2)),
    "hvflip": (lambda t: t.flip(-2, -1), lambda t: t.flip(-2, -1)),
    **{f"rot{k * 90}": (lambda t, k=k: t.rot90(k, (-2, -1)), lambda t, k=k: t.rot90(-k, (-2, -1))) for k in (1, 2, 3)},
    "transpose": (lambda t: t.transpose(-2, -1), lambda t: t.transpose(-2, -1)),
    "antitranspose": (lambda t: t.rot90(1, (-2, -1)).flip(-1), lambda t: t.flip(-1).rot90(-1, (-2, -1))),
}
TTA_SETS = {
    "none": ("identity",),
    "flips": ("identity", "hflip", "vflip", "hvflip"),
    "d4": tuple(TRANSFORMS),  # all 8 symmetries of the square
}
