"""Pixel metrics against scikit-learn, a literal slow SMIYC reference and hand-worked frames."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mask2anomaly.evaluation import pixel_metrics as M
from mask2anomaly.evaluation.semantic_metrics import ConfusionMatrix

TOL = 1e-9


def _frames(rng: np.random.Generator, dtype, *, ties: bool, n: int = 3, size: int = 30):
    frames = []
    for f in range(n):
        h, w = (int(v) for v in rng.integers(2, size, 2))  # frames of different sizes
        label = rng.choice([0, 1, 255], size=(h, w), p=[0.6, 0.3, 0.1]).astype(np.uint8)
        if f == 1:
            label[label == 1] = 0  # an anomaly-free frame
        score = rng.random((h, w)) + 0.3 * (label == 1)
        if ties:
            score = np.round(score * 5) / 5
        frames.append((score.astype(dtype), label))
    return frames


def _pooled(frames, skip_clean: bool = False):
    kept = [(s, lab) for s, lab in frames if not skip_clean or (lab == 1).any()]
    y = np.concatenate([lab[lab < 2] for _, lab in kept])
    s = np.concatenate([s[lab < 2].astype(np.float32) for s, lab in kept])
    return y, s


def _ood_metrics_fpr95(y, s) -> float:
    """ood-metrics `fpr_at_95_tpr` on sklearn's roc_curve, as the Mask2Anomaly script calls it."""
    fpr, tpr, _ = roc_curve(y, s)
    if np.all(tpr < 0.95):
        return 0.0
    if np.all(tpr >= 0.95):
        return float(np.min(fpr[tpr >= 0.95]))
    return float(np.interp(0.95, tpr, fpr))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_exact_matches_sklearn(dtype, ties):
    rng = np.random.default_rng(0)
    for _ in range(15):
        frames = _frames(rng, dtype, ties=ties)
        y, s = _pooled(frames)
        got = M.pixel_metrics(frames, "exact")
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert got.auprc == pytest.approx(average_precision_score(y, s), abs=TOL)
        assert got.auroc == pytest.approx(roc_auc_score(y, s), abs=TOL)
        assert got.fpr95 == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=TOL)
        assert (got.num_pos, got.num_neg) == (int(y.sum()), int((y == 0).sum()))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("ties", [False, True])
def test_mask2anomaly_matches_official_script(dtype, ties):
    rng = np.random.default_rng(1)
    for _ in range(15):
        frames = _frames(rng, dtype, ties=ties)
        y, s = _pooled(frames, skip_clean=True)
        got = M.pixel_metrics(frames, "mask2anomaly")
        assert got.num_frames == 2  # the anomaly-free frame is skipped
        assert got.auprc == pytest.approx(average_precision_score(y, s), abs=TOL)
        assert got.auroc == pytest.approx(roc_auc_score(y, s), abs=TOL)
        assert got.fpr95 == pytest.approx(_ood_metrics_fpr95(y, s), abs=TOL)


def test_fpr95_interpolated_differs_from_first_point_on_ties():
    # Positives 0.9 x19 and 0.5 x1; negatives 0.5 x10 and 0.1 x10. The tied point (0.5) takes
    # the TPR from 0.95 to 1.0 and the FPR from 0 to 0.5: the first point with TPR >= 0.95 has
    # FPR 0, np.interp on the ROC lands exactly on (0.95, 0.0) as well...
    score = np.array([[0.9] * 19 + [0.5] + [0.5] * 10 + [0.1] * 10], np.float32)
    label = np.array([[1] * 20 + [0] * 20], np.uint8)
    assert M.pixel_metrics([(score, label)], "exact").fpr95 == 0.0
    # ...but with 18 high positives TPR 0.95 falls inside the tied step: first point = 0.5,
    # interpolation = 0.25 (halfway along the diagonal step from (0.9, 0) to (1.0, 0.5)).
    score[0, 18] = 0.5
    assert M.pixel_metrics([(score, label)], "exact").fpr95 == 0.5
    assert M.pixel_metrics([(score, label)], "mask2anomaly").fpr95 == pytest.approx(0.25, abs=TOL)


def _smiyc_frame_reference(score, label):
    """SMIYC binary_confusion_matrix (percentile strategy) with np.quantile and np.histogram."""
    roi = label < 255
    p, g = score[roi], label[roi].astype(bool)
    pos, neg = p[g], p[~g]
    v_min, v_max = np.min(p), np.max(p)
    eps = np.maximum((v_max - v_min) * 1e-2, 1e-2)
    parts = [[v_min - eps, v_max + eps]]
    parts += [np.quantile(x, np.linspace(0, 1, min(384, x.size))) for x in (pos, neg) if x.size]
    edges = np.unique(np.concatenate(parts))
    tp_rel, _ = np.histogram(pos, bins=edges)
    fp_rel, edges = np.histogram(neg, bins=edges)
    return edges[::-1][1:], tp_rel[::-1], fp_rel[::-1], pos.size, neg.size


def _smiyc_reference(frames):
    """SMIYC aggregate_dynamic_bins + curves_from_cmats (2023-08 version), slow and literal."""
    bins = [_smiyc_frame_reference(s, lab) for s, lab in frames if (lab < 255).any()]
    thr = np.concatenate([b[0] for b in bins])
    num_pos, num_neg = sum(b[3] for b in bins), sum(b[4] for b in bins)
    order = np.argsort(thr)[::-1]
    tp = np.cumsum(np.concatenate([b[1] for b in bins])[order].astype(np.float64))
    fp = np.cumsum(np.concatenate([b[2] for b in bins])[order].astype(np.float64))
    thr = thr[order]
    idx = np.concatenate([[0], np.nonzero(thr[:-1] != thr[1:])[0], [len(thr) - 1]])
    tp, fp, thr = tp[idx], fp[idx], thr[idx]
    if tp[0] != 0 or fp[0] != 0:
        tp, fp, thr = np.r_[0, tp], np.r_[0, fp], np.r_[np.max(thr) + 1, thr]
    fn = num_pos - tp
    tpr, fpr = tp / (tp + fn), fp / num_neg
    precision = np.ones(len(tp))
    precision[tp + fp > 0] = tp[tp + fp > 0] / (tp + fp)[tp + fp > 0]
    f1 = 2 * tp / (2 * tp + fp + fn)
    i = np.searchsorted(tpr, 0.95)
    best = np.nanargmax(f1)
    return {
        "auprc": np.sum(np.diff(tpr) * precision[1:]),
        "fpr95": fpr[i] if i < len(tpr) else 1.0,
        "auroc": np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2),
        "best_f1": f1[best],
        "best_f1_threshold": thr[best],
    }


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
def test_smiyc_matches_literal_reference(dtype, ties):
    rng = np.random.default_rng(2)
    for _ in range(12):
        frames = _frames(rng, dtype, ties=ties, n=4, size=60)
        got = M.pixel_metrics(frames, "smiyc").to_dict()
        for key, value in _smiyc_reference(frames).items():
            assert got[key] == pytest.approx(value, abs=TOL), key


def test_smiyc_many_bins_and_float16_rounding():
    # More than 384 pixels per class, so quantiles interpolate between order statistics.
    rng = np.random.default_rng(3)
    label = (rng.random((64, 80)) < 0.3).astype(np.uint8)
    label[:5] = 255
    score = rng.random((64, 80)) + 0.5 * label
    frames = [(score, label), (score[::-1].copy(), label)]
    rounded = [(s.astype(np.float16), lab) for s, lab in frames]
    got = M.SmiycPixelMetrics(round_to_float16=True)
    for s, lab in frames:
        got.update(s, lab)
    ref = _smiyc_reference(rounded)
    assert got.compute().auprc == pytest.approx(ref["auprc"], abs=TOL)
    assert M.pixel_metrics(frames, "smiyc").auprc != pytest.approx(ref["auprc"], abs=1e-12)


def test_smiyc_quantiles_bitwise_equal_numpy():
    rng = np.random.default_rng(4)
    for trial in range(200):
        n = int(rng.integers(1, 1500))
        x = (rng.random(n) * 10).astype([np.float16, np.float32, np.float64][trial % 3])
        probs = np.linspace(0, 1, min(384, n))
        _, neg = M._samples(x.reshape(1, -1), np.zeros((1, n), np.uint8))
        expected = np.quantile(x, probs)
        got = M._quantiles(neg, probs)
        assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_smiyc_hand_worked_frame():
    # 1 positive (0.9), 2 negatives (0.1, 0.5): each class value is its own bin edge, so the
    # curve is exact: thresholds 0.9 -> (tp 1, fp 0), 0.5 -> (1, 1), 0.1 -> (1, 2).
    score = np.array([[0.9, 0.1, 0.5, 0.7]])
    label = np.array([[1, 0, 0, 255]], np.uint8)
    got = M.pixel_metrics([(score, label)], "smiyc")
    assert got.auprc == pytest.approx(1.0, abs=TOL)
    assert got.fpr95 == 0.0 and got.auroc == pytest.approx(1.0, abs=TOL)
    assert got.best_f1 == 1.0 and got.best_f1_threshold == pytest.approx(0.9, abs=TOL)
    assert (got.num_pos, got.num_neg) == (1, 2)


def test_sharded_merge_equals_single_process():
    rng = np.random.default_rng(5)
    frames = _frames(rng, np.float16, ties=True, n=6)
    for protocol in M.PROTOCOLS:
        single = M.pixel_metrics(frames, protocol)
        shards = [M.make_pixel_metrics(protocol) for _ in range(2)]
        for i, (s, lab) in enumerate(frames):
            shards[i % 2].update(s, lab, index=i)
        shards[0].merge(shards[1])
        assert shards[0].compute().to_dict() == single.to_dict()


def test_nan_scores_and_size_mismatch_are_rejected():
    label = np.array([[0, 1], [0, 0]], np.uint8)
    for protocol in M.PROTOCOLS:
        for dtype in (np.float16, np.float32):
            with pytest.raises(ValueError, match="NaN"):
                M.make_pixel_metrics(protocol).update(np.full((2, 2), np.nan, dtype), label)
        with pytest.raises(ValueError, match="differ"):
            M.make_pixel_metrics(protocol).update(np.zeros((2, 3)), label)
    void = np.full((2, 2), 255, np.uint8)
    M.make_pixel_metrics("smiyc").update(np.full((2, 2), np.nan), void)  # NaN in void is fine


def test_miou_against_loop():
    rng = np.random.default_rng(6)
    cm = ConfusionMatrix(num_classes=4)
    preds, labels = [], []
    for _ in range(3):
        label = rng.choice([0, 1, 2, 255], size=(8, 9))
        pred = rng.choice([0, 1, 2, 7], size=(8, 9))
        cm.update(pred, label)
        preds.append(pred.ravel())
        labels.append(label.ravel())
    pred, label = np.concatenate(preds), np.concatenate(labels)
    ious = []
    for c in range(4):
        inter = np.sum((pred == c) & (label == c))
        union = np.sum(((pred == c) & (label != 255)) | (label == c))
        ious.append(inter / union if union else np.nan)
    got = cm.compute()
    assert np.allclose(got.iou, ious, atol=TOL, equal_nan=True)
    assert got.miou == pytest.approx(np.nanmean(ious), abs=TOL)
