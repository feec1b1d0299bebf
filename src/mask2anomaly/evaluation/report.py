"""Evaluation report: metrics.json, a Markdown table like the paper's Table 1, PR / ROC curves
drawn with PIL, and overlays of the worst frames (issue 3; numbers as SMIYC prints them, A.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import DEFAULT_SCORE
from ..data.benchmarks import Benchmark
from ..fileio import write_json_atomic, write_text_atomic
from .maps import load_map
from .operating_points import OPERATING_POINTS
from .pixel_metrics import PixelCurve
from .results import AnomalyResult, DatasetResult, SemanticResult

CURVE_SIZE = 480  # pixels per side of a curve plot
MARGIN = 48
COLORS = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (128, 128, 0),
)
PIXEL_COLUMNS = (("auprc", "AuPRC"), ("fpr95", "FPR95"))
COMPONENT_COLUMNS = (("siou", "sIoU"), ("ppv", "PPV"), ("f1_mean", "F1*"))


def write_metrics_json(path: Path, results: Sequence[DatasetResult]) -> None:
    """All results (curves left out; NaN written as null)."""
    write_json_atomic(path, {"results": [r.to_dict() for r in results]}, indent=2)


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def markdown_table(results: Sequence[DatasetResult]) -> str:
    """One row per protocol (per score and protocol when the results hold several scores),
    AuPRC / FPR95 (x100, one decimal) per dataset, sIoU / PPV / F1* where computed (smiyc), and
    the average over datasets of AuPRC and FPR95; then the open-set table and the mIoU lines."""
    anomaly = [r for r in results if isinstance(r, AnomalyResult)]
    scores = list(dict.fromkeys(r.score for r in anomaly))
    several = len(scores) > 1
    datasets = list(dict.fromkeys(r.dataset for r in anomaly))
    by_key = {(r.score, r.dataset): r for r in anomaly}
    protocols = list(dict.fromkeys(p for r in anomaly for p in r.pixel))
    components = {d: any(r.components is not None for r in anomaly if r.dataset == d)
                  for d in datasets}  # fmt: skip
    header = (["score"] if several else []) + ["protocol"]
    for name in datasets:
        header += [f"{name} {label}" for _, label in PIXEL_COLUMNS]
        if components[name]:
            header += [f"{name} {label}" for _, label in COMPONENT_COLUMNS]
    header += ["mean AuPRC", "mean FPR95"]
    rows = []
    for score in scores:
        row_results = [by_key.get((score, name)) for name in datasets]
        for protocol in protocols:
            row = ([str(score)] if several else []) + [protocol]
            for name, r in zip(datasets, row_results, strict=True):
                pixel = r.pixel.get(protocol) if r is not None else None
                row += [_percent(getattr(pixel, key, None)) for key, _ in PIXEL_COLUMNS]
                if components[name]:
                    comp = r.components if r is not None and protocol == "smiyc" else None
                    row += [_percent(getattr(comp, key, None)) for key, _ in COMPONENT_COLUMNS]
            for key, _ in PIXEL_COLUMNS:
                values = [getattr(r.pixel[protocol], key) for r in row_results
                          if r is not None and protocol in r.pixel]  # fmt: skip
                row.append(_percent(float(np.nanmean(values)) if values else None))
            rows.append(row)
    lines = _table(header, rows) + _open_set_table(anomaly) + instance_table(anomaly)
    for result in results:
        if isinstance(result, SemanticResult):
            lines.append(f"\n{result.dataset}: mIoU {_percent(result.semantic.miou)}")
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _open_set_table(anomaly: Sequence[AnomalyResult]) -> list[str]:
    """ISSU open-set mIoU at each operating point next to the closed-set mIoU (x100), one row
    per score and dataset with semantic labels; nothing when there is none."""
    rows = []
    for r in anomaly:
        if r.open_set is not None:
            cells = [str(r.score or DEFAULT_SCORE), r.dataset, _percent(r.open_set.closed_miou)]
            rows.append(cells + [_percent(r.open_set.open_miou.get(p)) for p in OPERATING_POINTS])
    if not rows:
        return []
    header = ["score", "dataset", "closed mIoU"] + [f"open mIoU @{p}" for p in OPERATING_POINTS]
    return ["", "Open-set segmentation (ISSU; thresholds of each score on its dataset):", ""] + (
        _table(header, rows)
    )


def instance_table(anomaly: Sequence[AnomalyResult]) -> list[str]:
    """Instance AP / AP50 (x100, OoDIS's rules) per score, dataset and method, with the
    threshold and the ground truth used; nothing when no instances were evaluated."""
    rows = [
        [str(r.score or DEFAULT_SCORE), r.dataset, str(i.method), _percent(i.ap),
         _percent(i.ap50), str(i.num_gt), str(i.num_pred),
         f"{i.threshold:.4g} ({i.threshold_from})", str(i.ground_truth)]
        for r in anomaly
        for i in r.instances
    ]  # fmt: skip
    if not rows:
        return []
    header = ["score", "dataset", "instances", "AP", "AP50", "GT instances", "predicted",
              "threshold", "ground truth"]  # fmt: skip
    return ["", "Anomaly instances (OoDIS AP over IoU 0.5:0.95, regions of 10+ px):", ""] + (
        _table(header, rows)
    )


def draw_curves(path: Path, curves: dict[str, PixelCurve], kind: str) -> None:
    """PR (recall -> precision) or ROC (FPR -> TPR) curves of several protocols / datasets."""
    size = CURVE_SIZE + 2 * MARGIN
    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = MARGIN, MARGIN, MARGIN + CURVE_SIZE, MARGIN + CURVE_SIZE
    for tick in np.linspace(0, 1, 6):
        x, y = x0 + tick * CURVE_SIZE, y1 - tick * CURVE_SIZE
        draw.line([(x, y0), (x, y1)], fill=(225, 225, 225))
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x - 8, y1 + 6), f"{tick:.1f}", fill="black")
        draw.text((x0 - 30, y - 6), f"{tick:.1f}", fill="black")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    xlabel, ylabel = ("recall", "precision") if kind == "pr" else ("false positive rate", "TPR")
    draw.text((x0 + CURVE_SIZE // 2 - 30, y1 + 24), xlabel, fill="black")
    draw.text((4, y0 - 20), ylabel, fill="black")
    for k, (name, curve) in enumerate(curves.items()):
        tp, fp = np.asarray(curve.tp, np.float64), np.asarray(curve.fp, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr, fpr = tp / curve.num_pos, fp / curve.num_neg
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        xs, ys = (tpr, precision) if kind == "pr" else (fpr, tpr)
        points = [
            (x0 + x * CURVE_SIZE, y1 - y * CURVE_SIZE)
            for x, y in zip(xs, ys, strict=True)
            if np.isfinite(x) and np.isfinite(y)
        ]
        color = COLORS[k % len(COLORS)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        draw.text((x0 + 8, y0 + 8 + 14 * k), name, fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def overlay(image: np.ndarray, score: np.ndarray, label: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: the image blended with the score heat (red), GT anomaly outlined in
    green, void darkened. score is normalised by its range inside the evaluated region."""
    valid = label != 255
    values = score[valid].astype(np.float64) if valid.any() else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    heat = np.clip((score.astype(np.float64) - low) / max(high - low, 1e-12), 0, 1)
    out = image.astype(np.float64) * 0.5
    out[..., 0] += 127 * heat
    out[~valid] *= 0.4
    anomaly = label == 1
    edge = anomaly & ~(
        np.roll(anomaly, 1, 0)
        & np.roll(anomaly, -1, 0)
        & np.roll(anomaly, 1, 1)
        & np.roll(anomaly, -1, 1)
    )
    out[edge] = (0, 255, 0)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_worst_frames(out_dir: Path, dataset: Benchmark, result: AnomalyResult) -> None:
    """out_dir/worst/<dataset>/<frame id>.png (other scores than Eq. 2: worst/<score>/...): an
    overlay of each of the worst frames."""
    index = {f.frame_id: i for i, f in enumerate(dataset.frames)}
    folder = out_dir / "worst"
    if result.score not in (None, DEFAULT_SCORE):
        folder = folder / str(result.score)
    for worst in result.worst_frames:
        image, label = dataset[index[worst.frame_id]]
        picture = overlay(image, load_map(Path(worst.map_path)), label)
        target = folder / dataset.name / f"{worst.frame_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target)


def write_report(
    out_dir: Path, results: Sequence[DatasetResult], datasets: Sequence[Benchmark] = ()
) -> None:
    """metrics.json, metrics.md, pr_curves.png and roc_curves.png in out_dir, and the worst
    frames' overlays of the anomaly results whose dataset is given."""
    write_metrics_json(out_dir / "metrics.json", results)
    write_text_atomic(out_dir / "metrics.md", markdown_table(results))
    anomaly = [r for r in results if isinstance(r, AnomalyResult)]
    several = len({r.score for r in anomaly}) > 1
    curves = {  # with several scores: each score's curve of the first protocol
        f"{r.dataset} {r.score} {p}" if several else f"{r.dataset} {p}": m.curve
        for r in anomaly
        for p, m in list(r.pixel.items())[: 1 if several else None]
    }
    if curves:
        draw_curves(out_dir / "pr_curves.png", curves, "pr")
        draw_curves(out_dir / "roc_curves.png", curves, "roc")
    by_name = {d.name: d for d in datasets}
    for result in anomaly:
        if result.dataset in by_name:
            write_worst_frames(out_dir, by_name[result.dataset], result)
