"""mask2anomaly.evaluation."""
