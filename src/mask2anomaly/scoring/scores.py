"""The anomaly scores of the Mask2Former-based anomaly literature, on one view's outputs.

Notation (one image): class logits C [Q, K+1] (the last column is "no-object"), mask logits
M [Q, H, W]; p_q = softmax(C_q) over all K+1 entries, m_q = sigmoid(M_q). Every score here is a
function of three per-pixel quantities, each linear in the masks:

* S_k(x) = sum_q p_{q,k} m_q(x), k < K   the semantic probabilities (Mask2Former's
  `semantic_inference`: no-object dropped *after* the softmax; S is not normalised);
* V(x)   = sum_q p_{q,K} m_q(x)           the mask-weighted no-object probability;
* E(x)   = sum_q max_{k<K} p_{q,k} m_q(x)  EAM's summed inlier evidence.

`Evidence` holds them. Being linear in the masks, they are upsampled, cropped and resized back
exactly as the official inference treats S, so one forward and one upsampling feed every score
(the predictor computes them in row bands, see inference/predictor.py); the score functions
below only reduce evidence per pixel. Every score is higher = more anomalous.

Where the public code calls S "logits" (the Mask2Anomaly author's baselines evaluate MSP,
max-logit, entropy and energy on S), the formulas here do the same: S is what these methods
were run on in that lineage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import torch

from ..config import ScoreName, choices
from ..errors import UserError

SCORE_NAMES: tuple[ScoreName, ...] = choices(ScoreName)
EXTRAS = ("void", "inlier")  # evidence beyond S, in the order of `extra_weights` columns


@dataclass(frozen=True)
class Evidence:
    """Per-pixel evidence of one view: semantic S [K, *P], void V [*P] and inlier E [*P] for
    pixels P (None when no requested score needs them), and the reductions of S several scores
    share, computed once when first used."""

    semantic: torch.Tensor
    void: torch.Tensor | None = None
    inlier: torch.Tensor | None = None

    @cached_property
    def top(self) -> torch.Tensor:
        """max_k S_k [*P]."""
        return self.semantic.amax(0)

    @cached_property
    def shifted_exp(self) -> torch.Tensor:
        """exp(S_k - max_j S_j) [K, *P] (softmax(S) up to the partition)."""
        return (self.semantic - self.top).exp()

    @cached_property
    def partition(self) -> torch.Tensor:
        """Z = sum_k exp(S_k - max_j S_j) [*P], in [1, K]: max_k softmax(S)_k = 1 / Z."""
        return self.shifted_exp.sum(0)

    @cached_property
    def logsumexp(self) -> torch.Tensor:
        """log sum_k exp(S_k) = max_k S_k + log Z [*P]."""
        return self.top + self.partition.log()


def extras_needed(names: Iterable[str]) -> tuple[str, ...]:
    """The evidence beyond S that the scores `names` need ("void", "inlier"), in EXTRAS order."""
    wanted = {extra for name in names for extra in SCORES[name].needs}
    return tuple(extra for extra in EXTRAS if extra in wanted)


def extra_weights(class_probs: torch.Tensor, extras: tuple[str, ...]) -> torch.Tensor:
    """Per-query weights [Q, len(extras)] of the extra evidence, from softmax(C) [Q, K+1]:
    V weighs query q by p_{q,K}, E by max_{k<K} p_{q,k}."""
    columns = {
        "void": lambda: class_probs[:, -1],
        "inlier": lambda: class_probs[:, :-1].amax(-1),
    }
    return torch.stack([columns[extra]() for extra in extras], dim=1)


def evidence(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, extras: tuple[str, ...] = EXTRAS
) -> Evidence:
    """Evidence at the masks' resolution: class_logits [Q, K+1], mask_logits [Q, H, W]."""
    class_probs = class_logits.softmax(-1)
    masks = mask_logits.sigmoid()
    semantic = torch.einsum("qk,qhw->khw", class_probs[:, :-1], masks)
    if not extras:
        return Evidence(semantic)
    weighted = torch.einsum("qe,qhw->ehw", extra_weights(class_probs, extras), masks)
    found = dict(zip(extras, weighted, strict=True))
    return Evidence(semantic, found.get("void"), found.get("inlier"))


# ---------------------------------------------------------------------------------------------
# The scores: a public function of (class logits, mask logits) each, documented with its
# formula and source, and the per-pixel reduction of evidence it is made of.


def _of(name: str, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    spec = SCORES[name]
    return spec.reduce(evidence(class_logits, mask_logits, spec.needs))


def mask2anomaly_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Anomaly, Eq. 2 (Rai et al., ICCV 2023): A(x) = 1 - max_k S_k(x).

    Code: shyam671/Mask2Anomaly-Unmasking-Anomalies-in-Road-Scene-Segmentation,
    anomaly_utils/anomaly_inference.py (with its refinement mask: inference/predictor.py).
    Inputs: class_logits [Q, K+1], mask_logits [Q, H, W]; output [H, W].
    """
    return _of("mask2anomaly", class_logits, mask_logits)


def msp_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017) on the per-pixel class
    distribution softmax_k(S(x)): 1 - max_k softmax(S(x))_k, in [0, 1 - 1/K].

    Code: shyam671/Road-Obstacle-Video-Segmentation,
    Image_Anomaly_Segmentation_Baselines/evaluate_ood.py (`get_msp`).
    """
    return _of("msp", class_logits, mask_logits)


def maxlogit_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Max-logit (Hendrycks et al., ICML 2022) on the mask-weighted class scores:
    -max_k S_k(x). It ranks pixels as the unrefined Eq. 2 does (the author's baseline code,
    `get_ml` in shyam671/Road-Obstacle-Video-Segmentation,
    Image_Anomaly_Segmentation_Baselines/evaluate_ood.py, returns 1 - max_k S_k: the same up
    to the constant 1; the negative max is Hendrycks et al.'s form)."""
    return _of("maxlogit", class_logits, mask_logits)


def entropy_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of the per-pixel class distribution (the entropy baseline of the
    dense anomaly literature): H(softmax(S(x))) / log K, H(pi) = -sum_k pi_k log pi_k, in
    [0, 1] (0 when K = 1).

    Code: shyam671/Road-Obstacle-Video-Segmentation,
    Image_Anomaly_Segmentation_Baselines/evaluate_ood.py (`get_entropy`).
    """
    return _of("entropy", class_logits, mask_logits)


def energy_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Free energy (Liu et al., NeurIPS 2020) of the mask-weighted class scores:
    -logsumexp_k S_k(x).

    Code: NazirNayal8/RbA, evaluate_ood.py (`get_energy`, score "pebal"), and
    shyam671/Road-Obstacle-Video-Segmentation, Image_Anomaly_Segmentation_Baselines/
    evaluate_ood.py (`get_energy`).
    """
    return _of("energy", class_logits, mask_logits)


def rba_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Rejected by All (Nayal et al., ICCV 2023): -sum_k tanh(S_k(x)), in (-K, 0]; tanh on
    the mask-marginalised class scores, the sum over classes after the sum over queries.

    Code: NazirNayal8/RbA, evaluate_ood.py and support.py (`get_RbA`).
    """
    return _of("rba", class_logits, mask_logits)


def eam_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Ensemble over Anomalous Masks (Grcić et al., CVPRW 2023):
    1 - sum_q m_q(x) max_{k<K} p_{q,k}, a plain sum over queries (no normalisation, so it can
    be negative where masks overlap); no-object enters only through the softmax.

    Code: matejgrcic/Open-set-M2F, mask2former/evaluation/ood_detection_evaluation.py
    (`DenseOODDetectionEvaluator.process`).
    """
    return _of("eam", class_logits, mask_logits)


def void_score(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask-weighted no-object probability: V(x) = sum_q p_{q,K} m_q(x).

    Code: shyam671/Road-Obstacle-Video-Segmentation, Image_Anomaly_Segmentation_Baselines/
    evaluate_ood.py (`get_void` on the K+1-channel `semantic_inference` left commented out in
    mask2former/maskformer_model.py; its `--score_func void` runs the entropy by mistake).
    """
    return _of("void", class_logits, mask_logits)


def _mask2anomaly(ev: Evidence) -> torch.Tensor:
    return 1.0 - ev.top


def _msp(ev: Evidence) -> torch.Tensor:
    return 1.0 - ev.partition.reciprocal()  # max_k softmax(S)_k = 1 / Z


def _maxlogit(ev: Evidence) -> torch.Tensor:
    return -ev.top


def _entropy(ev: Evidence) -> torch.Tensor:
    num_classes = ev.semantic.shape[0]
    if num_classes == 1:
        return torch.zeros_like(ev.semantic[0])
    # H(softmax(S)) = -sum_k p_k (S_k - lse) = lse - sum_k p_k S_k, p_k = exp(S_k - max) / Z
    mean = (ev.shifted_exp * ev.semantic).sum(0) / ev.partition
    return (ev.logsumexp - mean) / math.log(num_classes)


def _energy(ev: Evidence) -> torch.Tensor:
    return -ev.logsumexp


def _rba(ev: Evidence) -> torch.Tensor:
    return -ev.semantic.tanh().sum(0)


def _eam(ev: Evidence) -> torch.Tensor:
    assert ev.inlier is not None, "eam needs the inlier evidence"
    return 1.0 - ev.inlier


def _void(ev: Evidence) -> torch.Tensor:
    assert ev.void is not None, "void needs the void evidence"
    return ev.void


@dataclass(frozen=True)
class ScoreSpec:
    """A score: its public function, the reduction of evidence, the extra evidence it needs,
    and its range given (K, Q): every value it can take, also after flip averaging, resizing
    and refinement."""

    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reduce: Callable[[Evidence], torch.Tensor]
    needs: tuple[str, ...]
    bounds: Callable[[int, int], tuple[float, float]]


SCORES: dict[str, ScoreSpec] = {
    "mask2anomaly": ScoreSpec(mask2anomaly_score, _mask2anomaly, (), lambda k, q: (1.0 - q, 1.0)),
    "msp": ScoreSpec(msp_score, _msp, (), lambda k, q: (0.0, 1.0 - 1.0 / k)),
    "maxlogit": ScoreSpec(maxlogit_score, _maxlogit, (), lambda k, q: (-float(q), 0.0)),
    "entropy": ScoreSpec(entropy_score, _entropy, (), lambda k, q: (0.0, 1.0)),
    "energy": ScoreSpec(energy_score, _energy, (), lambda k, q: (-(q + math.log(k)), -math.log(k))),
    "rba": ScoreSpec(rba_score, _rba, (), lambda k, q: (-float(k), 0.0)),
    "eam": ScoreSpec(eam_score, _eam, ("inlier",), lambda k, q: (1.0 - q, 1.0)),
    "void": ScoreSpec(void_score, _void, ("void",), lambda k, q: (0.0, float(q))),
}
assert tuple(SCORES) == SCORE_NAMES


def check_scores(names: Iterable[str]) -> tuple[ScoreName, ...]:
    """The score names, checked: one-line UserError for an unknown or repeated name."""
    names = tuple(names)
    if not names:
        raise UserError(f"no score given; choose from {', '.join(SCORE_NAMES)}")
    for name in names:
        if name not in SCORES:
            raise UserError(f"unknown score {name!r}; choose from {', '.join(SCORE_NAMES)}")
        if names.count(name) > 1:
            raise UserError(f"score {name!r} is listed twice")
    return names  # type: ignore[return-value]


def reduce_scores(ev: Evidence, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Every named score [*P] of the evidence."""
    return {name: SCORES[name].reduce(ev) for name in names}


def compute_scores(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, names: Iterable[str] = SCORE_NAMES
) -> dict[str, torch.Tensor]:
    """Several scores of one view from one evidence computation: name -> [H, W]."""
    names = check_scores(names)
    return reduce_scores(evidence(class_logits, mask_logits, extras_needed(names)), names)


def score_range(name: str, num_classes: int, num_queries: int) -> tuple[float, float]:
    """[low, high]: every value the score can take for a model with K classes, Q queries."""
    return SCORES[name].bounds(num_classes, num_queries)


def display_range(name: str, num_classes: int) -> tuple[float, float]:
    """The score of a pixel one confident query claims for one class (S = e_0, V = 0, E = 1)
    and of a pixel no query claims for a class (S = 0, V = 1, E = 0): pictures map this
    interval to [0, 1] (for `mask2anomaly` it is [0, 1] itself)."""
    one = torch.ones(1, dtype=torch.float64)
    inlier_semantic = torch.zeros(num_classes, 1, dtype=torch.float64)
    inlier_semantic[0] = 1.0
    reduce = SCORES[name].reduce
    low = reduce(Evidence(inlier_semantic, one * 0.0, one))
    high = reduce(Evidence(torch.zeros_like(inlier_semantic), one, one * 0.0))
    return float(low[0]), float(high[0])


def refined(name: str, score: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """One view's score with its refinement mask keep [H, W] (1 kept, 0 refined): Eq. 2 is
    zeroed where refined, as the official inference does; scores without a natural zero take
    the lowest value of that view's map there (the least anomalous value the image shows)."""
    if name == "mask2anomaly":
        return score * keep
    if bool((keep > 0).all()):
        return score
    return torch.where(keep > 0, score, score.amin())
