"""The score zoo (scoring/scores.py) against a literal per-pixel transcription of each formula,
a hand-worked 2-query 2-pixel case, and invariants."""

from __future__ import annotations

import math

import pytest
import torch

from mask2anomaly.errors import UserError
from mask2anomaly.scoring import anomaly_score
from mask2anomaly.scoring.scores import (
    SCORE_NAMES,
    SCORES,
    check_scores,
    compute_scores,
    display_range,
    evidence,
    extras_needed,
    reduce_scores,
    refined,
    score_range,
)


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def literal_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> dict[str, list]:
    """Every score at every pixel, one pixel at a time, in plain Python floats, written from
    the formulas (no shared code with the module)."""
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    probs = [_softmax(class_logits[q].tolist()) for q in range(num_queries)]
    height, width = mask_logits.shape[1:]
    out: dict[str, list] = {name: [[0.0] * width for _ in range(height)] for name in SCORE_NAMES}
    for y in range(height):
        for x in range(width):
            m = [_sigmoid(float(mask_logits[q, y, x])) for q in range(num_queries)]
            s = [sum(probs[q][k] * m[q] for q in range(num_queries)) for k in range(num_classes)]
            pi = _softmax(s)
            values = {
                "mask2anomaly": 1 - max(s),
                "msp": 1 - max(pi),
                "maxlogit": -max(s),
                "entropy": -sum(p * math.log(p) for p in pi) / math.log(num_classes),
                "energy": -math.log(sum(math.exp(v) for v in s)),
                "rba": -sum(math.tanh(v) for v in s),
                "eam": 1 - sum(m[q] * max(probs[q][:num_classes]) for q in range(num_queries)),
                "void": sum(probs[q][num_classes] * m[q] for q in range(num_queries)),
            }
            for name, value in values.items():
                out[name][y][x] = value
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_score_matches_the_literal_per_pixel_formula(seed):
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 3
    mask_logits = torch.randn(6, 3, 4, generator=generator, dtype=torch.float64) * 4
    expected = literal_scores(class_logits, mask_logits)
    together = compute_scores(class_logits, mask_logits)
    for name in SCORE_NAMES:
        alone = SCORES[name].function(class_logits, mask_logits)
        want = torch.tensor(expected[name], dtype=torch.float64)
        assert alone.shape == (3, 4)
        assert torch.allclose(alone, want, rtol=0, atol=1e-12), name
        assert torch.equal(together[name], alone), name


def test_hand_worked_two_queries_two_pixels():
    # p_0 = (0.6, 0.1 | no-object 0.3), p_1 = (0.2, 0.7 | 0.1); masks at pixel a: 0.5, 0.25;
    # at pixel b: 0.75, 0.75.
    class_logits = torch.tensor([[0.6, 0.1, 0.3], [0.2, 0.7, 0.1]], dtype=torch.float64).log()
    masks = torch.tensor([[[0.5, 0.75]], [[0.25, 0.75]]], dtype=torch.float64)
    mask_logits = (masks / (1 - masks)).log()
    # S at a: (0.6*0.5 + 0.2*0.25, 0.1*0.5 + 0.7*0.25) = (0.35, 0.225); at b: (0.6, 0.6)
    p = 1 / (1 + math.exp(-0.125))  # softmax(0.35, 0.225)_0
    expected = {
        "mask2anomaly": (0.65, 0.4),
        "msp": (1 - p, 0.5),
        "maxlogit": (-0.35, -0.6),
        "entropy": ((-p * math.log(p) - (1 - p) * math.log(1 - p)) / math.log(2), 1.0),
        "energy": (-math.log(math.exp(0.35) + math.exp(0.225)), -(0.6 + math.log(2))),
        "rba": (-(math.tanh(0.35) + math.tanh(0.225)), -2 * math.tanh(0.6)),
        # inlier evidence: 0.6 * m_0 + 0.7 * m_1 = 0.475 at a, 0.975 at b
        "eam": (0.525, 0.025),
        # void: 0.3 * m_0 + 0.1 * m_1 = 0.175 at a, 0.3 at b
        "void": (0.175, 0.3),
    }
    scores = compute_scores(class_logits, mask_logits)
    for name, (at_a, at_b) in expected.items():
        got = scores[name][0].tolist()
        assert got == pytest.approx([at_a, at_b], abs=1e-12), name


def test_mask2anomaly_is_bitwise_eq_2_of_scoring():
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(7, 20) * 3, torch.randn(7, 9, 11) * 3
    ours = compute_scores(class_logits, mask_logits, ["mask2anomaly"])["mask2anomaly"]
    assert torch.equal(ours, anomaly_score(class_logits[None], mask_logits[None])[0])


def test_scores_ignore_query_order_and_stay_in_their_range():
    torch.manual_seed(1)
    num_queries, num_classes = 9, 6
    class_logits = torch.randn(num_queries, num_classes + 1) * 8  # confident and not
    mask_logits = torch.randn(num_queries, 5, 7) * 8
    perm = torch.randperm(num_queries)
    a = compute_scores(class_logits, mask_logits)
    b = compute_scores(class_logits[perm], mask_logits[perm])
    for name in SCORE_NAMES:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
        low, high = score_range(name, num_classes, num_queries)
        assert (a[name] >= low - 1e-5).all() and (a[name] <= high + 1e-5).all(), name


def test_ranges_are_reached_where_the_formulas_say():
    # every mask fully on, one class certain for every query: S_0 = Q, the extremes of the
    # scores that fall with S; everything off: the other extreme
    num_queries, num_classes = 4, 3
    certain = torch.full((num_queries, num_classes + 1), -1e4)
    certain[:, 0] = 1e4
    on, off = torch.full((num_queries, 1, 1), 1e4), torch.full((num_queries, 1, 1), -1e4)
    full, empty = compute_scores(certain, on), compute_scores(certain, off)
    assert float(full["mask2anomaly"]) == pytest.approx(1 - num_queries)
    assert float(full["maxlogit"]) == pytest.approx(-num_queries)
    assert float(full["eam"]) == pytest.approx(1 - num_queries)
    assert float(empty["msp"]) == pytest.approx(1 - 1 / num_classes)
    assert float(empty["entropy"]) == pytest.approx(1.0)
    assert float(empty["energy"]) == pytest.approx(-math.log(num_classes))
    assert score_range("energy", num_classes, num_queries)[1] == -math.log(num_classes)
    nothing = torch.full((num_queries, num_classes + 1), -1e4)
    nothing[:, -1] = 1e4
    assert float(compute_scores(nothing, on)["void"]) == pytest.approx(num_queries)


def test_display_range_spans_a_claimed_and_an_unclaimed_pixel():
    assert display_range("mask2anomaly", 19) == (0.0, 1.0)
    assert display_range("eam", 19) == (0.0, 1.0)
    assert display_range("void", 19) == (0.0, 1.0)
    assert display_range("rba", 19) == pytest.approx((-math.tanh(1.0), 0.0))
    for name in SCORE_NAMES:
        low, high = display_range(name, 19)
        assert low < high, name


def test_evidence_extras_are_computed_only_when_needed():
    torch.manual_seed(2)
    class_logits, mask_logits = torch.randn(5, 4), torch.randn(5, 3, 3)
    assert extras_needed(["msp", "rba"]) == ()
    assert extras_needed(["void", "eam", "msp"]) == ("void", "inlier")
    plain = evidence(class_logits, mask_logits, ())
    assert plain.void is None and plain.inlier is None
    full = evidence(class_logits, mask_logits)
    assert torch.equal(plain.semantic, full.semantic)
    assert set(reduce_scores(full, SCORE_NAMES)) == set(SCORE_NAMES)


def test_refinement_zeroes_eq_2_and_gives_other_scores_their_lowest_value():
    score = torch.tensor([[0.5, -0.25], [0.75, 0.125]])
    keep = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert refined("mask2anomaly", score, keep).tolist() == [[0.5, -0.25], [0.0, 0.125]]
    assert refined("rba", score, keep).tolist() == [[0.5, -0.25], [-0.25, 0.125]]
    assert refined("rba", score, torch.ones(2, 2)) is score


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["msp", "bogus"], "unknown score 'bogus'; choose from mask2anomaly, msp, maxlogit"),
        (["rba", "rba"], "score 'rba' is listed twice"),
        ([], "no score given"),
    ],
)
def test_bad_score_names_are_one_line_errors(names, message):
    with pytest.raises(UserError, match=message) as error:
        check_scores(names)
    assert "\n" not in str(error.value)
