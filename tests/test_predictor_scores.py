"""Predictor with several scores: one forward per view, every map against a literal transcription
of the official path (resize back, refine per view, flip average), and open-set output."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mask2anomaly.errors import UserError
from mask2anomaly.inference.predictor import Predictor
from mask2anomaly.model import build_model
from mask2anomaly.scoring.scores import SCORE_NAMES, score_range
from test_inference import official_outputs


@pytest.fixture(scope="module")
def confident_model():
    """Tiny random model with sharpened class logits, so that some queries are confident."""
    from mask2anomaly.config import load_config

    torch.manual_seed(3)
    model = build_model(load_config("tiny").model).eval()
    with torch.no_grad():
        model.decoder.class_embed.weight.mul_(40.0)
    return model


def _literal_scores(s: torch.Tensor, void: torch.Tensor, inlier: torch.Tensor) -> dict:
    """The formulas on evidence [K, H, W] / [H, W], written out again."""
    pi = s.softmax(0)
    k = s.shape[0]
    return {
        "mask2anomaly": 1 - s.max(0).values,
        "msp": 1 - pi.max(0).values,
        "maxlogit": -s.max(0).values,
        "entropy": (-pi * pi.log()).sum(0) / np.log(k),
        "energy": -torch.log(s.exp().sum(0)),
        "rba": -torch.tanh(s).sum(0),
        "eam": 1 - inlier,
        "void": void,
    }


def literal_view(model, image: np.ndarray, min_size: int, max_size: int):
    """One view by the official path, all channels resized back together: (scores, keep)."""
    height, width = image.shape[:2]
    probs, masks, (h, w) = official_outputs(model, image, min_size, max_size)
    num_classes = probs.shape[-1] - 1
    semseg = torch.einsum("qc,qhw->chw", probs, masks)  # K known + no-object
    inlier = torch.einsum("q,qhw->hw", probs[:, :-1].max(-1).values, masks)[None]
    scores, labels = probs.max(-1)
    keep = (labels != num_classes) & (scores > 0.95) & (labels > 1) & (labels < 11)
    extra = scores[keep][:, None, None] * masks[keep]
    channels = torch.cat([semseg, inlier, extra])[:, :h, :w]
    channels = F.interpolate(
        channels[None], size=(height, width), mode="bilinear", align_corners=False
    )[0]
    maps = _literal_scores(channels[:num_classes], channels[num_classes], channels[-1 - len(extra)])
    refined = torch.ones(height, width)
    if int(keep.sum()) > 1:
        refined = (channels[num_classes + 2 :].max(0).values < 0.5).float()
    return maps, refined, int(keep.sum())


def test_every_score_equals_the_literal_official_path(confident_model, tiny_config):
    image = np.random.default_rng(0).integers(0, 256, size=(90, 200, 3), dtype=np.uint8)
    cfg = tiny_config.inference
    predictor = Predictor(confident_model, inference=cfg, scores=SCORE_NAMES)
    prediction = predictor.predict(image)
    views = [
        literal_view(confident_model, view, cfg.min_size, cfg.max_size)
        for view in (image, image[:, ::-1].copy())
    ]
    assert max(views[0][2], views[1][2]) > 1, "the refinement branch must be exercised"
    (maps0, keep0, _), (maps1, keep1, _) = views
    for name in SCORE_NAMES:

        def refine(score, keep, name=name):
            return score * keep if name == "mask2anomaly" else torch.where(keep > 0, score,
                                                                           score.min())  # fmt: skip

        unrefined = (maps0[name] + maps1[name].flip(-1)) / 2
        refined = (refine(maps0[name], keep0) + refine(maps1[name], keep1).flip(-1)) / 2
        assert prediction.maps_unrefined[name].shape == (90, 200)
        assert np.abs(prediction.maps_unrefined[name] - unrefined.numpy()).max() < 1e-5, name
        assert np.abs(prediction.maps[name] - refined.numpy()).max() < 1e-5, name
        low, high = score_range(name, 19, 16)
        assert low <= prediction.maps[name].min() and prediction.maps[name].max() <= high
    assert (prediction.refinement_keep < 1).any()
    assert prediction.anomaly_score is prediction.maps["mask2anomaly"]


@pytest.mark.parametrize("resize", [True, False])
def test_more_scores_leave_each_map_bitwise_unchanged_and_run_the_model_once(
    confident_model, tiny_config, resize, monkeypatch
):
    image = np.random.default_rng(1).integers(0, 256, size=(70, 110, 3), dtype=np.uint8)
    inference = dataclasses.replace(tiny_config.inference, resize=resize)
    alone = Predictor(confident_model, inference=inference).predict(image)
    everything = Predictor(confident_model, inference=inference, scores=SCORE_NAMES[::-1])
    calls, infer = [], everything.network.infer

    def counted(batch):
        calls.append(len(batch))
        return infer(batch)

    monkeypatch.setattr(everything.network, "infer", counted)
    prediction = everything.predict(image)
    assert sum(calls) == 2  # the image and its flip, whatever the number of scores
    assert prediction.score == "void" and prediction.anomaly_score is prediction.maps["void"]
    assert np.array_equal(prediction.maps["mask2anomaly"], alone.anomaly_score)
    assert np.array_equal(prediction.maps_unrefined["mask2anomaly"], alone.anomaly_score_unrefined)
    assert np.array_equal(prediction.semantic, alone.semantic)
    for name in SCORE_NAMES:
        single = Predictor(confident_model, inference=inference, scores=[name]).predict(image)
        assert np.array_equal(single.anomaly_score, prediction.maps[name]), name


def test_open_set_marks_pixels_above_the_threshold_unknown(confident_model, tiny_config):
    image = np.random.default_rng(2).integers(0, 256, size=(48, 80, 3), dtype=np.uint8)
    predictor = Predictor(confident_model, inference=tiny_config.inference, scores=["rba", "msp"])
    prediction = predictor.predict(image)
    threshold = float(np.median(prediction.maps["rba"]))
    labels = prediction.open_set(threshold)
    above = prediction.maps["rba"] > threshold
    assert above.any() and (~above).any()
    assert (labels[above] == 255).all()
    assert np.array_equal(labels[~above], prediction.semantic[~above])
    msp = prediction.open_set(0.5, score="msp", unknown=19)
    assert np.array_equal(msp == 19, prediction.maps["msp"] > 0.5)
    with pytest.raises(UserError, match=r"threshold 0.5 is outside the range of the rba score"):
        prediction.open_set(0.5)
    with pytest.raises(UserError, match=r"score 'eam' was not predicted; choose from rba, msp"):
        prediction.open_set(0.5, score="eam")
    with pytest.raises(UserError, match=r"unknown label 3 is not in 19..255"):
        prediction.open_set(threshold, unknown=3)


def test_unknown_score_names_are_refused(confident_model):
    with pytest.raises(UserError, match=r"unknown score 'maxlogits'; choose from mask2anomaly"):
        Predictor(confident_model, scores=["maxlogits"])
