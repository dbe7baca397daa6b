"""Synthetic RGB + NIR cloud scenes with exact labels, written in the dataset format (for the demo and tests).

Each scene is built in top-of-atmosphere reflectance and encoded like the shared Landsat-8 sample
(`schema.encode_reflectance`), so the two look alike to a model:
- ground: water (dark in NIR) and land mixing vegetation (bright in NIR) with soil, textured by fractal noise;
- cloud shadows: the cloud layers displaced along one sun direction, darkening the ground in every band;
- thin clouds: translucent haze blended over the ground;
- thick clouds: bright and nearly opaque in all bands, with some texture.
Class priority where layers overlap: thick cloud > thin cloud > shadow > clear.
"""

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cloudseg.data.io import index_to_colour, write_image
from cloudseg.errors import DataError
from cloudseg.files import atomic_path
from cloudseg.schema import encode_reflectance

# Reflectance (red, green, blue, NIR) of each surface.
WATER = np.array([0.04, 0.06, 0.09, 0.02])
VEGETATION = np.array([0.04, 0.09, 0.03, 0.42])
SOIL = np.array([0.24, 0.19, 0.14, 0.30])
CLOUD = np.array([0.78, 0.79, 0.82, 0.74])


def fractal_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """(size, size) noise with a 1/f^beta power spectrum, standardised to mean 0 and std 1."""
    spectrum = np.fft.rfft2(rng.standard_normal((size, size)))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = np.inf  # no mean component
    field = np.fft.irfft2(spectrum / radius ** (beta / 2), s=(size, size))
    return (field - field.mean()) / (field.std() + 1e-12)


def coverage_mask(field: np.ndarray, coverage: float, softness: float) -> np.ndarray:
    """Soft 0..1 layer covering about `coverage` of the image where `field` is highest."""
    threshold = np.quantile(field, 1.0 - coverage)
    return np.clip((field - threshold) / softness + 0.5, 0.0, 1.0)


def shifted(layer: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`layer` moved by (dy, dx) pixels, zero where nothing moves in."""
    out = np.zeros_like(layer)
    h, w = layer.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = layer[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def make_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (size, size, 4) reflectance in R, G, B, NIR order and (size, size) uint8 class ids."""
    texture = 1.0 + 0.12 * fractal_noise(rng, size, 1.2)[..., None]
    land_mix = 1.0 / (1.0 + np.exp(-2.0 * fractal_noise(rng, size, 2.6)))[..., None]
    land = land_mix * VEGETATION + (1.0 - land_mix) * SOIL
    water = coverage_mask(fractal_noise(rng, size, 3.2), rng.uniform(0.0, 0.3), 0.05)[..., None]
    ground = (water * WATER + (1.0 - water) * land) * texture

    thick = coverage_mask(fractal_noise(rng, size, 3.8), rng.uniform(0.06, 0.35), 0.3)
    thin = coverage_mask(fractal_noise(rng, size, 3.4), rng.uniform(0.1, 0.35), 1.0) * rng.uniform(0.3, 0.6)
    thin *= 1.0 - (thick > 0.5)

    angle = rng.uniform(0.0, 2.0 * np.pi)
    distance = rng.uniform(0.04, 0.15) * size
    dy, dx = round(distance * np.sin(angle)), round(distance * np.cos(angle))
    shade = np.clip(shifted(thick, dy, dx) + 0.5 * shifted(thin, dy, dx), 0.0, 1.0)
    ground = ground * (1.0 - 0.7 * shade[..., None])

    cloud = CLOUD * (1.0 + 0.08 * fractal_noise(rng, size, 2.0)[..., None])
    image = ground * (1.0 - thin[..., None]) + cloud * thin[..., None]
    opacity = np.clip(thick * 1.1, 0.0, 1.0)[..., None]
    image = image * (1.0 - opacity) + cloud * opacity
    image = image + rng.normal(0.0, 0.004, image.shape)

    ids = np.zeros((size, size), dtype=np.uint8)
    ids[shade > 0.5] = 3
    ids[thin > 0.15] = 2
    ids[thick > 0.5] = 1
    return image, ids


def write_pair(folder: Path, name: str, reflectance: np.ndarray) -> None:
    """`<folder>/rgb/<name>` and `<folder>/ngr/<name>` of an (H, W, 4) R, G, B, NIR reflectance scene, 8-bit."""
    red, green, blue, nir = (encode_reflectance(reflectance[..., i]) for i in range(4))
    write_image(folder / "rgb" / name, np.dstack((blue, green, red)))
    write_image(folder / "ngr" / name, np.dstack((red, green, nir)))  # cv2 channel 2 = NIR


def _write_one(root: Path, split: str, index: int, size: int, seed: int, label_dir: Path) -> None:
    image, ids = make_scene(np.random.default_rng([seed, split == "test", index]), size)
    name = f"synth_{index:04d}.png"
    write_pair(root / split, name, image)
    write_image(label_dir / name, index_to_colour(ids))


SYNTH_FOLDERS = ("train", "test", "test_labels", "synth.json")


def _make_room(root: Path, overwrite: bool) -> None:
    """`root` is new or empty; or, with `overwrite`, the synthetic dataset there is removed first. Anything else is
    refused: new scenes mixed into old ones would pass every check and mislead."""
    if not root.exists() or not any(root.iterdir()):
        return
    if not overwrite:
        raise DataError(
            f"{root}: the folder is not empty; choose a new one, or --overwrite to replace a synthetic dataset"
        )
    if not (root / "synth.json").is_file() or any(p.name not in SYNTH_FOLDERS for p in root.iterdir()):
        raise DataError(f"{root}: --overwrite replaces only a synthetic dataset, and this folder holds other files")
    for name in SYNTH_FOLDERS:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def synthesize(
    root: str | Path,
    n_train: int = 64,
    n_test: int | None = None,
    size: int = 256,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Writes `<root>/train/{rgb,ngr,label}`, `<root>/test/{rgb,ngr}` and `<root>/test_labels` (kept apart) into a
    new or empty folder (with `overwrite`, over an earlier synthetic dataset). Every scene has its own seed, so
    `workers` processes write the same files as one."""
    root = Path(root)
    _make_room(root, overwrite)
    n_test = max(1, n_train // 4) if n_test is None else n_test
    splits = (("train", n_train, root / "train" / "label"), ("test", n_test, root / "test_labels"))
    jobs = [(root, split, index, size, seed, label_dir) for split, count, label_dir in splits for index in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for done in [pool.submit(_write_one, *job) for job in jobs]:
                done.result()
    else:
        for job in jobs:
            _write_one(*job)
    with atomic_path(root / "synth.json") as path:
        path.write_text(json.dumps({"n_train": n_train, "n_test": n_test, "size": size, "seed": seed}, indent=2))
    return root
