"""Outlier sources: COCO decoding against hand-made masks, the selection filter, the pre-made
layout and its round trip through prepare_outliers, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from mask2anomaly.data.coco import rle_string_counts, segmentation_mask, segmentation_problem
from mask2anomaly.data.outliers import OutlierPool, open_outliers, prepare_outliers
from mask2anomaly.errors import UserError

SQUARE = [2, 3, 10, 3, 10, 8, 2, 8]  # x from 2 to 10, y from 3 to 8
TRIANGLE = [2, 2, 12.5, 2, 2, 12.5]  # legs on x = 2 and y = 2, hypotenuse x + y = 14.5


def pixel_centres_inside(polygon: list[float], height: int, width: int) -> np.ndarray:
    """[H, W] bool: pixels whose centre lies inside a convex polygon (no centre lies on an edge
    of the polygons used here, so the rule is unambiguous)."""
    vertices = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    y, x = np.mgrid[0:height, 0:width] + 0.5
    sides = []
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        sides.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
    sides = np.stack(sides)
    return (sides > 0).all(0) | (sides < 0).all(0)


def test_square_polygon() -> None:
    expected = np.zeros((12, 16), dtype=bool)
    expected[3:8, 2:10] = True
    np.testing.assert_array_equal(pixel_centres_inside(SQUARE, 12, 16), expected)
    np.testing.assert_array_equal(segmentation_mask([SQUARE], 12, 16), expected)


def test_triangle_polygon() -> None:
    y, x = np.mgrid[0:16, 0:16]
    expected = (x >= 2) & (y >= 2) & (x + y <= 13)
    np.testing.assert_array_equal(pixel_centres_inside(TRIANGLE, 16, 16), expected)
    np.testing.assert_array_equal(segmentation_mask([TRIANGLE], 16, 16), expected)


def test_several_polygons_of_one_object_are_merged() -> None:
    mask = segmentation_mask([SQUARE, [12, 9, 15, 9, 15, 11, 12, 11]], 12, 16)
    expected = np.zeros((12, 16), dtype=bool)
    expected[3:8, 2:10] = True
    expected[9:11, 12:15] = True
    np.testing.assert_array_equal(mask, expected)


# A 3 x 3 mask written column by column (COCO RLE is column-major): runs 1 off, 2 on, 3 off,
# 2 on, 1 off.
RLE_MASK = np.array([[0, 0, 1], [1, 0, 1], [1, 0, 0]], dtype=bool)
RLE_COUNTS = [1, 2, 3, 2, 1]
# Compressed: chr(48 + run) for the first three runs, then the difference to the run two places
# before: 2 - 2 = 0 -> "0"; 1 - 3 = -2 -> 5-bit two's complement 30 -> chr(78) = "N".
RLE_STRING = "1230N"


def test_uncompressed_rle() -> None:
    rle = {"size": [3, 3], "counts": RLE_COUNTS}
    np.testing.assert_array_equal(segmentation_mask(rle, 3, 3), RLE_MASK)


def test_compressed_rle() -> None:
    assert rle_string_counts(RLE_STRING) == RLE_COUNTS
    np.testing.assert_array_equal(
        segmentation_mask({"size": [3, 3], "counts": RLE_STRING}, 3, 3), RLE_MASK
    )
    encoded = coco_mask.encode(np.asfortranarray(RLE_MASK.astype(np.uint8)))
    assert encoded["counts"].decode() == RLE_STRING


def test_rle_string_decoder_matches_pycocotools_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((37, 23)) < rng.uniform(0.05, 0.95)
        if rng.integers(2):  # long runs need several 5-bit groups and large differences
            mask[:, : rng.integers(23)] = True
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        runs = rle_string_counts(encoded["counts"].decode())
        assert sum(runs) == mask.size
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
        np.testing.assert_array_equal(flat.reshape(23, 37).T, mask)


def test_segmentation_problems() -> None:
    assert segmentation_problem([SQUARE], 12, 16) is None
    assert segmentation_problem({"size": [3, 3], "counts": RLE_STRING}, 3, 3) is None
    assert "outside" in segmentation_problem([[2, 3, 40, 3, 10, 8]], 12, 16)
    assert "size" in segmentation_problem({"size": [4, 3], "counts": RLE_COUNTS}, 3, 3)
    assert "cover" in segmentation_problem({"size": [3, 3], "counts": [1, 2]}, 3, 3)
    assert "pairs" in segmentation_problem([[1, 2, 3]], 12, 16)
    assert segmentation_problem("nonsense", 12, 16) is not None


# ---------------------------------------------------------------------------------------------
# COCO folders

CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 3, "name": "car"},
    {"id": 28, "name": "umbrella"},
    {"id": 88, "name": "teddy bear"},
]


def write_image(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_coco(root: Path, images: list[dict], annotations: list[dict], split="train2017") -> Path:
    """A COCO folder with the given records; image files for every record."""
    for image in images:
        write_image(root / split / image["file_name"], image["height"], image["width"], image["id"])
    for number, annotation in enumerate(annotations):
        annotation.setdefault("id", number + 1)
        annotation.setdefault("iscrowd", int(isinstance(annotation["segmentation"], dict)))
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path.write_text(json.dumps(data))
    return path


def image_record(image_id: int, height: int = 500, width: int = 520, suffix=".jpg") -> dict:
    return {
        "id": image_id,
        "file_name": f"{image_id:012d}{suffix}",
        "height": height,
        "width": width,
    }


def full_rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": encoded["counts"].decode()}


@pytest.fixture()
def coco_root(tmp_path: Path) -> Path:
    """Image 1 keeps (teddy bear polygon + umbrella crowd RLE); 2 has a car; 3 is too small;
    4 has no annotation; 5 has only a crowd person; 6 keeps (one umbrella square)."""
    crowd = np.zeros((500, 520), dtype=bool)
    crowd[400:450, 10:300] = True
    images = [
        image_record(1),
        image_record(2),
        image_record(3, 470, 600),
        image_record(4),
        image_record(5),
        image_record(6, 480, 480, ".png"),
    ]
    annotations = [
        {
            "image_id": 1,
            "category_id": 88,
            "segmentation": [[100, 50, 300, 50, 300, 200, 100, 200]],
        },
        {"image_id": 1, "category_id": 28, "segmentation": full_rle(crowd)},
        {"image_id": 2, "category_id": 28, "segmentation": [SQUARE]},
        {"image_id": 2, "category_id": 3, "segmentation": [TRIANGLE]},
        {"image_id": 3, "category_id": 28, "segmentation": [SQUARE]},
        {"image_id": 5, "category_id": 1, "segmentation": full_rle(crowd)},
        {"image_id": 6, "category_id": 28, "segmentation": [SQUARE]},
    ]
    write_coco(tmp_path / "coco", images, annotations)
    return tmp_path / "coco"


def test_selection_filter(coco_root: Path) -> None:
    pool = OutlierPool.from_coco(coco_root)
    assert [e.image_path.name for e in pool.entries] == ["000000000001.jpg", "000000000006.png"]
    relaxed = OutlierPool.from_coco(coco_root, min_size=400, excluded_categories=("car",))
    kept = [int(e.image_path.stem) for e in relaxed.entries]
    assert kept == [1, 3, 5, 6]  # person allowed, smaller images allowed, unannotated never
    assert len(open_outliers(coco_root)) == 2


def test_union_of_all_annotations(coco_root: Path) -> None:
    image, mask = OutlierPool.from_coco(coco_root).load(0)
    expected = np.zeros((500, 520), dtype=bool)
    expected[50:200, 100:300] = True  # the polygon
    expected[400:450, 10:300] = True  # the crowd RLE
    np.testing.assert_array_equal(mask, expected)
    assert image.shape == (500, 520, 3) and image.dtype == np.uint8


def test_prepare_outliers_round_trip(coco_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "outliers"
    summary = prepare_outliers(coco_root, out, progress=False)
    assert (summary.written, summary.existing, summary.empty) == (2, 0, 0)
    assert sorted(p.name for p in (out / "ood_annotations").iterdir()) == [
        "000000000001.png",
        "000000000006.png",
    ]
    values = np.unique(np.asarray(Image.open(out / "ood_annotations" / "000000000001.png")))
    assert values.tolist() == [0, 254]
    coco, premade = OutlierPool.from_coco(coco_root), open_outliers(out)
    assert len(premade) == len(coco) == 2
    for i in range(2):
        for a, b in zip(coco.load(i), premade.load(i)):
            np.testing.assert_array_equal(a, b)
    again = prepare_outliers(coco_root, out, progress=False)
    assert (again.written, again.existing) == (0, 2)
    assert not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file


def raises_one_line(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as error:
        call(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_missing_image_file(coco_root: Path) -> None:
    (coco_root / "train2017" / "000000000006.png").unlink()
    message = raises_one_line("does not exist", OutlierPool.from_coco, coco_root)
    assert "instances_train2017.json" in message and "000000000006.png" in message


def test_annotation_outside_the_image(tmp_path: Path) -> None:
    bad = [[100, 50, 900, 50, 300, 200]]
    write_coco(
        tmp_path, [image_record(1)], [{"image_id": 1, "category_id": 28, "segmentation": bad}]
    )
    message = raises_one_line("outside the 520x500 image", open_outliers, tmp_path)
    assert "instances_train2017.json" in message


def test_rle_of_another_size_and_unknown_image(tmp_path: Path) -> None:
    rle = full_rle(np.ones((10, 10), dtype=bool))
    write_coco(
        tmp_path, [image_record(1)], [{"image_id": 1, "category_id": 28, "segmentation": rle}]
    )
    raises_one_line("instances_train2017.json.*RLE size 10x10", open_outliers, tmp_path)
    write_coco(
        tmp_path, [image_record(1)], [{"image_id": 7, "category_id": 28, "segmentation": [SQUARE]}]
    )
    raises_one_line("instances_train2017.json.*image_id 7", open_outliers, tmp_path)


def test_empty_pool_after_filtering(tmp_path: Path) -> None:
    write_coco(
        tmp_path, [image_record(1)], [{"image_id": 1, "category_id": 1, "segmentation": [SQUARE]}]
    )
    raises_one_line("instances_train2017.json: no image left", open_outliers, tmp_path)


def test_premade_mask_without_outlier_pixel(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.jpg", 20, 30, 0)
    (tmp_path / "ood_annotations").mkdir()
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(tmp_path / "ood_annotations/a.png")
    pool = open_outliers(tmp_path)
    raises_one_line("a.png: outlier mask has no pixel of value 254", pool.load, 0)


def test_premade_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "ood_annotations").mkdir()
    raises_one_line("no outlier masks", open_outliers, tmp_path)
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:9, 3:7] = 254
    Image.fromarray(mask).save(tmp_path / "ood_annotations" / "b.png")
    raises_one_line("b.png: no image", open_outliers, tmp_path)
    write_image(tmp_path / "images" / "b.jpg", 21, 30, 0)
    raises_one_line("b.jpg: image is 30x21", open_outliers(tmp_path).load, 0)
    raises_one_line("not an outlier folder", open_outliers, tmp_path / "images")


def test_prepare_outliers_command(coco_root: Path, tmp_path: Path, capsys) -> None:
    from mask2anomaly.cli import main

    out = tmp_path / "prepared"
    assert main(["prepare-outliers", "--coco", str(coco_root), "--out", str(out)]) == 0
    assert "2 outlier images written" in capsys.readouterr().out
    assert len(open_outliers(out)) == 2
    assert main(["prepare-outliers", "--coco", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "instances_train2017.json" in error
