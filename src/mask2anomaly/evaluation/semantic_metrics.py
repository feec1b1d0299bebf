"""Inlier segmentation metrics: a streaming confusion matrix, IoU per class and mIoU (spec
benchmarks.md E.1: Cityscapes train IDs, 255 ignored)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import IGNORE_INDEX


@dataclass(frozen=True)
class SemanticMetrics:
    """Inlier segmentation: mIoU over the classes that occur in labels or predictions, and the
    IoU of each class [K] (NaN for classes that occur in neither)."""

    miou: float
    iou: tuple[float, ...]

    def to_dict(self) -> dict[str, float | list[float]]:
        return {"miou": self.miou, "iou": list(self.iou)}


class ConfusionMatrix:
    """Streaming K x K confusion matrix of train IDs; IoU per class and mIoU.

    Args:
        num_classes: K (19 for Cityscapes).
        ignore_index: label value left out (255).
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), np.int64)  # last column: pred >= K

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """prediction, label: [H, W] integer train IDs (predictions outside 0..K-1 are wrong)."""
        prediction, label = np.asarray(prediction).ravel(), np.asarray(label).ravel()
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {prediction.shape} and label {label.shape} differ")
        valid = (label != self.ignore_index) & (label >= 0) & (label < self.num_classes)
        pred = prediction[valid].astype(np.int64)
        pred[(pred < 0) | (pred >= self.num_classes)] = self.num_classes
        k = self.num_classes + 1
        self.matrix += np.bincount(
            label[valid].astype(np.int64) * k + pred, minlength=self.num_classes * k
        ).reshape(self.num_classes, k)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def compute(self) -> SemanticMetrics:
        tp = np.diag(self.matrix[:, : self.num_classes]).astype(np.float64)
        union = self.matrix.sum(axis=1) + self.matrix[:, : self.num_classes].sum(axis=0) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else np.nan
        return SemanticMetrics(miou, tuple(float(v) for v in iou))
