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


IMPLEMENTATIONS = {
    "default": da.multi_scale_deformable_attention,
    "gather": da.gather_deformable_attention,
    "grid_sample": da.grid_sample_deformable_attention,
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("chunk_elements", [None, 7])
def test_matches_naive_loop(monkeypatch, chunk_elements, implementation):
    torch.manual_seed(0)
    shapes = [(3, 5), (2, 3), (1, 2)]
    batch, heads, dim, queries, points = 2, 2, 3, 4, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim)
    # locations partly outside [0, 1], some far outside, to exercise the zero padding
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.4 - 0.2
    locations[0, 0] = locations[0, 0] * 6 - 3
    weights = torch.rand(batch, queries, heads, len(shapes), points)
    weights = weights / weights.sum(dim=(-1, -2), keepdim=True)
    if chunk_elements is not None:  # force several query chunks
        monkeypatch.setattr(da, "MAX_SAMPLED_ELEMENTS", chunk_elements * batch * heads * dim)
    result = IMPLEMENTATIONS[implementation](value, shapes, locations, weights)
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


def test_encoder_layer_in_token_chunks_equals_the_whole_layer(monkeypatch):
    from mask2anomaly.model import pixel_decoder as pd

    torch.manual_seed(0)
    layer = pd.DeformableEncoderLayer(dim=16, ffn_dim=32, num_levels=2, num_heads=2, num_points=2)
    shapes = [(3, 5), (2, 3)]
    tokens = sum(h * w for h, w in shapes)
    src, pos = torch.randn(2, tokens, 16), torch.randn(2, tokens, 16)
    reference = pd.encoder_reference_points(shapes, 2, src.device).expand(2, -1, -1, -1)
    whole = layer(src, pos, reference, shapes)  # gradients on: the whole-layer path
    monkeypatch.setattr(pd, "TOKEN_CHUNK", 4)  # several chunks of tokens
    with torch.no_grad():
        chunked = layer(src, pos, reference, shapes)
    # the same rows up to the rounding of matrix products of other shapes (bitwise at the
    # sizes the predictor uses: thousands of tokens per chunk)
    assert torch.allclose(chunked, whole.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_sampling_gives_bitwise_the_eager_samples(dtype):
    shapes = [(6, 9), (3, 5)]
    g = torch.Generator().manual_seed(3)
    value = torch.randn(2, sum(h * w for h, w in shapes), 2, 4, generator=g).to(dtype)
    locations = torch.rand(2, 40, 2, 2, 3, 2, generator=g) * 1.6 - 0.3  # also outside the map
    weights = torch.rand(2, 40, 2, 2, 3, generator=g).softmax(-1).to(dtype)
    table = da.value_table(value, shapes)
    pixels = da.padded_pixels(locations, table.sizes)
    eager = da.sample_values(table, pixels, weights)
    with da.compiled_sampling():
        assert da._Corners.active is not da.bilinear_corners
        compiled = da.sample_values(table, pixels, weights)
    assert da._Corners.active is da.bilinear_corners  # restored
    assert torch.equal(compiled, eager)
    expected = naive_deformable_attention(value.float(), shapes, locations, weights.float())
    torch.testing.assert_close(compiled.double(), expected, rtol=0, atol=1e-5)


def test_a_failing_compiler_is_one_line(monkeypatch):
    from mask2anomaly.errors import UserError

    def broken(*args, **kwargs):
        raise torch._dynamo.exc.BackendCompilerFailed(
            "inductor", RuntimeError("no working C compiler: cc not found"), None
        )

    monkeypatch.setattr(da._Corners, "compiled", broken)
    table = da.value_table(torch.zeros(1, 4, 1, 2), [(2, 2)])
    pixels = da.padded_pixels(torch.zeros(1, 1, 1, 1, 1, 2), table.sizes)
    with pytest.raises(UserError, match="inference.compile: torch.compile failed") as caught:
        with da.compiled_sampling():
            da.sample_values(table, pixels, torch.ones(1, 1, 1, 1, 1))
    assert "\n" not in str(caught.value) and da._Corners.active is da.bilinear_corners
