"""SetCriterion: every term on hand-worked tensors, naming/weighting, normalisation, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from mask2anomaly.config import Config
from mask2anomaly.data.types import Target
from mask2anomaly.model.mask2anomaly import ModelOutput, build_model
from mask2anomaly.train.losses import SetCriterion, average_num_masks, dice_loss, sigmoid_bce_loss
from mask2anomaly.train.matcher import HungarianMatcher

NUM_CLASSES = 2


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def make_criterion(**kwargs: float | bool) -> SetCriterion:
    matcher = HungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0, num_points=64)
    return SetCriterion(num_classes=NUM_CLASSES, matcher=matcher, num_points=32, **kwargs)


def test_sigmoid_bce_and_dice_on_hand_worked_values() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    bce = [
        [math.log(2), math.log(1 + math.exp(2))],
        [0.5 * math.log(1 + math.exp(1)) + 0.5 * math.log(1 + math.exp(-1)),
         math.log(1 + math.exp(-1))],
    ]  # fmt: skip
    expected_bce = (sum(bce[0]) / 2 + sum(bce[1]) / 2) / 3.0
    assert sigmoid_bce_loss(logits, targets, 3.0).item() == pytest.approx(expected_bce, rel=1e-6)
    p = [[sigmoid(0), sigmoid(2)], [sigmoid(-1), sigmoid(1)]]
    dice0 = 1 - (2 * p[0][0] + 1) / (p[0][0] + p[0][1] + 1 + 1)
    dice1 = 1 - (2 * (0.5 * p[1][0] + p[1][1]) + 1) / (p[1][0] + p[1][1] + 1.5 + 1)
    expected_dice = (dice0 + dice1) / 3.0
    assert dice_loss(logits, targets, 3.0).item() == pytest.approx(expected_dice, rel=1e-6)


def test_class_loss_is_weighted_mean_with_no_object_weight() -> None:
    criterion = make_criterion(no_object_weight=0.1)
    class_logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])  # [1, 2, K+1]
    target = Target(labels=torch.tensor([0]), masks=torch.ones(1, 8, 8, dtype=torch.bool))
    indices = [(torch.tensor([1]), torch.tensor([0]))]  # query 1 -> class 0; query 0 no object

    def ce(row: list[float], k: int) -> float:
        return -row[k] + math.log(sum(math.exp(v) for v in row))

    expected = (0.1 * ce([1.0, 2.0, 0.5], 2) + 1.0 * ce([0.0, -1.0, 3.0], 0)) / (0.1 + 1.0)
    got = criterion.class_loss(class_logits, [target], indices)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mask_losses_on_hand_worked_points(monkeypatch: pytest.MonkeyPatch) -> None:
    # The point choice is tested in test_point_sampling; here the points are fixed at the centres
    # of the four cells of 2 x 2 logits, so logits are read exactly and the GT (4 x 8 image in an
    # 8 x 8 padded batch, constant on 4 x 4 blocks) is read exactly too: the bottom row of points
    # lies in the padding and has target 0.
    centres = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])

    def fixed_points(mask_logits: torch.Tensor, **_: object) -> torch.Tensor:
        return centres.expand(mask_logits.shape[0], -1, -1)

    monkeypatch.setattr("mask2anomaly.train.losses.uncertain_point_coords", fixed_points)
    mask_logits = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]], [[0.0, 0.0], [0.0, 0.0]],
                                 [[-1.0, 2.0], [1.5, -0.5]]]])  # [1, 3, 2, 2]  # fmt: skip
    masks = torch.zeros(2, 4, 8, dtype=torch.bool)
    masks[0, :, :4] = True  # left block
    masks[1, :, :] = True  # whole image (top row of blocks)
    target = Target(labels=torch.tensor([0, 1]), masks=masks)
    indices = [(torch.tensor([0, 2]), torch.tensor([1, 0]))]  # query 0 -> mask 1, 2 -> mask 0
    bce, dice = make_criterion().mask_losses(mask_logits, [target], indices, num_masks=4.0)

    def bce_one(x: float, t: float) -> float:
        return -(t * math.log(sigmoid(x)) + (1 - t) * math.log(1 - sigmoid(x)))

    pairs = [([1.0, -2.0, 0.5, 3.0], [1.0, 1.0, 0.0, 0.0]),  # query 0 vs whole-image mask
             ([-1.0, 2.0, 1.5, -0.5], [1.0, 0.0, 0.0, 0.0])]  # query 2 vs left block  # fmt: skip
    expected_bce = sum(sum(map(bce_one, x, t)) / 4 for x, t in pairs) / 4.0
    expected_dice = 0.0
    for x, t in pairs:
        p = [sigmoid(v) for v in x]
        expected_dice += 1 - (2 * sum(a * b for a, b in zip(p, t)) + 1) / (sum(p) + sum(t) + 1)
    assert bce.item() == pytest.approx(expected_bce, rel=1e-5)
    assert dice.item() == pytest.approx(expected_dice / 4.0, rel=1e-5)


def test_no_matches_give_zero_mask_losses_with_graph() -> None:
    mask_logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    empty = [(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))] * 2
    targets = [Target(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 16, 16, dtype=torch.bool))]
    bce, dice = make_criterion().mask_losses(mask_logits, targets * 2, empty, num_masks=1.0)
    assert bce.item() == 0 and dice.item() == 0
    (bce + dice).backward()
    assert mask_logits.grad is not None


def random_outputs(gen: torch.Generator, num_aux: int, batch: int = 2) -> ModelOutput:
    def pair() -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(batch, 5, NUM_CLASSES + 1, generator=gen).requires_grad_(),
                torch.randn(batch, 5, 4, 4, generator=gen).requires_grad_())  # fmt: skip

    class_logits, mask_logits = pair()
    return ModelOutput(class_logits, mask_logits, tuple(pair() for _ in range(num_aux)))


def random_targets(gen: torch.Generator, batch: int = 2) -> list[Target]:
    masks = torch.rand(batch, 2, 16, 16, generator=gen) > 0.5
    return [Target(labels=torch.tensor([0, 1]), masks=masks[b]) for b in range(batch)]


def test_forward_names_weights_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    outputs, targets = random_outputs(gen, num_aux=2), random_targets(gen)
    weighted = make_criterion()(outputs, targets, generator=torch.Generator().manual_seed(1))
    plain = make_criterion(class_weight=1.0, mask_weight=1.0, dice_weight=1.0)(
        outputs, targets, generator=torch.Generator().manual_seed(1)
    )
    names = {f"loss_{t}{s}" for t in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert set(weighted) == names
    for name, value in weighted.items():
        factor = 2.0 if name.startswith("loss_ce") else 5.0
        assert value.item() == pytest.approx(factor * plain[name].item(), rel=1e-5)
        assert torch.isfinite(value)
    total = SetCriterion.total(weighted)
    assert total.item() == pytest.approx(sum(v.item() for v in weighted.values()), rel=1e-6)
    total.backward()
    for class_logits, mask_logits in [*outputs.aux, (outputs.class_logits, outputs.mask_logits)]:
        assert class_logits.grad.abs().sum() > 0 and mask_logits.grad.abs().sum() > 0


def test_without_deep_supervision_only_final_terms() -> None:
    gen = torch.Generator().manual_seed(2)
    losses = make_criterion(deep_supervision=False)(random_outputs(gen, 3), random_targets(gen))
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}


def test_losses_are_normalised_per_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    # Repeating the batch doubles the number of masks and the summed mask losses and keeps the
    # mean cross-entropy, so every term is unchanged. Points are fixed and matching uses the class
    # cost only, which makes both runs see identical points and matches.
    centres = torch.rand(50, 2, generator=torch.Generator().manual_seed(9))
    monkeypatch.setattr("mask2anomaly.train.losses.uncertain_point_coords",
                        lambda logits, **_: centres.expand(logits.shape[0], -1, -1))  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    outputs, targets = random_outputs(gen, num_aux=1, batch=1), random_targets(gen, batch=1)
    twice = ModelOutput(
        outputs.class_logits.repeat(2, 1, 1),
        outputs.mask_logits.repeat(2, 1, 1, 1),
        tuple((c.repeat(2, 1, 1), m.repeat(2, 1, 1, 1)) for c, m in outputs.aux),
    )
    matcher = HungarianMatcher(class_weight=1.0, mask_weight=0.0, dice_weight=0.0, num_points=8)
    criterion = SetCriterion(num_classes=NUM_CLASSES, matcher=matcher, num_points=50)
    one = criterion(outputs, targets)
    two = criterion(twice, targets * 2)
    for name in one:
        assert two[name].item() == pytest.approx(one[name].item(), rel=1e-6)


def test_num_masks_is_averaged_over_processes(tmp_path) -> None:
    targets = random_targets(torch.Generator().manual_seed(4), batch=3)
    assert average_num_masks(targets, torch.device("cpu")) == 6.0
    assert average_num_masks([], torch.device("cpu")) == 1.0
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert average_num_masks(targets, torch.device("cpu")) == 6.0
    finally:
        dist.destroy_process_group()


def test_loss_on_tiny_model_reaches_every_trainable_parameter(tiny_config: Config) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config.model)
    images = [torch.rand(3, 64, 96) * 255, torch.rand(3, 50, 64) * 255]
    labels = [torch.tensor([0, 3, 7]), torch.tensor([18])]
    targets = [Target(labels=lab, masks=torch.rand(len(lab), *im.shape[1:]) > 0.5)
               for lab, im in zip(labels, images)]  # fmt: skip
    num_points = tiny_config.loss.num_points
    matcher = HungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                               num_points=num_points)  # fmt: skip
    criterion = SetCriterion(num_classes=tiny_config.model.num_classes, matcher=matcher,
                             num_points=num_points)  # fmt: skip
    losses = criterion(model(model.preprocess(images)), targets)
    assert len(losses) == 3 * (tiny_config.model.decoder.num_layers + 1)
    total = SetCriterion.total(losses)
    assert torch.isfinite(total)
    total.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
