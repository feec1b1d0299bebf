"""Joint image + label (+ outlier mask) augmentation of the official training (spec §2.2).

Order as the official Mask2Former semantic mapper: shortest-edge resize to a size chosen from a
list (capped by a max size), random crop (clipped to the image), SSD colour jitter, horizontal
flip. Images are RGB uint8 [H, W, 3] and are resized with PIL bilinear as detectron2's
ResizeTransform; labels and outlier masks use nearest, so every pixel keeps its class. All
randomness comes from a numpy Generator passed in, so a sample can be reproduced from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

# ColorAugSSD ranges (detectron2 PointRend ColorAugSSDTransform, used by the official mapper).
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # in OpenCV 8-bit hue units (degrees / 2, 180 per turn)
HUE_RANGE = 180


@dataclass(frozen=True)
class LabeledImage:
    """image: [H, W, 3] uint8 RGB; label: [H, W] uint8 train ids (255 void, 254 outlier);
    outlier_mask: [H, W] bool or None."""

    image: np.ndarray
    label: np.ndarray
    outlier_mask: np.ndarray | None = None


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W] uint8 or bool array -> size (h, w), PIL nearest."""
    resized = Image.fromarray(array.astype(np.uint8)).resize(size[::-1], Image.Resampling.NEAREST)
    return np.asarray(resized).astype(array.dtype)


def resize(sample: LabeledImage, size: tuple[int, int]) -> LabeledImage:
    """Resize to `size` (h, w): image bilinear (PIL, uint8), label and outlier mask nearest."""
    image = Image.fromarray(sample.image).resize(size[::-1], Image.Resampling.BILINEAR)
    outlier = sample.outlier_mask
    return LabeledImage(
        np.asarray(image),
        _resize_nearest(sample.label, size),
        None if outlier is None else _resize_nearest(outlier, size),
    )


def shortest_edge_size(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the shorter side `short_edge` and the longer at most `max_size` (detectron2
    ResizeShortestEdge.get_output_shape, rounding half up)."""
    scale = short_edge / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def random_resize_shortest_edge(
    sample: LabeledImage, rng: np.random.Generator, *, min_sizes: Sequence[int], max_size: int
) -> LabeledImage:
    """Resize so the shortest edge is a uniformly chosen entry of `min_sizes`."""
    short_edge = int(min_sizes[rng.integers(len(min_sizes))])
    height, width = sample.label.shape
    return resize(sample, shortest_edge_size(height, width, short_edge, max_size))


def crop(sample: LabeledImage, top: int, left: int, height: int, width: int) -> LabeledImage:
    """The window [top:top+height, left:left+width] of every array."""
    window = (slice(top, top + height), slice(left, left + width))
    outlier = sample.outlier_mask
    return LabeledImage(
        sample.image[window], sample.label[window], None if outlier is None else outlier[window]
    )


def random_crop(
    sample: LabeledImage, rng: np.random.Generator, *, crop_size: tuple[int, int]
) -> LabeledImage:
    """Uniform random crop of crop_size (h, w), clipped to the image (no padding), as
    detectron2's RandomCrop("absolute")."""
    height, width = sample.label.shape
    crop_h, crop_w = min(crop_size[0], height), min(crop_size[1], width)
    top = int(rng.integers(height - crop_h + 1))
    left = int(rng.integers(width - crop_w + 1))
    return crop(sample, top, left, crop_h, crop_w)


def hflip(sample: LabeledImage) -> LabeledImage:
    """Mirror every array left-right."""
    outlier = sample.outlier_mask
    return LabeledImage(
        sample.image[:, ::-1], sample.label[:, ::-1], None if outlier is None else outlier[:, ::-1]
    )


# ---------------------------------------------------------------------------------------------
# SSD colour jitter on uint8 RGB, with OpenCV's 8-bit HSV convention (H 0..179, S and V 0..255)


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """alpha * x + beta, clipped to 0..255 and truncated to uint8 (as the official transform)."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> uint8 HSV with H in 0..179 (degrees / 2), S and V in 0..255."""
    rgb = image.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(-1)
    diff = value - rgb.min(-1)
    safe_diff = np.where(diff == 0, 1, diff)
    saturation = np.where(value == 0, 0, diff * 255 / np.where(value == 0, 1, value))
    hue = np.where(
        value == r,
        (g - b) / safe_diff,
        np.where(value == g, 2 + (b - r) / safe_diff, 4 + (r - g) / safe_diff),
    )
    hue = np.where(diff == 0, 0, hue) * (HUE_RANGE / 6)
    hue = np.floor(hue + 0.5) % HUE_RANGE
    hsv = np.stack([hue, np.floor(saturation + 0.5), value], axis=-1)
    return hsv.astype(np.uint8)


# Per hue sector, which of (v, t, p, q) gives R, G and B.
_SECTOR_SOURCES = np.array([(0, 1, 2), (3, 0, 2), (2, 0, 1), (2, 3, 0), (1, 2, 0), (0, 2, 3)])


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`: uint8 HSV (H 0..179) -> [H, W, 3] uint8 RGB."""
    h = hsv[..., 0].astype(np.float64) * 6 / HUE_RANGE
    s = hsv[..., 1].astype(np.float64) / 255
    v = hsv[..., 2].astype(np.float64) / 255
    floor = np.floor(h)
    f = h - floor
    sector = floor.astype(np.intp) % 6
    candidates = np.stack([v, v * (1 - s * (1 - f)), v * (1 - s), v * (1 - s * f)])  # v t p q
    rgb = np.take_along_axis(candidates, np.moveaxis(_SECTOR_SOURCES[sector], -1, 0), axis=0)
    return np.clip(np.floor(np.moveaxis(rgb, 0, -1) * 255 + 0.5), 0, 255).astype(np.uint8)


def adjust_brightness(image: np.ndarray, delta: float) -> np.ndarray:
    return _convert(image, beta=delta)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    return _convert(image, alpha=factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    hsv = rgb_to_hsv(image)
    hsv[..., 1] = _convert(hsv[..., 1], alpha=factor)
    return hsv_to_rgb(hsv)


def adjust_hue(image: np.ndarray, delta: int) -> np.ndarray:
    """Rotate the hue by `delta` OpenCV hue units (2 degrees each)."""
    hsv = rgb_to_hsv(image)
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + delta) % HUE_RANGE
    return hsv_to_rgb(hsv)


def color_aug_ssd(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD photometric distortion: brightness, then contrast before or after saturation + hue
    (each order with probability 1/2); every step applied with probability 1/2."""

    def maybe(step: str, value: np.ndarray) -> np.ndarray:
        if not rng.integers(2):
            return value
        if step == "contrast":
            return adjust_contrast(value, rng.uniform(*CONTRAST_RANGE))
        if step == "saturation":
            return adjust_saturation(value, rng.uniform(*SATURATION_RANGE))
        return adjust_hue(value, int(rng.integers(-HUE_DELTA, HUE_DELTA + 1)))

    if rng.integers(2):
        image = adjust_brightness(image, rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    order = (
        ("contrast", "saturation", "hue") if rng.integers(2) else ("saturation", "hue", "contrast")
    )
    for step in order:
        image = maybe(step, image)
    return image


class TrainTransform:
    """The official training augmentation with configurable sizes.

    Args:
        min_sizes: candidate shortest-edge lengths (official 512..2048, 0.5..2.0 x 1024).
        max_size: cap on the longest edge after resizing (official 4096).
        crop_size: (h, w) of the random crop (official 380 x 760).
        color_jitter: apply SSD colour jitter.
        flip: horizontal flip with probability 1/2.
    """

    def __init__(
        self,
        *,
        min_sizes: Sequence[int],
        max_size: int,
        crop_size: tuple[int, int],
        color_jitter: bool = True,
        flip: bool = True,
    ) -> None:
        if not min_sizes or min(min_sizes) <= 0 or max_size <= 0 or min(crop_size) <= 0:
            raise ValueError("resize and crop sizes must be positive")
        self.min_sizes = tuple(min_sizes)
        self.max_size = max_size
        self.crop_size = crop_size
        self.color_jitter = color_jitter
        self.flip = flip

    def __call__(self, sample: LabeledImage, rng: np.random.Generator) -> LabeledImage:
        """Augment one sample; image, label and outlier mask stay pixel-aligned."""
        sample = random_resize_shortest_edge(
            sample, rng, min_sizes=self.min_sizes, max_size=self.max_size
        )
        sample = random_crop(sample, rng, crop_size=self.crop_size)
        if self.color_jitter:
            sample = replace(sample, image=color_aug_ssd(sample.image, rng))
        if self.flip and rng.integers(2):
            sample = hflip(sample)
        return sample
