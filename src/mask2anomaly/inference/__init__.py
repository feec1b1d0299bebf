"""mask2anomaly.inference."""
