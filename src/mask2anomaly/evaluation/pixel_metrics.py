# length: the three pixel protocols share one sample / quantile / curve code (spec A.2, B, D)
"""Pixel-level anomaly metrics (AuPRC, FPR95, AUROC) under three protocols.

Spec ../shared/spec/benchmarks.md: `smiyc` = A.2 (per-frame 768-percentile bins pooled over the
set, step-wise AP, first point with TPR >= 0.95), `exact` = B (Fishyscapes / scikit-learn: every
distinct float32 score a threshold), `mask2anomaly` = D (exact, frames without anomaly skipped,
FPR95 linearly interpolated as ood-metrics does). Anomaly is the positive class and
void (255) is ignored. Every accumulator streams: `update(score, label)` per frame, `compute()`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..config import IGNORE_INDEX, Protocol, choices

PROTOCOLS: tuple[Protocol, ...] = choices(Protocol)
SMIYC_NUM_BINS = 768  # "PixBinaryClass" config of SMIYC (A.2): 384 quantiles per class and frame
TPR_TARGET = 0.95  # FPR95 is the false positive rate where the TPR reaches 95 %
EXACT_BLOCK = 1 << 22  # curve points evaluated at once by the exact protocols (bounds memory)


@dataclass(frozen=True)
class PixelCurve:
    """Dataset-level curve, thresholds descending: thresholds/tp/fp [T] (cumulative counts)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_pos: int
    num_neg: int


@dataclass(frozen=True)
class PixelMetrics:
    """Scalars of one protocol; auprc/fpr95/auroc are fractions in [0, 1] (NaN if undefined)."""

    protocol: str
    auprc: float
    fpr95: float
    auroc: float
    best_f1: float
    best_f1_threshold: float
    num_frames: int
    num_pos: int
    num_neg: int
    curve: PixelCurve = field(repr=False)

    def to_dict(self) -> dict[str, float | int | str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "curve"}


def check_frame(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate one frame: score [H, W] real, label [H, W] integer of the same shape."""
    score, label = np.asarray(score), np.asarray(label)
    if score.shape != label.shape or score.ndim != 2:
        raise ValueError(f"score map {score.shape} and label {label.shape} differ in size")
    if score.dtype.kind != "f":
        score = score.astype(np.float64)
    if label.dtype.kind not in "ui":
        raise ValueError(f"label must hold integers, got {label.dtype}")
    return score, label


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoidal area, the same arithmetic as np.trapezoid / np.trapz."""
    return float(np.add.reduce(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


# ---------------------------------------------------------------------------------------------
# Sorted samples: float16 maps are counted per bit pattern, other maps are sorted.


@functools.cache
def _float16_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, sorted values, non-finite mask) of the 65536 float16 bit patterns (NaN last)."""
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    order = np.argsort(values, kind="stable")
    return order, values[order], ~np.isfinite(values[order])


@dataclass(frozen=True)
class _Sample:
    """A multiset of scores: sorted values [U] (duplicates allowed) and cum [U + 1] counts."""

    values: np.ndarray
    cum: np.ndarray

    @property
    def size(self) -> int:
        return int(self.cum[-1])

    def at_rank(self, ranks: np.ndarray) -> np.ndarray:
        """Order statistics (0-based ranks) in the input dtype."""
        return self.values[np.searchsorted(self.cum, ranks, side="right") - 1]

    def count_below(self, x: np.ndarray, *, inclusive: bool = False) -> np.ndarray:
        return self.cum[np.searchsorted(self.values, x, side="right" if inclusive else "left")]


def _class_codes(label: np.ndarray, pos: np.ndarray | None, valid: np.ndarray | None) -> np.ndarray:
    """int32 [H, W]: 0 negative, 1 positive, 2 void, shifted left by 16 bits."""
    if label.dtype == np.uint8 and pos is None:  # SMIYC rule through a lookup table: fastest
        table = np.full(256, 1 << 16, np.int32)
        table[0], table[IGNORE_INDEX] = 0, 2 << 16
        return table[label]
    assert pos is not None and valid is not None
    return np.where(valid, pos, 2).astype(np.int32) << 16


def _float16_counts(score: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[2, 65536] counts of negatives and positives per float16 value (sorted by value)."""
    order, _, non_finite = _float16_table()
    values = score.view(np.uint16).astype(np.int32)
    values |= codes
    counts = np.bincount(values.ravel(), minlength=3 << 16)[: 2 << 16].reshape(2, -1)[:, order]
    if counts[:, non_finite].any():
        raise ValueError("score map holds NaN or inf inside the evaluated region")
    return counts


def _samples(score: np.ndarray, label: np.ndarray) -> tuple[_Sample, _Sample]:
    """(positives, negatives) of one frame in SMIYC terms: ROI = label < 255, pos = label != 0."""
    if score.dtype == np.float16:
        roi_pos = (None, None) if label.dtype == np.uint8 else (label != 0, label < IGNORE_INDEX)
        counts = _float16_counts(score, _class_codes(label, *roi_pos))
        keep = counts.any(axis=0)
        cum = np.zeros((2, int(keep.sum()) + 1), np.int64)
        np.cumsum(counts[:, keep], axis=1, out=cum[:, 1:])
        values = _float16_table()[1][keep]
        return _Sample(values, cum[1]), _Sample(values, cum[0])
    roi, pos = label < IGNORE_INDEX, label != 0
    pos_scores, neg_scores = np.sort(score[roi & pos]), np.sort(score[roi & ~pos])
    for scores in (pos_scores, neg_scores):
        if scores.size and not (np.isfinite(scores[0]) and np.isfinite(scores[-1])):
            raise ValueError("score map holds NaN or inf inside the evaluated region")
    return _Sample(pos_scores, np.arange(pos_scores.size + 1)), _Sample(
        neg_scores, np.arange(neg_scores.size + 1)
    )


def _quantiles(sample: _Sample, probs: np.ndarray) -> np.ndarray:
    """np.quantile(values, probs) (method "linear") bit for bit, from the order statistics.

    numpy interpolates a + (b - a) * g, or b - (b - a) * (1 - g) when g >= 0.5, with b - a in the
    input dtype; positions past the end use the last element and g measured from index -1.
    """
    n = sample.size
    virtual = (n - 1) * probs
    previous = np.floor(virtual)
    at_end = virtual >= n - 1
    previous[at_end] = -1
    gamma = virtual - previous
    previous_rank = np.where(at_end, n - 1, previous).astype(np.intp)
    next_rank = np.where(at_end, n - 1, previous + 1).astype(np.intp)
    a, b = sample.at_rank(previous_rank), sample.at_rank(next_rank)
    diff = b - a
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


# ---------------------------------------------------------------------------------------------
# smiyc: per-frame percentile bins (A.2)


def smiyc_frame_bins(
    score: np.ndarray, label: np.ndarray, num_bins: int = SMIYC_NUM_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """One frame's bins, as SMIYC's `binary_confusion_matrix` (percentile strategy) makes them.

    Args:
        score: [H, W] anomaly scores (dtype kept: the official maps are float16).
        label: [H, W] with 255 void, 0 inlier, any other value anomaly.

    Returns:
        thresholds [B] (bin lower edges, descending), tp_rel [B] and fp_rel [B] (positives and
        negatives per bin), num_pos, num_neg; None when the frame has no pixel outside void.
    """
    score, label = check_frame(score, label)
    pos, neg = _samples(score, label)
    present = [s for s in (pos, neg) if s.size]
    if not present:
        return None
    v_min = min(s.at_rank(np.array(0)) for s in present)
    v_max = max(s.at_rank(np.array(s.size - 1)) for s in present)
    eps = np.maximum((v_max - v_min) * 0.01, 0.01)  # in the score dtype, as SMIYC computes it
    parts = [np.array([v_min - eps, v_max + eps])]
    parts += [_quantiles(s, np.linspace(0, 1, min(num_bins // 2, s.size))) for s in present]
    edges = np.unique(np.concatenate(parts))
    hists = []
    for sample in (pos, neg):
        below = np.append(
            sample.count_below(edges[:-1]), sample.count_below(edges[-1:], inclusive=True)
        )
        hists.append(np.diff(below)[::-1])
    return edges[:-1][::-1].copy(), hists[0], hists[1], pos.size, neg.size


def smiyc_curve_metrics(
    thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray, num_pos: int, num_neg: int
) -> tuple[PixelCurve, dict[str, float]]:
    """SMIYC `curves_from_cmats`: collapse repeated thresholds, add end points, scalars.

    Args:
        thresholds [T] descending, tp/fp [T] cumulative counts in the same order.
    """
    last = len(thresholds) - 1
    keep = np.unique(
        np.concatenate([[0], np.flatnonzero(thresholds[:-1] != thresholds[1:]), [last]])
    )
    thr, tp, fp = thresholds[keep], tp[keep], fp[keep]
    if tp[0] != 0 or fp[0] != 0:  # the curve starts with no prediction at all
        thr, tp, fp = np.r_[float(np.max(thr)) + 1, thr], np.r_[0.0, tp], np.r_[0.0, fp]
    if tp[-1] != num_pos or fp[-1] != num_neg:
        thr, tp, fp = np.r_[thr, float(np.max(thr)) - 1], np.r_[tp, num_pos], np.r_[fp, num_neg]
    curve = PixelCurve(thr, tp, fp, num_pos, num_neg)
    if num_pos == 0:
        return curve, dict.fromkeys(
            ("auprc", "fpr95", "auroc", "best_f1", "best_f1_threshold"), np.nan
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr, fpr = tp / num_pos, fp / num_neg
        predicted = tp + fp
        precision = np.ones_like(tp)
        np.divide(tp, predicted, out=precision, where=predicted > 0)
        f1 = 2 * tp / (2 * tp + fp + (num_pos - tp))
    index = int(np.searchsorted(tpr, TPR_TARGET))
    best = int(np.nanargmax(f1))
    return curve, {
        "auprc": float(np.sum(np.diff(tpr) * precision[1:])),
        "fpr95": float(fpr[index]) if index < len(tpr) else 1.0,
        "auroc": _trapezoid(tpr, fpr),
        "best_f1": float(f1[best]),
        "best_f1_threshold": float(thr[best]),
    }


class SmiycPixelMetrics:
    """Streaming SMIYC "PixBinaryClass": O(num_bins) numbers kept per frame, never pixels.

    Args:
        num_bins: 768 in the official configuration.
        round_to_float16: cast scores to float16 first, as the official pipeline stores them.
    """

    protocol = "smiyc"

    def __init__(self, num_bins: int = SMIYC_NUM_BINS, *, round_to_float16: bool = False) -> None:
        self.num_bins, self.round_to_float16 = num_bins, round_to_float16
        self._frames: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.num_pos = self.num_neg = 0

    def update(self, score: np.ndarray, label: np.ndarray, index: int | None = None) -> None:
        """Add one frame ([H, W] each); `index` orders frames when shards are merged."""
        if self.round_to_float16:
            score = np.asarray(score).astype(np.float16)
        bins = smiyc_frame_bins(score, label, self.num_bins)
        if bins is None:
            return
        thresholds, tp_rel, fp_rel, num_pos, num_neg = bins
        key = len(self._frames) if index is None else index
        self._frames.append((key, thresholds, tp_rel, fp_rel))
        self.num_pos, self.num_neg = self.num_pos + num_pos, self.num_neg + num_neg

    def merge(self, other: SmiycPixelMetrics) -> None:
        self._frames += other._frames
        self.num_pos, self.num_neg = self.num_pos + other.num_pos, self.num_neg + other.num_neg

    def compute(self) -> PixelMetrics:
        if not self._frames:
            raise ValueError("no frame with evaluated pixels")
        frames = sorted(self._frames, key=lambda f: f[0])
        thresholds = np.concatenate([f[1] for f in frames])
        order = np.argsort(thresholds)[::-1]  # the same (unstable) order as SMIYC's aggregation
        tp = np.cumsum(np.concatenate([f[2] for f in frames])[order].astype(np.float64))
        fp = np.cumsum(np.concatenate([f[3] for f in frames])[order].astype(np.float64))
        curve, scalars = smiyc_curve_metrics(thresholds[order], tp, fp, self.num_pos, self.num_neg)
        return PixelMetrics(self.protocol, **scalars, num_frames=len(frames),
                            num_pos=self.num_pos, num_neg=self.num_neg, curve=curve)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# exact (B) and mask2anomaly (D): every distinct float32 score is a threshold


class _CurveScalars:
    """Scalars of an exact ROC/PR curve fed in blocks of points, thresholds descending."""

    def __init__(self, num_pos: int, num_neg: int, max_points: int = 2048) -> None:
        self.num_pos, self.num_neg = num_pos, num_neg
        self.last = (0.0, 0.0)  # (tpr, fpr) of the previous point; the curve starts at (0, 0)
        self.auprc = self.auroc = 0.0
        self.fpr95_first = self.fpr95_interp = np.nan
        self.best_f1, self.best_f1_threshold = -1.0, np.nan
        self.step, self.seen = max(1, (num_pos + num_neg) // max_points), 0
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> None:
        tp, fp = tp.astype(np.float64), fp.astype(np.float64)
        tpr, fpr = tp / self.num_pos, fp / self.num_neg
        precision = tp / (tp + fp)
        self.auprc += float(np.sum(np.diff(np.r_[self.last[0], tpr]) * precision))
        self.auroc += _trapezoid(np.r_[self.last[0], tpr], np.r_[self.last[1], fpr])
        if np.isnan(self.fpr95_first) and tpr[-1] >= TPR_TARGET:
            first = int(np.searchsorted(tpr, TPR_TARGET))
            self.fpr95_first = float(fpr[first])
            self.fpr95_interp = self._interpolate(
                np.r_[self.last[0], tpr], np.r_[self.last[1], fpr]
            )
        f1 = 2 * tp / (2 * tp + fp + (self.num_pos - tp))
        best = int(np.argmax(f1))
        if f1[best] > self.best_f1:
            self.best_f1, self.best_f1_threshold = float(f1[best]), float(thresholds[best])
        picks = (np.arange(self.seen, self.seen + len(tp)) % self.step) == 0
        picks[-1] = True
        self.kept.append((thresholds[picks], tp[picks], fp[picks]))
        self.seen += len(tp)
        self.last = (float(tpr[-1]), float(fpr[-1]))

    @staticmethod
    def _interpolate(tpr: np.ndarray, fpr: np.ndarray) -> float:
        """np.interp(0.95, tpr, fpr) of ood-metrics, given that tpr[-1] >= 0.95 > tpr[0] or a tie.

        np.interp uses the last point j with tpr[j] <= 0.95 and the next one; dropping collinear
        points (sklearn's drop_intermediate) does not move the interpolant.
        """
        j = int(np.searchsorted(tpr, TPR_TARGET, side="right")) - 1
        if tpr[j] == TPR_TARGET or j == len(tpr) - 1:
            return float(fpr[j])
        slope = (fpr[j + 1] - fpr[j]) / (tpr[j + 1] - tpr[j])
        return float(slope * (TPR_TARGET - tpr[j]) + fpr[j])

    def curve(self) -> PixelCurve:
        thr, tp, fp = (np.concatenate(parts) for parts in zip(*self.kept, strict=True))
        return PixelCurve(thr, tp, fp, self.num_pos, self.num_neg)


class ExactPixelMetrics:
    """Pooled exact metrics: Fishyscapes/scikit-learn (`exact`) or the Mask2Anomaly script.

    Keeps float32 scores split by class (4 bytes per valid pixel, labels implicit); float16 maps
    are counted per value instead (65536 counters), which gives the same curve.

    Args:
        protocol: "exact" (B: all frames, FPR95 at the first point with TPR >= 0.95) or
            "mask2anomaly" (D: frames without anomaly skipped, FPR95 interpolated).
    """

    def __init__(self, protocol: str = "exact") -> None:
        if protocol not in ("exact", "mask2anomaly"):
            raise ValueError(f"unknown protocol {protocol!r}")
        self.protocol = protocol
        self._counts = np.zeros((2, 1 << 16), np.int64)  # float16 maps: [negative, positive]
        self._chunks: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])  # other maps
        self.num_frames = 0

    def update(self, score: np.ndarray, label: np.ndarray, index: int | None = None) -> None:
        """Add one frame: score [H, W], label [H, W] (1 anomaly, 0 inlier, anything else void)."""
        score, label = check_frame(score, label)
        pos = label == 1
        if self.protocol == "mask2anomaly" and not pos.any():
            return  # the official script skips frames without anomaly pixels
        valid = pos | (label == 0)
        if score.dtype == np.float16:
            order = _float16_table()[0]
            counts = _float16_counts(score, _class_codes(label, pos, valid))
            self._counts[:, order] += counts  # kept per bit pattern

        else:
            values = score[valid].astype(np.float32)
            if not np.isfinite(values).all():
                raise ValueError("score map holds NaN or inf inside the evaluated region")
            self._chunks[1].append(values[pos[valid]])
            self._chunks[0].append(values[~pos[valid]])
        self.num_frames += 1

    def merge(self, other: ExactPixelMetrics) -> None:
        self._counts += other._counts
        for mine, theirs in zip(self._chunks, other._chunks, strict=True):
            mine += theirs
        self.num_frames += other.num_frames

    def _sorted_scores(self, cls: int) -> np.ndarray:
        """All float32 scores of one class (0 negative, 1 positive), ascending."""
        order, values, _ = _float16_table()
        parts = [np.repeat(values.astype(np.float32), self._counts[cls, order])]
        scores = np.concatenate(parts + self._chunks[cls])
        scores.sort()
        return scores

    def _blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Curve points (thresholds, tp, fp), thresholds descending, in blocks."""
        if not any(self._chunks):  # float16 maps only: the curve comes from the counters
            order, values, _ = _float16_table()
            values, inverse = np.unique(values.astype(np.float32), return_inverse=True)
            counts = [
                np.bincount(inverse, weights=c[order], minlength=len(values)) for c in self._counts
            ]
            keep = (counts[0] > 0) | (counts[1] > 0)
            tp, fp = (np.cumsum(c[keep][::-1]).astype(np.int64) for c in counts[::-1])
            yield values[keep][::-1], tp, fp
            return
        pos, neg = self._sorted_scores(1), self._sorted_scores(0)
        merged = np.concatenate([pos, neg])
        merged.sort()
        for hi in range(len(merged), 0, -EXACT_BLOCK):
            lo = max(0, hi - EXACT_BLOCK)
            block, following = merged[lo:hi], merged[lo + 1 : hi + 1]
            last_of_run = np.ones(hi - lo, bool)  # where the next (larger) score differs
            last_of_run[: len(following)] = block[: len(following)] != following
            thresholds = block[last_of_run][::-1]
            tp = len(pos) - np.searchsorted(pos, thresholds, side="left")
            fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
            yield thresholds, tp, fp

    def counts(self) -> tuple[int, int]:
        """(positive, negative) pixels added so far."""
        num_pos = int(self._counts[1].sum()) + sum(len(c) for c in self._chunks[1])
        return num_pos, int(self._counts[0].sum()) + sum(len(c) for c in self._chunks[0])

    def curve_points(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every distinct score as a threshold, descending, with the cumulative tp / fp of
        "score >= threshold", in blocks (what `compute` walks; operating_points.py too)."""
        return self._blocks()

    def compute(self) -> PixelMetrics:
        num_pos, num_neg = self.counts()
        if num_pos + num_neg == 0:
            raise ValueError("no frame with evaluated pixels")
        scalars = _CurveScalars(num_pos, num_neg)
        with np.errstate(divide="ignore", invalid="ignore"):
            for block in self._blocks():
                scalars.add(*block)
        undefined = num_pos == 0 or num_neg == 0
        fpr95 = scalars.fpr95_interp if self.protocol == "mask2anomaly" else scalars.fpr95_first
        return PixelMetrics(
            self.protocol,
            auprc=np.nan if num_pos == 0 else scalars.auprc,
            fpr95=np.nan if undefined else fpr95,
            auroc=np.nan if undefined else scalars.auroc,
            best_f1=np.nan if num_pos == 0 else scalars.best_f1,
            best_f1_threshold=scalars.best_f1_threshold,
            num_frames=self.num_frames, num_pos=num_pos, num_neg=num_neg, curve=scalars.curve(),
        )  # fmt: skip


PixelAccumulator = SmiycPixelMetrics | ExactPixelMetrics


def make_pixel_metrics(protocol: str, *, round_to_float16: bool = False) -> PixelAccumulator:
    """The streaming accumulator of a protocol name ("smiyc", "exact", "mask2anomaly")."""
    if protocol == "smiyc":
        return SmiycPixelMetrics(round_to_float16=round_to_float16)
    if protocol == "exact" or protocol == "mask2anomaly":
        return ExactPixelMetrics(protocol)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def pixel_metrics(
    frames: Iterable[tuple[np.ndarray, np.ndarray]], protocol: str = "smiyc"
) -> PixelMetrics:
    """One-shot helper: metrics of a list of (score [H, W], label [H, W]) frames."""
    accumulator = make_pixel_metrics(protocol)
    for score, label in frames:
        accumulator.update(score, label)
    return accumulator.compute()
