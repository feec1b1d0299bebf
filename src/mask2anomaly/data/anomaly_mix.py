"""AnomalyMix: paste outlier objects into inlier training images (paper §3.3; spec §5.2).

As the official dataset mapper: with a probability (0.2) per training image, take one random
outlier image, crop it to the bounding box of its outlier mask, and copy only the outlier pixels
to a uniformly random position where the box fits, into the image and, as label 254, into the
label — at the original size and before resize / crop / colour jitter / flip, which then move
the pasted object with the scene. `AnomalyMix` is composed in front of `TrainTransform`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import Config
from .cityscapes import OUTLIER_LABEL
from .outliers import OutlierPool, open_outliers
from .transforms import LabeledImage


def bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, cols) slices of the smallest box holding every True pixel of [H, W], or None."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def resize_object(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an object crop to size (h, w): image bilinear, mask nearest (PIL)."""
    if image.shape[:2] == size:
        return image, mask
    resized = Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR)
    mask_image = Image.fromarray(mask.astype(np.uint8)).resize(size[::-1], Image.Resampling.NEAREST)
    return np.asarray(resized), np.asarray(mask_image).astype(bool)


def fitted_size(size: tuple[int, int], scale: float, bounds: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an object of `size` scaled by `scale`, then shrunk (keeping its aspect ratio) to
    fit inside `bounds`; every side at least 1 pixel."""
    height, width = size[0] * scale, size[1] * scale
    shrink = min(1.0, bounds[0] / height, bounds[1] / width)
    return (
        min(bounds[0], max(1, round(height * shrink))),
        min(bounds[1], max(1, round(width * shrink))),
    )


def paste(
    sample: LabeledImage, object_image: np.ndarray, object_mask: np.ndarray, top: int, left: int
) -> LabeledImage:
    """Copy the pixels of `object_mask` into the sample at (top, left).

    Args:
        sample: inlier image [H, W, 3] uint8 and label [H, W] uint8.
        object_image: [h, w, 3] uint8, h <= H and w <= W.
        object_mask: [h, w] bool, the pixels to copy.
        top, left: position of the object's top-left corner in the sample.

    Returns:
        New arrays (the inputs are not modified): image pixels and label (254) replaced under
        the mask, outlier_mask = label == 254.
    """
    height, width = object_mask.shape
    window = (slice(top, top + height), slice(left, left + width))
    image, label = sample.image.copy(), sample.label.copy()
    image[window][object_mask] = object_image[object_mask]
    label[window][object_mask] = OUTLIER_LABEL
    return LabeledImage(image, label, label == OUTLIER_LABEL)


class AnomalyMix:
    """Paste one random outlier object with probability `probability`.

    Args:
        pool: the outlier images and masks.
        probability: chance per sample of pasting (official ANOMALY_MIX_RATIO 0.2).
        scale_range: the object is rescaled by a factor drawn uniformly from this range
            (official: (1, 1), no rescaling).

    An object larger than the inlier image (after scaling) is shrunk, keeping its aspect ratio,
    until its box fits — never cropped, so no part of the object is lost (the official code,
    COCO images of at most 640 pixels into 1024 x 2048 Cityscapes, never meets this case). An
    outlier image whose mask is empty leaves the sample unchanged.
    """

    def __init__(
        self,
        pool: OutlierPool,
        probability: float = 0.2,
        scale_range: Sequence[float] = (1.0, 1.0),
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"AnomalyMix probability must be in [0, 1], got {probability}")
        if len(scale_range) != 2 or not 0.0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"AnomalyMix scale range must be 0 < low <= high, got {scale_range}")
        if len(pool) == 0:
            raise ValueError("AnomalyMix needs a non-empty outlier pool")
        self.pool = pool
        self.probability = probability
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def __call__(self, sample: LabeledImage, rng: np.random.Generator) -> LabeledImage:
        """The sample, with one outlier object pasted with probability `probability`."""
        if rng.uniform() >= self.probability:
            return sample
        object_image, object_mask = self.pool.load(int(rng.integers(len(self.pool))))
        box = bounding_box(object_mask)
        if box is None:
            return sample
        object_image, object_mask = object_image[box], object_mask[box]
        low, high = self.scale_range
        scale = low if low == high else float(rng.uniform(low, high))
        size = fitted_size(object_mask.shape, scale, sample.label.shape)
        object_image, object_mask = resize_object(object_image, object_mask, size)
        top = int(rng.integers(sample.label.shape[0] - size[0] + 1))
        left = int(rng.integers(sample.label.shape[1] - size[1] + 1))
        return paste(sample, object_image, object_mask, top, left)


def build_anomaly_mix(cfg: Config, outliers: str | Path) -> AnomalyMix:
    """AnomalyMix over the outlier source at `outliers`, with the settings of `cfg.outlier`."""
    o = cfg.outlier
    pool = open_outliers(
        outliers, excluded_categories=o.coco_excluded_categories, min_size=o.coco_min_size
    )
    return AnomalyMix(pool, probability=o.anomaly_mix_prob, scale_range=o.paste_scale)
