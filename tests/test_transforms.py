"""Joint transforms: image, label and outlier mask stay aligned; official sizes and jitter."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

from mask2anomaly.data.transforms import (
    LabeledImage,
    TrainTransform,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_aug_ssd,
    crop,
    hflip,
    hsv_to_rgb,
    random_crop,
    resize,
    rgb_to_hsv,
    shortest_edge_size,
)

OUTLIER = 254


def block_sample(seed: int, height: int = 96, width: int = 160, block: int = 16) -> LabeledImage:
    """Random class per block; red channel = 10 * class, green = 255 on a pasted outlier block,
    blue = block column index * 8 (so a flip applied to one array only is visible)."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 19, size=(height // block, width // block)).astype(np.uint8)
    label = np.kron(classes, np.ones((block, block), dtype=np.uint8))
    outlier = np.zeros((height, width), dtype=bool)
    outlier[block : 2 * block, 2 * block : 3 * block] = True
    label[outlier] = OUTLIER
    columns = np.kron(np.arange(width // block), np.ones(block, dtype=np.int64))
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.where(outlier, 0, label * 10)
    image[..., 1] = np.where(outlier, 255, 0)
    image[..., 2] = (columns * 8)[None, :]
    return LabeledImage(image, label, outlier)


def interior(label: np.ndarray) -> np.ndarray:
    """Pixels whose 5 x 5 neighbourhood has a single label (bilinear blending cannot reach them)."""
    padded = np.pad(label.astype(np.int64), 2, mode="edge")
    same = np.ones(label.shape, dtype=bool)
    for dy in range(5):
        for dx in range(5):
            same &= padded[dy : dy + label.shape[0], dx : dx + label.shape[1]] == label
    return same


def assert_aligned(sample: LabeledImage) -> None:
    inside = interior(sample.label)
    assert inside.sum() > 0
    red = sample.image[..., 0].astype(np.int64)
    green = sample.image[..., 1].astype(np.int64)
    is_outlier = sample.label == OUTLIER
    assert np.array_equal(sample.outlier_mask, is_outlier)
    inlier = inside & ~is_outlier
    assert np.abs(red[inlier] - 10 * sample.label[inlier].astype(np.int64)).max() <= 1
    assert (green[inside & is_outlier] >= 254).all()
    assert (green[inlier] <= 1).all()


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_label_and_outlier_aligned(seed: int) -> None:
    transform = TrainTransform(min_sizes=(48, 96, 150), max_size=400, crop_size=(64, 100),
                               color_jitter=False, flip=True)  # fmt: skip
    out = transform(block_sample(seed), np.random.default_rng(seed))
    assert out.image.dtype == np.uint8 and out.label.dtype == np.uint8
    assert out.image.shape[:2] == out.label.shape == out.outlier_mask.shape
    assert_aligned(out)


def test_flip_is_applied_to_all_arrays() -> None:
    sample = block_sample(0)
    flipped = hflip(sample)
    assert_aligned(flipped)
    assert np.array_equal(flipped.image[:, 0], sample.image[:, -1])
    assert np.array_equal(flipped.label[:, ::-1], sample.label)


def test_both_flip_states_occur_and_are_aligned() -> None:
    transform = TrainTransform(min_sizes=(96,), max_size=1000, crop_size=(96, 160),
                               color_jitter=False, flip=True)  # fmt: skip
    sample = block_sample(1)
    first_columns = set()
    for seed in range(8):
        out = transform(sample, np.random.default_rng(seed))
        assert_aligned(out)
        first_columns.add(int(out.image[0, 0, 2]))
    assert first_columns == {0, 72}  # column 0 (no flip) and column 9 of 10 (flipped)


def test_crop_can_remove_the_outlier_entirely() -> None:
    sample = block_sample(2)
    out = crop(sample, top=48, left=64, height=48, width=96)
    assert out.outlier_mask.shape == (48, 96) and not out.outlier_mask.any()
    assert (out.label != OUTLIER).all()
    assert np.array_equal(out.label, sample.label[48:, 64:])
    kept = crop(sample, top=0, left=0, height=48, width=96)
    assert kept.outlier_mask.sum() == 16 * 16


def test_random_crop_is_clipped_to_the_image_and_uniform() -> None:
    sample = block_sample(3, height=32, width=48)
    image = sample.image.copy()
    image[..., 2] = np.arange(48)[None, :]  # blue = column index, to read the crop offset
    sample = LabeledImage(image, sample.label, sample.outlier_mask)
    out = random_crop(sample, np.random.default_rng(0), crop_size=(64, 20))
    assert out.label.shape == (32, 20)  # height clipped to the image
    lefts = set()
    for seed in range(100):
        out = random_crop(sample, np.random.default_rng(seed), crop_size=(32, 45))
        assert out.label.shape == (32, 45)
        left = int(out.image[0, 0, 2])
        assert np.array_equal(out.label, sample.label[:, left : left + 45])
        lefts.add(left)
    assert lefts == {0, 1, 2, 3}


def test_shortest_edge_size_matches_detectron2_rule() -> None:
    assert shortest_edge_size(1024, 2048, 512, 4096) == (512, 1024)
    assert shortest_edge_size(1024, 2048, 2048, 4096) == (2048, 4096)
    assert shortest_edge_size(1024, 2048, 2048, 3000) == (1500, 3000)  # capped by the max size
    assert shortest_edge_size(300, 200, 100, 1000) == (150, 100)  # portrait
    assert shortest_edge_size(3, 7, 2, 100) == (2, 5)  # 4.666 -> 5 (round half up)


def test_resize_uses_nearest_for_labels() -> None:
    sample = block_sample(4)
    out = resize(sample, (45, 77))
    assert out.image.shape == (45, 77, 3) and out.label.shape == (45, 77)
    assert set(np.unique(out.label)) <= set(np.unique(sample.label))
    assert out.outlier_mask.dtype == bool


def test_rgb_hsv_conversion_matches_colorsys() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    hsv = rgb_to_hsv(image)
    for r, g, b, (h, s, v) in zip(*image.reshape(-1, 3).T, hsv.reshape(-1, 3)):
        eh, es, ev = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        hue_error = abs(int(h) - eh * 180)
        assert min(hue_error, 180 - hue_error) <= 0.5 + 1e-9
        assert abs(int(s) - es * 255) <= 0.5 + 1e-9
        assert int(v) == round(ev * 255)
    back = hsv_to_rgb(hsv)
    # The 8-bit HSV round trip loses a little precision, as in OpenCV.
    assert np.abs(back.astype(int) - image.astype(int)).max() <= 6


def test_hsv_to_rgb_matches_colorsys_on_every_hue() -> None:
    rng = np.random.default_rng(1)
    hsv = np.stack(
        [np.arange(180), rng.integers(0, 256, 180), rng.integers(0, 256, 180)], axis=-1
    ).astype(np.uint8)[None]
    rgb = hsv_to_rgb(hsv)[0]
    for (h, s, v), got in zip(hsv[0], rgb):
        expected = colorsys.hsv_to_rgb(h / 180, s / 255, v / 255)
        assert np.abs(got - np.array(expected) * 255).max() <= 0.5 + 1e-6, (h, s, v)


def test_colour_adjustments_on_hand_worked_pixels() -> None:
    image = np.array([[[10, 100, 250], [0, 0, 0]]], dtype=np.uint8)
    assert adjust_brightness(image, 10.7).tolist() == [[[20, 110, 255], [10, 10, 10]]]
    assert adjust_brightness(image, -20).tolist() == [[[0, 80, 230], [0, 0, 0]]]
    assert adjust_contrast(image, 1.5).tolist() == [[[15, 150, 255], [0, 0, 0]]]
    red = np.array([[[255, 0, 0]]], dtype=np.uint8)
    assert adjust_hue(red, 60).tolist() == [[[0, 255, 0]]]  # +120 degrees
    assert adjust_hue(red, -60).tolist() == [[[0, 0, 255]]]
    assert adjust_saturation(red, 0.0).tolist() == [[[255, 255, 255]]]
    grey = np.full((2, 2, 3), 77, dtype=np.uint8)
    assert np.array_equal(adjust_saturation(grey, 1.5), grey)
    assert np.array_equal(adjust_hue(grey, 18), grey)


def test_color_aug_is_reproducible_and_keeps_shape() -> None:
    image = block_sample(5).image
    a = color_aug_ssd(image, np.random.default_rng(3))
    b = color_aug_ssd(image, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b)
    changed = [not np.array_equal(color_aug_ssd(image, np.random.default_rng(s)), image)
               for s in range(10)]  # fmt: skip
    assert any(changed)


def test_transform_with_jitter_keeps_label_untouched_and_is_deterministic() -> None:
    transform = TrainTransform(min_sizes=(64, 96), max_size=400, crop_size=(48, 64))
    sample = block_sample(6)
    a = transform(sample, np.random.default_rng(11))
    b = transform(sample, np.random.default_rng(11))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.label.shape == (48, 64)
    assert np.array_equal(a.outlier_mask, a.label == OUTLIER)


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        TrainTransform(min_sizes=(), max_size=10, crop_size=(4, 4))
    with pytest.raises(ValueError):
        TrainTransform(min_sizes=(8,), max_size=10, crop_size=(0, 4))


def opencv_hsv_pixel(r: int, g: int, b: int) -> tuple[int, int, int]:
    """OpenCV's 8-bit RGB -> HSV for one pixel, written out in Python floats."""
    value = max(r, g, b)
    diff = value - min(r, g, b)
    saturation = 0 if value == 0 else math.floor(diff * 255 / value + 0.5)
    if diff == 0:
        hue = 0.0
    elif value == r:
        hue = (g - b) / diff * 30
    elif value == g:
        hue = (2 + (b - r) / diff) * 30
    else:
        hue = (4 + (r - g) / diff) * 30
    return math.floor(hue + 0.5) % 180, saturation, value


def opencv_rgb_pixel(h: int, s: int, v: int) -> tuple[int, int, int]:
    """OpenCV's 8-bit HSV -> RGB for one pixel, written out in Python floats."""
    sector_float = h * 6 / 180
    sector = math.floor(sector_float)
    f = sector_float - sector
    sat, val = s / 255, v / 255
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][sector % 6]
    return tuple(min(255, max(0, math.floor(c * 255 + 0.5))) for c in rgb)


def test_hsv_tables_equal_the_per_pixel_formulas_exactly() -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(3000, 3))
    special = [(0, 0, 0), (255, 255, 255), (7, 7, 7), (200, 200, 10), (10, 200, 200),
               (200, 10, 200), (255, 0, 0), (0, 0, 1), (1, 0, 0), (255, 254, 0)]  # fmt: skip
    image = np.concatenate([pixels, special]).astype(np.uint8)[None]
    expected = [opencv_hsv_pixel(*map(int, px)) for px in image[0]]
    assert rgb_to_hsv(image)[0].tolist() == [list(e) for e in expected]
    hsv = np.stack(
        [
            np.repeat(np.arange(180), 24),
            rng.integers(0, 256, 180 * 24),
            rng.integers(0, 256, 180 * 24),
        ],
        axis=-1,
    )
    hsv[:180, 1:] = [0, 255]  # grey, full value
    hsv[180:360, 1:] = [255, 0]  # black
    hsv[360:540, 1:] = [255, 255]
    hsv = hsv.astype(np.uint8)[None]
    expected = [opencv_rgb_pixel(*map(int, px)) for px in hsv[0]]
    assert hsv_to_rgb(hsv)[0].tolist() == [list(e) for e in expected]
