"""AnomalyMix: pasted pixels equal the source exactly, the position is uniform, oversize objects
shrink to fit, and the outlier label stays aligned with the image through TrainTransform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mask2anomaly.data.anomaly_mix import AnomalyMix, bounding_box, fitted_size
from mask2anomaly.data.cityscapes import OUTLIER_LABEL, target_from_label
from mask2anomaly.data.outliers import OutlierPool
from mask2anomaly.data.transforms import LabeledImage, TrainTransform

MAGENTA = (255, 0, 255)


def make_pool(root: Path, image: np.ndarray, mask: np.ndarray) -> OutlierPool:
    """A pre-made pool of one outlier (PNG image, so pixels are exact)."""
    (root / "images").mkdir(parents=True)
    (root / "ood_annotations").mkdir()
    Image.fromarray(image).save(root / "images" / "000000000001.png")
    Image.fromarray(mask.astype(np.uint8) * OUTLIER_LABEL).save(
        root / "ood_annotations" / "000000000001.png"
    )
    return OutlierPool.from_premade(root)


def ring_mask(height: int, width: int) -> np.ndarray:
    """An irregular outlier: a ring plus a separate blob, not touching the image border."""
    y, x = np.mgrid[0:height, 0:width]
    radius = np.hypot(y - 18, x - 20)
    mask = (radius > 5) & (radius < 12)
    mask[30:35, 36:44] = True
    return mask


def inlier_sample(height: int = 64, width: int = 96, seed: int = 0) -> LabeledImage:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)  # never pure magenta
    label = rng.integers(0, 19, (height, width), dtype=np.uint8)
    label[:4] = 255
    return LabeledImage(image, label)


@pytest.fixture()
def source() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    return image, ring_mask(40, 50)


def test_pasted_pixels_and_labels_equal_the_source(tmp_path: Path, source) -> None:
    image, mask = source
    mix = AnomalyMix(make_pool(tmp_path, image, mask), probability=1.0)
    sample = inlier_sample()
    before = (sample.image.copy(), sample.label.copy())
    out = mix(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(sample.image, before[0])  # input untouched
    np.testing.assert_array_equal(sample.label, before[1])
    rows, cols = bounding_box(mask)
    crop_image, crop_mask = image[rows, cols], mask[rows, cols]
    pasted = out.label == OUTLIER_LABEL
    top, left = (int(np.flatnonzero(pasted.any(a))[0]) for a in (1, 0))
    h, w = crop_mask.shape
    expected = np.zeros_like(pasted)
    expected[top : top + h, left : left + w] = crop_mask
    np.testing.assert_array_equal(pasted, expected)
    np.testing.assert_array_equal(out.outlier_mask, expected)
    np.testing.assert_array_equal(
        out.image[top : top + h, left : left + w][crop_mask], crop_image[crop_mask]
    )
    np.testing.assert_array_equal(out.image[~expected], sample.image[~expected])
    np.testing.assert_array_equal(out.label[~expected], sample.label[~expected])


def test_probability_and_uniform_position(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 1:7] = True  # 4 x 6 box
    image = np.full((8, 8, 3), 250, dtype=np.uint8)
    pool = make_pool(tmp_path, image, mask)
    sample = inlier_sample(20, 30)
    assert AnomalyMix(pool, probability=0.0)(sample, np.random.default_rng(0)) is sample
    rng = np.random.default_rng(0)
    mix = AnomalyMix(pool, probability=0.2)
    tops, lefts, pasted = [], [], 0
    for _ in range(600):
        out = mix(sample, rng)
        if out is sample:
            continue
        pasted += 1
        box = bounding_box(out.label == OUTLIER_LABEL)
        assert (box[0].stop - box[0].start, box[1].stop - box[1].start) == (4, 6)
        tops.append(box[0].start)
        lefts.append(box[1].start)
    assert 80 < pasted < 160  # 0.2 * 600 = 120
    assert (min(tops), max(tops), min(lefts), max(lefts)) == (0, 20 - 4, 0, 30 - 6)


def test_object_larger_than_the_image_shrinks_to_fit(tmp_path: Path, source) -> None:
    image, mask = source
    rows, cols = bounding_box(mask)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (28, 35)
    mix = AnomalyMix(make_pool(tmp_path, image, mask), probability=1.0)
    for seed in range(5):
        out = mix(inlier_sample(16, 24), np.random.default_rng(seed))
        box = bounding_box(out.label == OUTLIER_LABEL)
        # 28 x 35 shrunk by 16 / 28 -> 16 x 20; nearest resizing may drop a border row of the mask
        assert 15 <= box[0].stop - box[0].start <= 16 and 19 <= box[1].stop - box[1].start <= 20
    assert fitted_size((28, 35), 1.0, (16, 24)) == (16, 20)  # aspect kept, height limits
    assert fitted_size((30, 60), 1.0, (16, 24)) == (12, 24)  # width limits
    assert fitted_size((30, 39), 0.5, (64, 96)) == (15, 20)


def test_scale_jitter(tmp_path: Path) -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:7, 3:11] = True  # 5 x 8 rectangle
    pool = make_pool(tmp_path, np.full((10, 12, 3), 250, dtype=np.uint8), mask)
    out = AnomalyMix(pool, probability=1.0, scale_range=(2.0, 2.0))(
        inlier_sample(), np.random.default_rng(0)
    )
    assert (out.label == OUTLIER_LABEL).sum() == 10 * 16
    with pytest.raises(ValueError):
        AnomalyMix(pool, scale_range=(2.0, 1.0))


def test_alignment_through_train_transform(tmp_path: Path, source) -> None:
    _, mask = source
    magenta = np.zeros((40, 50, 3), dtype=np.uint8)
    magenta[:] = MAGENTA
    mix = AnomalyMix(make_pool(tmp_path, magenta, mask), probability=1.0)
    transform = TrainTransform(
        min_sizes=(96, 128, 160), max_size=400, crop_size=(40, 56), color_jitter=False, flip=True
    )
    outcomes = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        out = transform(mix(inlier_sample(128, 192), rng), rng)
        outlier = out.label == OUTLIER_LABEL
        np.testing.assert_array_equal(out.outlier_mask, outlier)
        np.testing.assert_array_equal(
            target_from_label(out.label, outliers=True).outlier_mask, outlier
        )
        is_magenta = (out.image == MAGENTA).all(-1)
        # Away from the object's border (bilinear resizing blends there) the pixel colour
        # and the label must agree: magenta exactly on the outlier, nowhere else.
        interior = ndimage.binary_erosion(outlier, iterations=2)
        exterior = ~ndimage.binary_dilation(outlier, iterations=2)
        assert is_magenta[interior].all()
        assert not is_magenta[exterior].any()
        outcomes.add("visible" if interior.any() else "gone" if not outlier.any() else "edge")
    assert {"visible", "gone"} <= outcomes  # pastes cropped away entirely happen and are clean
