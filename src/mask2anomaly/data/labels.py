"""Cityscapes label ids (no torch import: the synthetic world's render processes use it)."""

from __future__ import annotations

# labelId -> trainId of the 19 training classes; every other labelId is void.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
