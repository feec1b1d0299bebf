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
from torch.nn.utils.rnn import pad_sequence

from ..data.types import Target
from .point_sampling import MaskBank, point_sample, rand_points

# The mask logits are predicted at 1/4 of the padded input size (pixel decoder output stride).
MASK_STRIDE = 4


def padded_size_of(mask_logits: torch.Tensor) -> tuple[int, int]:
    """(H_pad, W_pad) of the padded input batch, from mask logits [..., H_pad/4, W_pad/4]."""
    return mask_logits.shape[-2] * MASK_STRIDE, mask_logits.shape[-1] * MASK_STRIDE


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over points of BCE-with-logits for every (prediction, target) pair.

    Args:
        logits: [..., Q, P] mask logits at the points (leading dimensions: a batch).
        targets: [..., N, P] target values in [0, 1] at the same points.

    Returns:
        [..., Q, N] costs.
    """
    # BCE(x, t) = t * softplus(-x) + (1 - t) * softplus(x), summed over points by a matmul.
    positive = F.softplus(-logits)  # loss where the target is 1
    negative = F.softplus(logits)  # loss where the target is 0
    cost = positive @ targets.mT + negative @ (1 - targets).mT
    return cost / logits.shape[-1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 - (2|p.t| + 1) / (|p| + |t| + 1) for every pair, p = sigmoid(logits).

    Args:
        logits: [..., Q, P] mask logits at the points (leading dimensions: a batch).
        targets: [..., N, P] target values in [0, 1].

    Returns:
        [..., Q, N] costs.
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.mT
    denominator = probs.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
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
    def cost_matrices(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        targets: list[Target],
        point_coords: torch.Tensor,
        bank: MaskBank | None = None,
    ) -> torch.Tensor:
        """Matching costs of a batch, computed together (a few large operations instead of a
        few small ones per image); image b's costs are `[b, :, :N_b]`.

        Args:
            class_logits: [B, Q, K+1].
            mask_logits: [B, Q, h, w] at 1/4 of the padded input size.
            targets: B targets with at least one segment each, masks [N_b, H_b, W_b].
            point_coords: [B, P, 2] (x, y) in [0, 1] of the padded image, per image.
            bank: the targets' masks as a MaskBank, when the caller has made it already.

        Returns:
            [B, Q, max N_b] float32 costs (columns beyond N_b are padding).
        """
        counts = torch.tensor([t.labels.numel() for t in targets])
        device = class_logits.device
        class_probs = class_logits.float().softmax(-1)  # [B, Q, K+1]
        labels = pad_sequence([t.labels.to(device) for t in targets], batch_first=True)
        cost_class = -torch.gather(
            class_probs, 2, labels[:, None, :].expand(-1, class_probs.shape[1], -1)
        )  # [B, Q, N]
        # The queries are channels of one lookup per image (the same bilinear values).
        point_logits = point_sample(mask_logits.float(), point_coords)  # [B, Q, P]
        per_mask_coords = point_coords.repeat_interleave(counts.to(point_coords.device), dim=0)
        if bank is None:
            bank = MaskBank.of([t.masks for t in targets])
        values = bank.sample(per_mask_coords, padded_size_of(mask_logits))  # [sum N_b, P]
        point_targets = pad_sequence(values.split(counts.tolist()), batch_first=True)
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
        bank: MaskBank | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every image of the batch.

        Args:
            class_logits: [B, Q, K+1].
            mask_logits: [B, Q, h, w].
            targets: B targets.
            generator: optional torch.Generator for the random points (one draw per image
                with at least one segment, in batch order).
            bank: the targets' masks as a MaskBank (made here when None).

        Returns:
            B pairs (query_idx [M_b], target_idx [M_b]) of int64 CPU tensors, M_b = min(Q, N_b),
            query indices ascending.
        """
        if len(targets) != class_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {class_logits.shape[0]}")
        empty = torch.empty(0, dtype=torch.int64)
        indices = [(empty, empty.clone()) for _ in targets]
        present = [b for b, target in enumerate(targets) if target.labels.numel()]
        if not present:
            return indices
        coords = torch.cat([
            rand_points(1, self.num_points, device=mask_logits.device, generator=generator)
            for _ in present
        ])  # fmt: skip
        whole = len(present) == len(targets)
        pick = slice(None) if whole else torch.tensor(present, device=class_logits.device)
        costs = self.cost_matrices(
            class_logits[pick], mask_logits[pick], [targets[b] for b in present], coords, bank
        )
        finite = torch.isfinite(costs).flatten(1).all(1).tolist()
        cost_values = costs.cpu().numpy()
        for row, b in enumerate(present):
            if not finite[row]:
                raise FloatingPointError(f"non-finite matching cost for image {b} of the batch")
            rows, cols = linear_sum_assignment(cost_values[row, :, : targets[b].labels.numel()])
            indices[b] = (torch.as_tensor(rows, dtype=torch.int64),
                          torch.as_tensor(cols, dtype=torch.int64))  # fmt: skip
        return indices
