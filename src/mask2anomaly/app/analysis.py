"""What the browser app computes, without Gradio: one cached prediction per image and prediction
settings, and the pictures drawn from it for the display settings (issue 18).

`Analyser.analyse(image, settings)` is the one entry point of the page and its HTTP API. The
settings fall in two groups. Those that change what the network computes (flip averaging:
`AppSettings.prediction_key`) run the model when that image has not been predicted with them;
those that only change what is drawn (refinement on/off, threshold, view) reuse the cached
`Prediction`, which holds the refined and the unrefined anomaly map, so moving the threshold
never runs the model. New options plug in the same way: a score choice joins `prediction_key`
and the `Predictor` built in `Analyser.predictor`; a new view joins `VIEWS` and `view_picture`;
a new output (open-set map, instance table) becomes a property of `Analysis`.
"""

from __future__ import annotations

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

from ..config import InferenceConfig, ScoringConfig
from ..errors import UserError
from ..inference.pictures import (
    CONTOUR_COLOR,
    colorize_semantic,
    heat_colors,
    heat_overlay,
    mask_boundary,
)
from ..inference.predictor import Network, Prediction, Predictor, as_rgb_array

VIEWS = ("overlay", "heat map", "mask")  # how the anomaly map is drawn (see `view_picture`)
DEFAULT_THRESHOLD = 0.5
CACHE_SIZE = 4  # predictions kept (about 26 MB each for a 1024x2048 image)
MASK_COLOR = np.array((255, 40, 40), np.float32)
CALIBRATION_KEY = "threshold"  # a calibration file's own number: {"threshold": 0.73}


@dataclass(frozen=True)
class AppSettings:
    """refinement: show the refined anomaly map (else the unrefined one); flip: average with the
    flipped image (a prediction setting); threshold: contour / mask level of the anomaly score;
    view: one of VIEWS."""

    refinement: bool = True
    flip: bool = True
    threshold: float = DEFAULT_THRESHOLD
    view: str = "overlay"

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise UserError(f"threshold must be a finite number, got {self.threshold!r}")
        if self.view not in VIEWS:
            raise UserError(f"view must be one of {', '.join(VIEWS)}; got {self.view!r}")

    @property
    def prediction_key(self) -> tuple[Any, ...]:
        """The settings that change what the network computes (the cache key's part)."""
        return (bool(self.flip),)


def anomaly_map(prediction: Prediction, refinement: bool) -> np.ndarray:
    """float32 [H, W]: the refined anomaly map, or the unrefined one."""
    return prediction.anomaly_score if refinement else prediction.anomaly_score_unrefined


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
        s = self.settings
        return view_picture(self.image, self.anomaly_map, s.threshold, s.view)

    def semantic_picture(self) -> np.ndarray:
        return colorize_semantic(self.prediction.semantic)

    def summary(self) -> str:
        s = self.settings
        height, width = self.image.shape[:2]
        above = float(np.mean(self.anomaly_map >= s.threshold))
        made = "cached prediction" if self.cached else "prediction"
        return (
            f"{made}: {self.seconds:.2f} s · {width}×{height} · flip {_on(s.flip)} · "
            f"refinement {_on(s.refinement)} · {100 * above:.2f} % of pixels ≥ {s.threshold:g}"
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
            self._predictors[key] = Predictor(self.model, scoring=self.scoring, inference=inference)
        return self._predictors[key]

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
                prediction = self.predictor(settings).predict(image)
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
            return self.predictor(settings).predict(frame)


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
