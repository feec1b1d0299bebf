"""Point sampling: bilinear lookups at continuous coordinates and uncertainty-based point choice.

Mask2Former computes its matching costs and mask losses on sampled points instead of full masks
(spec official-implementation.md §5.1; PointRend's `point_sample` and
`get_uncertain_point_coords_with_randomness`). Coordinates are normalised to [0, 1] in (x, y)
order over the whole map, with `align_corners=False` pixel centres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def rand_points(
    num_masks: int,
    num_points: int,
    *,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform random points in the unit square.

    Args:
        num_masks: leading dimension (one set of points per mask).
        num_points: P, points per mask.
        device: where the result lives.
        generator: optional source of randomness; the points are drawn on its device and moved.

    Returns:
        [num_masks, P, 2] coordinates (x, y) in [0, 1).
    """
    draw_device = generator.device if generator is not None else device
    points = torch.rand(num_masks, num_points, 2, generator=generator, device=draw_device)
    return points.to(device)


def point_sample(inputs: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of `inputs` at normalised points (zero outside the map).

    Args:
        inputs: [B, C, H, W] maps.
        point_coords: [B, P, 2] (x, y) in [0, 1]; 0 and 1 are the outer edges of the border
            pixels (align_corners=False), so pixel j of W has its centre at (j + 0.5) / W.

    Returns:
        [B, C, P] sampled values.
    """
    grid = 2.0 * point_coords.unsqueeze(2).to(inputs.dtype) - 1.0  # [B, P, 1, 2] in [-1, 1]
    sampled = F.grid_sample(inputs, grid, mode="bilinear", align_corners=False)  # [B, C, P, 1]
    return sampled.squeeze(3)


def mask_uncertainty(mask_logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of class-agnostic mask logits: -|logit|, highest at the decision boundary."""
    return -mask_logits.abs()


def uncertain_point_coords(
    mask_logits: torch.Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Points biased towards uncertain regions of each mask (PointRend training sampling).

    Draws `num_points * oversample_ratio` uniform candidates per mask, keeps the
    `importance_sample_ratio * num_points` most uncertain ones (by `mask_uncertainty` of the
    bilinearly sampled logit) and fills up with fresh uniform points.

    Args:
        mask_logits: [M, 1, h, w] logits of M masks (no gradient is needed here).
        num_points: P, points returned per mask.
        oversample_ratio: candidates per returned point (official 3).
        importance_sample_ratio: fraction of the P points chosen by uncertainty (official 0.75).
        generator: optional torch.Generator for reproducible draws.

    Returns:
        [M, P, 2] coordinates (x, y) in [0, 1].
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    num_masks, device = mask_logits.shape[0], mask_logits.device
    num_candidates = int(num_points * oversample_ratio)
    candidates = rand_points(num_masks, num_candidates, device=device, generator=generator)
    uncertainty = mask_uncertainty(point_sample(mask_logits, candidates))[:, 0]  # [M, P_cand]
    num_uncertain = int(importance_sample_ratio * num_points)
    # The losses sum over points, so the chosen set matters, not its order: unsorted top-k
    # (the same set) is half the cost of sorted on CPU.
    index = torch.topk(uncertainty, k=num_uncertain, dim=1, sorted=False).indices
    # Gather (x, y) pairs as single 64-bit items (bit-exact copies, one lookup per point).
    if candidates.dtype == torch.float32 and candidates.is_contiguous():
        pairs = candidates.view(torch.int64).squeeze(-1)  # [M, P_cand]
        chosen = torch.gather(pairs, 1, index).unsqueeze(-1).view(torch.float32)
    else:
        chosen = torch.gather(candidates, 1, index.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        extra = rand_points(num_masks, num_random, device=device, generator=generator)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen


def sample_padded_masks(
    masks: torch.Tensor, point_coords: torch.Tensor, padded_size: tuple[int, int]
) -> torch.Tensor:
    """Sample masks as if they were first zero-padded (bottom/right) to `padded_size`.

    Mask2Former pads every GT mask to the padded batch size before sampling. Rescaling the
    coordinates to the unpadded map is the same lookup without allocating the padded copy:
    with align_corners=False the pixel position is `c * W_pad - 0.5` in both cases, and
    grid_sample's zero padding supplies the zeros beyond the real mask.

    Args:
        masks: [M, H, W] masks (any dtype; converted to float).
        point_coords: [M, P, 2] (x, y) in [0, 1], normalised to the padded size.
        padded_size: (H_pad, W_pad) with H_pad >= H and W_pad >= W.

    Returns:
        [M, P] float values in [0, 1].
    """
    height, width = masks.shape[-2:]
    if height > padded_size[0] or width > padded_size[1]:
        raise ValueError(f"masks of size {(height, width)} exceed the padded size {padded_size}")
    scale = point_coords.new_tensor([padded_size[1] / width, padded_size[0] / height])
    return point_sample(masks[:, None].float(), point_coords * scale)[:, 0]


@dataclass(frozen=True)
class MaskBank:
    """The ground-truth masks of a batch, made float once and sampled by every decoder output.

    When all images share a size (training crops), the masks are one [sum N_b, H, W] tensor:
    sampling a subset of them (the matched ones) puts each chosen mask's points in its row and
    samples the whole bank, so no mask is copied (grid_sample treats every row on its own, so
    the values are those of sampling the chosen masks alone). Otherwise each image's masks are
    kept and sampled image by image.

    Attributes:
        groups: per image [N_b, H_b, W_b] float masks (views into `stacked` when it exists).
        stacked: [sum N_b, H, W] float masks, or None when the sizes differ.
    """

    groups: tuple[torch.Tensor, ...]
    stacked: torch.Tensor | None

    @classmethod
    def of(cls, masks: Sequence[torch.Tensor]) -> MaskBank:
        """A bank of per-image [N_b, H_b, W_b] masks (any dtype; made float)."""
        if len({tuple(m.shape[-2:]) for m in masks}) <= 1 and masks:
            stacked = torch.cat(list(masks)).float()
            return cls(tuple(stacked.split([m.shape[0] for m in masks])), stacked)
        return cls(tuple(m.float() for m in masks), None)

    def sample(
        self,
        point_coords: torch.Tensor,
        padded_size: tuple[int, int],
        picks: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Values of masks at their points, masks as if zero-padded to `padded_size`.

        Args:
            point_coords: [M, P, 2] (x, y) in [0, 1] of the padded size, one row per mask.
            padded_size: (H_pad, W_pad) of the padded batch.
            picks: per image the indices of its masks to sample (distinct), M in all in image
                order; None: every mask of the bank (M = sum N_b).

        Returns:
            [M, P] float values.
        """
        if picks is None:
            if self.stacked is not None:
                return sample_padded_masks(self.stacked, point_coords, padded_size)
            chosen: Sequence[torch.Tensor] = self.groups
        elif self.stacked is not None:
            rows = self._rows(picks).to(point_coords.device)
            placed = point_coords.new_zeros((self.stacked.shape[0], *point_coords.shape[1:]))
            placed[rows] = point_coords
            return sample_padded_masks(self.stacked, placed, padded_size)[rows]
        else:
            chosen = [group[pick.to(group.device)] for group, pick in zip(self.groups, picks)]
        values, start = [], 0
        for group in chosen:
            stop = start + group.shape[0]
            values.append(sample_padded_masks(group, point_coords[start:stop], padded_size))
            start = stop
        return torch.cat(values)

    def _rows(self, picks: Sequence[torch.Tensor]) -> torch.Tensor:
        starts, offset = [], 0
        for group in self.groups:
            starts.append(offset)
            offset += group.shape[0]
        return torch.cat([pick + start for pick, start in zip(picks, starts)])
