"""SMIYC component-level metrics: sIoU, PPV, F1 per sIoU threshold and mean F1 (F1*).

Spec ../shared/spec/benchmarks.md A.3 (SMIYC `metrics/instance_segmentation.py`): binarise at the
pixel-F1-optimal threshold of the `smiyc` pixel curve with a strict `>`, remove void from the
prediction, 8-connected components, per-track size limits (small GT components become void), the
A(k) term in sIoU, false positives counted by PPV < tau, counts pooled over the dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..config import IGNORE_INDEX, TrackName

SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11)  # the 8th is 0.6000000000000001, as in SMIYC
REPORTED_THRESHOLDS = {"f1_25": 0, "f1_50": 5, "f1_75": 10}  # indices into SIOU_THRESHOLDS
CONNECTIVITY = np.ones((3, 3), dtype=bool)  # 8-connectivity


@dataclass(frozen=True)
class Track:
    """Size limits of a SMIYC track, in pixels (A.3 table)."""

    min_pred_size: int  # predicted components smaller than this are deleted
    min_gt_size: int  # ground-truth components smaller than this become void


TRACKS: dict[TrackName, Track] = {"anomaly": Track(500, 100), "obstacle": Track(50, 10)}


@dataclass(frozen=True)
class ComponentResult:
    """Dataset-level component metrics (fractions in [0, 1], NaN where undefined): sIoU, PPV,
    sIoU over predictions, F1* (mean F1 over the 11 sIoU thresholds tau) and F1 at tau 0.25 /
    0.5 / 0.75; the binarisation threshold, the track's size limits, the component counts and
    the pooled tp / fn / fp per tau."""

    siou: float
    ppv: float
    siou_pred: float
    f1_mean: float
    f1_25: float
    f1_50: float
    f1_75: float
    threshold: float
    min_pred_size: int
    min_gt_size: int
    num_gt_components: int
    num_pred_components: int
    tp: tuple[int, ...]
    fn: tuple[int, ...]
    fp: tuple[int, ...]

    def to_dict(self) -> dict[str, float | int | list[int]]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class FrameComponents:
    """Per-component results of one frame: siou_gt [N] per GT component (ascending ids),
    ppv [M] and siou_pred [M] per predicted component (ascending ids)."""

    siou_gt: np.ndarray
    ppv: np.ndarray
    siou_pred: np.ndarray


def component_maps(
    score: np.ndarray, label: np.ndarray, threshold: float, track: Track
) -> tuple[np.ndarray, np.ndarray]:
    """GT and predicted component ids on the evaluated pixels, as SMIYC's `default_instancer`.

    Args:
        score: [H, W] anomaly scores; predicted anomaly where score > threshold (float64 compare).
        label: [H, W] 1 anomaly, 255 void, other values inlier.

    Returns:
        gt_ids [P], pred_ids [P] (0 = none) for the P pixels left in the region of interest.
    """
    score, label = np.asarray(score), np.asarray(label)
    if score.shape != label.shape or score.ndim != 2:
        raise ValueError(f"score map {score.shape} and label {label.shape} differ in size")
    predicted = (score.astype(np.float64) > threshold) & (label != IGNORE_INDEX)
    gt_ids, _ = ndimage.label(label == 1, structure=CONNECTIVITY)
    pred_ids, num_pred = ndimage.label(predicted, structure=CONNECTIVITY)
    keep = np.arange(num_pred + 1)
    keep[np.bincount(pred_ids.ravel(), minlength=num_pred + 1) < track.min_pred_size] = 0
    pred_ids = keep[pred_ids]
    # Small GT components become void; as in SMIYC the test includes id 0 (the background).
    small_gt = np.bincount(gt_ids.ravel()) < track.min_gt_size
    roi = (label < IGNORE_INDEX) & ~small_gt[gt_ids]
    return gt_ids[roi], pred_ids[roi]


def frame_components(gt_ids: np.ndarray, pred_ids: np.ndarray) -> FrameComponents:
    """sIoU of every GT component and PPV / sIoU of every predicted component.

    sIoU(k) = |k & K^| / (|K^| + |k| - |k & K^| - |K^ & A(k)|), K^ = union of the predicted
    components touching k, A(k) = pixels of the other GT components; PPV = share of a predicted
    component's pixels on GT anomaly. Computed from the (GT id, predicted id) contingency.
    """
    num_gt, num_pred = int(gt_ids.max(initial=0)), int(pred_ids.max(initial=0))
    size_gt = np.bincount(gt_ids, minlength=num_gt + 1)
    size_pred = np.bincount(pred_ids, minlength=num_pred + 1)
    both = (gt_ids > 0) & (pred_ids > 0)
    keys, overlap = np.unique(
        gt_ids[both].astype(np.int64) * (num_pred + 1) + pred_ids[both], return_counts=True
    )
    pair_gt, pair_pred = keys // (num_pred + 1), keys % (num_pred + 1)

    def per(ids: np.ndarray, weights: np.ndarray, length: int) -> np.ndarray:
        return np.bincount(ids, weights=weights, minlength=length).astype(np.int64)

    gt_in_pred = per(pair_pred, overlap, num_pred + 1)  # GT pixels inside each prediction
    pred_in_gt = per(pair_gt, overlap, num_gt + 1)  # predicted pixels inside each GT component
    union_gt = (
        per(pair_gt, size_pred[pair_pred], num_gt + 1)
        + size_gt
        - pred_in_gt
        - per(pair_gt, gt_in_pred[pair_pred] - overlap, num_gt + 1)
    )
    union_pred = (
        per(pair_pred, size_gt[pair_gt], num_pred + 1)
        + size_pred
        - gt_in_pred
        - per(pair_pred, pred_in_gt[pair_gt] - overlap, num_pred + 1)
    )
    gt = np.flatnonzero(size_gt[1:]) + 1
    pred = np.flatnonzero(size_pred[1:]) + 1
    return FrameComponents(
        siou_gt=pred_in_gt[gt] / union_gt[gt],
        ppv=gt_in_pred[pred] / size_pred[pred],
        siou_pred=gt_in_pred[pred] / union_pred[pred],
    )


class ComponentMetrics:
    """Streaming SMIYC "SegEval" metrics; O(1) numbers kept per frame.

    Args:
        threshold: binarisation threshold, the `best_f1_threshold` of the smiyc pixel curve.
        track: "anomaly" (500/100 px) or "obstacle" (50/10 px), or a Track.
    """

    def __init__(self, threshold: float, track: TrackName | Track = "anomaly") -> None:
        self.threshold = float(threshold)
        self.track = TRACKS[track] if isinstance(track, str) else track
        self._sums = np.zeros(3)  # sIoU over GT, PPV, sIoU over predictions
        self._counts = np.zeros(2, np.int64)  # GT components, predicted components
        self._tp_fn_fp = np.zeros((3, len(SIOU_THRESHOLDS)), np.int64)
        self.num_frames = 0

    def update(self, score: np.ndarray, label: np.ndarray) -> FrameComponents:
        """Add one frame (score [H, W], label [H, W]); returns its per-component results."""
        frame = frame_components(*component_maps(score, label, self.threshold, self.track))
        for i, values in enumerate((frame.siou_gt, frame.ppv, frame.siou_pred)):
            self._sums[i] += np.sum(values)
        self._counts += (len(frame.siou_gt), len(frame.ppv))
        tau = SIOU_THRESHOLDS[:, None]
        self._tp_fn_fp += np.stack([
            np.count_nonzero(frame.siou_gt >= tau, axis=1),
            np.count_nonzero(frame.siou_gt < tau, axis=1),
            np.count_nonzero(frame.ppv < tau, axis=1),
        ])  # fmt: skip
        self.num_frames += 1
        return frame

    def merge(self, other: ComponentMetrics) -> None:
        self._sums += other._sums
        self._counts += other._counts
        self._tp_fn_fp += other._tp_fn_fp
        self.num_frames += other.num_frames

    def compute(self) -> ComponentResult:
        """sIoU, PPV, F1* (mean over the 11 tau), f1_25/50/75, pooled tp/fn/fp per tau."""
        tp, fn, fp = self._tp_fn_fp
        num_gt, num_pred = (int(n) for n in self._counts)
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = 2 * tp / (2 * tp + fn + fp)
        return ComponentResult(
            siou=float(self._sums[0] / num_gt) if num_gt else np.nan,
            ppv=float(self._sums[1] / num_pred) if num_pred else np.nan,
            siou_pred=float(self._sums[2] / num_pred) if num_pred else np.nan,
            f1_mean=sum(f1.tolist()) / len(f1),  # summed in tau order, as SMIYC does
            **{name: float(f1[i]) for name, i in REPORTED_THRESHOLDS.items()},
            threshold=self.threshold,
            min_pred_size=self.track.min_pred_size,
            min_gt_size=self.track.min_gt_size,
            num_gt_components=num_gt,
            num_pred_components=num_pred,
            tp=tuple(tp.tolist()),
            fn=tuple(fn.tolist()),
            fp=tuple(fp.tolist()),
        )


def component_metrics(
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    track: TrackName | Track = "anomaly",
) -> ComponentResult:
    """One-shot helper: component metrics of (score [H, W], label [H, W]) frames binarised at
    `threshold` (strict >), with the size limits of `track`."""
    accumulator = ComponentMetrics(threshold, track)
    for score, label in frames:
        accumulator.update(score, label)
    return accumulator.compute()
