"""Open-set segmentation metrics as the ISSU benchmark defines them (Vojíř et al., CVPR 2025;
vojirt/benchmark_issu, benchmark/metrics/pixel_recognition.py, `MetricPixelRecognition`).

Ground truth over K+1 classes (`open_set_label`): the known classes 0..K-1, the anomaly as class
K, void 255. At a threshold t a pixel is predicted K where its anomaly score is > t (strict),
else the closed-set label. Confusion matrices are summed over the frames of the split (a
dataset-level IoU), IoU_c = CM_cc / (row_c + col_c - CM_cc), and

* open-set mIoU = (1/K) sum_{c<K} IoU_c over the pixels of known classes and anomalies (the
  unknown class itself is left out of the mean; a class absent from labels and predictions
  counts 0, as ISSU's nansum / K does);
* closed-set mIoU = the same over the K known classes, on the pixels of known classes only,
  with the closed-set labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import IGNORE_INDEX


def open_set_label(semantic: np.ndarray, anomaly: np.ndarray, num_classes: int) -> np.ndarray:
    """uint8 [H, W] K+1-class label: K where `anomaly` (0 / 1 / 255) is 1, else the train ID
    of `semantic` where it is a known class (< K), else void (255)."""
    if semantic.shape != anomaly.shape:
        raise ValueError(
            f"semantic label {semantic.shape} and anomaly label {anomaly.shape} differ"
        )
    label = np.where(semantic < num_classes, semantic, IGNORE_INDEX).astype(np.uint8)
    label[anomaly == 1] = num_classes
    return label


def _iou(matrix: np.ndarray) -> np.ndarray:
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _mean_known(iou: np.ndarray, num_classes: int) -> float:
    """ISSU's mean: nansum over the K known classes / K."""
    return float(np.nansum(iou[:num_classes]) / num_classes)


@dataclass(frozen=True)
class OpenSetMetrics:
    """Closed-set mIoU, and open-set mIoU per named threshold (NaN where the threshold is
    undefined), with the thresholds and the IoU of each class (K known + unknown)."""

    closed_miou: float
    open_miou: dict[str, float]
    thresholds: dict[str, float]
    closed_iou: tuple[float, ...]
    open_iou: dict[str, tuple[float, ...]]
    num_frames: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "closed_miou": self.closed_miou,
            "open_miou": dict(self.open_miou),
            "thresholds": dict(self.thresholds),
            "closed_iou": list(self.closed_iou),
            "open_iou": {name: list(iou) for name, iou in self.open_iou.items()},
            "num_frames": self.num_frames,
        }


class OpenSetIoU:
    """Streaming ISSU open-set IoU at several thresholds, and the closed-set IoU.

    Args:
        num_classes: K known classes.
        thresholds: name -> threshold t (pixels with score > t become class K); NaN: skipped.
    """

    def __init__(self, num_classes: int, thresholds: Mapping[str, float]) -> None:
        self.num_classes = num_classes
        self.thresholds = dict(thresholds)
        size = num_classes + 1
        self.open = {name: np.zeros((size, size), np.int64) for name in self.thresholds}
        self.closed = np.zeros((num_classes, num_classes), np.int64)
        self.num_frames = 0

    def update(self, score: np.ndarray, prediction: np.ndarray, label: np.ndarray) -> None:
        """One frame: anomaly score [H, W], closed-set labels [H, W] (0..K-1), K+1 label [H, W]
        (`open_set_label`)."""
        k = self.num_classes
        if not score.shape == prediction.shape == label.shape:
            raise ValueError(
                f"score {score.shape}, prediction {prediction.shape} and label {label.shape} "
                "differ in size"
            )
        roi = label <= k
        truth, predicted, values = label[roi].astype(np.int64), prediction[roi], score[roi]
        if predicted.size and int(predicted.max()) >= k:
            raise ValueError(f"closed-set prediction holds class {int(predicted.max())} >= K={k}")
        predicted = predicted.astype(np.int64)
        for name, threshold in self.thresholds.items():
            if math.isnan(threshold):
                continue
            opened = np.where(values > threshold, k, predicted)
            self.open[name] += np.bincount(truth * (k + 1) + opened, minlength=(k + 1) ** 2
                                           ).reshape(k + 1, k + 1)  # fmt: skip
        known = truth < k
        self.closed += np.bincount(truth[known] * k + predicted[known], minlength=k * k).reshape(
            k, k
        )
        self.num_frames += 1

    def compute(self) -> OpenSetMetrics:
        k = self.num_classes
        closed_iou = _iou(self.closed)
        open_iou = {}
        for name, threshold in self.thresholds.items():
            undefined = math.isnan(threshold) or not self.num_frames
            open_iou[name] = np.full(k + 1, np.nan) if undefined else _iou(self.open[name])
        return OpenSetMetrics(
            closed_miou=_mean_known(closed_iou, k) if self.num_frames else math.nan,
            open_miou={
                name: math.nan if np.isnan(iou).all() else _mean_known(iou, k)
                for name, iou in open_iou.items()
            },
            thresholds=dict(self.thresholds),
            closed_iou=tuple(float(v) for v in closed_iou),
            open_iou={name: tuple(float(v) for v in iou) for name, iou in open_iou.items()},
            num_frames=self.num_frames,
        )
