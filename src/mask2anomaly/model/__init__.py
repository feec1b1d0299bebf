"""The Mask2Anomaly network and its parts."""

from .mask2anomaly import Mask2Anomaly, ModelOutput, build_model

__all__ = ["Mask2Anomaly", "ModelOutput", "build_model"]
