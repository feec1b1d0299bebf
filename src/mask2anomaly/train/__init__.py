"""mask2anomaly.train."""
