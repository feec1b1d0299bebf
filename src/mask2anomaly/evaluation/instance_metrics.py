"""Instance-level AP and AP50 of anomaly instances, as OoDIS computes them (issue 17).

OoDIS (Nekrasov et al., 2024; kumuji/anomaly-benchmark-suite, scoring_program/evaluate.py) runs
the Cityscapes instance evaluator (cityscapesScripts, evalInstanceLevelSemanticLabeling.py) with
every prediction as one class and a minimum region size of 10 pixels. The rules, per IoU
threshold t in 0.5, 0.55, ..., 0.95 (`OVERLAPS`):

* ground truth: instances of at least `min_region_size` pixels are evaluated; smaller ones and
  groups (a class id without an instance id) are not, and with void pixels they are *ignore*;
* a prediction matches an evaluated instance when IoU > t (full pixel counts); each matched
  instance is one true positive with its best match's confidence, its other matches are false
  positives; an instance nobody matches is a false negative (no score);
* a prediction that matches no region at all is a false positive unless more than a fraction t
  of its pixels are ignore pixels (void, plus its overlap with groups and with small instances,
  counted once for each of the two reasons); one whose IoU with a group or small instance
  exceeds t counts nowhere; empty predictions count nowhere;
* AP at t, pooled over frames: the precision-recall points at every distinct confidence (plus
  the point recall 0, precision 1), integrated by the trapezoidal rule over recall (the
  reference's step widths (r[i-1] - r[i+1]) / 2); 0 with ground truth but no prediction, NaN
  without ground truth, and 0 where no prediction and no instance entered the curve (the
  reference fails there). AP is the mean over t, AP50 the value at t = 0.5.

`InstanceAP` streams over frames: per frame only each prediction's overlaps with the regions
(computed inside its box) are kept, so memory grows with the number of instances, not frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .component_metrics import CONNECTIVITY
from .instances import Instance

OVERLAPS = np.arange(0.5, 1.0, 0.05)  # the reference's exact floats (0.6000000000000001, ...)
MIN_REGION_SIZE = 10  # pixels: OoDIS's minRegionSizes (cityscapesScripts' default is 100)
# Cityscapes label ids (cityscapesscripts helpers/labels.py): ignoreInEval classes are void;
# classes with instances are evaluated (OoDIS encodes every anomaly as car, 26000 + k).
VOID_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)
INSTANCE_CLASS_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
NUM_LABEL_IDS = 34  # ids 0..33
ANOMALY_LABEL_ID = 26  # the class OoDIS gives every instance (car)
ANOMALY = 1  # the anomaly value of a 0 / 1 / 255 label
VOID = 255

_BACKGROUND, _VOID, _GROUP, _INSTANCE, _INVALID = range(5)


def _kinds() -> np.ndarray:
    """uint16 pixel value -> what it is in the instanceIds encoding."""
    kinds = np.full(1 << 16, _INVALID, np.uint8)
    kinds[:NUM_LABEL_IDS] = _BACKGROUND
    kinds[list(VOID_IDS)] = _VOID
    kinds[list(INSTANCE_CLASS_IDS)] = _GROUP
    values = np.arange(1000, 1 << 16)
    label_ids = values // 1000
    kinds[values[label_ids < NUM_LABEL_IDS]] = _BACKGROUND  # instances of stuff classes
    kinds[values[np.isin(label_ids, INSTANCE_CLASS_IDS)]] = _INSTANCE
    return kinds


_KINDS = _kinds()


@dataclass(frozen=True)
class InstanceTruth:
    """A frame's ground-truth regions: `regions` int32 [H, W] (0 none, 1..R a region),
    `is_instance` bool [R + 1] (False: a group, never evaluated; [0] unused), `void` bool
    [H, W], `sizes` int64 [R + 1] the regions' pixels ([0] unused)."""

    regions: np.ndarray
    is_instance: np.ndarray
    void: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_instance_ids(cls, ids: np.ndarray) -> InstanceTruth:
        """Cityscapes instanceIds [H, W] (a 16-bit PNG): v >= 1000 is instance v of class
        v // 1000, a class id alone is a group (instance classes), a stuff label or void.

        Raises:
            ValueError: not a 2-D integer array, or values that are no Cityscapes id.
        """
        if ids.ndim != 2 or ids.dtype.kind not in "ui":
            raise ValueError(f"expected one channel of integers, got {ids.dtype} {ids.shape}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 1 << 16):
            raise ValueError("values outside 0..65535")
        ids = ids.astype(np.uint16, copy=False)
        kinds = _KINDS[ids]
        invalid = kinds == _INVALID
        if invalid.any():
            value = int(ids[invalid][0])
            raise ValueError(
                f"value {value} is no Cityscapes instanceIds value (label ids 0..33, "
                "instances labelId * 1000 + k)"
            )
        counted = (kinds == _GROUP) | (kinds == _INSTANCE)
        values, inverse, counts = np.unique(ids[counted], return_inverse=True, return_counts=True)
        regions = np.zeros(ids.shape, np.int32)
        regions[counted] = inverse.ravel() + 1
        is_instance = np.concatenate([[False], values >= 1000])
        return cls(regions, is_instance, kinds == _VOID, np.concatenate([[0], counts]))

    @classmethod
    def from_label(cls, label: np.ndarray) -> InstanceTruth:
        """8-connected components of the anomaly pixels of a 0 / 1 / 255 label [H, W] (no
        instance labels); 255 is void."""
        regions, count = ndimage.label(label == ANOMALY, structure=CONNECTIVITY)
        is_instance = np.ones(count + 1, bool)
        is_instance[0] = False
        sizes = np.bincount(regions[regions > 0], minlength=count + 1)
        sizes[0] = 0
        return cls(regions.astype(np.int32, copy=False), is_instance, label == VOID, sizes)


@dataclass(frozen=True)
class InstanceResult:
    """AP and AP50 (fractions; NaN without ground truth), AP per IoU threshold, the counts of
    evaluated ground-truth instances and of non-empty predictions, and how they were made."""

    ap: float
    ap50: float
    ap_per_overlap: tuple[float, ...]
    num_gt: int
    num_pred: int
    num_frames: int
    min_region_size: int = MIN_REGION_SIZE
    method: str | None = None
    threshold: float | None = None
    threshold_from: str | None = None  # "tpr95" / "best-f1" / a number as given
    ground_truth: str | None = None  # "instance labels" / "connected components of the label"

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "ap": self.ap,
            "ap50": self.ap50,
            "ap_per_overlap": dict(zip((f"{t:.2f}" for t in OVERLAPS), self.ap_per_overlap)),
            "num_gt": self.num_gt,
            "num_pred": self.num_pred,
            "num_frames": self.num_frames,
            "min_region_size": self.min_region_size,
            "threshold": self.threshold,
            "threshold_from": self.threshold_from,
            "ground_truth": self.ground_truth,
        }


class InstanceAP:
    """Pools frames (`update`) into AP / AP50 (`compute`); see the module docstring."""

    def __init__(self, min_region_size: int = MIN_REGION_SIZE) -> None:
        self.min_region_size = min_region_size
        self.true: list[list[np.ndarray]] = [[] for _ in OVERLAPS]
        self.scores: list[list[np.ndarray]] = [[] for _ in OVERLAPS]
        self.hard_fn = np.zeros(len(OVERLAPS), np.int64)
        self.num_gt = self.num_pred = self.num_frames = 0

    def update(self, truth: InstanceTruth, instances: Sequence[Instance]) -> None:
        """One frame: its ground truth and predicted instances (any overlaps, any order)."""
        regions, sizes = truth.regions, truth.sizes
        small = sizes < self.min_region_size
        kept = truth.is_instance & ~small
        kept[0] = False
        # pixels of a region that are ignore pixels of a prediction: groups and small regions,
        # counted once per reason as the reference does
        ignore_weight = (~truth.is_instance).astype(np.int64) + small
        ignore_weight[0] = 0
        shown = [p for p in instances if p.area > 0]
        inter = np.zeros((len(shown), len(sizes)), np.int64)
        area = np.array([p.area for p in shown], np.int64)
        confidence = np.array([p.confidence for p in shown], np.float64)
        ignored = np.zeros(len(shown), np.int64)
        for j, p in enumerate(shown):
            inside = regions[p.rows, p.cols][p.crop]
            inter[j] = np.bincount(inside, minlength=len(sizes))
            ignored[j] = np.count_nonzero(truth.void[p.rows, p.cols][p.crop])
        inter[:, 0] = 0
        ignored += inter @ ignore_weight
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(inter > 0, inter / (sizes[None] + area[:, None] - inter), 0.0)
        self.num_gt += int(kept.sum())
        self.num_pred += len(shown)
        self.num_frames += 1
        for k, t in enumerate(OVERLAPS):
            self._frame_at(k, iou > t, kept, confidence, ignored / np.maximum(area, 1) <= t)

    def _frame_at(
        self,
        k: int,
        match: np.ndarray,
        kept: np.ndarray,
        confidence: np.ndarray,
        counted: np.ndarray,
    ) -> None:
        """Entries of one frame at threshold index k (match [P, R + 1] IoU > t)."""
        true, scores = [], []
        for g in np.flatnonzero(kept):
            matched = confidence[match[:, g]]
            if not len(matched):
                self.hard_fn[k] += 1
                continue
            best = int(np.argmax(matched))
            true += [1.0] + [0.0] * (len(matched) - 1)
            scores += [matched[best], *np.delete(matched, best)]
        false = ~match.any(1) & counted
        true += [0.0] * int(false.sum())
        scores += list(confidence[false])
        self.true[k].append(np.array(true, np.float64))
        self.scores[k].append(np.array(scores, np.float64))

    def compute(self) -> InstanceResult:
        have_gt, have_pred = self.num_gt > 0, self.num_pred > 0
        aps = []
        for k in range(len(OVERLAPS)):
            if not have_gt:
                aps.append(float("nan"))
            elif not have_pred:
                aps.append(0.0)
            else:
                true = np.concatenate(self.true[k])
                score = np.concatenate(self.scores[k])
                aps.append(average_precision(true, score, int(self.hard_fn[k])))
        values = np.array(aps)
        ap = float(values.mean()) if have_gt else float("nan")
        return InstanceResult(ap, aps[0], tuple(aps), self.num_gt, self.num_pred,
                              self.num_frames, self.min_region_size)  # fmt: skip


def average_precision(true: np.ndarray, score: np.ndarray, hard_fn: int) -> float:
    """AP of pooled entries (true 1 / 0 with their scores) and unmatched ground truth: the
    reference's precision-recall points and trapezoidal integration."""
    if not len(true):
        return 0.0
    order = np.argsort(score, kind="stable")
    cumulative = np.cumsum(true[order])
    thresholds, first = np.unique(score[order], return_index=True)
    num_true, count = cumulative[-1], len(score)
    before = np.append(cumulative, 0.0)[first - 1]  # trues below each distinct score
    tp = num_true - before
    fp = count - first - tp
    fn = before + hard_fn
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate([recall[:1], recall, [0.0]])
    widths = np.convolve(padded, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, widths))
