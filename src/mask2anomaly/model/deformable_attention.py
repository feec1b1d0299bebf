"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, no compiled op.

The sampling is the `grid_sample` formulation (bilinear, zero padding, align_corners=False,
grid = 2 * location - 1), the same arithmetic as the official CPU fallback. Queries are
processed in chunks and levels accumulated one at a time, so the memory of the sampled values
stays bounded at large resolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Sampled values held at once: chunk queries so that one level's samples (B*heads, head_dim,
# queries, points) stay below this many elements (~64 MB of float32).
MAX_SAMPLED_ELEMENTS = 16 * 2**20


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Attention-weighted sum of bilinearly sampled values.

    Args:
        value: [B, S, M, D] values of all levels flattened (S = sum of h_l * w_l), M heads.
        spatial_shapes: (h_l, w_l) of each of the L levels, in the order of `value`.
        sampling_locations: [B, Lq, M, L, P, 2] (x, y) in [0, 1] relative to each level.
        attention_weights: [B, Lq, M, L, P], softmax-normalised over L * P.

    Returns:
        [B, Lq, M * D].
    """
    batch, _, heads, head_dim = value.shape
    num_queries, num_points = sampling_locations.shape[1], sampling_locations.shape[4]
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    # [B, S_l, M, D] -> [B*M, D, h_l, w_l]
    value_maps = [
        v.flatten(2).transpose(1, 2).reshape(batch * heads, head_dim, h, w)
        for v, (h, w) in zip(values, spatial_shapes)
    ]
    if torch.onnx.is_in_onnx_export():
        # One chunk: a loop over a size-dependent range cannot be traced for dynamic shapes.
        out = _sample_chunk(value_maps, sampling_locations, attention_weights)
        return out.view(batch, heads * head_dim, num_queries).transpose(1, 2).contiguous()
    chunk = max(1, MAX_SAMPLED_ELEMENTS // (batch * heads * head_dim * num_points))
    outputs = []
    for start in range(0, num_queries, chunk):
        out = _sample_chunk(
            value_maps,
            sampling_locations[:, start : start + chunk],
            attention_weights[:, start : start + chunk],
        )
        outputs.append(out.view(batch, heads * head_dim, -1))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous()


def _sample_chunk(
    value_maps: list[torch.Tensor], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """value_maps: per level [B*M, D, h_l, w_l]; locations [B, q, M, L, P, 2]; weights
    [B, q, M, L, P] -> [B*M, D, q], levels accumulated one at a time."""
    batch, q, heads = weights.shape[:3]
    grids = 2 * locations - 1  # grid_sample coordinates in [-1, 1]
    out = value_maps[0].new_zeros(batch * heads, value_maps[0].shape[1], q)
    for level, value_map in enumerate(value_maps):
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*M, q, P, 2]
        sampled = F.grid_sample(
            value_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # [B*M, D, q, P]
        weight = weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, q, -1)
        out = out + (sampled * weight).sum(-1)
    return out


class MSDeformAttn(nn.Module):
    """Projections around `multi_scale_deformable_attention` (names as in Deformable DETR)."""

    def __init__(self, *, dim: int, num_levels: int, num_heads: int, num_points: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_levels, self.num_heads, self.num_points = num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on rays around the reference point."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """query [B, Lq, C], reference_points [B, Lq, L, 2] (x, y in [0, 1]), value [B, S, C]."""
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).view(batch, value.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        # offsets are in feature-map pixels of each level: normalise by (w_l, h_l)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        output = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return self.output_proj(output)
