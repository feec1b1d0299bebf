"""Component metrics against a literal slow re-statement of SMIYC's rules and hand-worked frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mask2anomaly.evaluation import component_metrics as C

TOL = 1e-9


def _reference_frame(score, label, threshold, min_pred, min_gt):
    """SMIYC default_instancer + segment_metrics, one component at a time with np.isin."""
    gt_mask = (label == 1).astype(float)
    pred_mask = (score > threshold).astype(float)
    pred_mask[label == 255] = 0
    structure = np.ones((3, 3))
    gt, num_gt = ndimage.label(gt_mask, structure)
    pred, num_pred = ndimage.label(pred_mask, structure)
    original = pred.copy()
    for comp in range(num_pred + 1):
        if np.sum(original == comp) < min_pred:
            pred[original == comp] = 0
    label = label.copy()
    for comp in range(num_gt + 1):
        if np.sum(gt == comp) < min_gt:
            label[gt == comp] = 255
    roi = label < 255
    gt, pred = gt[roi], pred[roi]
    siou_gt, ppv = [], []
    for k in np.unique(gt[gt > 0]):
        hits = np.unique(pred[(gt == k) & (pred > 0)])
        inter = np.sum((gt == k) & np.isin(pred, hits))
        adjust = np.sum(~np.isin(gt, [0, k]) & np.isin(pred, hits))
        siou_gt.append(inter / (np.sum(np.isin(pred, hits)) + np.sum(gt == k) - inter - adjust))
    for j in np.unique(pred[pred > 0]):
        ppv.append(np.sum((pred == j) & (gt > 0)) / np.sum(pred == j))
    return np.array(siou_gt), np.array(ppv)


def _reference_dataset(frames, threshold, min_pred, min_gt):
    per_frame = [_reference_frame(s, lab, threshold, min_pred, min_gt) for s, lab in frames]
    siou = np.concatenate([f[0] for f in per_frame])
    ppv = np.concatenate([f[1] for f in per_frame])
    f1 = []
    for tau in np.linspace(0.25, 0.75, 11):
        tp = sum(np.count_nonzero(f[0] >= tau) for f in per_frame)
        fn = sum(np.count_nonzero(f[0] < tau) for f in per_frame)
        fp = sum(np.count_nonzero(f[1] < tau) for f in per_frame)
        f1.append(2 * tp / (2 * tp + fn + fp))
    return {"siou": siou.mean(), "ppv": ppv.mean(), "f1_mean": np.mean(f1),
            "f1_25": f1[0], "f1_50": f1[5], "f1_75": f1[10]}  # fmt: skip


def _blobs(rng, shape, count, value, out):
    for _ in range(count):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(1, 12, 2)
        out[y : y + h, x : x + w] = value


@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
def test_random_frames_match_reference(track):
    rng = np.random.default_rng(0)
    limits = C.TRACKS[track]
    scale = 1 if track == "obstacle" else 4  # the anomaly track needs larger objects
    frames = []
    for _ in range(8):
        shape = (int(rng.integers(20, 40)) * scale, int(rng.integers(20, 40)) * scale)
        label = np.zeros(shape, np.uint8)
        _blobs(rng, shape, 3, 255, label)
        _blobs(rng, (shape[0] // scale, shape[1] // scale), 4, 1, label[::scale, ::scale])
        label = np.kron(label[::scale, ::scale], np.ones((scale, scale), np.uint8))
        score = 0.7 * (label == 1) + 0.5 * rng.random(shape)
        score = ndimage.uniform_filter(score, 3)
        frames.append((score, label))
    metrics = C.ComponentMetrics(0.45, track)
    for score, label in frames:
        metrics.update(score, label)
    got = metrics.compute()
    ref = _reference_dataset(frames, 0.45, limits.min_pred_size, limits.min_gt_size)
    assert got.num_gt_components > 5 and got.num_pred_components > 5
    for key, value in ref.items():
        assert getattr(got, key) == pytest.approx(value, abs=TOL), key


OBSTACLE = C.Track(min_pred_size=3, min_gt_size=2)


def test_prediction_merging_two_objects():
    # Two GT objects of 4 px each (separated by an inlier column), one prediction covering both
    # and the gap: 10 px. Without the A(k) term sIoU would be 4/10; with it 4/(10 + 4 - 4 - 4).
    label = np.zeros((4, 7), np.uint8)
    label[1:3, 1:3] = 1
    label[1:3, 4:6] = 1
    score = np.zeros((4, 7))
    score[1:3, 1:6] = 1.0  # 10 px prediction: both objects + the 2 px gap
    gt, pred = C.component_maps(score, label, 0.5, OBSTACLE)
    frame = C.frame_components(gt, pred)
    assert frame.siou_gt == pytest.approx([4 / 6, 4 / 6], abs=TOL)  # 4 / (10 + 4 - 4 - 4)
    assert frame.ppv == pytest.approx([8 / 10], abs=TOL)


def test_touching_components_are_one_with_8_connectivity():
    label = np.zeros((5, 5), np.uint8)
    label[1, 1] = label[2, 2] = label[3, 3] = 1  # diagonal chain: one component under 8-conn.
    score = label.astype(float)
    gt, pred = C.component_maps(score, label, 0.5, OBSTACLE)
    assert len(np.unique(gt[gt > 0])) == 1 and len(np.unique(pred[pred > 0])) == 1
    frame = C.frame_components(gt, pred)
    assert frame.siou_gt.tolist() == [1.0] and frame.ppv.tolist() == [1.0]


def test_size_limits_void_removal_and_strict_threshold():
    label = np.zeros((6, 12), np.uint8)
    label[0, 0] = 1  # GT of 1 px < min_gt_size 2: becomes void with what lies on it
    label[2:4, 2:4] = 1  # GT of 4 px
    label[:, 8:] = 255  # void: a prediction there is removed before labelling
    score = np.zeros((6, 12))
    score[0, 0:2] = 1.0  # 2 px prediction < min_pred_size 3: deleted
    score[2:4, 2:4] = 0.5  # exactly at the threshold: not predicted (strict >)
    score[:, 7:] = 1.0  # 6 px on inlier column 7 survive the size filter (36 px were void)
    gt, pred = C.component_maps(score, label, 0.5, OBSTACLE)
    assert len(gt) == 6 * 12 - 1 - 6 * 4
    frame = C.frame_components(gt, pred)
    assert frame.siou_gt.tolist() == [0.0]  # missed
    assert frame.ppv.tolist() == [0.0]  # the column-7 prediction: a false positive at every tau
    metrics = C.ComponentMetrics(0.5, OBSTACLE)
    metrics.update(score, label)
    result = metrics.compute()
    assert list(result.fp) == [1] * 11 and list(result.fn) == [1] * 11 and result.f1_mean == 0.0


def test_frame_without_anomaly_contributes_false_positives():
    metrics = C.ComponentMetrics(0.5, OBSTACLE)
    label = np.zeros((6, 6), np.uint8)
    label[1:4, 1:4] = 1
    score = (label == 1).astype(float)
    metrics.update(score, label)  # a perfect frame
    clean = np.zeros((6, 6), np.uint8)
    noisy = np.zeros((6, 6))
    noisy[4:, 3:] = 1.0  # 6 px false positive
    metrics.update(noisy, clean)
    result = metrics.compute()
    assert result.siou == 1.0 and result.ppv == 0.5
    assert result.f1_mean == pytest.approx(2 / 3, abs=TOL)


def test_siou_exactly_point_six_is_a_miss_at_the_eighth_tau():
    # sIoU = 3/5 = 0.6 exactly; tau_8 = 0.6000000000000001, so TP at 0.55, FN at "0.60".
    label = np.zeros((3, 6), np.uint8)
    label[1, 0:3] = 1
    score = np.zeros((3, 6))
    score[1, 0:5] = 1.0
    metrics = C.ComponentMetrics(0.5, OBSTACLE)
    frame = metrics.update(score, label)
    assert frame.siou_gt.tolist() == [0.6]
    result = metrics.compute()
    assert result.tp[6] == 1 and result.tp[7] == 0
