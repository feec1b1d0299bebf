"""COCO-format outlier images of the synthetic world (spec benchmarks.md E.2).

`render_outlier_image` draws a few training-outlier objects (animals, furniture, balls, ...) on
a plain textured background, without overlaps, and returns each object's mask with its COCO
annotation: polygons (the drawn polygons themselves, so PIL rasterises them back exactly) or, for
crowd groups, an uncompressed column-major RLE. Some images show excluded categories (person,
car, traffic light, ...) and some are smaller than the outlier filter's minimum side, so the
selection filter has work to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canvas import Canvas, Part
from .objects import (
    COCO_IDS,
    CROWD_FAMILIES,
    EXCLUDED_FAMILIES,
    OUTLIER_FAMILIES,
    family_parts,
)
from .things import pick, place

COCO_MIN_SIDE = 480  # the MetaOOD outlier filter keeps images with height and width >= 480 (E.2)
IMAGE_KINDS = ("outlier", "excluded", "small")
SUPERCATEGORY = {1: "person", 2: "vehicle", 3: "vehicle", 4: "vehicle", 6: "vehicle",
                 8: "vehicle", 10: "outdoor", 13: "outdoor", 28: "accessory", 33: "accessory",
                 37: "sports", 60: "food", 62: "furniture", 63: "furniture", 67: "furniture",
                 85: "indoor", 88: "indoor"}  # fmt: skip


@dataclass(frozen=True)
class OutlierObject:
    """One annotated object: COCO category id, visible mask [H, W] bool, polygons (flat
    [x1, y1, x2, y2, ...] lists in pixels; empty for crowd) and whether it is a crowd (RLE)."""

    category_id: int
    mask: np.ndarray
    polygons: list[list[float]]
    iscrowd: bool


@dataclass(frozen=True)
class OutlierImage:
    """image: [H, W, 3] uint8 RGB; objects: its annotations."""

    image: np.ndarray
    objects: list[OutlierObject]


def coco_categories() -> list[dict]:
    """COCO `categories` entries (real ids and names) of every family drawn."""
    return [
        {"id": cid, "name": name, "supercategory": SUPERCATEGORY.get(cid, "animal")}
        for name, cid in sorted(COCO_IDS.items(), key=lambda item: item[1])
    ]


def rle_encode(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a [H, W] bool mask: column-major runs starting with zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO bbox [x, y, w, h] of the mask's pixels."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]  # fmt: skip


def _background(rng: np.random.Generator, canvas: Canvas) -> None:
    """A wall above a floor (or sky above grass), both textured."""
    split = int(canvas.height * rng.uniform(0.3, 0.8))
    for rows, palette in (
        (slice(0, split), [(200, 190, 170), (150, 170, 200), (120, 110, 100)]),
        (slice(split, None), [(140, 110, 80), (90, 120, 60), (170, 170, 165)]),
    ):
        colour = np.asarray(pick(rng, palette, 15), np.float32)
        gain = 1 + 0.05 * canvas.fine[rows] + 0.1 * canvas.medium[rows]
        canvas.image[rows] = colour * gain[..., None]


Box = tuple[float, float, float, float]
Group = list[tuple[list[Part], float, bool]]  # members: (parts in unit coordinates, px, flip)


def _free_spot(
    rng: np.random.Generator, size: np.ndarray, region: Box, boxes: list[Box]
) -> tuple[float, float] | None:
    """Bottom-centre origin of a (w, h) box inside region (x0, y0, x1, y1) that keeps a 3 px
    margin from `boxes`; None after 40 tries."""
    w, h = size
    x0, y0, x1, y1 = region
    for _ in range(40):
        left, top = rng.uniform(x0, max(x1 - w, x0)), rng.uniform(y0, max(y1 - h, y0))
        box = (left - 3, top - 3, left + w + 3, top + h + 3)
        if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in boxes):
            boxes.append(box)
            return left + w / 2, top + h
    return None


def _object_parts(rng: np.random.Generator, family: str, height_px: float, members: int) -> Group:
    """Parts of one object (members == 1) or of a crowd group of small members."""
    groups = []
    for _ in range(members):
        parts = family_parts(rng, family)
        scale = height_px * (1.0 if members == 1 else rng.uniform(0.25, 0.4))
        groups.append((parts, scale, bool(rng.random() < 0.5)))
    return groups


def _place_group(
    rng: np.random.Generator,
    canvas: Canvas,
    groups: Group,
    region: Box,
    boxes: list[Box],
    instance: int,
) -> list[np.ndarray] | None:
    """Paint the members of one annotation at a free spot; returns its polygons or None."""
    extents = []
    for parts, scale, _ in groups:
        points = np.concatenate([p for part in parts for p in part.polygons]) * scale
        extents.append(points.max(0) - points.min(0) + 2)
    spread = 1.0 if len(groups) == 1 else 2.2
    size = np.max(extents, axis=0) * spread
    origin = _free_spot(rng, size, region, boxes)
    if origin is None:
        return None
    polygons = []
    for parts, scale, flip in groups:
        offset = (0.0, 0.0) if len(groups) == 1 else rng.uniform(-0.25, 0.25, 2) * size
        placed = place(parts, (origin[0] + offset[0], origin[1] - abs(offset[1])), scale, flip)
        for part in placed:
            part.polygons = [np.round(p, 2) for p in part.polygons]
            part.holes = [np.round(p, 2) for p in part.holes] if len(groups) > 1 else []
            part.instance = instance
            canvas.paint(part)
            polygons += part.polygons
    return polygons


def render_outlier_image(
    rng: np.random.Generator, kind: str, object_size: tuple[float, float]
) -> OutlierImage:
    """Render one COCO-style image with at least one annotated object.

    Args:
        rng: source of all randomness.
        kind: "outlier" (training-outlier objects only, both sides >= COCO_MIN_SIDE),
            "excluded" (also an excluded category such as person or car) or "small" (outlier
            objects, one side below COCO_MIN_SIDE).
        object_size: (min, max) object size (larger side) in pixels.
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"kind must be one of {IMAGE_KINDS}, got {kind!r}")
    excluded_ids = {COCO_IDS[name] for name in EXCLUDED_FAMILIES}
    for _ in range(100):  # redraw (rarely) until the image has what its kind promises
        rendered = _render_outlier_once(rng, kind, object_size)
        first = rendered.objects[0].category_id if rendered.objects else None
        if first is not None and (kind != "excluded") == (first not in excluded_ids):
            return rendered
    raise RuntimeError(f"could not place {kind} objects of size {object_size} in 100 images")


def _render_outlier_once(
    rng: np.random.Generator, kind: str, object_size: tuple[float, float]
) -> OutlierImage:
    low = 240 if kind == "small" else COCO_MIN_SIDE
    height = int(rng.integers(low, COCO_MIN_SIDE if kind == "small" else 577))
    width = int(rng.integers(COCO_MIN_SIDE, 641))
    canvas = Canvas(rng, height, width)
    _background(rng, canvas)
    families = [OUTLIER_FAMILIES[i] for i in rng.integers(len(OUTLIER_FAMILIES), size=3)]
    families = families[: rng.integers(1, 4)]
    crowd = [str(rng.choice(CROWD_FAMILIES))] if rng.random() < 0.3 else []
    if kind == "excluded":
        families.insert(0, str(rng.choice(EXCLUDED_FAMILIES)))
    side = min(width, height, 2.4 * object_size[1])
    x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
    region = (x0, y0, x0 + side, y0 + side)
    boxes: list[tuple[float, float, float, float]] = []
    objects: list[OutlierObject] = []
    for index, family in enumerate(families + crowd, start=1):
        members = int(rng.integers(3, 7)) if index > len(families) else 1
        object_height = rng.uniform(*object_size) * (1.6 if family in EXCLUDED_FAMILIES else 1)
        groups = _object_parts(rng, family, min(object_height, side - 8), members)
        polygons = _place_group(rng, canvas, groups, region, boxes, index)
        if polygons is None:
            continue
        mask = canvas.instances == index  # objects never overlap: the union of their parts
        if mask.any():
            flat = [] if members > 1 else [p.ravel().tolist() for p in polygons]
            objects.append(OutlierObject(COCO_IDS[family], mask, flat, members > 1))
    image = canvas.finish(rng, blur=rng.uniform(0, 0.6), noise=rng.uniform(1, 3))
    return OutlierImage(image, objects)


def annotation(obj: OutlierObject, annotation_id: int, image_id: int) -> dict:
    """COCO `annotations` entry of one object (area and bbox from its mask)."""
    segmentation = rle_encode(obj.mask) if obj.iscrowd else obj.polygons
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": obj.category_id,
        "segmentation": segmentation,
        "area": float(np.count_nonzero(obj.mask)),
        "bbox": mask_bbox(obj.mask),
        "iscrowd": int(obj.iscrowd),
    }
