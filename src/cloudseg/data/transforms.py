"""Training augmentation: shared geometry for RGB, NIR and mask, colour for RGB only, and copy-paste of clouds."""

import os
from dataclasses import dataclass

# albumentations asks PyPI for its newest version at every import: up to 2 s and a warning on an offline machine.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A
import cv2
import numpy as np

from cloudseg.config import AugmentConfig
from cloudseg.schema import IGNORE_INDEX

PASTED_CLASSES = (1, 2, 3)  # thick cloud, thin cloud, cloud shadow


def _seeded(compose: A.Compose) -> A.Compose:
    # albumentations keeps its own random state; drawing its seed from numpy's global one (which the DataLoader
    # seeds per worker from the run's seed) makes augmentation reproducible and different in every worker.
    compose.set_random_seed(int(np.random.randint(2**31)))
    return compose


class TrainTransform:
    """(rgb, nir, mask) uint8 arrays -> augmented arrays of `crop_size`².

    Geometry runs once on RGB and NIR stacked into one array, so both move together; masks are resampled with
    nearest neighbour, and pixels that rotation or shifting brings in from outside get the ignore index.
    """

    def __init__(self, cfg: AugmentConfig):
        size = (cfg.crop_size, cfg.crop_size)
        self.geometric = A.Compose(
            [
                A.RandomResizedCrop(
                    size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, mask_interpolation=cv2.INTER_NEAREST
                ),
                A.HorizontalFlip(p=cfg.hflip),
                A.VerticalFlip(p=cfg.vflip),
                A.RandomRotate90(p=cfg.rotate90),
                A.Affine(
                    translate_percent=(-cfg.affine_shift, cfg.affine_shift),
                    scale=cfg.affine_scale,
                    rotate=(-cfg.affine_rotate, cfg.affine_rotate),
                    mask_interpolation=cv2.INTER_NEAREST,
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=IGNORE_INDEX,
                    p=cfg.affine,
                ),
            ]
        )
        self.rgb_colour = A.Compose(
            [
                A.RandomBrightnessContrast(cfg.brightness_limit, cfg.contrast_limit, p=cfg.brightness_contrast),
                A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=cfg.hue_saturation),
                A.CLAHE(clip_limit=2.0, p=cfg.clahe),
                A.RandomGamma(gamma_limit=cfg.gamma_limit, p=cfg.gamma),
                A.GaussNoise(std_range=(0.01, 0.04), p=cfg.noise),
                A.GaussianBlur(blur_limit=(3, 5), p=cfg.blur),
            ]
        )
        self.nir_colour = A.Compose(
            [A.RandomBrightnessContrast(cfg.nir_limit, cfg.nir_limit, p=cfg.nir_brightness_contrast)]
        )

    def __call__(self, rgb: np.ndarray, nir: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        moved = _seeded(self.geometric)(image=np.dstack((rgb, nir)), mask=mask)
        stacked, mask = moved["image"], moved["mask"]
        rgb = _seeded(self.rgb_colour)(image=np.ascontiguousarray(stacked[..., :3]))["image"]
        nir = _seeded(self.nir_colour)(image=np.ascontiguousarray(stacked[..., 3:]))["image"]
        return rgb, nir.reshape(*nir.shape[:2], -1), mask


@dataclass(frozen=True)
class CloudObject:
    """One connected component of a cloud or shadow class in a donor image."""

    class_id: int
    box: tuple[int, int, int, int]  # x, y, width, height
    shape: np.ndarray  # (height, width) bool, True inside the component


def find_objects(mask: np.ndarray, min_area: int) -> list[CloudObject]:
    """Connected components (8-connected) of the pasted classes with at least `min_area` pixels."""
    objects = []
    for class_id in PASTED_CLASSES:
        count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == class_id).astype(np.uint8), connectivity=8)
        for component in range(1, count):
            x, y, w, h, area = stats[component]
            if area >= min_area:
                shape = labels[y : y + h, x : x + w] == component
                objects.append(CloudObject(class_id, (int(x), int(y), int(w), int(h)), shape))
    return objects


class CopyPaste:
    """With probability `p`, pastes up to `max_objects` cloud or shadow components of a donor sample, each
    rescaled by a factor drawn from `scale` and placed at a random position inside the image, into RGB, NIR and
    mask together. Only the pasted pixels change; they take the donor's values and class.
    """

    def __init__(self, p: float, scale: tuple[float, float], min_area: int, max_objects: int):
        self.p, self.scale, self.min_area, self.max_objects = p, scale, min_area, max_objects

    @classmethod
    def from_config(cls, cfg: AugmentConfig) -> "CopyPaste":
        return cls(cfg.copy_paste, cfg.copy_paste_scale, cfg.copy_paste_min_area, cfg.copy_paste_max_objects)

    def fires(self) -> bool:
        """Draws whether this sample gets objects pasted, so that a caller reads a donor only when it does."""
        return self.p > 0 and np.random.random() < self.p

    def __call__(self, rgb, nir, mask, donor_rgb, donor_nir, donor_mask):
        return self.paste(rgb, nir, mask, donor_rgb, donor_nir, donor_mask) if self.fires() else (rgb, nir, mask)

    def paste(self, rgb, nir, mask, donor_rgb, donor_nir, donor_mask):
        """Pastes (always) up to `max_objects` of the donor's objects."""
        objects = find_objects(donor_mask, self.min_area)
        if not objects:
            return rgb, nir, mask
        rgb, nir, mask = rgb.copy(), nir.copy(), mask.copy()
        height, width = mask.shape
        for index in np.random.choice(len(objects), size=min(self.max_objects, len(objects)), replace=False):
            obj = objects[index]
            x, y, w, h = obj.box
            # The factor is clamped so the object fits inside the target image.
            factor = min(np.random.uniform(*self.scale), width / w, height / h)
            new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
            pieces = [d[y : y + h, x : x + w] for d in (donor_rgb, donor_nir)]
            shape = obj.shape
            if (new_w, new_h) != (w, h):
                pieces = [
                    cv2.resize(p, (new_w, new_h), interpolation=cv2.INTER_LINEAR).reshape(new_h, new_w, -1)
                    for p in pieces
                ]
                shape = cv2.resize(shape.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST).astype(bool)
            top = np.random.randint(0, height - new_h + 1)
            left = np.random.randint(0, width - new_w + 1)
            region = (slice(top, top + new_h), slice(left, left + new_w))
            for target, piece in zip((rgb, nir), pieces, strict=True):
                target[region][shape] = piece[shape]
            mask[region][shape] = obj.class_id
        return rgb, nir, mask
