"""Evaluation: pixel, component and mIoU metrics (arrays in, numbers out), stored maps, the
driver that scores a benchmark, typed results, reports and SMIYC submissions."""
