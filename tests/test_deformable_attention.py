"""Pure-PyTorch multi-scale deformable attention against a naive per-point bilinear loop."""

from __future__ import annotations

import math

import pytest
import torch

from mask2anomaly.model import deformable_attention as da


def naive_deformable_attention(value, shapes, locations, weights):
    """Loop over every (batch, query, head, level, point): bilinear lookup with zero padding.

    Pixel (i, j) of a level has its centre at ((j + 0.5) / w, (i + 0.5) / h) in [0, 1] coords.
    """
    batch, _, heads, dim = value.shape
    num_queries = locations.shape[1]
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, num_queries, heads, dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(num_queries):
            for m in range(heads):
                for level, (h, w) in enumerate(shapes):
                    grid = value[b, starts[level] : starts[level + 1], m].double().view(h, w, dim)
                    for p in range(locations.shape[4]):
                        x = locations[b, q, m, level, p, 0].item() * w - 0.5
                        y = locations[b, q, m, level, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(dim, dtype=torch.float64)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                weight = (1 - abs(x - xx)) * (1 - abs(y - yy))
                                sample += weight * grid[yy, xx]
                        out[b, q, m] += weights[b, q, m, level, p].item() * sample
    return out.view(batch, num_queries, heads * dim)


@pytest.mark.parametrize("chunk_elements", [None, 7])
def test_matches_naive_loop(monkeypatch, chunk_elements):
    torch.manual_seed(0)
    shapes = [(3, 5), (2, 3), (1, 2)]
    batch, heads, dim, queries, points = 2, 2, 3, 4, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim)
    # locations partly outside [0, 1] to exercise the zero padding
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(shapes), points)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    if chunk_elements is not None:  # force several query chunks
        monkeypatch.setattr(da, "MAX_SAMPLED_ELEMENTS", chunk_elements * batch * heads * dim)
    result = da.multi_scale_deformable_attention(value, shapes, locations, weights)
    expected = naive_deformable_attention(value, shapes, locations, weights)
    assert result.shape == (batch, queries, heads * dim)
    assert torch.allclose(result.double(), expected, atol=1e-5)


def test_module_offsets_are_in_level_pixels():
    """A single head/level/point with a one-pixel offset samples the neighbouring pixel."""
    torch.manual_seed(0)
    attn = da.MSDeformAttn(dim=4, num_levels=1, num_heads=1, num_points=1)
    with torch.no_grad():
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]))  # +1 pixel in x
        attn.value_proj.weight.copy_(torch.eye(4))
        attn.value_proj.bias.zero_()
        attn.output_proj.weight.copy_(torch.eye(4))
        attn.output_proj.bias.zero_()
    h, w = 3, 4
    value = torch.randn(1, h * w, 4)
    centre = torch.tensor([[[(0 + 0.5) / w, (1 + 0.5) / h]]])  # pixel (row 1, col 0)
    out = attn(torch.randn(1, 1, 4), centre[:, :, None, :], value, [(h, w)])
    assert torch.allclose(out[0, 0], value[0, 1 * w + 1], atol=1e-6)  # pixel (row 1, col 1)
