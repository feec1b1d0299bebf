"""Joint image + label (+ outlier mask) augmentation of the official training (spec §2.2).

Order as the official Mask2Former semantic mapper: shortest-edge resize to a size chosen from a
list (capped by a max size), random crop (clipped to the image), SSD colour jitter, horizontal
flip. Images are RGB uint8 [H, W, 3] and are resized with PIL bilinear as detectron2's
ResizeTransform; labels and outlier masks use nearest, so every pixel keeps its class. All
randomness comes from a numpy Generator passed in, so a sample can be reproduced from its seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ..config import Config

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
    short_edge = int(min_sizes[int(rng.integers(len(min_sizes)))])
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


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _hue_units(sector: np.ndarray, numerator: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """OpenCV hue (0..179) of a pixel whose maximum is channel `sector` (0 R, 1 G, 2 B), from
    the difference of the other two channels (in hue order) and max - min (0: grey, hue 0)."""
    sector, numerator = np.asarray(sector), np.asarray(numerator, dtype=np.float64)
    diff = np.asarray(diff, dtype=np.float64)
    fraction = numerator / np.where(diff == 0, 1, diff)
    hue = np.where(sector == 0, fraction, np.where(sector == 1, 2 + fraction, 4 + fraction))
    hue = np.where(diff == 0, 0, hue) * (HUE_RANGE / 6)
    return (np.floor(hue + 0.5) % HUE_RANGE).astype(np.uint8)


def _saturation_units(diff: np.ndarray, value: np.ndarray) -> np.ndarray:
    """OpenCV saturation (0..255): (max - min) * 255 / max, rounded; 0 for black."""
    diff, value = np.asarray(diff, dtype=np.float64), np.asarray(value, dtype=np.float64)
    return _round_to_uint8(np.where(value == 0, 0, diff * 255 / np.where(value == 0, 1, value)))


@functools.cache
def _rgb_to_hsv_tables() -> tuple[np.ndarray, np.ndarray]:
    """Flat tables of every value: hue by (sector, numerator + 255, diff), saturation by
    (diff, value)."""
    sector, numerator, diff = np.meshgrid(
        np.arange(3), np.arange(-255, 256), np.arange(256), indexing="ij"
    )
    diff_grid, value_grid = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    return _hue_units(sector, numerator, diff).ravel(), _saturation_units(
        diff_grid, value_grid
    ).ravel()


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> uint8 HSV with H in 0..179 (degrees / 2), S and V in 0..255.

    Hue and saturation are looked up in tables of `_hue_units` / `_saturation_units` over every
    input they can get: exactly the float64 formulas' values, without float64 images."""
    hue_table, saturation_table = _rgb_to_hsv_tables()
    r, g, b = (image[..., c].astype(np.int32) for c in range(3))
    value = np.maximum(np.maximum(r, g), b)
    diff = value - np.minimum(np.minimum(r, g), b)
    sector = np.where(value == r, 0, np.where(value == g, 1, 2))
    numerator = np.where(sector == 0, g - b, np.where(sector == 1, b - r, r - g))
    hue = hue_table.take(((sector * 511 + numerator + 255) << 8) + diff)
    saturation = saturation_table.take((diff << 8) + value)
    return np.stack([hue, saturation, value.astype(np.uint8)], axis=-1)


# Per hue sector, which of (v, t, p, q) gives R, G and B.
_SECTOR_SOURCES = np.array([(0, 1, 2), (3, 0, 2), (2, 0, 1), (2, 3, 0), (1, 2, 0), (0, 2, 3)])


@functools.cache
def _hsv_to_rgb_tables() -> tuple[np.ndarray, ...]:
    """Per OpenCV hue: the table offset of its fraction f and its sector's channel sources;
    the 8-bit candidates v by V, p by (S, V), t and q by (f, S, V), all flat."""
    h = np.arange(HUE_RANGE, dtype=np.float64) * 6 / HUE_RANGE
    fractions, fraction_index = np.unique(h - np.floor(h), return_inverse=True)
    sources = _SECTOR_SOURCES[np.floor(h).astype(np.intp) % 6].T.copy()  # [3, 180]
    s = np.arange(256, dtype=np.float64)[:, None] / 255  # [S, 1]
    v = np.arange(256, dtype=np.float64)[None, :] / 255  # [1, V]
    f = fractions[:, None, None]
    v8 = _round_to_uint8(v[0] * 255)
    p8 = _round_to_uint8(v * (1 - s) * 255)
    t8 = _round_to_uint8(v * (1 - s * (1 - f)) * 255)
    q8 = _round_to_uint8(v * (1 - s * f) * 255)
    return fraction_index << 16, sources, v8, p8.ravel(), t8.ravel(), q8.ravel()


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`: uint8 HSV (H 0..179) -> [H, W, 3] uint8 RGB.

    The sector formulas (v, t = v(1 - s(1 - f)), p = v(1 - s), q = v(1 - sf), rounded to 8
    bits) are looked up in tables built from them in float64 over every (hue, S, V)."""
    fraction_offset, sources, v8, p8, t8, q8 = _hsv_to_rgb_tables()
    h, s, v = (hsv[..., c].astype(np.intp) for c in range(3))
    sv = (s << 8) + v
    ftsv = fraction_offset.take(h) + sv
    candidates = np.stack([v8.take(v), t8.take(ftsv), p8.take(sv), q8.take(ftsv)])  # v t p q
    flat = candidates.reshape(4, -1)
    n = flat.shape[1]
    positions = np.arange(n)
    channels = [flat.ravel().take(sources[c].take(h).ravel() * n + positions) for c in range(3)]
    return np.stack(channels, axis=-1).reshape(hsv.shape)


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


Transform = Callable[[LabeledImage, np.random.Generator], LabeledImage]


class Chain:
    """Apply transforms in order, all drawing from one generator."""

    def __init__(self, *transforms: Transform) -> None:
        self.transforms = transforms

    def __call__(self, sample: LabeledImage, rng: np.random.Generator) -> LabeledImage:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


def build_train_transform(cfg: Config, anomaly_mix: Transform | None = None) -> Transform:
    """The augmentations of `cfg.data` (after AnomalyMix in stage 2)."""
    data = cfg.data
    augment = TrainTransform(
        min_sizes=data.train_min_sizes,
        max_size=data.train_max_size,
        crop_size=data.crop_size,
        color_jitter=data.color_jitter,
        flip=data.flip,
    )
    return augment if anomaly_mix is None else Chain(anomaly_mix, augment)
