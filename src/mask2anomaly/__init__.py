"""mask2anomaly: Mask2Anomaly (Rai et al., ICCV 2023) road-scene anomaly segmentation in PyTorch."""

__version__ = "0.1.0"
