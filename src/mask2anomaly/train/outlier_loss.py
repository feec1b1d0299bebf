"""The mask contrastive loss of stage-2 fine-tuning (paper Eq. 7-8; supplementary Eq. 17).

Spec official-implementation.md §5.3: l_N = -max_k softmax(C)^T sigmoid(M) at mask resolution,
upsampled (bilinear, align_corners=True) to each unpadded image, then
0.5 * [mean_inlier(l_N^2) + mean_outlier(max(0, m - l_N)^2)] with means pooled over the batch,
the outlier term only when the batch has an outlier pixel; on every decoder output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, OutlierLossKind, choices
from ..data.types import Target
from ..model.mask2anomaly import ModelOutput
from ..scoring import max_class_score
from .matcher import MASK_STRIDE


def score_map_for_image(
    scores: torch.Tensor, image_size: tuple[int, int], size_divisibility: int
) -> torch.Tensor:
    """The part of a batch score map that belongs to one image, at the image's size.

    The official loss squeezes the whole mask-resolution map (1/4 of the padded batch) onto the
    unpadded crop (spec §5.3 step 3). With images of different sizes in one batch, each image
    takes the region it would have had alone in a batch — its size rounded up to
    `size_divisibility`, divided by the mask stride — and squeezes that, so every image sees
    exactly what the official code computes for a batch of equal sizes.

    Args:
        scores: [h, w] per-pixel scores at mask resolution of the padded batch.
        image_size: (H, W) of the unpadded image.
        size_divisibility: padding multiple of the model input (32).

    Returns:
        [H, W] bilinearly resized scores (align_corners=True).
    """
    region = [
        min(full, math.ceil(size / size_divisibility) * size_divisibility // MASK_STRIDE)
        for size, full in zip(image_size, scores.shape)
    ]
    cropped = scores[: region[0], : region[1]]
    resized = F.interpolate(
        cropped[None, None], size=image_size, mode="bilinear", align_corners=True
    )
    return resized[0, 0]


def _pooled_mean(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean of `values`; an empty selection contributes 0 (kept in the autograd graph)."""
    return values.mean() if values.numel() else reference.sum() * 0.0


class OutlierLoss(nn.Module):
    """Mask contrastive loss (kind "margin", Eq. 8 as coded), its BCE alternative (kind "bce") or
    the margin on the anomaly score (kind "score_margin").

    With l = l_N = -max_k softmax(C)^T sigmoid(M) (`scoring.max_class_score`, Eq. 7):

    * margin: 0.5 * [mean over inlier pixels of l^2 + mean over outlier pixels of
      max(0, m - l)^2]. As the official code, l lies in [-1, 0], so with m = 1 the clamp never
      acts: both terms push the class score towards 0, outliers harder (spec §5.3).
    * bce: supplementary Eq. 17 as the official code applies it: 0.5 * [mean over inliers of
      BCE-with-logits(l, 0) + mean over outliers of BCE-with-logits(l, 1)], i.e. sigmoid(l_N) is
      read as the outlier probability (Eq. 17 as printed takes the log of l_N <= 0 and cannot
      be evaluated literally).
    * score_margin: the margin form on the anomaly score a = 1 + l_N in [0, 1] (Eq. 2 without
      refinement) instead of on l_N: 0.5 * [mean over inliers of a^2 + mean over outliers of
      max(0, m - a)^2]. This is what the paper's text asks of Eq. 8 (l_N should reach -1 on
      inliers and 0 on anomalies, with a margin m between them), which the official form
      cannot do: there the inlier term is smallest at l_N = 0. Not in the official code.

    Means are pooled over all pixels of the batch; the outlier term is added only when the batch
    has at least one outlier pixel. Void pixels count as inliers (official) unless
    `void_as_inlier` is False, in which case they are left out.

    Args:
        kind: "margin" or "bce".
        margin: m of Eq. 8 (official 1.0; the paper states 0.75).
        weight: multiplier of every returned term (official OOD_WEIGHT 1.0).
        void_as_inlier: count void pixels (Target.void_mask) as inliers.
        size_divisibility: padding multiple of the model input (see `score_map_for_image`).
    """

    def __init__(
        self,
        *,
        kind: OutlierLossKind = "margin",
        margin: float = 1.0,
        weight: float = 1.0,
        void_as_inlier: bool = True,
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        if kind not in choices(OutlierLossKind):
            raise ValueError(
                f"outlier loss kind must be one of {choices(OutlierLossKind)}, got {kind!r}"
            )
        self.kind = kind
        self.margin = margin
        self.weight = weight
        self.void_as_inlier = void_as_inlier
        self.size_divisibility = size_divisibility

    def forward(self, outputs: ModelOutput, targets: list[Target]) -> dict[str, torch.Tensor]:
        """Weighted loss terms of a batch.

        Args:
            outputs: class logits [B, Q, K+1] and mask logits [B, Q, h, w] of every prediction.
            targets: B targets at the unpadded image sizes; `outlier_mask` [H, W] (None = no
                outlier pixel) and `void_mask` [H, W] (None = no void pixel).

        Returns:
            `loss_outlier` for the final prediction and `loss_outlier_0`, `loss_outlier_1`, ...
            for the earlier ones (in `outputs.aux` order), each multiplied by `weight`.
        """
        device = outputs.mask_logits.device
        outliers, inliers = self._pixel_sets(targets, device)
        named = [("", outputs.class_logits, outputs.mask_logits)]
        named += [(f"_{i}", *prediction) for i, prediction in enumerate(outputs.aux)]
        return {
            f"loss_outlier{suffix}": self.loss(class_logits, mask_logits, outliers, inliers)
            for suffix, class_logits, mask_logits in named
        }

    def _pixel_sets(
        self, targets: list[Target], device: torch.device
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: (outlier pixels [H, W] bool, inlier pixels [H, W] bool)."""
        outlier_masks, inlier_masks = [], []
        for target in targets:
            size = target.masks.shape[-2:]
            outlier = target.outlier_mask
            if outlier is None:
                outlier = torch.zeros(size, dtype=torch.bool, device=device)
            outlier = outlier.to(device=device, dtype=torch.bool)
            inlier = ~outlier
            if not self.void_as_inlier and target.void_mask is not None:
                inlier = inlier & ~target.void_mask.to(device=device, dtype=torch.bool)
            outlier_masks.append(outlier)
            inlier_masks.append(inlier)
        return outlier_masks, inlier_masks

    def loss(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        outlier_masks: list[torch.Tensor],
        inlier_masks: list[torch.Tensor],
    ) -> torch.Tensor:
        """Weighted loss of one prediction.

        Args:
            class_logits: [B, Q, K+1].
            mask_logits: [B, Q, h, w] at 1/4 of the padded batch.
            outlier_masks, inlier_masks: B bool masks [H_i, W_i] at the unpadded image sizes.

        Returns:
            Scalar tensor.
        """
        # l_N in float32 even under autocast: the loss is a mean of ~10^6 small squares.
        neg_likelihood = -max_class_score(class_logits.float(), mask_logits.float())  # [B, h, w]
        inlier_scores, outlier_scores = [], []
        for scores, outlier, inlier in zip(neg_likelihood, outlier_masks, inlier_masks):
            height, width = outlier.shape
            resized = score_map_for_image(scores, (height, width), self.size_divisibility)
            inlier_scores.append(resized[inlier])
            outlier_scores.append(resized[outlier])
        inlier_l, outlier_l = torch.cat(inlier_scores), torch.cat(outlier_scores)
        if self.kind == "margin":
            inlier_term = inlier_l.square()
            outlier_term = (self.margin - outlier_l).clamp(min=0.0).square()
        elif self.kind == "score_margin":
            inlier_term = (1 + inlier_l).square()
            outlier_term = (self.margin - (1 + outlier_l)).clamp(min=0.0).square()
        else:
            inlier_term = F.binary_cross_entropy_with_logits(
                inlier_l, torch.zeros_like(inlier_l), reduction="none"
            )
            outlier_term = F.binary_cross_entropy_with_logits(
                outlier_l, torch.ones_like(outlier_l), reduction="none"
            )
        total = _pooled_mean(inlier_term, neg_likelihood)
        if outlier_term.numel():
            total = total + outlier_term.mean()
        return self.weight * 0.5 * total


def build_outlier_loss(cfg: Config) -> OutlierLoss:
    """The contrastive loss with the settings of `cfg.outlier`."""
    o = cfg.outlier
    return OutlierLoss(
        kind=o.loss,
        margin=o.margin,
        weight=o.weight,
        void_as_inlier=o.void_as_inlier,
        size_divisibility=cfg.model.size_divisibility,
    )
