"""2-D sine position encoding (DETR / Mask2Former, normalised coordinates, scale 2*pi).

Coordinates are the cumulative sums 1..H and 1..W divided by their last value; channels are
[y-part, x-part], each interleaving sin (even index) and cos (odd index).
"""

from __future__ import annotations

import math

import torch


def sine_position_encoding(
    batch_size: int,
    height: int,
    width: int,
    *,
    num_features: int,
    temperature: float = 10000.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Position encoding [B, 2 * num_features, H, W] for a feature map of size H x W."""
    eps, scale = 1e-6, 2 * math.pi
    ones = torch.ones((batch_size, height, width), dtype=torch.float32, device=device)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_features, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_features)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def position_encoding_like(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Sine encoding [B, dim, h, w] for the spatial grid of `features` [B, C, h, w], in the
    features' dtype (computed in float32)."""
    batch_size, _, height, width = features.shape
    return sine_position_encoding(
        batch_size, height, width, num_features=dim // 2, device=features.device
    ).to(features.dtype)
