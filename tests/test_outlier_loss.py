"""OutlierLoss: hand-worked values of every variant, batch pooling, sizes and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mask2anomaly.data.types import Target
from mask2anomaly.model.mask2anomaly import ModelOutput
from mask2anomaly.scoring import max_class_score
from mask2anomaly.train.outlier_loss import OutlierLoss, score_map_for_image

# One query, one inlier class: softmax([ln 3, 0]) = [0.75, 0.25], so the class score is 0.75 and
# max_k S = 0.75 * sigmoid(mask logit). The mask logits below give sigmoid 0.5, 0.75, 1, 0.
CLASS_LOGITS = torch.tensor([[[math.log(3.0), 0.0]]])  # [B=1, Q=1, K+1=2]
MASK_LOGITS = torch.tensor([[[[0.0, math.log(3.0)], [1e4, -1e4]]]])  # [1, 1, 2, 2]
# l_N = -max_k S per pixel
L_N = [[-0.375, -0.5625], [-0.75, 0.0]]
OUTLIER = torch.tensor([[False, True], [False, False]])
VOID = torch.tensor([[False, False], [False, True]])


def target(outlier: torch.Tensor | None = OUTLIER, void: torch.Tensor | None = VOID) -> Target:
    masks = torch.zeros(1, 2, 2, dtype=torch.bool)
    return Target(torch.zeros(1, dtype=torch.int64), masks, outlier, void)


def output(class_logits=CLASS_LOGITS, mask_logits=MASK_LOGITS, aux=()) -> ModelOutput:
    return ModelOutput(class_logits, mask_logits, tuple(aux))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def check(loss: torch.Tensor, expected: float) -> None:
    assert loss.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_margin_void_as_inlier() -> None:
    loss = OutlierLoss()(output(), [target()])["loss_outlier"]
    inlier = (0.375**2 + 0.75**2 + 0.0**2) / 3  # void pixel (1, 1) counts as inlier
    outlier = (1.0 - (-0.5625)) ** 2
    check(loss, 0.5 * (inlier + outlier))


def test_margin_void_excluded() -> None:
    loss = OutlierLoss(void_as_inlier=False)(output(), [target()])["loss_outlier"]
    inlier = (0.375**2 + 0.75**2) / 2
    check(loss, 0.5 * (inlier + 1.5625**2))


def test_margin_without_outlier_pixels_is_the_inlier_term_only() -> None:
    criterion = OutlierLoss()
    for outlier in (None, torch.zeros(2, 2, dtype=torch.bool)):
        loss = criterion(output(), [target(outlier=outlier)])["loss_outlier"]
        check(loss, 0.5 * (0.375**2 + 0.5625**2 + 0.75**2 + 0.0) / 4)


def test_margin_clamp_and_margin_value() -> None:
    inlier = (0.375**2 + 0.75**2) / 3
    # m below l_N of the outlier pixel (-0.5625): max(0, m - l) = 0.
    check(OutlierLoss(margin=-0.6)(output(), [target()])["loss_outlier"], 0.5 * inlier)
    check(
        OutlierLoss(margin=0.75)(output(), [target()])["loss_outlier"],
        0.5 * (inlier + (0.75 + 0.5625) ** 2),
    )


def test_score_margin_variant_works_on_the_anomaly_score() -> None:
    # a = 1 + l_N: inliers (0, 0), (1, 0), void (1, 1) -> 0.625, 0.25, 1; outlier (0, 1) -> 0.4375
    loss = OutlierLoss(kind="score_margin", margin=0.75)(output(), [target()])["loss_outlier"]
    inlier = (0.625**2 + 0.25**2 + 1.0**2) / 3
    check(loss, 0.5 * (inlier + (0.75 - 0.4375) ** 2))
    clamped = OutlierLoss(kind="score_margin", margin=0.4)(output(), [target()])["loss_outlier"]
    check(clamped, 0.5 * inlier)  # a = 0.4375 already above the margin


def test_bce_variant() -> None:
    loss = OutlierLoss(kind="bce")(output(), [target()])["loss_outlier"]
    # BCE-with-logits(x, 0) = softplus(x); BCE-with-logits(x, 1) = softplus(-x).
    inlier = (softplus(-0.375) + softplus(-0.75) + softplus(0.0)) / 3
    outlier = softplus(0.5625)
    check(loss, 0.5 * (inlier + outlier))
    no_outlier = OutlierLoss(kind="bce", void_as_inlier=False)(output(), [target(outlier=None)])
    inlier = (softplus(-0.375) + softplus(-0.5625) + softplus(-0.75)) / 3
    check(no_outlier["loss_outlier"], 0.5 * inlier)


def test_means_are_pooled_over_the_batch() -> None:
    # Image 2: every pixel l_N = -0.75 * 0.5 = -0.375, all inliers, no void.
    class_logits = CLASS_LOGITS.expand(2, 1, 2)
    mask_logits = torch.cat([MASK_LOGITS, torch.zeros(1, 1, 2, 2)])
    targets = [target(), target(outlier=None, void=None)]
    loss = OutlierLoss()(output(class_logits, mask_logits), targets)["loss_outlier"]
    inlier = (0.375**2 + 0.75**2 + 0.0 + 4 * 0.375**2) / 7  # 3 + 4 pixels, not a mean of means
    check(loss, 0.5 * (inlier + 1.5625**2))


def test_weight_and_deep_supervision_keys() -> None:
    aux = [(CLASS_LOGITS, torch.zeros(1, 1, 2, 2)), (CLASS_LOGITS, MASK_LOGITS)]
    losses = OutlierLoss(weight=2.0)(output(aux=aux), [target()])
    assert list(losses) == ["loss_outlier", "loss_outlier_0", "loss_outlier_1"]
    inlier = (0.375**2 + 0.75**2) / 3
    check(losses["loss_outlier"], 2.0 * 0.5 * (inlier + 1.5625**2))
    check(losses["loss_outlier_1"], losses["loss_outlier"].item())
    check(losses["loss_outlier_0"], 2.0 * 0.5 * (0.375**2 + 1.375**2))  # constant l_N = -0.375


def test_score_map_squeezes_the_padded_map_for_equal_sizes() -> None:
    # The official path: a 380 x 760 crop, padded to 384 x 768, mask resolution 96 x 192.
    scores = torch.randn(96, 192, dtype=torch.float64)
    resized = score_map_for_image(scores, (380, 760), 32)
    expected = F.interpolate(scores[None, None], (380, 760), mode="bilinear", align_corners=True)
    torch.testing.assert_close(resized, expected[0, 0])


def test_score_map_of_a_smaller_image_ignores_the_batch_padding() -> None:
    alone = torch.randn(8, 16, dtype=torch.float64)  # a 32 x 48 image padded alone: 32 x 64 / 4
    in_batch = torch.randn(16, 32, dtype=torch.float64)  # beside a 64 x 128 image
    in_batch[:8, :16] = alone
    torch.testing.assert_close(
        score_map_for_image(in_batch, (32, 48), 32), score_map_for_image(alone, (32, 48), 32)
    )


def test_batch_of_different_sizes_matches_images_alone() -> None:
    torch.manual_seed(0)
    class_logits = torch.randn(2, 3, 4)
    mask_logits = torch.randn(2, 3, 16, 32)  # batch padded to 64 x 128
    small = torch.zeros(32, 48, dtype=torch.bool)
    small[5:20, 7:30] = True
    big = torch.zeros(64, 128, dtype=torch.bool)
    big[40:, :10] = True
    targets = [
        Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 64, 128, dtype=torch.bool), big),
        Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 32, 48, dtype=torch.bool), small),
    ]
    criterion = OutlierLoss(kind="margin", margin=0.75)
    batch = criterion(output(class_logits, mask_logits), targets)["loss_outlier"]
    # Pool per-image terms by hand, each image's l_N taken from its own region (as if alone).
    inlier_sq, outlier_sq = [], []
    for i, (t, (h, w)) in enumerate(zip(targets, [(16, 32), (8, 16)])):
        scores = -max_class_score(class_logits[i : i + 1], mask_logits[i : i + 1, :, :h, :w])[0]
        resized = F.interpolate(
            scores[None, None], t.outlier_mask.shape, mode="bilinear", align_corners=True
        )[0, 0]
        inlier_sq.append(resized[~t.outlier_mask].square())
        outlier_sq.append((0.75 - resized[t.outlier_mask]).clamp(min=0).square())
    expected = 0.5 * (torch.cat(inlier_sq).mean() + torch.cat(outlier_sq).mean())
    torch.testing.assert_close(batch, expected)


def test_gradients_reach_class_and_mask_logits_of_every_prediction() -> None:
    torch.manual_seed(1)
    tensors = [torch.randn(2, 4, 4, requires_grad=True) for _ in range(2)]
    masks = [torch.randn(2, 4, 8, 8, requires_grad=True) for _ in range(2)]
    outlier = torch.zeros(32, 32, dtype=torch.bool)
    outlier[:8, :8] = True
    empty = torch.zeros(0, 32, 32, dtype=torch.bool)
    targets = [Target(torch.zeros(0, dtype=torch.int64), empty, outlier)] * 2
    for kind in ("margin", "bce", "score_margin"):
        out = ModelOutput(tensors[1], masks[1], ((tensors[0], masks[0]),))
        losses = OutlierLoss(kind=kind)(out, targets)
        torch.stack(list(losses.values())).sum().backward()
        for grad in [t.grad for t in tensors] + [m.grad for m in masks]:
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
            grad.zero_()


def test_all_pixels_void_and_excluded_gives_zero_with_a_graph() -> None:
    mask_logits = MASK_LOGITS.clone().requires_grad_()
    everything = torch.ones(2, 2, dtype=torch.bool)
    loss = OutlierLoss(void_as_inlier=False)(
        output(mask_logits=mask_logits), [target(outlier=None, void=everything)]
    )["loss_outlier"]
    assert loss.item() == 0.0
    loss.backward()  # no error: the zero is still part of the graph


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="margin"):
        OutlierLoss(kind="hinge")
