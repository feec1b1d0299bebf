"""Anomaly score (Eq. 2) and refinement mask against hand-worked values and invariants."""

from __future__ import annotations

import math

import torch

from mask2anomaly.scoring import (
    anomaly_score,
    max_class_score,
    refine,
    refinement_map,
    refinement_queries,
    semantic_probs,
)


def test_hand_worked_two_queries_two_classes():
    # class logits [B=1, Q=2, K+1=3]; query 0 is class 0, query 1 is split over class 1 / void
    class_logits = torch.log(torch.tensor([[[0.8, 0.1, 0.1], [0.1, 0.5, 0.4]]]))
    mask_logits = torch.tensor([[[[0.0, 2.0]], [[1.0, -3.0]]]])  # [1, 2, 1, 2]
    s = torch.sigmoid
    class0 = 0.8 * s(torch.tensor([0.0, 2.0])) + 0.1 * s(torch.tensor([1.0, -3.0]))
    class1 = 0.1 * s(torch.tensor([0.0, 2.0])) + 0.5 * s(torch.tensor([1.0, -3.0]))
    semantic = semantic_probs(class_logits, mask_logits.sigmoid())
    assert torch.allclose(semantic[0, :, 0], torch.stack([class0, class1]), atol=1e-6)
    expected = 1 - torch.maximum(class0, class1)
    assert torch.allclose(anomaly_score(class_logits, mask_logits)[0, 0], expected, atol=1e-6)
    assert torch.allclose(max_class_score(class_logits, mask_logits), 1 - expected, atol=1e-6)


def test_anomaly_score_invariant_to_query_order():
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(2, 7, 5) * 3, torch.randn(2, 7, 4, 6) * 3
    perm = torch.randperm(7)
    a = anomaly_score(class_logits, mask_logits)
    b = anomaly_score(class_logits[:, perm], mask_logits[:, perm])
    assert torch.allclose(a, b, atol=1e-6)
    idx_a, scores_a = refinement_queries(class_logits[0], "official", 0.0)
    idx_b, scores_b = refinement_queries(class_logits[0, perm], "official", 0.0)
    map_a = refinement_map(scores_a, mask_logits[0, idx_a].sigmoid())
    map_b = refinement_map(scores_b, mask_logits[0, perm][idx_b].sigmoid())
    assert (map_a is None and map_b is None) or torch.allclose(map_a, map_b)


def _confident(label: int, num_classes: int = 19, score: float = 0.97) -> torch.Tensor:
    """Class logits whose softmax puts `score` on `label` and the rest evenly elsewhere."""
    probs = torch.full((num_classes + 1,), (1 - score) / num_classes)
    probs[label] = score
    return probs.log()


def test_refinement_query_selection_official_and_paper():
    rows = [
        _confident(0),
        _confident(1),
        _confident(2),
        _confident(10),
        _confident(11),
        _confident(5, score=0.9),
        _confident(19),
    ]
    class_logits = torch.stack(rows)
    indices, scores = refinement_queries(class_logits, "official")
    assert indices.tolist() == [2, 3]  # building and sky; not road, sidewalk, things, 0.9, void
    assert torch.allclose(scores, torch.tensor([0.97, 0.97]))
    assert refinement_queries(class_logits, "paper")[0].tolist() == [1, 2, 3]  # + sidewalk
    assert len(refinement_queries(class_logits, "none")[0]) == 0
    # official: a single qualifying query is not enough; the paper's variant uses it
    single = torch.stack([_confident(3), _confident(0)])
    assert len(refinement_queries(single, "official")[0]) == 0
    assert refinement_queries(single, "paper")[0].tolist() == [0]


def test_refinement_map_is_max_over_kept_queries_and_zeroes_scores():
    scores = torch.tensor([0.96, 0.99])
    mask_probs = torch.tensor([[[0.9, 0.2, 0.6]], [[0.1, 0.5, 0.4]]])
    refine_map = refinement_map(scores, mask_probs, chunk=1)
    expected = torch.tensor([[0.864, 0.495, 0.576]])
    assert torch.allclose(refine_map, expected, atol=1e-6)
    anomaly = torch.tensor([[0.7, 0.3, -0.2]])
    refined = refine(anomaly, refine_map)
    assert torch.allclose(refined, torch.tensor([[0.0, 0.3, 0.0]]))  # >= 0.5 -> 0


def test_refinement_never_raises_a_non_negative_score():
    torch.manual_seed(1)
    for _ in range(5):
        class_logits, mask_logits = torch.randn(1, 30, 20) * 6, torch.randn(1, 30, 8, 8) * 4
        anomaly = anomaly_score(class_logits, mask_logits)[0]
        indices, scores = refinement_queries(class_logits[0], "paper", 0.5)
        refined = refine(anomaly, refinement_map(scores, mask_logits[0, indices].sigmoid()))
        assert torch.all((refined == anomaly) | (refined == 0))
        assert torch.all(refined.clamp(min=0) <= anomaly.clamp(min=0))
        assert torch.all(refined.abs() <= anomaly.abs())


def test_score_range_for_a_single_confident_query():
    class_logits = torch.tensor([[[10.0, -10.0, -10.0]]])
    mask_logits = torch.full((1, 1, 2, 2), 20.0)
    score = anomaly_score(class_logits, mask_logits)
    assert math.isclose(score.max().item(), 0.0, abs_tol=1e-4)
