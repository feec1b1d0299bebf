"""Typed training samples: Target per image, Batch of images and targets, with `.to(device)`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Target:
    """Ground truth of one image (unpadded size H x W).

    labels: [N] int64 inlier class ids (0..K-1), one per segment.
    masks: [N, H, W] bool, one binary mask per segment (semantic segments: one per class present).
    outlier_mask: [H, W] bool, pixels of pasted outlier objects (stage 2), else None.
    void_mask: [H, W] bool, pixels labelled IGNORE_INDEX, or None.
    """

    labels: torch.Tensor
    masks: torch.Tensor
    outlier_mask: torch.Tensor | None = None
    void_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Target:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Target(
            self.labels.to(device, non_blocking=True),
            self.masks.to(device, non_blocking=True),
            move(self.outlier_mask),
            move(self.void_mask),
        )


@dataclass(frozen=True)
class Batch:
    """images: list of B RGB tensors [3, H_i, W_i], float 0..255 (normalised and padded by
    `Mask2Anomaly.preprocess`); targets: one Target per image."""

    images: list[torch.Tensor]
    targets: list[Target]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            [im.to(device, non_blocking=True) for im in self.images],
            [t.to(device) for t in self.targets],
        )


def collate(samples: list[tuple[torch.Tensor, Target]]) -> Batch:
    """DataLoader collate_fn for (image, target) samples."""
    return Batch([image for image, _ in samples], [target for _, target in samples])
