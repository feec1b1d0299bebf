"""A tiny Cityscapes-format folder for trainer tests: simple, learnable scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# train IDs: 0 road, 2 building, 8 vegetation, 10 sky, 13 car
COLOURS = {
    0: (90, 90, 90),
    2: (150, 80, 60),
    8: (40, 140, 40),
    10: (110, 160, 230),
    13: (200, 30, 30),
}


def scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.full((height, width), 10, np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    label[horizon:] = 0
    split = int(width * rng.uniform(0.3, 0.7))
    label[horizon // 2 : horizon, :split] = 2
    label[horizon // 2 : horizon, split:] = 8
    top, left = int(height * rng.uniform(0.55, 0.7)), int(width * rng.uniform(0.1, 0.6))
    label[top : top + height // 5, left : left + width // 5] = 13
    image = np.zeros((height, width, 3), np.float64)
    for train_id, colour in COLOURS.items():
        image[label == train_id] = colour
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_cityscapes(root: Path, *, num_train: int = 4, num_val: int = 2, size=(64, 128),
                     seed: int = 0) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        for i in range(count):
            image, label = scene(rng, *size)
            stem = f"town_{i:06d}_000019"
            img_dir = root / "leftImg8bit" / split / "town"
            gt_dir = root / "gtFine" / split / "town"
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    return root
