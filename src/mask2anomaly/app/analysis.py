"""What the browser app computes, without Gradio: one cached prediction per image and prediction
settings, and the pictures drawn from it for the display settings (issue 18).

`Analyser.analyse(image, settings)` is the one entry point of the page and its HTTP API. The
settings fall in two groups. Those that change what the network computes (flip averaging:
`AppSettings.prediction_key`) run the model when that image has not been predicted with them;
those that only change what is drawn (refinement on/off, threshold, view) reuse the cached
`Prediction`, which holds the refined and the unrefined anomaly map, so moving the threshold
never runs the model. The anomaly score (`scoring/scores.py`) and whether the query masks are
kept (instances by query) are prediction settings too: each joins `prediction_key` and the
`Predictor` built in `Analyser.predictor`. The threshold is in the chosen score's own units;
pictures map the score to the heat scale by its display range (as `predict` does). The open-set
map and the instance table are drawn from the cached prediction at the threshold.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_SCORE, IGNORE_INDEX, InferenceConfig, ScoringConfig
from ..errors import UserError
from ..evaluation.instances import Instance
from ..evaluation.operating_points import read_threshold
from ..inference.pictures import (
    CONTOUR_COLOR,
    colorize_semantic,
    draw_instances,
    heat_colors,
    heat_overlay,
    mask_boundary,
    threshold_to_display,
    to_display,
)
from ..inference.predictor import Network, Prediction, Predictor, as_rgb_array
from ..scoring.scores import SCORE_NAMES, display_range

VIEWS = ("overlay", "heat map", "mask")  # how the anomaly map is drawn (see `view_picture`)
INSTANCE_METHODS = ("off", "components", "queries")  # anomaly instances shown (see `Analysis`)
INSTANCE_COLUMNS = ("instance", "area (px)", "confidence", "x", "y", "width", "height")
CALIBRATION_POINT = "best-f1"  # the operating point other scores start at, from a metrics.json
DEFAULT_THRESHOLD = 0.5
CACHE_SIZE = 4  # predictions kept (about 26 MB each for a 1024x2048 image)
MASK_COLOR = np.array((255, 40, 40), np.float32)
CALIBRATION_KEY = "threshold"  # a calibration file's own number: {"threshold": 0.73}


@dataclass(frozen=True)
class AppSettings:
    """refinement: show the refined anomaly map (else the unrefined one); flip: average with the
    flipped image (a prediction setting); threshold: contour / mask / open-set / instance level
    of the anomaly score, in its units; view: one of VIEWS; score: one of SCORE_NAMES (a
    prediction setting); open_set: draw the open-set map (pixels above the threshold unknown);
    instances: one of INSTANCE_METHODS ("queries" keeps the query masks: a prediction setting)."""

    refinement: bool = True
    flip: bool = True
    threshold: float = DEFAULT_THRESHOLD
    view: str = "overlay"
    score: str = DEFAULT_SCORE
    open_set: bool = True
    instances: str = "off"

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise UserError(f"threshold must be a finite number, got {self.threshold!r}")
        for name, value, valid in (("view", self.view, VIEWS), ("score", self.score, SCORE_NAMES),
                                   ("instances", self.instances, INSTANCE_METHODS)):  # fmt: skip
            if value not in valid:
                raise UserError(f"{name} must be one of {', '.join(valid)}; got {value!r}")

    @property
    def prediction_key(self) -> tuple[Any, ...]:
        """The settings that change what the network computes (the cache key's part)."""
        return (bool(self.flip), self.score, self.instances == "queries")


def anomaly_map(prediction: Prediction, refinement: bool) -> np.ndarray:
    """float32 [H, W]: the refined anomaly map, or the unrefined one."""
    return prediction.anomaly_score if refinement else prediction.anomaly_score_unrefined


def anomaly_picture(image: np.ndarray, prediction: Prediction, settings: AppSettings) -> np.ndarray:
    """The prediction's anomaly map (refined or not) drawn as the settings' view at their
    threshold, in the heat scale of the score's display range (`pictures.to_display`)."""
    display = display_range(prediction.score, prediction.num_classes)
    shown = to_display(anomaly_map(prediction, settings.refinement), display)
    threshold = threshold_to_display(settings.threshold, display)
    return view_picture(image, shown, threshold, settings.view)


def view_picture(image: np.ndarray, score: np.ndarray, threshold: float, view: str) -> np.ndarray:
    """The anomaly map drawn as `view` (uint8 [H, W, 3]): "overlay", the heat map blended into
    the image with contours of score >= threshold; "heat map", the heat colours alone with the
    same contours; "mask", the image dimmed with the pixels at or above the threshold in red."""
    if view == "overlay":
        return heat_overlay(image, score, threshold=threshold)
    if view == "heat map":
        colors = heat_colors(score)
        width = max(1, round(max(image.shape[:2]) / 512))
        colors[mask_boundary(score >= threshold, width)] = CONTOUR_COLOR
        return np.clip(colors + 0.5, 0, 255).astype(np.uint8)
    if view == "mask":
        out = image.astype(np.float32) * 0.45
        above = score >= threshold
        out[above] = image[above] * 0.35 + MASK_COLOR * 0.65
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
    raise UserError(f"view must be one of {', '.join(VIEWS)}; got {view!r}")


@dataclass(frozen=True)
class Analysis:
    """One image's prediction under `settings`: `seconds` is how long the prediction took when
    it was made, `cached` says whether this analysis reused it."""

    image: np.ndarray
    prediction: Prediction
    settings: AppSettings
    seconds: float
    cached: bool

    @property
    def anomaly_map(self) -> np.ndarray:
        """float32 [H, W], refined or not as the settings say (higher = more anomalous)."""
        return anomaly_map(self.prediction, self.settings.refinement)

    def anomaly_picture(self) -> np.ndarray:
        """The view of the anomaly map, with the instances' contours, boxes and confidences
        when they are shown."""
        picture = anomaly_picture(self.image, self.prediction, self.settings)
        return draw_instances(picture, self.instances) if self.instances else picture

    def semantic_picture(self) -> np.ndarray:
        return colorize_semantic(self.prediction.semantic)

    def open_set_picture(self) -> np.ndarray | None:
        """The open-set map in Cityscapes colours, unknown (score > threshold) in white; None
        when the settings do not show it."""
        if not self.settings.open_set:
            return None
        labels = self.prediction.open_set(self.settings.threshold,
                                          refined=self.settings.refinement)  # fmt: skip
        return colorize_semantic(labels, unknown=IGNORE_INDEX)

    @functools.cached_property
    def instances(self) -> list[Instance]:
        """The anomaly instances at the threshold (none when the settings show none), highest
        confidence first (`Prediction.instances`)."""
        s = self.settings
        if s.instances == "off":
            return []
        return self.prediction.instances(s.instances, s.threshold,  # type: ignore[arg-type]
                                         refined=s.refinement)  # fmt: skip

    def instance_rows(self) -> list[list[Any]]:
        """One row per instance, in INSTANCE_COLUMNS order."""
        return [[i + 1, inst.area, round(inst.confidence, 4), *inst.box]
                for i, inst in enumerate(self.instances)]  # fmt: skip

    def summary(self) -> str:
        s = self.settings
        height, width = self.image.shape[:2]
        above = float(np.mean(self.anomaly_map >= s.threshold))
        made = "cached prediction" if self.cached else "prediction"
        found = (
            "" if s.instances == "off" else f" · {len(self.instances)} instances ({s.instances})"
        )
        return (
            f"{made}: {self.seconds:.2f} s · {width}×{height} · score {s.score} · flip "
            f"{_on(s.flip)} · refinement {_on(s.refinement)} · {100 * above:.2f} % of pixels ≥ "
            f"{s.threshold:g}{found}"
        )


def _on(flag: bool) -> str:
    return "on" if flag else "off"


class Analyser:
    """Predictions for the app: the model is loaded once; predictors (one per prediction
    setting) share it; the last `cache_size` predictions are kept. Thread-safe: one prediction
    runs at a time.

    Args:
        model: the network. scoring, inference: the checkpoint's settings; when its refinement
            is "none", the official rule is used so that refinement can be switched on.
    """

    def __init__(
        self,
        model: Network,
        *,
        scoring: ScoringConfig | None = None,
        inference: InferenceConfig | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        scoring = scoring or ScoringConfig()
        if scoring.refinement == "none":
            scoring = replace(scoring, refinement=ScoringConfig().refinement)
        self.model = model
        self.scoring, self.inference = scoring, inference or InferenceConfig()
        self.cache_size = cache_size
        self._predictors: dict[tuple[Any, ...], Predictor] = {}
        self._cache: OrderedDict[tuple[bytes, tuple[Any, ...]], tuple[Prediction, float]]
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: Any = "cpu", overrides: Sequence[str] = ()
    ) -> Analyser:
        """Load a native checkpoint; `overrides` such as "inference.min_size=512" apply."""
        from ..checkpoint import load_checkpoint_config, load_model

        cfg = load_checkpoint_config(path, overrides)
        model = load_model(path, device=device)
        return cls(model, scoring=cfg.scoring, inference=cfg.inference)

    def predictor(self, settings: AppSettings) -> Predictor:
        """The Predictor for the settings' prediction key (made on first use)."""
        key = settings.prediction_key
        if key not in self._predictors:
            inference = replace(self.inference, flip=bool(settings.flip))
            self._predictors[key] = Predictor(
                self.model, scoring=self.scoring, inference=inference, scores=(settings.score,)
            )
        return self._predictors[key]

    @property
    def num_classes(self) -> int:
        """K of the model (19 for an exported network, which does not say)."""
        return int(getattr(self.model, "num_classes", 19))

    def _predict(self, image: np.ndarray, settings: AppSettings) -> Prediction:
        queries = settings.instances == "queries"
        return self.predictor(settings).predict(image, return_query_masks=queries)

    def analyse(self, image: Any, settings: AppSettings) -> Analysis:
        """An RGB image (uint8 [H, W, 3] array, PIL image) -> its Analysis; the model runs only
        when this image was not predicted with these prediction settings recently."""
        image = as_rgb_array(image)
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(repr(image.shape).encode())
        key = (digest.digest(), settings.prediction_key)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                start = time.perf_counter()
                prediction = self._predict(image, settings)
                cached = (prediction, time.perf_counter() - start)
                self._cache[key] = cached
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                hit = False
            else:
                self._cache.move_to_end(key)
                hit = True
        return Analysis(image, cached[0], settings, seconds=cached[1], cached=hit)

    def predict_frame(self, frame: np.ndarray, settings: AppSettings) -> Prediction:
        """One video frame, not cached (frames are seen once)."""
        with self._lock:
            return self._predict(frame, settings)


def calibration_threshold(path: str | Path) -> tuple[float, str]:
    """The threshold a calibration JSON file carries, and where in it: a top-level number
    `{"threshold": T}`, else a `mask2anomaly evaluate` metrics.json, whose first anomaly
    result's smiyc best-F1 threshold (the level of its component metrics) is taken."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path}: cannot read calibration JSON ({error})") from None
    found: list[tuple[Any, str]] = []
    if isinstance(data, dict) and CALIBRATION_KEY in data:
        found.append((data[CALIBRATION_KEY], CALIBRATION_KEY))
    results = data.get("results") if isinstance(data, dict) else None
    for result in results if isinstance(results, list) else []:
        pixel = result.get("pixel") if isinstance(result, dict) else None
        smiyc = pixel.get("smiyc") if isinstance(pixel, dict) else None
        if isinstance(smiyc, dict) and "best_f1_threshold" in smiyc:
            found.append((smiyc["best_f1_threshold"], f"{result.get('dataset')} smiyc best F1"))
    if not found:
        raise UserError(
            f'{path}: no threshold in it (expected {{"{CALIBRATION_KEY}": number}} or a '
            "metrics.json of `mask2anomaly evaluate`)"
        )
    value, where = found[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{path}: threshold ({where}) is not a finite number: {value!r}")
    return float(value), where


def score_thresholds(
    num_classes: int, default: float, calibration: str | Path | None = None
) -> dict[str, float]:
    """The slider's starting threshold per score: `default` for Eq. 2 (from --threshold or
    --calibration); for the other scores their CALIBRATION_POINT threshold in a `mask2anomaly
    evaluate` metrics.json given as `calibration` (its first dataset holding that score), else
    the middle of the score's display range."""
    thresholds: dict[str, float] = {}
    for name in SCORE_NAMES:
        low, high = display_range(name, num_classes)
        thresholds[name] = (low + high) / 2
        if calibration is not None and name != DEFAULT_SCORE:
            for dataset in _datasets_of(calibration, name):
                try:
                    thresholds[name] = read_threshold(calibration, name, CALIBRATION_POINT,
                                                      dataset=dataset)  # fmt: skip
                    break
                except UserError:
                    continue
    thresholds[DEFAULT_SCORE] = default
    return thresholds


def _datasets_of(path: str | Path, score: str) -> list[str]:
    """The datasets a metrics.json holds results of `score` for (none if it is not one)."""
    try:
        results = json.loads(Path(path).read_text()).get("results")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return []
    if not isinstance(results, list):
        return []
    return [
        str(r.get("dataset"))
        for r in results
        if isinstance(r, dict) and (r.get("score") or DEFAULT_SCORE) == score
    ]
