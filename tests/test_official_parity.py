"""The model, imported from official weights, reproduces the official implementation's outputs.

Reference: ../shared/fixtures/official-parity (outputs of the official code on CPU for
deterministic random weights in official key names). Tolerance 1e-4, as its README states;
the refinement pixels within 1e-4 of the 0.5 threshold are left out of the refined maps.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
import torch.nn.functional as F

from mask2anomaly.checkpoint import import_official
from mask2anomaly.config import InferenceConfig
from mask2anomaly.inference.predictor import Predictor
from mask2anomaly.scoring import (
    anomaly_from_semantic,
    refine,
    refinement_map,
    refinement_queries,
    semantic_probs,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def parity(official_fixture, tmp_path_factory):
    make_weights, expected = official_fixture
    state = make_weights.make_official_state_dict(1)
    image = make_weights.make_image(1, 256, 512)
    digest = hashlib.sha256()
    for key, tensor in state.items():
        digest.update(key.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    if digest.hexdigest() != expected["meta"]["state_dict_sha256"]:
        pytest.skip("fixture weights do not rebuild bitwise with this torch version")
    path = tmp_path_factory.mktemp("official") / "official.pth"
    torch.save({"model": state, "iteration": 0}, path)  # the detectron2 checkpoint layout
    model, cfg = import_official(path)
    return model, cfg, image, expected


def _far_from_threshold(expected) -> torch.Tensor:
    keep = torch.ones(256, 512, dtype=torch.bool)
    near = expected["refine_near_threshold"]
    keep[near[:, 0], near[:, 1]] = False
    return keep


@torch.no_grad()
def test_intermediate_tensors(parity):
    model, cfg, image, expected = parity
    assert cfg.model.decoder.cross_attention == "global"
    batch = model.preprocess([image])
    features = model.backbone(batch)
    assert (features["res5"][0] - expected["backbone_res5"]).abs().max() <= TOL
    mask_features, multi_scale = model.pixel_decoder(features)
    for level, stride in zip(multi_scale, (32, 16, 8)):
        assert (level[0] - expected[f"encoder_out_stride{stride}"]).abs().max() <= TOL
    predictions = model.decoder(multi_scale, mask_features)
    class_logits = torch.stack([c[0] for c, _ in predictions])
    assert class_logits.shape == expected["decoder_pred_logits"].shape
    assert (class_logits - expected["decoder_pred_logits"]).abs().max() <= TOL
    output = model(batch)
    assert (output.class_logits[0] - expected["pred_logits"]).abs().max() <= TOL
    assert (output.mask_logits[0] - expected["pred_masks"]).abs().max() <= TOL
    assert len(output.aux) == 9


@torch.no_grad()
def test_scoring_single_view(parity):
    model, _, image, expected = parity
    output = model(model.preprocess([image]))
    class_logits = output.class_logits[0]
    mask_probs = F.interpolate(
        output.mask_logits, size=(256, 512), mode="bilinear", align_corners=False
    )[0].sigmoid()
    semantic = semantic_probs(class_logits[None], mask_probs[None])[0]
    assert (semantic - expected["sem_seg"]).abs().max() <= TOL
    anomaly = anomaly_from_semantic(semantic)
    assert (anomaly - expected["anomaly_unrefined_orig"]).abs().max() <= TOL

    indices, scores = refinement_queries(class_logits, "official")
    assert len(indices) == expected["num_refine_channels_orig"]
    keep_pixels = _far_from_threshold(expected)
    refine_map = refinement_map(scores, mask_probs[indices])
    assert torch.equal((refine_map < 0.5)[keep_pixels], expected["refine_keep_orig"][keep_pixels])
    refined = refine(anomaly, refine_map)
    diff = (refined - expected["anomaly_refined_orig"]).abs()[keep_pixels]
    assert diff.max() <= TOL


def test_predictor_flip_averaged_maps(parity):
    model, cfg, image, expected = parity
    inference = dataclasses.replace(cfg.inference, resize=False)  # the fixture ran no resize
    assert inference == InferenceConfig(resize=False, flip=True)
    predictor = Predictor(model, scoring=cfg.scoring, inference=inference)
    prediction = predictor.predict(image, return_semantic_probs=True)
    keep_pixels = _far_from_threshold(expected)
    unrefined = torch.from_numpy(prediction.anomaly_score_unrefined)
    refined = torch.from_numpy(prediction.anomaly_score)
    assert (unrefined - expected["anomaly_unrefined"]).abs().max() <= TOL
    assert (refined - expected["anomaly_refined"]).abs()[keep_pixels].max() <= TOL
    assert (torch.from_numpy(prediction.semantic_probs) - expected["sem_seg"]).abs().max() <= TOL
    assert torch.equal(torch.from_numpy(prediction.semantic).long(), expected["sem_seg"].argmax(0))


@torch.no_grad()
def test_flipped_view_refinement_count(parity):
    model, _, image, expected = parity
    output = model(model.preprocess([torch.flip(image, dims=[2])]))
    indices, _ = refinement_queries(output.class_logits[0], "official")
    assert len(indices) == expected["num_refine_channels_flip"]
