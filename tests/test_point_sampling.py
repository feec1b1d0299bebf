"""Point sampling against a naive bilinear lookup; importance sampling picks uncertain points."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mask2anomaly.train.point_sampling import (
    MaskBank,
    mask_uncertainty,
    point_sample,
    rand_points,
    sample_padded_masks,
    uncertain_point_coords,
)


def naive_bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Value of image [C, H, W] at normalised (x, y); pixel centres at (j + 0.5) / W; 0 outside."""
    _, height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    value = torch.zeros(image.shape[0], dtype=image.dtype)
    for yi, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xi, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yi < height and 0 <= xi < width:
                value += wy * wx * image[:, yi, xi]
    return value


def test_point_sample_equals_naive_bilinear() -> None:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    # Include points beyond the border pixel centres, where zero padding matters.
    coords = torch.rand(2, 20, 2, generator=gen, dtype=torch.float64)
    coords[:, 0] = torch.tensor([0.0, 0.0])
    coords[:, 1] = torch.tensor([1.0, 1.0])
    coords[:, 2] = torch.tensor([0.5 / 7, 0.5 / 5])  # exactly the first pixel centre
    out = point_sample(inputs, coords)
    assert out.shape == (2, 3, 20)
    for b in range(2):
        for p in range(20):
            x, y = coords[b, p].tolist()
            expected = naive_bilinear(inputs[b], x, y)
            torch.testing.assert_close(out[b, :, p], expected)
    torch.testing.assert_close(out[:, :, 2], inputs[:, :, 0, 0])


def test_rand_points_with_generator_is_reproducible() -> None:
    a = rand_points(3, 10, device="cpu", generator=torch.Generator().manual_seed(5))
    b = rand_points(3, 10, device="cpu", generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 10, 2)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 1


def test_uncertain_points_are_the_most_uncertain_candidates() -> None:
    # A map whose logit is 0 on one column band (maximally uncertain) and large elsewhere.
    logits = torch.full((2, 1, 8, 8), 10.0)
    logits[:, :, :, 3] = 0.0
    coords = uncertain_point_coords(
        logits, num_points=16, oversample_ratio=3, importance_sample_ratio=0.75,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert coords.shape == (2, 16, 2)
    # Reproduce the candidate draw: the candidates come first from the same generator.
    candidates = torch.rand(2, 48, 2, generator=torch.Generator().manual_seed(1))
    uncertainty = mask_uncertainty(point_sample(logits, candidates))[:, 0]
    for m in range(2):
        kept = uncertainty[m].sort(descending=True).values[:12]
        got = mask_uncertainty(point_sample(logits[m : m + 1], coords[m : m + 1, :12]))[0, 0]
        torch.testing.assert_close(got.sort(descending=True).values, kept)
        # The uncertain part is a subset of the candidates, bit for bit.
        matches = (coords[m, :12, None, :] == candidates[m, None, :, :]).all(-1)
        assert matches.any(1).all()
        # The chosen points are at least as uncertain as any candidate left out.
        assert got.min() >= uncertainty[m].sort(descending=True).values[12] - 1e-6


def test_uncertain_points_without_random_part() -> None:
    logits = torch.randn(3, 1, 6, 6)
    coords = uncertain_point_coords(
        logits, num_points=10, oversample_ratio=2, importance_sample_ratio=1.0
    )
    assert coords.shape == (3, 10, 2)


def test_uncertain_points_reject_bad_ratios() -> None:
    with pytest.raises(ValueError):
        uncertain_point_coords(
            torch.zeros(1, 1, 4, 4), num_points=4, oversample_ratio=0.5, importance_sample_ratio=0.5
        )


def test_sample_padded_masks_equals_explicit_zero_padding() -> None:
    gen = torch.Generator().manual_seed(2)
    masks = torch.rand(3, 10, 13, generator=gen) > 0.5
    padded = F.pad(masks.float(), (0, 16 - 13, 0, 12 - 10))  # [3, 12, 16]
    coords = torch.rand(3, 50, 2, generator=gen)
    expected = point_sample(padded[:, None], coords)[:, 0]
    torch.testing.assert_close(sample_padded_masks(masks, coords, (12, 16)), expected)
    with pytest.raises(ValueError, match="exceed"):
        sample_padded_masks(masks, coords, (8, 16))


@pytest.mark.parametrize("sizes", [((10, 13), (10, 13)), ((10, 13), (12, 9))])
def test_mask_sets_equal_per_image_sampling(sizes: tuple[tuple[int, int], ...]) -> None:
    gen = torch.Generator().manual_seed(3)
    masks = [torch.rand(n, h, w, generator=gen) > 0.5 for n, (h, w) in zip((2, 3), sizes)]
    coords = torch.rand(5, 30, 2, generator=gen)
    got = MaskBank.of(masks).sample(coords, (12, 16))
    expected = torch.cat([sample_padded_masks(masks[0], coords[:2], (12, 16)),
                          sample_padded_masks(masks[1], coords[2:], (12, 16))])  # fmt: skip
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("sizes", [((10, 13), (10, 13), (10, 13)), ((10, 13), (12, 9), (7, 16))])
def test_mask_bank_picks_equal_sampling_the_picked_masks_alone(
    sizes: tuple[tuple[int, int], ...],
) -> None:
    """Sampling chosen masks of the bank (points placed in their rows, the rest of the bank
    sampled too) gives exactly the values of sampling those masks alone, in pick order."""
    gen = torch.Generator().manual_seed(4)
    masks = [torch.rand(n, h, w, generator=gen) > 0.5 for n, (h, w) in zip((3, 4, 2), sizes)]
    picks = [torch.tensor([2, 0]), torch.tensor([], dtype=torch.int64), torch.tensor([1, 0])]
    coords = torch.rand(4, 40, 2, generator=gen)
    got = MaskBank.of(masks).sample(coords, (12, 16), picks)
    alone = [masks[0][2], masks[0][0], masks[2][1], masks[2][0]]
    expected = torch.cat([sample_padded_masks(m[None], c[None], (12, 16))
                          for m, c in zip(alone, coords)])  # fmt: skip
    assert torch.equal(got, expected)
    bank = MaskBank.of(masks)
    assert (bank.stacked is not None) == (len(set(sizes)) == 1)
    assert [g.dtype for g in bank.groups] == [torch.float32] * 3
    every = torch.rand(9, 40, 2, generator=gen)
    per_image = torch.cat([sample_padded_masks(m, c, (12, 16))
                           for m, c in zip(masks, every.split([3, 4, 2]))])  # fmt: skip
    assert torch.equal(bank.sample(every, (12, 16)), per_image)
