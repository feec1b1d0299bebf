"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, no compiled op.

Bilinear sampling with zero padding and align_corners=False (grid = 2 * location - 1), the
arithmetic of the official CPU fallback, in two formulations with the same result:

* `gather` (inference): every sampling point's four bilinear corners become rows of one value
  table (each level padded with zeros, so points outside a map read zeros) and
  `embedding_bag` sums the rows weighted by attention x bilinear weights — one fused
  gather-multiply-add with the value's channels contiguous, several times faster on CPU;
* `grid_sample` (training, where its backward is faster, and ONNX export): per level, then
  weighted.

Queries are processed in chunks, so the memory stays bounded at large resolutions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

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
    if torch.onnx.is_in_onnx_export():
        # One chunk: a loop over a size-dependent range cannot be traced for dynamic shapes.
        return grid_sample_deformable_attention(
            value, spatial_shapes, sampling_locations, attention_weights, chunked=False
        )
    if torch.is_grad_enabled():  # training: grid_sample's backward is the faster one
        return grid_sample_deformable_attention(
            value, spatial_shapes, sampling_locations, attention_weights
        )
    return gather_deformable_attention(value, spatial_shapes, sampling_locations, attention_weights)


def grid_sample_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    chunked: bool = True,
) -> torch.Tensor:
    """The `grid_sample` formulation, in chunks of queries unless `chunked` is off (same
    arguments and result)."""
    batch, _, heads, head_dim = value.shape
    num_queries, num_points = sampling_locations.shape[1], sampling_locations.shape[4]
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    value_maps = [
        v.flatten(2).transpose(1, 2).reshape(batch * heads, head_dim, h, w)
        for v, (h, w) in zip(values, spatial_shapes)
    ]
    chunk = max(1, MAX_SAMPLED_ELEMENTS // (batch * heads * head_dim * num_points))
    if not chunked:
        chunk = num_queries
    outputs = []
    for start in range(0, num_queries, chunk):
        out = _sample_chunk(
            value_maps,
            sampling_locations[:, start : start + chunk],
            attention_weights[:, start : start + chunk],
        )
        outputs.append(out.view(batch, heads * head_dim, -1))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous()


def gather_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The gather formulation (module docstring): same arguments and result."""
    table = value_table(value, spatial_shapes)
    pixels = padded_pixels(sampling_locations, table.sizes)
    return sample_values(table, pixels, attention_weights).to(value.dtype)


def padded_pixels(locations: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Locations [..., L, P, 2] in [0, 1] -> (x, y) in the padded maps of a ValueTable:
    location * size - 0.5 (grid_sample's align_corners=False pixel) + 1 (the padding)."""
    return torch.addcmul(sizes.new_tensor(0.5), locations, sizes[:, None, :])


@dataclass(frozen=True)
class ValueTable:
    """The values of all levels as rows of one float32 table `rows` [B * S' * M, D], each level
    padded by 1 on the top / left and 2 on the bottom / right (a location clamped into
    [-1, size] keeps both corners inside the padded map, and outside the map every corner reads
    a zero, as grid_sample's zero padding does), with what `sample_values` needs to index it."""

    rows: torch.Tensor
    batch: int
    heads: int
    sizes: torch.Tensor  # [L, 2] (w, h) float32
    widths: torch.Tensor  # [L] padded widths, int32
    starts: torch.Tensor  # [L] first padded pixel of each level, int32
    corners: torch.Tensor  # [L, 4] row offsets of the four bilinear corners
    first_rows: torch.Tensor  # [B, 1, M, 1, 1] first row of each (image, head)


def value_table(value: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> ValueTable:
    """value [B, S, M, D] -> its padded float32 table (float32 also for a bf16 network:
    embedding_bag's reduced-precision kernels are slow on CPU, and the sums stay float32)."""
    batch, _, heads, head_dim = value.shape
    device = value.device
    rows_per_image = sum((h + 3) * (w + 3) for h, w in spatial_shapes)
    table = value.new_zeros(batch, rows_per_image, heads, head_dim, dtype=torch.float32)
    start = 0
    for v, (h, w) in zip(value.split([h * w for h, w in spatial_shapes], dim=1), spatial_shapes):
        level = table[:, start : start + (h + 3) * (w + 3)].view(batch, h + 3, w + 3, -1)
        level[:, 1 : h + 1, 1 : w + 1] = v.reshape(batch, h, w, -1)  # converted to float32
        start += (h + 3) * (w + 3)
    widths = torch.tensor([w + 3 for _, w in spatial_shapes], dtype=torch.int32, device=device)
    starts = torch.tensor([0] + [(h + 3) * (w + 3) for h, w in spatial_shapes][:-1], device=device)
    image_rows = torch.arange(batch, device=device, dtype=torch.int32) * (rows_per_image * heads)
    head_rows = torch.arange(heads, device=device, dtype=torch.int32)
    return ValueTable(
        rows=table.view(-1, head_dim),  # row ((b * S' + s) * M + m)
        batch=batch,
        heads=heads,
        sizes=torch.tensor([[w, h] for h, w in spatial_shapes], dtype=torch.float32, device=device),
        widths=widths,
        starts=starts.cumsum(0).to(torch.int32),
        corners=torch.stack([widths * 0, widths * 0 + 1, widths, widths + 1], -1) * heads,
        first_rows=(image_rows[:, None] + head_rows[None, :])[:, None, :, None, None],
    )


def bilinear_corners(
    pixels: torch.Tensor,
    weights: torch.Tensor,
    sizes: torch.Tensor,
    widths: torch.Tensor,
    starts: torch.Tensor,
    first_rows: torch.Tensor,
    corners: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and weights of the four bilinear corners of every sampling point.

    Args:
        pixels: padded pixel coordinates [B, q, M, L, P, 2] (`padded_pixels`).
        weights: attention weights [B, q, M, L, P].
        sizes, widths, starts, first_rows, corners, heads: the ValueTable's fields.

    Returns:
        int32 row indices and float32 weights (attention x bilinear), both [B, q, M, L*P*4].
    """
    # clamped to [0, size + 1]: both corners stay in the padded map (maximum / minimum, not
    # clamp, so that torch.compile takes it whole)
    pixels = torch.maximum(torch.minimum(pixels, (sizes + 1)[:, None, :]), sizes.new_zeros(()))
    base = pixels.floor()
    fraction = pixels - base
    base = base.to(torch.int32)
    top_left = (starts[:, None] + base[..., 1] * widths[:, None] + base[..., 0]) * heads
    index = ((top_left + first_rows)[..., None] + corners[:, None, :]).flatten(3)
    fx, fy = fraction[..., 0], fraction[..., 1]
    upper, lower = weights * (1 - fy), weights * fy
    gx = 1 - fx
    bilinear = torch.stack([gx * upper, fx * upper, gx * lower, fx * lower], -1).flatten(3)
    return index, bilinear.float()


class _Corners:
    """The implementation of `bilinear_corners` that `sample_values` calls: eager, or its
    torch.compile form (one fused loop instead of a dozen passes over the points; bitwise the
    same numbers) inside `compiled_sampling()`."""

    eager = staticmethod(bilinear_corners)
    compiled: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    active: Callable[..., tuple[torch.Tensor, torch.Tensor]] = eager


@contextmanager
def compiled_sampling(enabled: bool = True) -> Iterator[None]:
    """Within: `sample_values` computes its corners with the compiled kernel (compiled on the
    first call for each shape, which takes seconds; needs a C compiler)."""
    if not enabled:
        yield
        return
    if _Corners.compiled is None:
        _Corners.compiled = torch.compile(bilinear_corners, dynamic=False)
    before, _Corners.active = _Corners.active, _Corners.compiled
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as error:
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise UserError(
            f"inference.compile: torch.compile failed ({first}); is a C compiler installed? "
            "Run without it: --set inference.compile=false"
        ) from None
    finally:
        _Corners.active = before


def sample_values(
    table: ValueTable, sampling_pixels: torch.Tensor, attention_weights: torch.Tensor
) -> torch.Tensor:
    """Attention-weighted bilinear samples of the table: padded pixel coordinates [B, Lq, M, L,
    P, 2] (`padded_pixels`), weights [B, Lq, M, L, P] -> float32 [B, Lq, M * D], in chunks of
    queries."""
    batch, num_queries = sampling_pixels.shape[:2]
    heads, head_dim = table.heads, table.rows.shape[1]
    out = table.rows.new_empty(batch, num_queries, heads, head_dim)
    corners_per_query = batch * heads * sampling_pixels.shape[3] * sampling_pixels.shape[4]
    chunk = max(1, MAX_SAMPLED_ELEMENTS // (corners_per_query * 4))
    for start in range(0, num_queries, chunk):
        index, bilinear = _Corners.active(
            sampling_pixels[:, start : start + chunk],
            attention_weights[:, start : start + chunk],
            table.sizes,
            table.widths,
            table.starts,
            table.first_rows,
            table.corners,
            heads,
        )
        size = index.shape[1]
        sampled = F.embedding_bag(
            index.reshape(-1, index.shape[-1]),
            table.rows,
            per_sample_weights=bilinear.reshape(-1, index.shape[-1]),
            mode="sum",
        )
        out[:, start : start + size] = sampled.view(batch, size, heads, head_dim)
    return out.view(batch, num_queries, heads * head_dim)


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
        projected = self.value_proj(value).view(value.shape[0], value.shape[1], self.num_heads, -1)
        locations, weights = self.sampling(query, reference_points, spatial_shapes)
        output = multi_scale_deformable_attention(projected, spatial_shapes, locations, weights)
        return self.output_proj(output)

    def table(self, value: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> ValueTable:
        """The projected values [B, S, C] as a table for `attend` (inference in query chunks)."""
        projected = self.value_proj(value).view(value.shape[0], value.shape[1], self.num_heads, -1)
        return value_table(projected, spatial_shapes)

    def attend(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        table: ValueTable,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """`forward` for some of the queries, over a table made by `table` (the same result for
        those queries as the gather formulation of `forward`)."""
        pixels, weights = self.sampling(query, reference_points, spatial_shapes, table.sizes)
        output = sample_values(table, pixels, weights).to(query.dtype)
        return self.output_proj(output)

    def sampling(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        padded_sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling locations [B, Lq, M, L, P, 2] (float32, in [0, 1]; with `padded_sizes`, a
        ValueTable's sizes, its padded pixel coordinates instead) and attention weights
        [B, Lq, M, L, P] of the queries."""
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        reference = reference_points[:, :, None, :, None, :].float()
        if padded_sizes is not None and query.dtype != torch.float32:
            # reduced precision: the offsets are pixels already, added to the reference pixel
            # (float32 keeps the official normalise-then-scale order below)
            return padded_pixels(reference, padded_sizes) + offsets, weights
        # offsets are in feature-map pixels of each level: normalise by (w_l, h_l); locations in
        # float32 whatever the network's dtype (bf16 would place samples half a pixel off)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=torch.float32, device=query.device
        )
        # The same elementwise arithmetic with every operand laid out as [..., L * P * 2]:
        # broadcasting over the small inner (point, xy) dimensions is ~40x slower on CPU.
        per_point = (levels, points, 2)
        scale = normalizer[:, None, :].expand(per_point).reshape(-1)
        start = reference.expand(-1, -1, 1, *per_point).reshape(*reference.shape[:2], 1, -1)
        locations = (start + offsets.float().flatten(3) / scale).view(offsets.shape)
        if padded_sizes is not None:
            return padded_pixels(locations, padded_sizes), weights
        return locations, weights
