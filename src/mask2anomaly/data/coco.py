"""COCO instances JSON: reading, checking and decoding segmentations (spec benchmarks.md E.2).

Polygons (a list of flat x, y lists) and RLE (a dict with `size` [h, w] and `counts`, a list of
run lengths or the compressed string) are decoded by pycocotools, the reference implementation,
exactly as its `COCO.annToMask`. Everything is checked first, so that a broken file stops with one
line naming it instead of a crash in the middle of a run.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from ..errors import UserError

# A polygon vertex may lie on the image border (COCO coordinates run from 0 to W and H); allow a
# little slack for rounding, but a vertex further out means the annotation is for another image.
VERTEX_TOLERANCE = 2.0
# Fewer than three vertices enclose no pixel (pycocotools would read 4 numbers as a box).
MIN_POLYGON_COORDS = 6


@dataclass(frozen=True)
class CocoImage:
    """One image record of a COCO JSON and the segmentations of its annotations."""

    image_id: int
    file_name: str
    height: int
    width: int
    segmentations: tuple[Any, ...]
    category_ids: frozenset[int]


def rle_string_counts(counts: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (maskApi.c `rleFrString`).

    Each run length is stored in 5-bit groups, least significant first, one character (value
    + 48) per group with 0x20 marking a continuation; the last group's 0x10 bit is the sign. From
    the third run on, the value stored is the difference to the run two places before.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError("truncated RLE string")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"invalid RLE character {counts[position]!r}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # sign extension
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Why a segmentation cannot belong to an image of height x width, or None if it can."""
    try:
        if isinstance(segmentation, list):
            return _polygons_problem(segmentation, height, width)
        if isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
            return _rle_problem(segmentation, height, width)
    except (TypeError, ValueError) as error:
        return f"malformed segmentation ({error})"
    return "segmentation is neither a polygon list nor an RLE dict"


def _polygons_problem(polygons: list[Any], height: int, width: int) -> str | None:
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) % 2:
            return "a polygon is not a flat list of x, y pairs"
        coords = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(coords).all():
            return "a polygon has non-finite coordinates"
        limit = np.array([width, height]) + VERTEX_TOLERANCE
        outside = ((coords < -VERTEX_TOLERANCE) | (coords > limit)).any(1)
        if outside.any():
            x, y = coords[outside.argmax()]
            return f"polygon vertex ({x:g}, {y:g}) outside the {width}x{height} image"
    return None


def _rle_problem(rle: dict[str, Any], height: int, width: int) -> str | None:
    size = [int(v) for v in rle["size"]]
    if size != [height, width]:
        return f"RLE size {size[1]}x{size[0]} differs from the {width}x{height} image"
    counts = rle["counts"]
    runs = rle_string_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if min(runs, default=0) < 0 or sum(runs) != height * width:
        return f"RLE runs cover {sum(runs)} pixels, not the image's {height * width}"
    return None


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one checked segmentation to a [height, width] bool mask (COCO `annToMask`)."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= MIN_POLYGON_COORDS]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": [height, width], "counts": segmentation["counts"].encode("ascii")}
    with warnings.catch_warnings():
        # pycocotools 2.0.x builds its output with numpy 1 semantics; harmless under numpy 2.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def union_mask(segmentations: tuple[Any, ...], height: int, width: int) -> np.ndarray:
    """[height, width] bool union of all segmentations of one image."""
    mask = np.zeros((height, width), dtype=bool)
    for segmentation in segmentations:
        mask |= segmentation_mask(segmentation, height, width)
    return mask


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read COCO JSON ({error})") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
        raise UserError(
            f"{path}: not a COCO instances file (needs images, annotations, categories)"
        )
    return data


def read_coco_images(path: Path) -> tuple[list[CocoImage], dict[str, int]]:
    """Images of a COCO instances JSON with the segmentations of their annotations.

    Returns:
        (images sorted by id, category name -> id). Raises UserError naming the file for a
        malformed record or an annotation of an unknown image or category. Segmentations are
        checked separately (`check_segmentations`), only for the images that are used.
    """
    data = _load_json(path)
    try:
        categories = {str(c["name"]): int(c["id"]) for c in data["categories"]}
        records = {int(im["id"]): im for im in data["images"]}
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for annotation in data["annotations"]:
            grouped[int(annotation["image_id"])].append(annotation)
        images = [_coco_image(records[i], grouped.get(i, [])) for i in sorted(records)]
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: malformed COCO record (missing or bad {error})") from None
    for image_id, orphans in grouped.items():
        if image_id not in records:
            raise UserError(
                f"{path}: annotation {orphans[0].get('id')} refers to image_id {image_id},"
                " which is not in 'images'"
            )
    known = set(categories.values())
    for image in images:
        unknown = image.category_ids - known
        if unknown:
            raise UserError(
                f"{path}: image {image.image_id} has annotations of unknown category_id"
                f" {min(unknown)}"
            )
    return images, categories


def _coco_image(record: dict[str, Any], annotations: list[dict[str, Any]]) -> CocoImage:
    return CocoImage(
        image_id=int(record["id"]),
        file_name=str(record["file_name"]),
        height=int(record["height"]),
        width=int(record["width"]),
        segmentations=tuple(a["segmentation"] for a in annotations),
        category_ids=frozenset(int(a["category_id"]) for a in annotations),
    )


def check_segmentations(path: Path, image: CocoImage) -> None:
    """UserError naming the JSON file if a segmentation of `image` does not fit it."""
    for segmentation in image.segmentations:
        problem = segmentation_problem(segmentation, image.height, image.width)
        if problem is not None:
            raise UserError(
                f"{path}: annotation of image {image.image_id} ({image.file_name}): {problem}"
            )
