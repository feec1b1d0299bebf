"""Anomaly scores from mask-classification outputs (paper Eq. 2 and §3.4; spec §6).

The single definition used by the predictor, the outlier loss and evaluation:

* semantic probabilities  S = softmax(C)[:, :K]^T sigmoid(M)           [B, K, H, W]
* anomaly score           A = 1 - max_k S_k                            (Eq. 2, not clipped)
* refinement              R = max over confident "stuff" queries of score_q * sigmoid(M_q);
                          A is set to 0 where R >= 0.5.

Refinement variants: ``official`` (what the official inference does: queries whose argmax is a
Cityscapes train ID 2..10 — building .. sky, i.e. stuff without road and sidewalk — with softmax
score > 0.95, applied only when more than one query qualifies) and ``paper`` (§3.4: every stuff
class except road, train IDs 1..10, applied whenever a query qualifies).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import Refinement

# Cityscapes train IDs of the "stuff" classes the refinement masks out, per variant.
REFINE_CLASS_IDS: dict[str, tuple[int, ...]] = {
    "official": tuple(range(2, 11)),  # building, wall, fence, pole, light, sign, veg., terrain, sky
    "paper": tuple(range(1, 11)),  # the same plus sidewalk: "stuff except road"
}
# The official inference refines only when more than one query qualifies (`if K > 1`).
REFINE_MIN_QUERIES = {"official": 2, "paper": 1}


def semantic_probs(class_logits: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
    """class_logits [B, Q, K+1], mask_probs [B, Q, H, W] (sigmoid) -> [B, K, H, W]."""
    class_probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", class_probs, mask_probs)


def max_class_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """max_k softmax(C)^T sigmoid(M) [B, H, W]; the outlier loss uses its negative (l_N)."""
    return semantic_probs(class_logits, mask_logits.sigmoid()).amax(dim=1)


def anomaly_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 2: 1 - max_k softmax(C)^T sigmoid(M), [B, H, W], higher = more anomalous."""
    return 1.0 - max_class_score(class_logits, mask_logits)


def anomaly_from_semantic(semantic: torch.Tensor) -> torch.Tensor:
    """Anomaly score from semantic probabilities [..., K, H, W] -> [..., H, W]."""
    return 1.0 - semantic.amax(dim=-3)


def refinement_queries(
    class_logits: torch.Tensor, variant: Refinement, class_threshold: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries a refinement mask is built from, for ONE image.

    Args:
        class_logits: [Q, K+1].

    Returns:
        (indices [M] of the kept queries in query order, their softmax scores [M]); empty when
        the variant is "none" or fewer queries than the variant's minimum qualify.
    """
    scores, labels = class_logits.softmax(-1).max(-1)
    if variant == "none":
        return labels.new_zeros(0), scores.new_zeros(0)
    class_ids = torch.tensor(REFINE_CLASS_IDS[variant], device=labels.device)
    keep = (scores > class_threshold) & torch.isin(labels, class_ids)
    indices = keep.nonzero().flatten()
    if len(indices) < REFINE_MIN_QUERIES[variant]:
        return indices[:0], scores[:0]
    return indices, scores[indices]


def refinement_map(
    scores: torch.Tensor,
    mask_probs: torch.Tensor,
    resize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk: int = 16,
) -> torch.Tensor | None:
    """R = max_m score_m * mask_probs_m, for ONE image.

    Args:
        scores: [M] softmax scores of the kept queries.
        mask_probs: [M, h, w] sigmoid masks of the kept queries.
        resize: applied to each chunk of score * mask channels before the max, so that
            R equals the official "resize every channel, then take the max" at any size.

    Returns:
        [H, W], or None when no query is kept.
    """
    if len(scores) == 0:
        return None
    result = None
    for start in range(0, len(scores), chunk):
        channels = scores[start : start + chunk, None, None] * mask_probs[start : start + chunk]
        if resize is not None:
            channels = resize(channels)
        part = channels.amax(0)
        result = part if result is None else torch.maximum(result, part)
    return result


def refine(
    anomaly: torch.Tensor, refine_map: torch.Tensor | None, mask_threshold: float = 0.5
) -> torch.Tensor:
    """Zero the anomaly score where the refinement map is >= mask_threshold (never raises it)."""
    if refine_map is None:
        return anomaly
    return anomaly * (refine_map < mask_threshold).to(anomaly.dtype)
