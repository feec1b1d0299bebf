"""Evaluation report: metrics.json, a Markdown table like the paper's Table 1, PR / ROC curves
drawn with PIL, and overlays of the worst frames (issue 3; numbers as SMIYC prints them, A.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.benchmarks import Benchmark
from ..fileio import write_json_atomic, write_text_atomic
from .maps import load_map
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
    """One row per protocol, AuPRC / FPR95 (x100, one decimal) per dataset, sIoU / PPV / F1*
    where computed (smiyc), and the average over datasets of AuPRC and FPR95."""
    anomaly = [r for r in results if isinstance(r, AnomalyResult)]
    protocols = list(dict.fromkeys(p for r in anomaly for p in r.pixel))
    header, rows = ["protocol"], []
    for r in anomaly:
        header += [f"{r.dataset} {name}" for _, name in PIXEL_COLUMNS]
        if r.components is not None:
            header += [f"{r.dataset} {name}" for _, name in COMPONENT_COLUMNS]
    header += ["mean AuPRC", "mean FPR95"]
    for protocol in protocols:
        row = [protocol]
        for r in anomaly:
            pixel = r.pixel.get(protocol)
            row += [_percent(getattr(pixel, key, None)) for key, _ in PIXEL_COLUMNS]
            if r.components is not None:
                comp = r.components if protocol == "smiyc" else None
                row += [_percent(getattr(comp, key, None)) for key, _ in COMPONENT_COLUMNS]
        for key, _ in PIXEL_COLUMNS:
            values = [getattr(r.pixel[protocol], key) for r in anomaly if protocol in r.pixel]
            row.append(_percent(float(np.nanmean(values)) if values else None))
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    for result in results:
        if isinstance(result, SemanticResult):
            lines.append(f"\n{result.dataset}: mIoU {_percent(result.semantic.miou)}")
    return "\n".join(lines) + "\n"


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
    """out_dir/worst/<dataset>/<frame id>.png: an overlay of each of the worst frames."""
    index = {f.frame_id: i for i, f in enumerate(dataset.frames)}
    for worst in result.worst_frames:
        image, label = dataset[index[worst.frame_id]]
        picture = overlay(image, load_map(Path(worst.map_path)), label)
        target = out_dir / "worst" / dataset.name / f"{worst.frame_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target)


def write_report(
    out_dir: Path, results: Sequence[DatasetResult], datasets: Sequence[Benchmark] = ()
) -> None:
    """metrics.json, metrics.md, pr_curves.png and roc_curves.png in out_dir, and the worst
    frames' overlays of the anomaly results whose dataset is given."""
    write_metrics_json(out_dir / "metrics.json", results)
    write_text_atomic(out_dir / "metrics.md", markdown_table(results))
    curves = {
        f"{r.dataset} {p}": m.curve
        for r in results
        if isinstance(r, AnomalyResult)
        for p, m in r.pixel.items()
    }
    if curves:
        draw_curves(out_dir / "pr_curves.png", curves, "pr")
        draw_curves(out_dir / "roc_curves.png", curves, "roc")
    by_name = {d.name: d for d in datasets}
    for result in results:
        if isinstance(result, AnomalyResult) and result.dataset in by_name:
            write_worst_frames(out_dir, by_name[result.dataset], result)
