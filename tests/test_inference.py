"""Predictor against a slow, literal transcription of the official inference path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mask2anomaly.errors import UserError
from mask2anomaly.inference.predictor import Predictor, resized_shape, upsampled_rows
from mask2anomaly.model import build_model


def test_resized_shape_matches_detectron2_rounding():
    assert resized_shape(1024, 2048, 1024, 2048) == (1024, 2048)
    assert resized_shape(512, 1024, 1024, 2048) == (1024, 2048)
    assert resized_shape(720, 1280, 1024, 2048) == (1024, 1820)  # 1820.44 -> 1820
    assert resized_shape(1280, 720, 1024, 2048) == (1820, 1024)
    assert resized_shape(1000, 3000, 1024, 2048) == (683, 2048)  # long side capped: 682.67
    assert resized_shape(375, 1242, 1024, 2048) == (618, 2048)  # KITTI-like: 618.4


@pytest.fixture()
def confident_model(tiny_config):
    """Tiny random model with sharpened class logits, so that some queries are confident."""
    torch.manual_seed(3)
    model = build_model(tiny_config.model).eval()
    with torch.no_grad():
        model.decoder.class_embed.weight.mul_(40.0)
    return model


def official_outputs(model, image: np.ndarray, min_size: int, max_size: int):
    """The official path's first steps for one view: resize (detectron2's rule, PIL bilinear),
    network, mask logits upsampled to the padded input -> (class probabilities [Q, K+1], mask
    probabilities [Q, H_pad, W_pad], resized size (h, w))."""
    height, width = image.shape[:2]
    h, w = resized_shape(height, width, min_size, max_size)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    x = torch.from_numpy(resized.copy()).permute(2, 0, 1).float()
    with torch.no_grad():
        batch = model.preprocess([x])
        out = model(batch)
    logits = F.interpolate(
        out.mask_logits, size=batch.shape[-2:], mode="bilinear", align_corners=False
    )[0]
    return out.class_logits[0].softmax(-1), logits.sigmoid(), (h, w)


def official_single_view(model, image: np.ndarray, min_size: int, max_size: int):
    """Official path for one view, channel for channel (spec §6), returning (A, refined A)."""
    height, width = image.shape[:2]
    probs, masks, (h, w) = official_outputs(model, image, min_size, max_size)
    semseg = torch.einsum("qc,qhw->chw", probs[:, :-1], masks)
    scores, labels = probs.max(-1)
    keep = (labels != probs.shape[-1] - 1) & (scores > 0.95) & (labels > 1) & (labels < 11)
    extra = scores[keep][:, None, None] * masks[keep]
    channels = torch.cat([semseg, extra])[:, :h, :w]
    channels = F.interpolate(
        channels[None], size=(height, width), mode="bilinear", align_corners=False
    )[0]
    anomaly = 1 - channels.max(0).values
    refined = anomaly
    if int(keep.sum()) > 1:
        refine = channels[semseg.shape[0] :].max(0).values
        refined = anomaly * (1 - (refine >= 0.5).float())
    return anomaly, refined, int(keep.sum())


def test_predictor_equals_official_path_with_resize_and_flip(confident_model, tiny_config):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(90, 200, 3), dtype=np.uint8)
    cfg = tiny_config.inference
    predictor = Predictor(confident_model, scoring=tiny_config.scoring, inference=cfg)
    prediction = predictor.predict(image)
    assert prediction.anomaly_score.shape == (90, 200) and prediction.semantic.shape == (90, 200)
    a0, r0, m0 = official_single_view(confident_model, image, cfg.min_size, cfg.max_size)
    a1, r1, m1 = official_single_view(
        confident_model, image[:, ::-1].copy(), cfg.min_size, cfg.max_size
    )
    assert max(m0, m1) > 1, "the refinement branch must be exercised"
    expected_unrefined = (a0 + a1.flip(-1)) / 2
    expected_refined = (r0 + r1.flip(-1)) / 2
    assert np.abs(prediction.anomaly_score_unrefined - expected_unrefined.numpy()).max() < 1e-5
    assert np.abs(prediction.anomaly_score - expected_refined.numpy()).max() < 1e-5
    assert not np.allclose(prediction.anomaly_score, prediction.anomaly_score_unrefined)


def test_flip_averaging_equals_mean_of_two_plain_predictions(confident_model, tiny_config):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(64, 128, 3), dtype=np.uint8)
    flip = Predictor(confident_model, inference=tiny_config.inference)
    plain = Predictor(
        confident_model, inference=dataclasses.replace(tiny_config.inference, flip=False)
    )
    a = plain.predict(image).anomaly_score
    b = plain.predict(image[:, ::-1].copy()).anomaly_score[:, ::-1]
    assert np.abs(flip.predict(image).anomaly_score - (a + b) / 2).max() < 1e-5


def test_batch_of_different_sizes_equals_single_predictions(confident_model, tiny_config):
    rng = np.random.default_rng(2)
    images = [
        rng.integers(0, 256, size=s + (3,), dtype=np.uint8)
        for s in [(64, 128), (100, 80), (64, 128)]
    ]
    predictor = Predictor(confident_model, inference=tiny_config.inference, batch_size=4)
    batch = predictor.predict_batch(images)
    for image, prediction in zip(images, batch):
        single = predictor.predict(image)
        assert prediction.anomaly_score.shape == image.shape[:2]
        assert np.abs(prediction.anomaly_score - single.anomaly_score).max() < 1e-5
        assert np.array_equal(prediction.semantic, single.semantic)


def test_no_resize_no_refinement_gives_one_minus_max_semantic(confident_model, tiny_config):
    image = np.random.default_rng(3).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    inference = dataclasses.replace(tiny_config.inference, resize=False, flip=False)
    scoring = dataclasses.replace(tiny_config.scoring, refinement="none")
    prediction = Predictor(confident_model, scoring=scoring, inference=inference).predict(
        image, return_semantic_probs=True
    )
    assert prediction.semantic_probs.shape == (19, 64, 96)
    assert np.allclose(prediction.anomaly_score, 1 - prediction.semantic_probs.max(0), atol=1e-6)
    assert np.array_equal(prediction.anomaly_score, prediction.anomaly_score_unrefined)
    assert np.array_equal(prediction.semantic, prediction.semantic_probs.argmax(0))


def test_input_formats_and_bad_inputs(confident_model, tiny_config):
    image = np.random.default_rng(4).integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    predictor = Predictor(confident_model, inference=tiny_config.inference)
    reference = predictor.predict(image).anomaly_score
    for same in (Image.fromarray(image), torch.from_numpy(image).permute(2, 0, 1)):
        assert np.array_equal(predictor.predict(same).anomaly_score, reference)
    with pytest.raises(UserError, match="uint8"):
        predictor.predict(image.astype(np.float32))
    with pytest.raises(UserError, match=r"RGB image \[H, W, 3\]"):
        predictor.predict(image[..., 0])


def test_refinement_keep_mask_and_precision_options(confident_model, tiny_config):
    image = np.random.default_rng(5).integers(0, 256, size=(90, 200, 3), dtype=np.uint8)
    predictor = Predictor(
        confident_model,
        scoring=tiny_config.scoring,
        inference=dataclasses.replace(tiny_config.inference, flip=False),
    )
    p = predictor.predict(image)
    assert set(np.unique(p.refinement_keep)) <= {0.0, 1.0} and (p.refinement_keep == 0).any()
    assert np.allclose(p.anomaly_score, p.anomaly_score_unrefined * p.refinement_keep)
    bf16 = Predictor(
        confident_model,
        scoring=tiny_config.scoring,
        inference=dataclasses.replace(tiny_config.inference, flip=False, precision="bf16"),
    )
    q = bf16.predict(image)
    assert q.anomaly_score.dtype == np.float32 and np.isfinite(q.anomaly_score).all()
    assert np.abs(q.anomaly_score_unrefined - p.anomaly_score_unrefined).mean() < 0.1


@pytest.mark.parametrize(("rows", "band"), [(12, 64), (12, 5), (9, 7), (16, 1)])
def test_upsampled_rows_are_the_rows_of_the_full_upsampling(rows, band):
    logits = torch.randn(3, rows, 10, generator=torch.Generator().manual_seed(rows + band))
    padded = (rows * 4, 40)
    full = F.interpolate(logits[None], size=padded, mode="bilinear", align_corners=False)[0]
    bands = [
        upsampled_rows(logits, top, min(top + band, padded[0]), padded)
        for top in range(0, padded[0], band)
    ]
    assert torch.equal(torch.cat(bands, dim=1), full)  # bitwise


def test_compiled_sampling_predicts_bitwise_the_same_maps(confident_model, tiny_config):
    image = np.random.default_rng(6).integers(0, 256, size=(70, 150, 3), dtype=np.uint8)
    plain = Predictor(confident_model, scoring=tiny_config.scoring, inference=tiny_config.inference)
    compiled = Predictor(
        confident_model,
        scoring=tiny_config.scoring,
        inference=dataclasses.replace(tiny_config.inference, compile=True),
    )
    expected, got = plain.predict(image), compiled.predict(image)
    assert np.array_equal(got.anomaly_score, expected.anomaly_score)
    assert np.array_equal(got.semantic, expected.semantic)


@pytest.mark.parametrize("batch", [1, 2])
def test_nhwc_mask_features_equal_the_convolution_bitwise(tiny_config, batch):
    """The bf16 copy's mask features: one matrix product per image writing NCHW, the same
    numbers as the 1x1 convolution followed by an NCHW copy."""
    torch.manual_seed(0)
    decoder = build_model(tiny_config.model).pixel_decoder.to(torch.bfloat16)
    fpn = torch.randn(batch, decoder.conv_dim, 24, 40).to(torch.bfloat16)
    fpn = fpn.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = decoder.mask_features(fpn).contiguous()
        found = decoder._mask_features_nchw(fpn)
    assert found.is_contiguous() and found.shape == expected.shape
    assert torch.equal(found, expected)
