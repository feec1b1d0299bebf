"""Mask classification losses of stage-1 training: Mask2Former's SetCriterion.

Spec official-implementation.md §5.1 (paper §3.1): queries are matched to ground-truth segments,
then per decoder output 2 * cross-entropy (no-object weight 0.1) + 5 * point-sampled sigmoid BCE
+ 5 * point-sampled dice, summed over all outputs (deep supervision) and normalised by the number
of GT masks averaged over processes. The stage-2 outlier loss lives in its own module.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data.types import Target
from ..model.mask2anomaly import ModelOutput
from .matcher import HungarianMatcher, padded_size_of
from .point_sampling import MaskBank, point_sample, uncertain_point_coords


def sigmoid_bce_loss(
    point_logits: torch.Tensor, point_targets: torch.Tensor, num_masks: float
) -> torch.Tensor:
    """Sum over masks of the mean BCE-with-logits over points, divided by `num_masks`.

    Args:
        point_logits: [M, P] mask logits at the sampled points.
        point_targets: [M, P] target values in [0, 1].
        num_masks: normaliser (number of GT masks, >= 1).
    """
    loss = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(
    point_logits: torch.Tensor, point_targets: torch.Tensor, num_masks: float
) -> torch.Tensor:
    """Sum over masks of 1 - (2|p.t| + 1) / (|p| + |t| + 1), p = sigmoid, divided by `num_masks`.

    Args:
        point_logits: [M, P] mask logits at the sampled points.
        point_targets: [M, P] target values in [0, 1].
        num_masks: normaliser (number of GT masks, >= 1).
    """
    probs = point_logits.sigmoid()
    numerator = 2 * (probs * point_targets).sum(-1)
    denominator = probs.sum(-1) + point_targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def average_num_masks(targets: list[Target], device: torch.device) -> float:
    """Number of GT masks in the batch, averaged over processes when distributed, at least 1."""
    count = torch.tensor(float(sum(t.labels.numel() for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(count.item(), 1.0)


class SetCriterion(nn.Module):
    """Matching + class/mask/dice losses for every decoder output.

    Args:
        num_classes: K inlier classes; logit K is "no object".
        matcher: assigns queries to GT segments (run once per decoder output).
        class_weight: weight of the cross-entropy term.
        mask_weight: weight of the point-sampled BCE term.
        dice_weight: weight of the point-sampled dice term.
        no_object_weight: cross-entropy class weight of the no-object logit (the others are 1).
        num_points: P, points per matched mask for the mask losses.
        oversample_ratio: uniform candidates per point for importance sampling.
        importance_sample_ratio: fraction of the points chosen by uncertainty.
        deep_supervision: also compute the losses on every earlier decoder prediction.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.class_weights: torch.Tensor
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(
        self,
        outputs: ModelOutput,
        targets: list[Target],
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted loss terms of a batch.

        Args:
            outputs: class logits [B, Q, K+1] and mask logits [B, Q, h, w] of every prediction.
            targets: B targets, masks at the unpadded image sizes (<= 4h x 4w).
            generator: optional torch.Generator for all point sampling (matching and losses).

        Returns:
            `loss_ce`, `loss_mask`, `loss_dice` for the final prediction and the same names with
            suffix `_0`, `_1`, ... for the earlier ones (in `outputs.aux` order), each already
            multiplied by its weight. `SetCriterion.total` sums them.
        """
        device = outputs.class_logits.device
        targets = [t.to(device) for t in targets]
        # Masks in float once per batch: every output's matching and losses sample them.
        bank = MaskBank.of([t.masks for t in targets])
        num_masks = average_num_masks(targets, device)
        losses = self._losses(
            outputs.class_logits, outputs.mask_logits, targets, bank, num_masks, generator, ""
        )
        if self.deep_supervision:
            for i, (class_logits, mask_logits) in enumerate(outputs.aux):
                losses.update(self._losses(
                    class_logits, mask_logits, targets, bank, num_masks, generator, f"_{i}"
                ))  # fmt: skip
        return losses

    @staticmethod
    def total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of all (already weighted) terms: the scalar to back-propagate."""
        return torch.stack(list(losses.values())).sum()

    def _losses(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        targets: list[Target],
        bank: MaskBank,
        num_masks: float,
        generator: torch.Generator | None,
        suffix: str,
    ) -> dict[str, torch.Tensor]:
        indices = self.matcher(class_logits, mask_logits, targets, generator=generator, bank=bank)
        loss_mask, loss_dice = self.mask_losses(
            mask_logits, targets, indices, num_masks, generator, bank
        )
        return {
            f"loss_ce{suffix}": self.class_weight * self.class_loss(class_logits, targets, indices),
            f"loss_mask{suffix}": self.mask_weight * loss_mask,
            f"loss_dice{suffix}": self.dice_weight * loss_dice,
        }

    def class_loss(
        self,
        class_logits: torch.Tensor,
        targets: list[Target],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Weighted-mean cross-entropy over all B*Q queries; unmatched queries target K.

        Args:
            class_logits: [B, Q, K+1].
            targets: B targets.
            indices: matcher output, (query_idx, target_idx) per image.

        Returns:
            Unweighted scalar loss (sum of w_i * CE_i over queries divided by sum of w_i).
        """
        batch, num_queries = class_logits.shape[:2]
        target_classes = torch.full(
            (batch, num_queries), self.num_classes, dtype=torch.int64, device=class_logits.device
        )
        for b, (query_idx, target_idx) in enumerate(indices):
            target_classes[b, query_idx.to(class_logits.device)] = targets[b].labels[target_idx]
        return F.cross_entropy(
            class_logits.float().transpose(1, 2), target_classes, weight=self.class_weights
        )

    def mask_losses(
        self,
        mask_logits: torch.Tensor,
        targets: list[Target],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_masks: float,
        generator: torch.Generator | None = None,
        bank: MaskBank | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigmoid BCE and dice of matched masks on importance-sampled points.

        Args:
            mask_logits: [B, Q, h, w].
            targets: B targets, masks [N_b, H_b, W_b] (zero-padded to 4h x 4w implicitly).
            indices: matcher output.
            num_masks: normaliser.
            generator: optional torch.Generator for the point sampling.
            bank: the targets' masks as a MaskBank (made here when None).

        Returns:
            Unweighted (BCE, dice) scalars; zero (still attached to the graph) without matches.
        """
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)])
        query_idx = torch.cat([q for q, _ in indices])
        if query_idx.numel() == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero
        # index_select rather than indexing: the same rows, and its backward adds the gradient
        # rows into zeros (index_add) instead of an accumulating index_put (~4x slower on CPU)
        rows = (batch_idx * mask_logits.shape[1] + query_idx).to(mask_logits.device)
        matched_logits = mask_logits.flatten(0, 1).index_select(0, rows)[:, None].float()
        with torch.no_grad():
            coords = uncertain_point_coords(
                matched_logits,
                num_points=self.num_points,
                oversample_ratio=self.oversample_ratio,
                importance_sample_ratio=self.importance_sample_ratio,
                generator=generator,
            )  # [M, P, 2]
            if bank is None:
                bank = MaskBank.of([t.masks for t in targets])
            picks = [target_idx for _, target_idx in indices]
            point_targets = bank.sample(coords, padded_size_of(mask_logits), picks)  # [M, P]
        point_logits = point_sample(matched_logits, coords)[:, 0]  # [M, P]
        return (
            sigmoid_bce_loss(point_logits, point_targets, num_masks),
            dice_loss(point_logits, point_targets, num_masks),
        )


def build_criterion(cfg: Config) -> SetCriterion:
    """SetCriterion with the loss settings of `cfg` (matcher costs = loss weights, official)."""
    loss = cfg.loss
    matcher = HungarianMatcher(
        class_weight=loss.class_weight,
        mask_weight=loss.mask_weight,
        dice_weight=loss.dice_weight,
        num_points=loss.num_points,
    )
    return SetCriterion(
        num_classes=cfg.model.num_classes,
        matcher=matcher,
        class_weight=loss.class_weight,
        mask_weight=loss.mask_weight,
        dice_weight=loss.dice_weight,
        no_object_weight=loss.no_object_weight,
        num_points=loss.num_points,
        oversample_ratio=loss.oversample_ratio,
        importance_sample_ratio=loss.importance_sample_ratio,
        deep_supervision=loss.deep_supervision,
    )
