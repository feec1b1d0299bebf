"""mask2anomaly: Mask2Anomaly (Rai et al., ICCV 2023) road-scene anomaly segmentation in PyTorch.

The front door: everything a user needs is importable from here (`import mask2anomaly as m2a`).
Names load on first use, so `import mask2anomaly` stays cheap (the synthetic world's render
processes import the package without torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # configuration
    "Config": "mask2anomaly.config",
    "load_config": "mask2anomaly.config",
    # the network and its weights
    "Mask2Anomaly": "mask2anomaly.model",
    "build_model": "mask2anomaly.model",
    "load_model": "mask2anomaly.checkpoint",
    "import_official": "mask2anomaly.checkpoint",
    "save_checkpoint": "mask2anomaly.checkpoint",
    "load_checkpoint_config": "mask2anomaly.checkpoint",
    # prediction
    "Predictor": "mask2anomaly.inference.predictor",
    "Prediction": "mask2anomaly.inference.predictor",
    "OnnxNetwork": "mask2anomaly.inference.export",
    "anomaly_score": "mask2anomaly.scoring",
    # the browser app's cached analysis (the page itself: `mask2anomaly app`, the `app` extra)
    "Analyser": "mask2anomaly.app.analysis",
    "AppSettings": "mask2anomaly.app.analysis",
    "compute_scores": "mask2anomaly.scoring.scores",
    "read_threshold": "mask2anomaly.evaluation.operating_points",
    # benchmarks and evaluation
    "load_benchmark": "mask2anomaly.data.benchmarks",
    "score_dataset": "mask2anomaly.evaluation.driver",
    "score_maps": "mask2anomaly.evaluation.driver",
    "evaluate_semantic": "mask2anomaly.evaluation.driver",
    "AnomalyResult": "mask2anomaly.evaluation.results",
    "SemanticResult": "mask2anomaly.evaluation.results",
    # metric functions (arrays in, numbers out)
    "pixel_metrics": "mask2anomaly.evaluation.pixel_metrics",
    "PixelMetrics": "mask2anomaly.evaluation.pixel_metrics",
    "ConfusionMatrix": "mask2anomaly.evaluation.semantic_metrics",
    "component_metrics": "mask2anomaly.evaluation.component_metrics",
    "ComponentResult": "mask2anomaly.evaluation.component_metrics",
    "OpenSetIoU": "mask2anomaly.evaluation.open_set_metrics",
    # anomaly instances (issue 17)
    "Instance": "mask2anomaly.evaluation.instances",
    "extract_instances": "mask2anomaly.evaluation.instances",
    "InstanceAP": "mask2anomaly.evaluation.instance_metrics",
    "InstanceTruth": "mask2anomaly.evaluation.instance_metrics",
    "InstanceResult": "mask2anomaly.evaluation.instance_metrics",
    # errors
    "UserError": "mask2anomaly.errors",
}

__all__ = [
    "__version__",
    "Config",
    "load_config",
    "Mask2Anomaly",
    "build_model",
    "load_model",
    "import_official",
    "save_checkpoint",
    "load_checkpoint_config",
    "Predictor",
    "Prediction",
    "OnnxNetwork",
    "anomaly_score",
    "Analyser",
    "AppSettings",
    "compute_scores",
    "read_threshold",
    "load_benchmark",
    "score_dataset",
    "score_maps",
    "evaluate_semantic",
    "AnomalyResult",
    "SemanticResult",
    "pixel_metrics",
    "PixelMetrics",
    "ConfusionMatrix",
    "component_metrics",
    "ComponentResult",
    "OpenSetIoU",
    "Instance",
    "extract_instances",
    "InstanceAP",
    "InstanceTruth",
    "InstanceResult",
    "UserError",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mask2anomaly' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .app.analysis import Analyser, AppSettings
    from .checkpoint import import_official, load_checkpoint_config, load_model, save_checkpoint
    from .config import Config, load_config
    from .data.benchmarks import load_benchmark
    from .errors import UserError
    from .evaluation.component_metrics import ComponentResult, component_metrics
    from .evaluation.driver import evaluate_semantic, score_dataset, score_maps
    from .evaluation.instance_metrics import InstanceAP, InstanceResult, InstanceTruth
    from .evaluation.instances import Instance, extract_instances
    from .evaluation.open_set_metrics import OpenSetIoU
    from .evaluation.operating_points import read_threshold
    from .evaluation.pixel_metrics import PixelMetrics, pixel_metrics
    from .evaluation.results import AnomalyResult, SemanticResult
    from .evaluation.semantic_metrics import ConfusionMatrix
    from .inference.predictor import Prediction, Predictor
    from .model import Mask2Anomaly, build_model
    from .scoring import anomaly_score
    from .scoring.scores import compute_scores
