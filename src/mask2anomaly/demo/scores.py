"""The demo's score table: every anomaly score (`scoring/scores.py`) of the fine-tuned model with
the refinement mask on the synthetic RoadAnomaly21 / RoadObstacle21, and the ISSU open-set IoU.

The stage-2 predictor of the demo computes all scores in the forward passes its rows already
make (`stage_scores`), so the table costs no extra forward: its maps come from the same
memoised predictions (`slim` keeps them small), are stored in `eval/scores/` (resumable like
the rows' folders) and scored with the `smiyc` protocol, the operating-point thresholds of each
score on its test set, and the open-set metrics at them. The report shows the table and, per
panel, the open-set map of Eq. 2 at its TPR95 threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import DEFAULT_SCORE, ScoreName, choices
from ..data.benchmarks import Benchmark, load_benchmark
from ..data.io import read_label_map
from ..evaluation.driver import (
    maps_folder,
    open_set_metrics,
    score_maps,
    semantic_folder,
    store_maps,
)
from ..evaluation.maps import load_map
from ..evaluation.operating_points import read_threshold
from ..evaluation.report import write_metrics_json
from ..evaluation.results import AnomalyResult
from ..fileio import OutputFolder, file_digest, write_text_atomic
from ..inference.pictures import colorize_semantic
from ..inference.prediction import Prediction
from .plan import TEST_SETS

SCORES: tuple[ScoreName, ...] = choices(ScoreName)  # Eq. 2 first: the rows' map
STAGE, REFINEMENT = "stage2", "official"  # the fine-tuned model with the refinement mask
OPEN_SET_POINT = "tpr95"  # the panels' open-set maps: Eq. 2 thresholded at this point
NUM_CLASSES = 19


def stage_scores(stage: str) -> tuple[ScoreName, ...]:
    """The scores the demo's predictor of `stage` computes (Eq. 2 alone but for the table's)."""
    return SCORES if stage == STAGE else (DEFAULT_SCORE,)


def slim(prediction: Prediction) -> Prediction:
    """A memoised prediction: the first score's maps as they are, the other scores' refined
    maps as float16 (as they are stored) and no other unrefined maps."""
    first = prediction.score
    maps = {
        name: m if name == first else m.astype(np.float16) for name, m in prediction.maps.items()
    }
    unrefined = {first: prediction.maps_unrefined[first]} if prediction.maps_unrefined else {}
    return dataclasses.replace(prediction, maps=maps, maps_unrefined=unrefined)


def scores_folder(out: Path) -> Path:
    return out / "eval" / "scores"


def evaluate_scores(
    out: Path, world: Path, predict: Callable[[str, np.ndarray], Prediction]
) -> list[AnomalyResult]:
    """Store and score every score's maps on the test sets; writes eval/scores/metrics.json
    and table.md. `predict(stage, image)` is the demo's memoised predictor."""
    folder = scores_folder(out)
    settings = {
        "weights_sha256": file_digest(out / STAGE / "model_final.pt"),
        "refinement": REFINEMENT,
        "scores": list(SCORES),
    }

    def maps(image: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        prediction = predict(STAGE, image)
        return prediction.maps, prediction.semantic

    results = []
    with OutputFolder(folder, command="demo", settings=settings, replace=True) as stored:
        for name, root in TEST_SETS:
            dataset = load_benchmark(name, world / root)
            store_maps(dataset, maps, stored, SCORES, semantic=True)
            results += [_result(folder, dataset, score) for score in SCORES]
    write_metrics_json(folder / "metrics.json", results)
    write_text_atomic(folder / "table.md", score_table(results))
    return results


def _result(folder: Path, dataset: Benchmark, score: str) -> AnomalyResult:
    maps = maps_folder(folder, dataset.name, score)
    result = score_maps(maps, dataset, ("smiyc",))
    semantic = semantic_folder(folder, dataset.name)
    open_set = open_set_metrics(maps, semantic, dataset, result.operating_points, NUM_CLASSES)
    return dataclasses.replace(result, score=score, open_set=open_set)


def _pct(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def score_table(results: list[AnomalyResult]) -> str:
    """Markdown: one row per score; per test set AuPRC, FPR95, F1* and the open-set mIoU at
    the TPR95 threshold (x100); then the closed-set mIoU of each test set."""
    names = list(dict.fromkeys(r.dataset for r in results))
    by_key = {(r.score, r.dataset): r for r in results}
    header = ["score"]
    for name in names:
        header += [f"{name} {label}" for label in ("AuPRC", "FPR95", "F1*", "open mIoU")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for score in dict.fromkeys(r.score for r in results):
        cells = [str(score)]
        for name in names:
            r = by_key[(score, name)]
            pixel = r.pixel.get("smiyc")
            open_miou = r.open_set.open_miou.get(OPEN_SET_POINT) if r.open_set else None
            cells += [_pct(getattr(pixel, "auprc", None)), _pct(getattr(pixel, "fpr95", None)),
                      _pct(getattr(r.components, "f1_mean", None)), _pct(open_miou)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    closed = [
        f"{r.dataset} {_pct(r.open_set.closed_miou)}"
        for r in results
        if r.score == DEFAULT_SCORE and r.open_set is not None
    ]
    return (
        "\n".join(lines)
        + f"\n\nClosed-set mIoU (same frames, K={NUM_CLASSES}): "
        + (", ".join(closed) + "\n")
    )


def score_section(out: Path) -> list[str]:
    """The report's lines about the score table (none when it was not computed)."""
    table = scores_folder(out) / "table.md"
    if not table.is_file():
        return []
    return [
        "## Every score of the fine-tuned model (with the refinement mask), one forward per "
        "frame\n",
        "Scores as `mask2anomaly evaluate --score` computes them (`smiyc` protocol, x100); "
        "open mIoU: the ISSU open-set mIoU over the 19 known classes with the pixels above "
        "the score's TPR95 threshold on that test set marked unknown (an oracle-calibrated "
        "threshold, as ISSU does).\n",
        table.read_text(),
    ]


def open_set_tile(out: Path, dataset: str, frame_id: str) -> tuple[str, np.ndarray] | None:
    """The panel tile of a frame: the fine-tuned model's semantic map with Eq. 2 above its
    TPR95 threshold in white (None when the score table was not computed)."""
    folder = scores_folder(out)
    semantic = semantic_folder(folder, dataset) / f"{frame_id}.png"
    if not (folder / "metrics.json").is_file() or not semantic.is_file():
        return None
    threshold = read_threshold(folder / "metrics.json", DEFAULT_SCORE, OPEN_SET_POINT,
                               dataset=dataset)  # fmt: skip
    score = load_map(maps_folder(folder, dataset) / f"{frame_id}.npy")
    labels = read_label_map(semantic).copy()
    labels[score > threshold] = 255
    return "open set (white: Eq. 2 > TPR95 threshold)", colorize_semantic(labels, unknown=255)
