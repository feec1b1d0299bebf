"""Cityscapes label ids (no torch import: the synthetic world's render processes use it)."""

from __future__ import annotations

import numpy as np

VOID = 255  # the same value as config.IGNORE_INDEX, without importing the config here

# labelId -> trainId of the 19 training classes; every other labelId is void (spec E.1).
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def train_id_table() -> np.ndarray:
    """[256] uint8 lookup Cityscapes labelId -> trainId (255 for every other id)."""
    table = np.full(256, VOID, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table
