"""Anomaly instances (issue 17): objects, not pixels, from an anomaly map or from the model's own
query masks, and their COCO run-length encoding.

* `components`: 8-connected components of "score > threshold"; components smaller than
  `min_area` pixels are dropped.
* `queries`: each query's binarised mask (sigmoid > 0.5 at image size, `Prediction.query_masks`)
  whose mean anomaly score inside exceeds the threshold is a candidate (at least `min_area`
  pixels); candidates are taken by that mean, highest first, each keeping only the pixels no
  higher one took, and dropped when fewer than `min_area` pixels remain.

Confidence: the mean anomaly score over the instance's pixels (or the max). Arrays in,
instances out; masks are kept cropped to their box, so a frame's many small components cost
little memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

from .component_metrics import CONNECTIVITY

InstanceMethod = Literal["components", "queries"]
Confidence = Literal["mean", "max"]
METHODS: tuple[InstanceMethod, ...] = ("components", "queries")
CONFIDENCES: tuple[Confidence, ...] = ("mean", "max")
MIN_AREA = 10  # pixels; the smallest region OoDIS evaluates (its minRegionSizes)
QUERY_MASK_THRESHOLD = 0.5  # a query's pixel: sigmoid(mask logit) > 0.5, as Mask2Former does
ANOMALY_CATEGORY = 1  # category id of every instance in the COCO-style files


@dataclass(frozen=True)
class Instance:
    """One anomaly instance: `crop` bool [h, w] is its mask inside `box` = (x, y, width, height)
    (COCO order, pixels) of an image of `size` (H, W); `area` its pixels; `confidence` the mean
    (or max) anomaly score inside; `query` the query it came from (method `queries`)."""

    crop: np.ndarray
    box: tuple[int, int, int, int]
    size: tuple[int, int]
    area: int
    confidence: float
    query: int | None = None

    @property
    def mask(self) -> np.ndarray:
        """bool [H, W] at image size."""
        full = np.zeros(self.size, bool)
        x, y, w, h = self.box
        full[y : y + h, x : x + w] = self.crop
        return full

    @property
    def rows(self) -> slice:
        return slice(self.box[1], self.box[1] + self.box[3])

    @property
    def cols(self) -> slice:
        return slice(self.box[0], self.box[0] + self.box[2])

    def to_coco(self, index: int) -> dict[str, Any]:
        """COCO-style result: id, category_id, segmentation (compressed RLE), area, bbox, score."""
        record: dict[str, Any] = {
            "id": index,
            "category_id": ANOMALY_CATEGORY,
            "segmentation": encode_rle(self.mask),
            "area": self.area,
            "bbox": list(self.box),
            "score": self.confidence,
        }
        if self.query is not None:
            record["query"] = self.query
        return record


def instance_from_mask(
    mask: np.ndarray, score: np.ndarray, confidence: Confidence = "mean", query: int | None = None
) -> Instance | None:
    """The instance of bool mask [H, W] (None when empty), confidence from score [H, W]."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return _cropped(mask, score, (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)),
                    confidence, query)  # fmt: skip


def _cropped(
    mask: np.ndarray,
    score: np.ndarray,
    box: tuple[slice, slice],
    confidence: Confidence,
    query: int | None = None,
) -> Instance:
    crop = np.ascontiguousarray(mask[box])
    inside = np.asarray(score[box][crop], np.float64)
    value = float(inside.mean() if confidence == "mean" else inside.max())
    rows, cols = box
    return Instance(crop, (int(cols.start), int(rows.start), crop.shape[1], crop.shape[0]),
                    (int(mask.shape[0]), int(mask.shape[1])), int(inside.size), value,
                    query)  # fmt: skip


def _ranked(instances: list[Instance]) -> list[Instance]:
    """Highest confidence first (stable: ties keep their order)."""
    return sorted(instances, key=lambda instance: -instance.confidence)


def component_instances(
    score: np.ndarray,
    threshold: float,
    *,
    min_area: int = MIN_AREA,
    confidence: Confidence = "mean",
) -> list[Instance]:
    """8-connected components of score [H, W] > threshold with at least `min_area` pixels,
    highest confidence first."""
    check_options(min_area, confidence)
    score = np.asarray(score)
    components, _ = ndimage.label(score > threshold, structure=CONNECTIVITY)
    found = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        own = components[box] == index
        if np.count_nonzero(own) >= min_area:
            crop_score = score[box]
            inside = np.asarray(crop_score[own], np.float64)
            value = float(inside.mean() if confidence == "mean" else inside.max())
            rows, cols = box
            found.append(Instance(own, (cols.start, rows.start, own.shape[1], own.shape[0]),
                                  score.shape, int(inside.size), value))  # fmt: skip
    return _ranked(found)


def query_instances(
    query_masks: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    min_area: int = MIN_AREA,
    confidence: Confidence = "mean",
) -> list[Instance]:
    """Instances from binarised query masks bool [Q, H, W] (module docstring: a query whose mean
    score inside exceeds `threshold`; overlaps go to the higher mean), highest confidence
    first."""
    check_options(min_area, confidence)
    score = np.asarray(score)
    candidates = []
    for q, mask in enumerate(query_masks):
        area = int(np.count_nonzero(mask))
        if area >= min_area:
            mean = float(np.asarray(score[mask], np.float64).mean())
            if mean > threshold:
                candidates.append((-mean, q))
    taken = np.zeros(score.shape, bool)
    found = []
    for _, q in sorted(candidates):
        own = query_masks[q] & ~taken
        if np.count_nonzero(own) >= min_area:
            taken |= own
            instance = instance_from_mask(own, score, confidence, query=q)
            if instance is not None:
                found.append(instance)
    return _ranked(found)


def extract_instances(
    method: InstanceMethod,
    score: np.ndarray,
    threshold: float,
    *,
    query_masks: np.ndarray | None = None,
    min_area: int = MIN_AREA,
    confidence: Confidence = "mean",
) -> list[Instance]:
    """`component_instances` or `query_instances` by name (queries need `query_masks`)."""
    if method == "components":
        return component_instances(score, threshold, min_area=min_area, confidence=confidence)
    if method == "queries":
        if query_masks is None:
            raise ValueError("the queries method needs the query masks")
        return query_instances(query_masks, score, threshold, min_area=min_area,
                               confidence=confidence)  # fmt: skip
    raise ValueError(f"unknown instance method {method!r}; choose from {', '.join(METHODS)}")


def check_options(min_area: int, confidence: str) -> None:
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
        raise ValueError(f"min_area must be a positive number of pixels, got {min_area!r}")
    if confidence not in CONFIDENCES:
        raise ValueError(f"confidence {confidence!r}: choose from {', '.join(CONFIDENCES)}")


# -- COCO run-length encoding ---------------------------------------------------------------


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """bool [H, W] -> COCO compressed RLE {"size": [H, W], "counts": str} (pycocotools)."""
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO compressed RLE -> bool [H, W]."""
    data = {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}
    with warnings.catch_warnings():
        # pycocotools 2.0.x builds its output with numpy 1 semantics; harmless under numpy 2.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return coco_mask.decode(data).astype(bool)


def encode_masks(masks: np.ndarray | Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """bool [N, H, W] -> N compressed RLEs (the query masks an evaluation stores)."""
    return [encode_rle(mask) for mask in masks]
