"""The model's own masks at image size (issue 17, instances by query): each query's mask
probabilities upsampled to the padded input, cropped, resized back like the anomaly map's
evidence (`bands.py`) and binarised at sigmoid > 0.5, a few queries at a time."""

from __future__ import annotations

import torch

from ..evaluation.instances import QUERY_MASK_THRESHOLD
from .bands import resize_maps, upsampled_rows

QUERY_CHUNK = 8  # queries upsampled at once (8 x 1024 x 2048 float32 = 64 MiB)


def query_masks(
    mask_logits: torch.Tensor,
    padded: torch.Size | tuple[int, int],
    input_size: tuple[int, int],
    size: tuple[int, int],
) -> torch.Tensor:
    """bool [Q, H, W]: sigmoid(mask logits [Q, h, w]) > 0.5 at the original size (H, W), from
    the network input of `input_size` padded to `padded`."""
    height, width = input_size
    masks = torch.empty((mask_logits.shape[0], *size), dtype=torch.bool, device=mask_logits.device)
    for start in range(0, mask_logits.shape[0], QUERY_CHUNK):
        chunk = mask_logits[start : start + QUERY_CHUNK]
        probs = upsampled_rows(chunk, 0, height, padded)[:, :, :width].sigmoid()
        masks[start : start + QUERY_CHUNK] = resize_maps(probs, size) > QUERY_MASK_THRESHOLD
    return masks
