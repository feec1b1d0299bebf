"""HungarianMatcher: batch equals per-image, empty targets, brute-force optimality, exact costs."""

from __future__ import annotations

import itertools

import pytest
import torch

from mask2anomaly.data.types import Target
from mask2anomaly.train.matcher import HungarianMatcher

NUM_CLASSES = 3


def make_matcher(num_points: int = 64) -> HungarianMatcher:
    return HungarianMatcher(class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                            num_points=num_points)  # fmt: skip


def random_target(gen: torch.Generator, num: int, height: int, width: int) -> Target:
    labels = torch.randperm(NUM_CLASSES, generator=gen)[:num]
    masks = torch.rand(num, height, width, generator=gen) > 0.5
    return Target(labels=labels, masks=masks)


def test_batch_equals_per_image_matching() -> None:
    gen = torch.Generator().manual_seed(0)
    class_logits = torch.randn(3, 5, NUM_CLASSES + 1, generator=gen)
    mask_logits = torch.randn(3, 5, 6, 8, generator=gen)
    # Images of different unpadded sizes inside a 24 x 32 padded batch.
    targets = [random_target(gen, 3, 24, 32), random_target(gen, 2, 20, 30),
               random_target(gen, 1, 17, 32)]  # fmt: skip
    matcher = make_matcher()
    batched = matcher(class_logits, mask_logits, targets,
                      generator=torch.Generator().manual_seed(7))  # fmt: skip
    single_gen = torch.Generator().manual_seed(7)  # one draw per image, in batch order
    for b in range(3):
        (rows, cols), = matcher(class_logits[b : b + 1], mask_logits[b : b + 1], [targets[b]],
                                generator=single_gen)  # fmt: skip
        assert torch.equal(rows, batched[b][0]) and torch.equal(cols, batched[b][1])
        assert rows.dtype == cols.dtype == torch.int64
        assert len(rows) == targets[b].labels.numel()


def test_empty_targets_give_empty_matches() -> None:
    gen = torch.Generator().manual_seed(1)
    empty = Target(labels=torch.zeros(0, dtype=torch.int64),
                   masks=torch.zeros(0, 16, 16, dtype=torch.bool))  # fmt: skip
    targets = [empty, random_target(gen, 2, 16, 16)]
    matches = make_matcher()(torch.randn(2, 4, NUM_CLASSES + 1), torch.randn(2, 4, 4, 4), targets)
    assert matches[0][0].numel() == 0 and matches[0][1].numel() == 0
    assert matches[0][0].dtype == torch.int64
    assert len(matches[1][0]) == 2


def test_matching_equals_brute_force_over_permutations() -> None:
    gen = torch.Generator().manual_seed(2)
    for trial in range(5):
        class_logits = torch.randn(1, 4, NUM_CLASSES + 1, generator=gen)
        mask_logits = torch.randn(1, 4, 3, 3, generator=gen)
        target = random_target(gen, 3, 12, 12)
        matcher = make_matcher(num_points=32)
        (rows, cols), = matcher(class_logits, mask_logits, [target],
                                generator=torch.Generator().manual_seed(trial))  # fmt: skip
        coords = torch.rand(1, 32, 2, generator=torch.Generator().manual_seed(trial))[0]
        cost = matcher.cost_matrices(class_logits, mask_logits, [target], coords[None])[0]
        best = min(
            sum(cost[q, n].item() for n, q in enumerate(perm))
            for perm in itertools.permutations(range(4), 3)
        )
        assert cost[rows, cols].sum().item() == pytest.approx(best, abs=1e-5)
        assert sorted(cols.tolist()) == [0, 1, 2]


def test_cost_matrix_equals_hand_computed_costs() -> None:
    # GT masks constant on 4 x 4 blocks and points at the centres of the 1/4-resolution cells:
    # then both bilinear lookups are exact pixel reads and the costs can be written out directly.
    gen = torch.Generator().manual_seed(3)
    num_queries, h, w = 3, 3, 4
    class_logits = torch.randn(num_queries, NUM_CLASSES + 1, generator=gen, dtype=torch.float64)
    mask_logits = torch.randn(num_queries, h, w, generator=gen, dtype=torch.float64)
    coarse = torch.rand(2, h, w, generator=gen) > 0.5
    coarse[:, -1, :] = False  # last block row lies in the padding: GT is 8 high, padded 12
    masks = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :8]  # [2, 8, 16]
    target = Target(labels=torch.tensor([2, 0]), masks=masks)
    cells = [(i, j) for i in range(h) for j in range(w)]
    coords = torch.tensor([[(j + 0.5) / w, (i + 0.5) / h] for i, j in cells])
    cost = make_matcher().cost_matrices(
        class_logits[None], mask_logits[None], [target], coords[None]
    )[0]

    probs = class_logits.softmax(-1)
    expected = torch.zeros(num_queries, 2, dtype=torch.float64)
    for q in range(num_queries):
        for n in range(2):
            x = torch.stack([mask_logits[q, i, j] for i, j in cells])
            t = torch.stack([coarse[n, i, j] for i, j in cells]).double()
            p = x.sigmoid()
            bce = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
            dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
            expected[q, n] = -2 * probs[q, target.labels[n]] + 5 * bce + 5 * dice
    torch.testing.assert_close(cost, expected.float(), rtol=1e-5, atol=1e-5)


def test_perfect_predictions_are_recovered() -> None:
    gen = torch.Generator().manual_seed(4)
    small = torch.rand(3, 4, 4, generator=gen) > 0.5  # block-constant GT, exactly predictable
    target = Target(torch.tensor([1, 0, 2]), small.repeat_interleave(4, 1).repeat_interleave(4, 2))
    order = torch.tensor([4, 0, 2])  # query order[n] predicts target n
    mask_logits = torch.full((1, 5, 4, 4), -8.0)
    class_logits = torch.zeros(1, 5, NUM_CLASSES + 1)
    for n, q in enumerate(order.tolist()):
        mask_logits[0, q][small[n]] = 8.0
        class_logits[0, q, target.labels[n]] = 10.0
    ((rows, cols),) = make_matcher(num_points=256)(class_logits, mask_logits, [target])
    assert dict(zip(cols.tolist(), rows.tolist())) == {n: q for n, q in enumerate(order.tolist())}


def test_non_finite_cost_is_reported() -> None:
    gen = torch.Generator().manual_seed(5)
    class_logits = torch.full((1, 2, NUM_CLASSES + 1), float("nan"))
    with pytest.raises(FloatingPointError, match="image 0"):
        make_matcher()(class_logits, torch.randn(1, 2, 4, 4), [random_target(gen, 1, 16, 16)])


@pytest.mark.parametrize("sizes", [((24, 32), (24, 32), (24, 32)), ((24, 32), (20, 30), (17, 32))])
def test_batched_costs_equal_per_image_costs(sizes: tuple[tuple[int, int], ...]) -> None:
    """One batched computation (one lookup for same-size masks, else per image) gives each
    image's own cost matrix; columns past an image's segment count are padding."""
    gen = torch.Generator().manual_seed(3)
    class_logits = torch.randn(3, 5, NUM_CLASSES + 1, generator=gen)
    mask_logits = torch.randn(3, 5, 6, 8, generator=gen)
    targets = [random_target(gen, n, h, w) for n, (h, w) in zip((3, 1, 2), sizes)]
    coords = torch.rand(3, 40, 2, generator=gen)
    matcher = make_matcher(num_points=40)
    costs = matcher.cost_matrices(class_logits, mask_logits, targets, coords)
    assert costs.shape == (3, 5, 3)
    for b, target in enumerate(targets):
        single = matcher.cost_matrices(
            class_logits[b : b + 1], mask_logits[b : b + 1], [target], coords[b : b + 1]
        )[0]
        torch.testing.assert_close(costs[b, :, : target.labels.numel()], single)


def test_image_without_segments_inside_a_batch_takes_no_random_draw() -> None:
    gen = torch.Generator().manual_seed(4)
    empty = Target(labels=torch.zeros(0, dtype=torch.int64),
                   masks=torch.zeros(0, 16, 16, dtype=torch.bool))  # fmt: skip
    targets = [random_target(gen, 2, 16, 16), empty, random_target(gen, 3, 16, 16)]
    class_logits = torch.randn(3, 4, NUM_CLASSES + 1, generator=gen)
    mask_logits = torch.randn(3, 4, 4, 4, generator=gen)
    matcher = make_matcher()
    batched = matcher(
        class_logits, mask_logits, targets, generator=torch.Generator().manual_seed(5)
    )
    assert batched[1][0].numel() == 0
    single_gen = torch.Generator().manual_seed(5)
    for b in (0, 2):
        ((rows, cols),) = matcher(
            class_logits[b : b + 1], mask_logits[b : b + 1], [targets[b]], generator=single_gen
        )
        assert torch.equal(rows, batched[b][0]) and torch.equal(cols, batched[b][1])
