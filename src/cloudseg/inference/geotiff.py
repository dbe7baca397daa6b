"""Whole satellite scenes as GeoTIFF (optional extra `geo`, rasterio): read in blocks, write a georeferenced class map.

Input scaling, documented rule: each selected band becomes reflectance `r = DN * scale + offset` (float inputs
are taken as reflectance already), then the 8-bit stretch the model was trained on (`schema.encode_reflectance`).
Sensor presets give the band numbers (R, G, B, NIR) and the usual scale and offset:
- landsat8 / landsat9, Collection 2 Level-1 TOA: bands 4, 3, 2, 5; scale 2e-5, offset -0.1 (REFLECTANCE_MULT/ADD
  of the MTL file);
- sentinel2, L1C/L2A as 13 bands in order B1..B12 with B8A: bands 4, 3, 2, 8; scale 1e-4, and the offset the
  product's metadata gives (`RADIO_ADD_OFFSET` or `BOA_ADD_OFFSET`, in DN, or else its processing baseline: -0.1
  from 04.00 on, 0 before); without either, -0.1, the offset of every product since January 2022.
No-data pixels (the file's nodata value or mask in any selected band) are fed as zero reflectance and get no
class: they are written as the output's nodata value, 255.
"""

import contextlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloudseg.config import PredictConfig
from cloudseg.data.dataset import to_chw
from cloudseg.errors import CloudsegError, ConfigError, DataError
from cloudseg.files import atomic_path, file_sha256
from cloudseg.inference.outputs import image_entry
from cloudseg.inference.sliding import TileProgress, tile_count
from cloudseg.schema import CLASSES, encode_reflectance

if TYPE_CHECKING:
    from cloudseg.inference.predictor import Predictor

log = logging.getLogger("cloudseg")

GEOTIFF_SUFFIXES = (".tif", ".tiff")
NODATA = 255
NAME_THE_BANDS = "say which bands are R, G, B and NIR: --bands 4,3,2,5 or --sensor landsat8"
SENTINEL2_OFFSET = -0.1  # processing baseline 04.00 (January 2022) on: DN = reflectance x 10000 + 1000


@dataclass(frozen=True)
class SensorPreset:
    bands: tuple[int, int, int, int]  # 1-based band numbers of R, G, B, NIR
    scale: float
    offset: float


SENSORS = {
    "landsat8": SensorPreset((4, 3, 2, 5), 2e-5, -0.1),
    "landsat9": SensorPreset((4, 3, 2, 5), 2e-5, -0.1),
    "sentinel2": SensorPreset((4, 3, 2, 8), 1e-4, SENTINEL2_OFFSET),  # or what the product's metadata says
}


def sentinel2_offset(source: str | Path, bands: tuple[int, ...], scale: float) -> tuple[float, str]:
    """The reflectance offset of a Sentinel-2 product's `bands` (R, G, B, NIR), from its metadata where it says,
    and the rule applied."""
    tags = {}
    try:
        import rasterio
    except ImportError:
        return SENTINEL2_OFFSET, "rasterio is missing"  # predict_scene says how to install it
    try:
        with rasterio.open(source) as src:
            # the dataset's tags, then the chosen bands' from NIR to red: the red band's win
            for found in (src.tags(), *(src.tags(band) for band in reversed(bands) if 1 <= band <= src.count)):
                tags |= {key.upper(): value for key, value in found.items()}
    except (OSError, rasterio.errors.RasterioError):
        pass  # predict_scene names the problem
    for key in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
        if key in tags:
            try:
                return float(tags[key]) * scale, f"{key} {tags[key]} in its metadata"
            except ValueError as error:
                raise DataError(f"{source}: {key} {tags[key]!r} is not a number; give --offset") from error
    baseline = tags.get("PROCESSING_BASELINE", "").lstrip("N")  # "04.00" (N0400 in product names)
    if re.fullmatch(r"\d+(\.\d+)?", baseline, re.ASCII):
        number = float(baseline) if "." in baseline else int(baseline) / 100
        return (SENTINEL2_OFFSET if number >= 4.0 else 0.0), f"processing baseline {tags['PROCESSING_BASELINE']}"
    return SENTINEL2_OFFSET, (
        "no offset or readable processing baseline in its metadata: that of products since January 2022"
    )


def _block_windows(height: int, width: int, block: int, halo: int):
    """(read window, core window inside it, core window in the scene) for blocks covering the scene."""
    from rasterio.windows import Window

    for top in range(0, height, block):
        for left in range(0, width, block):
            core_h, core_w = min(block, height - top), min(block, width - left)
            y0, x0 = max(0, top - halo), max(0, left - halo)
            y1, x1 = min(height, top + core_h + halo), min(width, left + core_w + halo)
            read = Window(x0, y0, x1 - x0, y1 - y0)
            inner = (slice(top - y0, top - y0 + core_h), slice(left - x0, left - x0 + core_w))
            yield read, inner, Window(left, top, core_w, core_h)


def predict_scene(
    predictor: "Predictor",
    source: str | Path,
    output: str | Path,
    bands: tuple[int, int, int, int],
    scale: float,
    offset: float,
    block: int = 4096,
    on_tiles: TileProgress | None = None,
) -> Path:
    """Predicts a scene block by block (each block read with a halo of the predictor's tile overlap, so memory is
    bounded by the block) and writes a cloud-optimised GeoTIFF of class ids with the input's georeference: tiled,
    compressed, with overviews made by nearest resampling (class ids are not averaged), the colour table, nodata
    and class names. `on_tiles` hears of the scene's tiles done, over all blocks."""
    try:
        import rasterio
        import rasterio.shutil
    except ImportError as error:
        raise CloudsegError("GeoTIFF scenes need the geo extra: pip install 'cloudseg[geo]'") from error
    source, output = Path(source), Path(output)
    try:
        src = rasterio.open(source)
    except rasterio.errors.RasterioIOError as error:
        raise DataError(f"{source}: cannot open it as a raster ({error})") from error
    with src:
        if max(bands) > src.count or min(bands) < 1:
            raise DataError(
                f"{source}: has {src.count} bands; bands {','.join(map(str, bands))} (R, G, B, NIR) were asked for"
            )
        floating = np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.floating)
        profile = {
            "driver": "GTiff", "height": src.height, "width": src.width, "count": 1, "dtype": "uint8",
            "crs": src.crs, "transform": src.transform, "nodata": NODATA, "tiled": True,
            "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        }  # fmt: skip
        # Written block by block into a plain tiled GeoTIFF, then copied into the COG layout, which GDAL writes
        # in one pass (overviews before the full-resolution tiles).
        with atomic_path(output) as temporary, contextlib.ExitStack() as cleanup:
            blocks = temporary.with_suffix(".blocks.tif")
            cleanup.callback(blocks.unlink, missing_ok=True)
            with rasterio.open(blocks, "w", **profile) as dst:
                windows = list(_block_windows(src.height, src.width, block, predictor.cfg.overlap))
                tiles = [tile_count(read.height, read.width, predictor.cfg.tile, predictor.cfg.overlap)
                         for read, _, _ in windows]  # fmt: skip
                total = sum(tiles)
                for number, (read, inner, target) in enumerate(windows):
                    try:
                        values = src.read(list(bands), window=read).astype(np.float64)  # (4, h, w)
                        valid = np.all(src.read_masks(list(bands), window=read) > 0, axis=0)
                    except rasterio.errors.RasterioError as error:
                        raise DataError(f"{source}: the block at row {read.row_off}, column {read.col_off} cannot "
                                        f"be read ({error}); the file is damaged or truncated") from error  # fmt: skip
                    reflectance = values if floating else values * scale + offset
                    reflectance[:, ~valid] = 0.0
                    pixels = encode_reflectance(reflectance).transpose(1, 2, 0)  # (h, w, 4): R, G, B, NIR
                    rgb, aux = to_chw(pixels[..., :3])[None], to_chw(pixels[..., 3:])[None]
                    before = sum(tiles[:number])
                    in_block = (lambda done, _, before=before: on_tiles(before + done, total)) if on_tiles else None
                    ids = predictor.class_ids(rgb, aux, in_block)[0].byte().cpu().numpy()
                    if on_tiles is not None:
                        on_tiles(before + tiles[number], total)  # a block that fits one tile reports none
                    ids[~valid] = NODATA
                    dst.write(ids[inner], 1, window=target)
                dst.write_colormap(1, {c.id: (*c.rgb, 255) for c in CLASSES})
                dst.update_tags(1, **{f"class_{c.id}": c.name for c in CLASSES})
            rasterio.shutil.copy(blocks, temporary, driver="COG", compress="DEFLATE", blocksize=256,
                                 overview_resampling="NEAREST", resampling="NEAREST")  # fmt: skip
    return output


@dataclass(frozen=True)
class SceneFile:
    """A GeoTIFF scene to predict; its mask is `<name>.tif` in the output folder."""

    name: str
    path: Path

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)


@dataclass(frozen=True)
class SceneScaling:
    """How a scene's bands become the model's inputs: reflectance = DN * scale + offset of bands R, G, B, NIR;
    an offset of None is read from each Sentinel-2 product's metadata."""

    bands: tuple[int, int, int, int]
    scale: float
    offset: float | None

    @classmethod
    def of(cls, sensor: str | None, bands, scale: float | None, offset: float | None) -> "SceneScaling":
        """The sensor preset's values, replaced by those given."""
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"--scale {scale}: expected a number above 0 (reflectance = DN x scale + offset)")
        if offset is not None and not math.isfinite(offset):
            raise ConfigError(f"--offset {offset}: expected a finite number (reflectance = DN x scale + offset)")
        preset = SENSORS[sensor] if sensor else None
        bands = bands or (preset.bands if preset else None)
        if bands is None:
            raise ConfigError(f"--scale and --offset are for GeoTIFF scenes; {NAME_THE_BANDS}")
        scale = scale if scale is not None else (preset.scale if preset else 1.0)
        if offset is None and sensor != "sentinel2":
            offset = preset.offset if preset else 0.0
        return cls(tuple(bands), scale, offset)

    def offset_of(self, source: str | Path) -> float:
        """The offset for this scene (for Sentinel-2, from its metadata, with the rule applied logged)."""
        if self.offset is not None:
            return self.offset
        offset, rule = sentinel2_offset(source, self.bands, self.scale)
        log.info(f"{source}: Sentinel-2 offset {offset:g} ({rule}); --offset sets another")
        return offset


def scene_entry(scene: SceneFile, output: Path) -> dict:
    """A predicted scene's manifest entry: size, class shares and the mask's SHA-256 (its blocks read back)."""
    import rasterio

    counts = np.zeros(len(CLASSES), dtype=np.int64)
    with rasterio.open(output) as mask:
        for _, window in mask.block_windows(1):
            ids = mask.read(1, window=window)
            counts += np.bincount(ids[ids != NODATA], minlength=len(CLASSES))[: len(CLASSES)]
        height, width = mask.height, mask.width
    return image_entry(scene.name, height, width, counts, {output.name: file_sha256(output)})


def predict_scene_from_checkpoint(
    checkpoint, source, output, scaling: SceneScaling, cfg: PredictConfig, device=None
) -> Path:
    """`cloudseg predict --input scene.tif --output mask.tif`: a checkpoint's model on one whole scene."""
    from cloudseg.inference.predictor import Predictor

    if Path(output).is_dir() or Path(output).suffix.lower() not in GEOTIFF_SUFFIXES:
        raise ConfigError(f"--output {output}: a scene's mask is one GeoTIFF; name a .tif file")
    offset = scaling.offset_of(source)
    return predict_scene(
        Predictor.from_checkpoint(checkpoint, device, cfg), source, output, scaling.bands, scaling.scale, offset
    )
