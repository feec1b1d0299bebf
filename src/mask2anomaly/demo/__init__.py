"""mask2anomaly.demo."""
