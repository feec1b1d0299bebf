"""Instance AP / AP50 (evaluation/instance_metrics.py) against cityscapesScripts' instance
evaluator with OoDIS's settings (tests/cityscapes_instances.py), on generated cases, and on
hand-worked ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mask2anomaly.evaluation.instance_metrics import (
    OVERLAPS,
    InstanceAP,
    InstanceTruth,
    average_precision,
)
from mask2anomaly.evaluation.instances import Instance, instance_from_mask

reference = pytest.importorskip("cityscapesscripts")
from cityscapes_instances import car_row, run_reference, write_case  # noqa: E402

ROAD, VOID, CAR = 7, 0, 26


def _instance(mask: np.ndarray, confidence: float) -> Instance | None:
    found = instance_from_mask(mask, np.zeros(mask.shape, np.float32))
    return None if found is None else dataclasses.replace(found, confidence=confidence)


def _rect(shape, y, x, h, w) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y : y + h, x : x + w] = True
    return mask


def _jitter(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A prediction near a ground-truth mask: shifted, grown or shrunk by a pixel or two."""
    shift = rng.choice([-2, -1, 0, 0, 0, 1], 2)
    moved = np.roll(mask, (int(shift[0]), int(shift[1])), axis=(0, 1))
    if rng.random() < 0.3:
        moved |= np.roll(moved, 1, axis=int(rng.integers(0, 2)))
    return moved


def _frame(rng: np.random.Generator, index: int, shape=(48, 64)):
    """(instanceIds [H, W], [(mask, confidence)]): touching, nested and tiny instances, void
    and group regions, frames without instances, duplicate and empty predictions."""
    ids = np.full(shape, ROAD, np.uint16)
    for _ in range(int(rng.integers(0, 3))):  # void
        ids[_rect(shape, *rng.integers(0, 40, 2), *rng.integers(3, 15, 2))] = VOID
    if rng.random() < 0.4:  # a group: car id without an instance id
        ids[_rect(shape, *rng.integers(0, 40, 2), *rng.integers(4, 12, 2))] = CAR
    k = 0
    count = 0 if index % 4 == 3 else int(rng.integers(1, 5))
    for _ in range(count):
        y, x = int(rng.integers(0, 38)), int(rng.integers(0, 54))
        h, w = int(rng.integers(2, 16)), int(rng.integers(2, 16))  # 2x2 .. : some below 10 px
        ids[_rect(shape, y, x, h, w)] = 26000 + k
        k += 1
        if rng.random() < 0.3:  # touching neighbour
            ids[_rect(shape, y, x + w, h, int(rng.integers(3, 8)))] = 26000 + k
            k += 1
        if rng.random() < 0.3 and h > 6 and w > 6:  # nested inside
            ids[_rect(shape, y + 2, x + 2, h - 4, w - 4)] = 26000 + k
            k += 1
    predictions = []
    for value in np.unique(ids[ids >= 1000]):
        own = ids == value
        for _ in range(int(rng.choice([0, 1, 1, 1, 2, 3]))):  # missed, found, duplicates
            confidence = float(np.round(rng.random(), 1) if rng.random() < 0.3 else rng.random())
            predictions.append((_jitter(rng, own), confidence))
    for _ in range(int(rng.integers(0, 4))):  # false positives, some in void or on groups
        mask = _rect(shape, *rng.integers(0, 44, 2), *rng.integers(1, 10, 2))
        predictions.append((mask, float(rng.random())))
    if index == 0:  # a false positive on plain road: the curve always has an entry
        ids[40:48, 0:8] = ROAD
        predictions.append((_rect(shape, 40, 0, 8, 8), 0.55))
    if index == 1:  # a small group under a false positive: its pixels are ignored twice
        ids[40:48, 54:64] = ROAD
        ids[40:42, 56:59] = CAR
        predictions.append((_rect(shape, 40, 56, 4, 4), 0.65))
    if rng.random() < 0.2:
        predictions.append((np.zeros(shape, bool), 0.9))  # empty: counts nowhere
    if rng.random() < 0.3 and predictions:
        predictions.append((predictions[0][0].copy(), predictions[0][1]))  # exact duplicate
    return ids, predictions


def _ours(frames) -> InstanceAP:
    metric = InstanceAP()
    for ids, predictions in frames:
        instances = [_instance(mask, c) for mask, c in predictions]
        metric.update(InstanceTruth.from_instance_ids(ids), [p for p in instances if p])
    return metric


@pytest.mark.parametrize("seed", range(6))
def test_ap_equals_cityscapesscripts_on_generated_cases(tmp_path, seed):
    rng = np.random.default_rng(seed)
    frames = [_frame(rng, i) for i in range(6)]
    result = run_reference(tmp_path, *write_case(tmp_path, frames))
    ours = _ours(frames).compute()
    np.testing.assert_allclose(ours.ap_per_overlap, car_row(result), rtol=0, atol=1e-9)
    assert ours.ap == pytest.approx(result["averages"]["allAp"], abs=1e-9)
    assert ours.ap50 == pytest.approx(result["averages"]["allAp50%"], abs=1e-9)


def test_connected_components_ground_truth_equals_the_reference(tmp_path):
    """A 0 / 1 / 255 label's 8-connected components, written as instances 26000 + k with void
    0 and inlier road, score the same in both."""
    rng = np.random.default_rng(7)
    frames, labels = [], []
    for i in range(4):
        label = (rng.random((40, 56)) < 0.08).astype(np.uint8)
        label[:6] = 255
        label[20:30, 10:25] = 1
        components = InstanceTruth.from_label(label).regions
        ids = np.where(label == 255, VOID, ROAD).astype(np.uint16)
        ids[components > 0] = 26000 + components[components > 0]
        predictions = [(components == c, float(rng.random())) for c in range(1, 6)]
        predictions.append((_rect(label.shape, 30, 30, 6, 6), 0.3 + i / 10))
        frames.append((ids, predictions))
        labels.append(label)
    result = run_reference(tmp_path, *write_case(tmp_path, frames))
    metric = InstanceAP()
    for label, (_, predictions) in zip(labels, frames, strict=True):
        metric.update(InstanceTruth.from_label(label),
                      [p for m, c in predictions if (p := _instance(m, c))])  # fmt: skip
    np.testing.assert_allclose(metric.compute().ap_per_overlap, car_row(result), atol=1e-9)


@pytest.mark.parametrize(
    ("entries", "num_gt", "expected"),
    [
        ([(1, 0.5), (0, 0.9)], 1, 0.25),  # the FP ranks first: trapezoid to (r=0, p=1)
        ([(1, 0.9), (0, 0.95)], 2, 0.125),
        ([(1, 0.9), (0, 0.8), (0, 0.7)], 2, 0.5),  # one GT missed
        ([(1, 0.9)], 1, 1.0),
        ([(0, 0.9)], 1, 0.0),
    ],
)
def test_average_precision_hand_worked(entries, num_gt, expected):
    true = np.array([t for t, _ in entries], float)
    score = np.array([s for _, s in entries], float)
    assert average_precision(true, score, num_gt - int(true.sum())) == pytest.approx(expected)


def test_rules_by_hand():
    """One GT of 100 px: a match at IoU 0.81 is a TP up to t = 0.8, a miss after; a
    prediction mostly in void counts nowhere; a duplicate is a FP; an empty mask nothing."""
    ids = np.full((30, 30), ROAD, np.uint16)
    ids[0:10, 0:10] = 26000
    ids[20:30, 20:30] = VOID
    truth = InstanceTruth.from_instance_ids(ids)
    tp = _instance(_rect(ids.shape, 0, 0, 9, 9), 0.9)  # IoU 81 / 100
    in_void = _instance(_rect(ids.shape, 20, 20, 5, 5), 0.99)
    metric = InstanceAP()
    metric.update(truth, [tp, in_void])
    result = metric.compute()
    expected = [1.0 if t < 0.81 else 0.0 for t in OVERLAPS]
    assert result.ap_per_overlap == pytest.approx(expected)
    assert result.ap50 == 1.0 and result.num_gt == 1 and result.num_pred == 2
    # a second GT found at 0.5; the first found twice (0.95 TP, 0.9 duplicate FP): points
    # (r, p) = (1, 2/3), (.5, .5), (.5, 1), (0, 1), each step width .25 -> 19/24
    ids[0:10, 15:25] = 26001
    other = _instance(_rect(ids.shape, 0, 15, 10, 10), 0.5)
    duplicate = InstanceAP()
    duplicate.update(InstanceTruth.from_instance_ids(ids),
                     [tp, dataclasses.replace(tp, confidence=0.95), other])  # fmt: skip
    assert duplicate.compute().ap50 == pytest.approx(19 / 24)


def test_no_ground_truth_is_nan_and_no_prediction_is_zero():
    empty = InstanceTruth.from_instance_ids(np.full((8, 8), ROAD, np.uint16))
    metric = InstanceAP()
    metric.update(empty, [_instance(_rect((8, 8), 0, 0, 4, 4), 0.5)])
    assert np.isnan(metric.compute().ap)
    ids = np.full((8, 8), ROAD, np.uint16)
    ids[:5, :5] = 26001
    missed = InstanceAP()
    missed.update(InstanceTruth.from_instance_ids(ids), [])
    assert missed.compute().ap == 0.0


def test_order_of_frames_and_predictions_does_not_matter():
    rng = np.random.default_rng(3)
    frames = [_frame(rng, i) for i in range(5)]
    forward = _ours(frames).compute()
    shuffled = [(ids, predictions[::-1]) for ids, predictions in frames[::-1]]
    assert _ours(shuffled).compute().ap_per_overlap == pytest.approx(forward.ap_per_overlap)


@pytest.mark.parametrize(
    "ids",
    [np.full((4, 4), 255, np.uint16), np.full((4, 4), 50000, np.uint16), np.zeros((4, 4, 3))],
)
def test_values_outside_the_encoding_are_refused(ids):
    with pytest.raises(ValueError):
        InstanceTruth.from_instance_ids(ids)
