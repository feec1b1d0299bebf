"""Typed evaluation results, one per dataset, as they cross module boundaries.

`AnomalyResult` (pixel metrics per protocol, component metrics, worst frames) and
`SemanticResult` (inlier mIoU); `to_dict()` gives the JSON written to metrics.json (curves left
out, NaN written as null by the JSON writer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import TrackName
from .component_metrics import ComponentResult
from .instance_metrics import InstanceResult
from .open_set_metrics import OpenSetMetrics
from .pixel_metrics import PixelMetrics
from .semantic_metrics import SemanticMetrics


@dataclass(frozen=True)
class WorstFrame:
    """A frame with one of the lowest per-frame APs: its id, its stored map and the AP."""

    frame_id: str
    map_path: str
    ap: float

    def to_dict(self) -> dict[str, Any]:
        return {"frame_id": self.frame_id, "map": self.map_path, "ap": self.ap}


@dataclass(frozen=True)
class AnomalyResult:
    """Anomaly metrics of one dataset: its frames (all, and those scored: the labelled ones;
    the others were predicted only), `pixel` per protocol (each with its curve), `components`
    (SMIYC sIoU / PPV / F1* for `track`; None when not computed), the worst frames, the pixels
    per frame that the label map did not cover (set to void), notes (skipped protocols), the
    score (when the evaluation computed several), its operating-point thresholds
    (`operating_points.py`) and its ISSU open-set metrics (datasets with semantic labels)."""

    dataset: str
    num_frames: int
    num_scored: int
    pixel: dict[str, PixelMetrics]
    subset: str | None = None
    components: ComponentResult | None = None
    track: TrackName | None = None
    worst_frames: tuple[WorstFrame, ...] = ()
    unmapped_pixels: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    score: str | None = None  # the anomaly score of the maps, when an evaluation names it
    operating_points: dict[str, float] = field(default_factory=dict)
    open_set: OpenSetMetrics | None = None
    instances: tuple[InstanceResult, ...] = ()  # instance AP / AP50 per method (issue 17)

    @property
    def summary(self) -> str:
        """One line: what was scored."""
        subset = f" ({self.subset})" if self.subset else ""
        unlabelled = self.num_frames - self.num_scored
        line = f"{self.dataset}{subset}: {self.num_scored} frames scored"
        if unlabelled:
            line += f", {unlabelled} without labels (predicted only)"
        return line + "".join(f"; {note}" for note in self.notes)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"score": self.score} if self.score is not None else {}
        result |= {
            "dataset": self.dataset,
            "subset": self.subset,
            "num_frames": self.num_frames,
            "num_scored": self.num_scored,
            "pixel": {p: m.to_dict() for p, m in self.pixel.items()},
        }
        if self.components is not None:
            result["components"] = {"track": self.track, **self.components.to_dict()}
        result["worst_frames"] = [w.to_dict() for w in self.worst_frames]
        result["unmapped_pixels"] = dict(self.unmapped_pixels)
        result["notes"] = list(self.notes)
        if self.operating_points:
            result["operating_points"] = dict(self.operating_points)
        if self.open_set is not None:
            result["open_set"] = self.open_set.to_dict()
        if self.instances:
            result["instances"] = [r.to_dict() for r in self.instances]
        return result


@dataclass(frozen=True)
class SemanticResult:
    """Inlier segmentation of one dataset (Cityscapes val): mIoU and IoU per class."""

    dataset: str
    num_frames: int
    semantic: SemanticMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "num_frames": self.num_frames,
            "semantic": self.semantic.to_dict(),
        }


DatasetResult = AnomalyResult | SemanticResult
