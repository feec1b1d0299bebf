"""The demo's anomaly instances (issue 17): instance AP / AP50 (OoDIS's rules) of both methods,
connected components and the model's query masks, for the fine-tuned model on the synthetic
RoadAnomaly21 / RoadObstacle21 frames (their instance labels), at each set's pixel-F1-optimal
threshold; and panels with the instances' contours, boxes and confidences."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.benchmarks import load_benchmark
from ..evaluation.instance_metrics import InstanceAP, InstanceResult, InstanceTruth
from ..evaluation.instance_scoring import FROM_INSTANCE_LABELS, ground_truth
from ..evaluation.instances import METHODS, Instance, InstanceMethod, extract_instances
from ..fileio import write_json_atomic
from ..inference.pictures import draw_instances, side_by_side
from ..inference.predictor import Predictor
from .plan import TEST_SETS, DemoRow

STAGE, REFINEMENT = "stage2", "official"  # the fine-tuned model, as the table's last row
NUM_PANELS = 2  # frames pictured per test set


def evaluate_instances(
    out: Path, world: Path, rows: list[DemoRow], device: str
) -> tuple[str, list[Path]]:
    """(Markdown section for report.md, panel files); writes out/instances.json. One forward
    per test frame gives the map and the query masks; nothing is held across frames."""
    row = next(r for r in rows if (r.stage, r.refinement) == (STAGE, REFINEMENT))
    weights = out / STAGE / "model_final.pt"
    predictor = Predictor.from_checkpoint(
        weights, device=device, overrides=[f"scoring.refinement={REFINEMENT}"]
    )
    results: dict[str, dict[str, InstanceResult]] = {}
    panels: list[Path] = []
    for name, folder in TEST_SETS:
        dataset = load_benchmark(name, world / folder)
        threshold = row.results[name].operating_points["best-f1"]
        metrics = {method: InstanceAP() for method in METHODS}
        for n, i in enumerate(dataset.labelled):
            image = dataset.load_image(i)
            prediction = predictor.predict(image, return_query_masks=True)
            truth, _ = ground_truth(dataset, i)
            found = {
                method: extract_instances(method, prediction.anomaly_score, threshold,
                                          query_masks=prediction.query_masks)
                for method in METHODS
            }  # fmt: skip
            for method, instances in found.items():
                metrics[method].update(truth, instances)
            if n < NUM_PANELS:
                path = out / "panels" / f"instances_{name}_{dataset.frames[i].frame_id}.png"
                _panel(path, image, truth, found)
                panels.append(path)
        results[name] = {
            m: dataclasses.replace(metric.compute(), method=m, threshold=threshold,
                                   threshold_from="best-f1", ground_truth=FROM_INSTANCE_LABELS)
            for m, metric in metrics.items()
        }  # fmt: skip
    write_json_atomic(out / "instances.json", {
        name: {m: r.to_dict() for m, r in by_method.items()} for name, by_method in results.items()
    }, indent=2)  # fmt: skip
    return instance_table(results), panels


def instance_table(results: dict[str, dict[str, InstanceResult]]) -> str:
    """Markdown: one row per method, AP / AP50 (x100) per test set."""
    names = list(results)
    header = ["instances"] + [f"{n} {k}" for n in names for k in ("AP", "AP50")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in METHODS:
        cells: list[str] = [method]
        for name in names:
            r = results[name][method]
            cells += [_pct(r.ap), _pct(r.ap50)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def instance_section(table: str, panels: list[Path]) -> str:
    """report.md's instance section."""
    return "\n".join([
        "## Anomaly instances\n",
        "Instance AP / AP50 as OoDIS computes them (cityscapesScripts' instance evaluator: IoU "
        "0.5:0.95, regions of 10+ px, void ignored) for the fine-tuned model with refinement, "
        "against the frames' instance labels, at each set's pixel-F1-optimal threshold: "
        "connected components of the map, and the model's own query masks.\n",
        table,
        *[f"![{p.stem}](panels/{p.name})\n" for p in panels],
    ])  # fmt: skip


def _pct(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{100 * value:.1f}"


def _panel(
    path: Path, image: np.ndarray, truth: InstanceTruth, found: dict[InstanceMethod, list[Instance]]
) -> None:
    """input with the ground-truth instances | each method's instances."""
    shown = image // 2 + 64
    edges = np.zeros(truth.regions.shape, bool)
    edges[:, 1:] |= truth.regions[:, 1:] != truth.regions[:, :-1]
    edges[1:] |= truth.regions[1:] != truth.regions[:-1]
    truth_tile = image.copy()
    truth_tile[edges & (truth.regions > 0)] = (255, 40, 40)
    tiles = [("ground-truth instances", truth_tile)]
    tiles += [(f"{m} ({len(i)})", draw_instances(shown, i)) for m, i in found.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(side_by_side(tiles)).save(path)
