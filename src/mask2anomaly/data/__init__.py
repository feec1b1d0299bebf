"""Datasets, transforms and the typed samples that cross module boundaries."""
