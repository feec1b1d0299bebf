"""Hungarian matching of predicted queries to ground-truth segments (Mask2Former matcher).

Spec official-implementation.md §5.1: per image, cost = class_weight * (-p(class))
+ mask_weight * sigmoid BCE + dice_weight * dice, the mask terms evaluated on `num_points`
uniformly random points shared by all masks of the image; solved with linear_sum_assignment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .data.types import Target
from .point_sampling import point_sample, rand_points, sample_padded_masks

# The mask logits are predicted at 1/4 of the padded input size (pixel decoder output stride).
MASK_STRIDE = 4


def padded_size_of(mask_logits: torch.Tensor) -> tuple[int, int]:
    """(H_pad, W_pad) of the padded input batch, from mask logits [..., H_pad/4, W_pad/4]."""
    return mask_logits.shape[-2] * MASK_STRIDE, mask_logits.shape[-1] * MASK_STRIDE


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over points of BCE-with-logits for every (prediction, target) pair.

    Args:
        logits: [Q, P] mask logits at the points.
        targets: [N, P] target values in [0, 1] at the same points.

    Returns:
        [Q, N] costs.
    """
    # BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x), summed over points by a matmul.
    positive = F.softplus(-logits)  # loss where the target is 1
    negative = F.softplus(logits)  # loss where the target is 0
    cost = positive @ targets.T + negative @ (1 - targets).T
    return cost / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 - (2|p.t| + 1) / (|p| + |t| + 1) for every pair, p = sigmoid(logits).

    Args:
        logits: [Q, P] mask logits at the points.
        targets: [N, P] target values in [0, 1].

    Returns:
        [Q, N] costs.
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment between Q queries and the N ground-truth segments of each image.

    The class cost is -p(class) rather than the NLL (as in DETR): it is on the same [0, 1] scale
    as the mask costs and does not explode for confident wrong predictions. The mask costs are
    computed on random points (PointRend style) to keep memory independent of image size; GT
    masks are treated as zero-padded to the padded input size, as the logits cover that area.

    Args:
        class_weight: weight of the class cost (official 2).
        mask_weight: weight of the sigmoid BCE cost (official 5).
        dice_weight: weight of the dice cost (official 5).
        num_points: P, random points per image shared by all masks (official 12544 = 112^2).
    """

    def __init__(
        self, *, class_weight: float, mask_weight: float, dice_weight: float, num_points: int
    ) -> None:
        super().__init__()
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("all matching costs are zero")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        target: Target,
        point_coords: torch.Tensor,
    ) -> torch.Tensor:
        """Matching cost of one image.

        Args:
            class_logits: [Q, K+1].
            mask_logits: [Q, h, w] at 1/4 of the padded input size.
            target: N segments, masks [N, H, W] with H <= 4h, W <= 4w.
            point_coords: [P, 2] (x, y) in [0, 1] of the padded image.

        Returns:
            [Q, N] float32 cost.
        """
        class_probs = class_logits.float().softmax(-1)  # [Q, K+1]
        cost_class = -class_probs[:, target.labels]  # [Q, N]
        num_queries, num_targets = mask_logits.shape[0], target.masks.shape[0]
        point_logits = point_sample(
            mask_logits[:, None].float(), point_coords.expand(num_queries, -1, -1)
        )[:, 0]  # [Q, P]
        point_targets = sample_padded_masks(
            target.masks, point_coords.expand(num_targets, -1, -1), padded_size_of(mask_logits)
        )  # [N, P]
        cost_mask = pairwise_sigmoid_bce(point_logits, point_targets)
        cost_dice = pairwise_dice(point_logits, point_targets)
        return (
            self.class_weight * cost_class
            + self.mask_weight * cost_mask
            + self.dice_weight * cost_dice
        )

    @torch.no_grad()
    def forward(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        targets: list[Target],
        generator: torch.Generator | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every image of the batch.

        Args:
            class_logits: [B, Q, K+1].
            mask_logits: [B, Q, h, w].
            targets: B targets.
            generator: optional torch.Generator for the random points (one draw per image
                with at least one segment, in batch order).

        Returns:
            B pairs (query_idx [M_b], target_idx [M_b]) of int64 CPU tensors, M_b = min(Q, N_b),
            query indices ascending.
        """
        if len(targets) != class_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {class_logits.shape[0]}")
        indices = []
        for b, target in enumerate(targets):
            if target.labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            coords = rand_points(
                1, self.num_points, device=mask_logits.device, generator=generator
            )[0]
            cost = self.cost_matrix(class_logits[b], mask_logits[b], target, coords)
            if not torch.isfinite(cost).all():
                raise FloatingPointError(f"non-finite matching cost for image {b} of the batch")
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))  # fmt: skip
        return indices
