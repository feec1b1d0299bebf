"""What the Predictor returns for one image (`Prediction`), and its open-set output."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import DEFAULT_SCORE, IGNORE_INDEX
from ..errors import UserError
from ..evaluation.instances import (
    MIN_AREA,
    Confidence,
    Instance,
    InstanceMethod,
    extract_instances,
)
from ..scoring.scores import score_range


@dataclass(frozen=True)
class Prediction:
    """anomaly_score: float32 [H, W] of the first score asked for (`score`; refined when
    refinement is on; higher = more anomalous); anomaly_score_unrefined: float32 [H, W];
    semantic: uint8 [H, W] train IDs (unflipped view); refinement_keep: float32 [H, W], the
    refinement mask averaged over the views (1 = score kept in every view, 0 = refined in every
    view); semantic_probs: float32 [K, H, W] of the unflipped view, only when asked for;
    maps / maps_unrefined: every score asked for, by name; num_classes, num_queries: K and Q of
    the model (they bound the scores' ranges); query_masks: bool [Q, H, W], each query's mask
    (sigmoid > 0.5) of the unflipped view at image size, only when asked for."""

    anomaly_score: np.ndarray
    anomaly_score_unrefined: np.ndarray
    semantic: np.ndarray
    refinement_keep: np.ndarray
    semantic_probs: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    maps_unrefined: dict[str, np.ndarray] = field(default_factory=dict)
    score: str = DEFAULT_SCORE
    num_classes: int = 19
    num_queries: int = 100
    query_masks: np.ndarray | None = None

    def open_set(
        self,
        threshold: float,
        *,
        score: str | None = None,
        unknown: int = IGNORE_INDEX,
        refined: bool = True,
    ) -> np.ndarray:
        """Open-set segmentation uint8 [H, W]: the semantic map with the pixels whose anomaly
        score (`score`, default the first; refined unless `refined` is False) exceeds
        `threshold` set to `unknown`.

        Raises:
            UserError: a score not predicted, a threshold outside the score's range, or an
                unknown label that is a known class (or not 0..255).
        """
        name = self._checked_score(score, threshold)
        if not self.num_classes <= unknown <= 255:
            raise UserError(
                f"unknown label {unknown} is not in {self.num_classes}..255 (0.."
                f"{self.num_classes - 1} are the known classes)"
            )
        labels = self.semantic.copy()
        labels[self._map(name, refined) > threshold] = unknown
        return labels

    def instances(
        self,
        method: InstanceMethod = "components",
        threshold: float = 0.5,
        *,
        score: str | None = None,
        min_area: int = MIN_AREA,
        confidence: Confidence = "mean",
        refined: bool = True,
    ) -> list[Instance]:
        """Anomaly instances, highest confidence first (`evaluation/instances.py`):
        `components` of "score > threshold" or the model's own `queries` (predict with
        `return_query_masks=True`); at least `min_area` pixels each; confidence the mean (or
        max) score inside (refined unless `refined` is False). `threshold` is a number; for an
        operating point read it with `read_threshold(metrics_json, score, "tpr95")`.

        Raises:
            UserError: a score not predicted, a threshold outside its range, an unknown method
                or confidence, a bad min_area, or queries without query masks.
        """
        name = self._checked_score(score, threshold)
        if method == "queries" and self.query_masks is None:
            raise UserError(
                "instances by query need the query masks: predict with return_query_masks=True"
            )
        try:
            return extract_instances(method, self._map(name, refined), threshold,
                                     query_masks=self.query_masks, min_area=min_area,
                                     confidence=confidence)  # fmt: skip
        except ValueError as error:
            raise UserError(str(error)) from None

    def _checked_score(self, score: str | None, threshold: float) -> str:
        """The name of `score` (default the first), which must be predicted and have
        `threshold` inside its range."""
        name = score or self.score
        if name not in self.maps:
            raise UserError(f"score {name!r} was not predicted; choose from {', '.join(self.maps)}")
        check_threshold(name, threshold, self.num_classes, self.num_queries)
        return name

    def _map(self, name: str, refined: bool) -> np.ndarray:
        """The map of a predicted score (`name` in `maps`), refined or not."""
        maps = self.maps if refined else self.maps_unrefined
        if name not in maps:
            raise UserError(f"no unrefined map of the {name} score in this prediction")
        return maps[name]


def check_threshold(name: str, threshold: float, num_classes: int, num_queries: int) -> None:
    """A one-line UserError unless `threshold` is a finite number inside the score's range."""
    low, high = score_range(name, num_classes, num_queries)
    if not (np.isfinite(threshold) and low <= threshold <= high):
        raise UserError(
            f"threshold {threshold} is outside the range of the {name} score [{low:.6g}, "
            f"{high:.6g}] (K={num_classes} classes, Q={num_queries} queries)"
        )
