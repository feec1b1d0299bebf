"""Operating-point thresholds and the ISSU open-set IoU against slow literal implementations,
and reading thresholds back from a metrics.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mask2anomaly.errors import UserError
from mask2anomaly.evaluation.open_set_metrics import OpenSetIoU, open_set_label
from mask2anomaly.evaluation.operating_points import operating_points, read_threshold
from mask2anomaly.evaluation.pixel_metrics import ExactPixelMetrics


def _frames(seed: int, dtype=np.float16):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(3):
        label = rng.choice([0, 0, 0, 1, 255], size=(20, 30)).astype(np.uint8)
        score = rng.normal(size=(20, 30)) + 1.5 * (label == 1)
        frames.append((np.round(score, 1).astype(dtype), label))  # many ties
    return frames


def literal_points(frames) -> dict[str, float]:
    """Every candidate score v from the highest down: rates of "score >= v", the first v
    reaching each target, the best F1; then t = midpoint to the next lower score."""
    scores = np.concatenate([s[y != 255].astype(np.float64) for s, y in frames])
    positive = np.concatenate([y[y != 255] == 1 for _, y in frames])
    candidates = sorted(set(scores.tolist()), reverse=True)
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    chosen: dict[str, float] = {}
    best = -1.0
    for v in candidates:
        tp = int(sum(1 for s, p in zip(scores, positive) if s >= v and p))
        fp = int(sum(1 for s, p in zip(scores, positive) if s >= v and not p))
        if "tpr95" not in chosen and tp / num_pos >= 0.95:
            chosen["tpr95"] = v
        if "fpr5" not in chosen and fp / num_neg >= 0.05:
            chosen["fpr5"] = v
        f1 = 2 * tp / (2 * tp + fp + num_pos - tp)
        if f1 > best:
            best, chosen["best-f1"] = f1, v
    out = {}
    for name, v in chosen.items():
        lower = [c for c in candidates if c < v]
        out[name] = (v + lower[0]) / 2 if lower else v
    return out


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_operating_points_match_the_literal_walk_and_flag_the_same_pixels(dtype):
    frames = _frames(0, dtype)
    accumulator = ExactPixelMetrics("exact")
    for score, label in frames:
        accumulator.update(score, label)
    points = operating_points(accumulator.curve_points(), *accumulator.counts())
    expected = literal_points(frames)
    assert points == pytest.approx(expected, abs=0)
    scores = np.concatenate([s[y != 255].astype(np.float64) for s, y in frames])
    positive = np.concatenate([y[y != 255] == 1 for _, y in frames])
    flagged = scores > points["tpr95"]
    assert flagged[positive].mean() >= 0.95
    # the next higher distinct score would miss the target: the threshold is the tightest
    higher = np.unique(scores[scores > points["tpr95"]])[0]
    assert (scores[positive] > higher).mean() < 0.95


def test_operating_points_do_not_depend_on_how_the_curve_is_split_into_blocks():
    frames = _frames(1, np.float32)
    accumulator = ExactPixelMetrics("exact")
    for score, label in frames:
        accumulator.update(score, label)
    whole = [(np.concatenate(parts)) for parts in zip(*accumulator.curve_points(), strict=True)]
    counts = accumulator.counts()
    reference = operating_points([tuple(whole)], *counts)
    for size in (1, 2, 7):
        blocks = [
            tuple(part[i : i + size] for part in whole) for i in range(0, len(whole[0]), size)
        ]
        assert operating_points(blocks, *counts) == reference


def test_operating_points_are_nan_without_positives_or_negatives():
    only_negative = [(np.array([0.3, 0.2, 0.1]), np.array([1, 2, 3]), np.array([1, 2, 3]) * 0)]
    points = operating_points(only_negative, 0, 3)
    assert all(math.isnan(v) for v in points.values())
    only_positive = operating_points([(np.array([0.5]), np.array([2]), np.array([0]))], 2, 0)
    assert math.isnan(only_positive["fpr5"]) and only_positive["tpr95"] == 0.5


def literal_open_set(frames, num_classes: int, threshold: float) -> tuple[float, float]:
    """ISSU by loops over pixels: (closed mIoU, open mIoU)."""
    k = num_classes
    closed = np.zeros((k, k), int)
    opened = np.zeros((k + 1, k + 1), int)
    for score, prediction, label in frames:
        for y in range(label.shape[0]):
            for x in range(label.shape[1]):
                gt = int(label[y, x])
                if gt == 255:
                    continue
                guess = k if score[y, x] > threshold else int(prediction[y, x])
                opened[gt, guess] += 1
                if gt < k:
                    closed[gt, int(prediction[y, x])] += 1

    def mean(matrix):
        total = 0.0
        for c in range(k):
            union = matrix[c, :].sum() + matrix[:, c].sum() - matrix[c, c]
            total += matrix[c, c] / union if union else 0.0
        return total / k

    return mean(closed), mean(opened)


def test_open_set_iou_equals_the_literal_issu_definition():
    rng = np.random.default_rng(2)
    k = 4
    frames = []
    for _ in range(3):
        semantic = rng.choice([0, 1, 2, 255], size=(12, 9)).astype(np.uint8)  # class 3 absent
        anomaly = (rng.random((12, 9)) < 0.2).astype(np.uint8)
        label = open_set_label(semantic, anomaly, k)
        prediction = rng.integers(0, k - 1, size=(12, 9)).astype(np.uint8)
        score = rng.random((12, 9)) + 0.4 * anomaly
        frames.append((score, prediction, label))
    metric = OpenSetIoU(k, {"a": 0.7, "b": 0.9, "undefined": math.nan})
    for frame in frames:
        metric.update(*frame)
    result = metric.compute()
    for name, threshold in (("a", 0.7), ("b", 0.9)):
        closed, opened = literal_open_set(frames, k, threshold)
        assert result.closed_miou == pytest.approx(closed, abs=1e-12)
        assert result.open_miou[name] == pytest.approx(opened, abs=1e-12)
    assert math.isnan(result.open_miou["undefined"])
    assert math.isnan(result.closed_iou[3])  # absent: NaN per class, 0 in the mean


def test_hand_worked_open_set_iou():
    # K = 2: pixels (truth, closed prediction, score): road predicted road twice, one of them
    # flagged; an anomaly predicted as class 1 and not flagged; a class-1 pixel predicted 1.
    label = np.array([[0, 0, 2, 1]], np.uint8)
    prediction = np.array([[0, 0, 1, 1]], np.uint8)
    score = np.array([[0.1, 0.9, 0.2, 0.3]])
    metric = OpenSetIoU(2, {"t": 0.5})
    metric.update(score, prediction, label)
    result = metric.compute()
    # closed: class 0: 2/2, class 1: 1/1 -> 1.0; open: class 0: TP 1, FN 1 -> 1/2; class 1:
    # TP 1, FP 1 (the anomaly) -> 1/2; mean over the 2 known classes: 0.5
    assert result.closed_miou == 1.0 and result.open_miou["t"] == 0.5
    assert result.open_iou["t"][2] == 0.0  # the unknown class: flagged a road pixel only


def test_open_set_label_merges_the_two_label_maps():
    semantic = np.array([[0, 5, 255, 18, 19]], np.uint8)
    anomaly = np.array([[0, 255, 1, 1, 0]], np.uint8)
    assert open_set_label(semantic, anomaly, 19).tolist() == [[0, 5, 19, 19, 255]]


def _metrics(path, results):
    path.write_text(json.dumps({"results": results}))
    return path


def test_read_threshold_and_its_one_line_errors(tmp_path):
    points = {"tpr95": 0.25, "fpr5": 0.5, "best-f1": None}
    path = _metrics(tmp_path / "metrics.json", [
        {"dataset": "road-anomaly-21", "operating_points": points},
        {"dataset": "road-anomaly-21", "score": "rba", "operating_points": {"tpr95": -0.5}},
        {"dataset": "road-obstacle-21", "score": "rba", "operating_points": {"tpr95": -0.25}},
        {"dataset": "cityscapes", "semantic": {"miou": 0.5}},
    ])  # fmt: skip
    assert read_threshold(path, "mask2anomaly", "tpr95") == 0.25
    assert read_threshold(path, "rba", "tpr95", dataset="road-obstacle-21") == -0.25
    cases = [
        (("mask2anomaly", "tpr90"), "unknown operating point 'tpr90'; choose from tpr95, fpr5"),
        (("msp", "tpr95"), r"no operating points of the msp score \(it holds: mask2anomaly, rba\)"),
        (("rba", "tpr95"), "rba thresholds for 2 datasets .*--calibration-dataset"),
        (("mask2anomaly", "best-f1"), "no best-f1 threshold of the mask2anomaly score on "
                                      r"road-anomaly-21 \(defined there: tpr95, fpr5\)"),
    ]  # fmt: skip
    for (score, point), message in cases:
        with pytest.raises(UserError, match=message):
            read_threshold(path, score, point)
    with pytest.raises(UserError, match="no rba thresholds on dataset 'x'"):
        read_threshold(path, "rba", "tpr95", dataset="x")
    with pytest.raises(UserError, match="calibration file not found"):
        read_threshold(tmp_path / "missing.json", "rba", "tpr95")
    with pytest.raises(UserError, match="not a metrics.json"):
        read_threshold(_metrics(tmp_path / "other.json", None), "rba", "tpr95")
