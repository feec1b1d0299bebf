"""Operating-point thresholds of an anomaly score, and reading them back from a metrics.json.

`evaluate` stores, per score and dataset, the thresholds t at which "score > t" (the open-set
rule of the ISSU benchmark, Vojíř et al., CVPR 2025, benchmark/metrics/pixel_recognition.py)
reaches an operating point of the dataset's exact pixel curve (anomaly = positive, void left
out):

* `tpr95`: the first (highest) distinct score v_i at which the TPR of "score >= v_i" reaches
  0.95 (ISSU: `np.searchsorted(tpr, 0.95)` on its curve);
* `fpr5`: the first v_i at which the FPR reaches 0.05 (ISSU: `np.searchsorted(fpr, 0.05)`);
* `best-f1`: the v_i of the largest pixel F1 = 2 TP / (2 TP + FP + FN) (the first on ties).

The stored t is the midpoint between v_i and the next lower distinct score, so that "score > t"
flags exactly the pixels "score >= v_i" flags on the calibration maps (v_i itself when it is
the lowest score). `read_threshold` reads one back (`predict --open-set tpr95 --calibration`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_SCORE, OperatingPoint, choices
from ..errors import UserError

OPERATING_POINTS: tuple[OperatingPoint, ...] = choices(OperatingPoint)
TPR_TARGET = 0.95
FPR_TARGET = 0.05


def operating_points(
    points: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], num_pos: int, num_neg: int
) -> dict[str, float]:
    """The thresholds of OPERATING_POINTS (NaN where undefined: no positive, or no negative for
    fpr5) from curve points in blocks (thresholds [T] descending and distinct, cumulative
    tp / fp [T] of "score >= threshold"), blocks in descending order."""
    thresholds: dict[str, float] = {}
    values: dict[str, float] = {}  # v_i of each point found
    pending: list[str] = []  # points whose next lower score is in the next block
    best_f1 = -1.0
    for scores, tp, fp in points:
        if not len(scores):
            continue
        for name in pending:
            thresholds[name] = (values[name] + float(scores[0])) / 2
        pending = []
        tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
        found: dict[str, int] = {}
        if "tpr95" not in values and num_pos:
            found["tpr95"] = int(np.searchsorted(tp / num_pos, TPR_TARGET))
        if "fpr5" not in values and num_neg:
            found["fpr5"] = int(np.searchsorted(fp / num_neg, FPR_TARGET))
        if num_pos:
            f1 = 2 * tp / (2 * tp + fp + (num_pos - tp))
            best = int(np.argmax(f1))
            if f1[best] > best_f1:
                best_f1, found["best-f1"] = float(f1[best]), best
        for name, index in found.items():
            if index >= len(scores):
                continue
            values[name] = float(scores[index])
            thresholds.pop(name, None)
            if index + 1 < len(scores):
                thresholds[name] = (values[name] + float(scores[index + 1])) / 2
            else:
                pending.append(name)
    for name in pending:  # v_i is the lowest score
        thresholds[name] = values[name]
    return {name: thresholds.get(name, math.nan) for name in OPERATING_POINTS}


def _load_results(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: calibration file not found") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read calibration metrics ({error})") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise UserError(f"{path}: not a metrics.json of `mask2anomaly evaluate` (no results)")
    return [
        r for r in results if isinstance(r, dict) and isinstance(r.get("operating_points"), dict)
    ]


def read_threshold(
    path: str | Path, score: str, point: str, *, dataset: str | None = None
) -> float:
    """The threshold of operating point `point` of `score` stored in an evaluation's
    metrics.json (on `dataset`, needed when it holds several).

    Raises:
        UserError: one line naming the file and the value: an unknown operating point, no
            thresholds of that score (or dataset), several datasets and none chosen, or a point
            that is undefined there.
    """
    path = Path(path)
    if point not in OPERATING_POINTS:
        raise UserError(
            f"unknown operating point {point!r}; choose from {', '.join(OPERATING_POINTS)}"
        )
    results = _load_results(path)
    # results without a "score" key hold Eq. 2 maps (`mask2anomaly score` of stored maps)
    scores = list(dict.fromkeys(r.get("score") or DEFAULT_SCORE for r in results))
    mine = [r for r in results if (r.get("score") or DEFAULT_SCORE) == score]
    if not mine:
        held = ", ".join(scores) or "none"
        raise UserError(
            f"{path}: no operating points of the {score} score (it holds: {held}); "
            f"run `mask2anomaly evaluate --score {score}` to calibrate it"
        )
    names = [str(r.get("dataset")) for r in mine]
    if dataset is not None:
        mine = [r for r in mine if r.get("dataset") == dataset]
        if not mine:
            raise UserError(
                f"{path}: no {score} thresholds on dataset {dataset!r}; choose from "
                f"{', '.join(names)}"
            )
    elif len(mine) > 1:
        raise UserError(
            f"{path}: {score} thresholds for {len(mine)} datasets ({', '.join(names)}); "
            "choose one with --calibration-dataset"
        )
    stored = mine[0]["operating_points"]
    value = stored.get(point)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        defined = [p for p in OPERATING_POINTS if isinstance(stored.get(p), (int, float))]
        raise UserError(
            f"{path}: no {point} threshold of the {score} score on {mine[0].get('dataset')} "
            f"(defined there: {', '.join(defined) or 'none'})"
        )
    return float(value)
