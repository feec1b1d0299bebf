"""Cityscapes semantic segmentation as inlier training data (spec benchmarks.md E.1, §5.1).

Reads `leftImg8bit/<split>/<city>/*_leftImg8bit.png` with the matching
`gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`, or converts `*_gtFine_labelIds.png` on the
fly when the trainIds file is absent. Each sample is one binary mask per class present (the
official semantic "instances"); void (255) is dropped, and the outlier label 254 written by
AnomalyMix becomes the outlier mask instead of a class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import IGNORE_INDEX
from ..errors import UserError
from .io import read_label_map, read_rgb
from .labels import train_id_table
from .transforms import LabeledImage, Transform
from .types import Target

NUM_CLASSES = 19
OUTLIER_LABEL = 254  # pasted outlier pixels (official AnomalyMix / Meta-OOD COCO masks)
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
MAX_LABEL_ID = 33  # labelIds 0..33 in gtFine PNGs (cityscapesScripts labels.py); 255 read as void


def _label_id_table() -> np.ndarray:
    """[256] lookup labelId -> trainId (void for unlisted ids; 254 outliers kept)."""
    table = train_id_table().astype(np.int64)
    table[OUTLIER_LABEL] = OUTLIER_LABEL
    return table


def target_from_label(label: np.ndarray, *, outliers: bool) -> Target:
    """Per-class binary masks of a train-id map.

    Args:
        label: [H, W] train ids (0..K-1, 255 void, 254 outlier).
        outliers: produce `outlier_mask` (all False when no outlier pixel).

    Returns:
        Target with labels [N] sorted, masks [N, H, W] bool, void_mask, outlier_mask or None.
    """
    label_t = torch.from_numpy(np.ascontiguousarray(label, dtype=np.uint8))
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))  # O(pixels), sorted
    classes = torch.from_numpy(present[(present != IGNORE_INDEX) & (present != OUTLIER_LABEL)])
    masks = label_t[None] == classes.to(torch.uint8)[:, None, None]
    outlier_mask = label_t == OUTLIER_LABEL if outliers else None
    return Target(classes, masks, outlier_mask, label_t == IGNORE_INDEX)


class CityscapesSemantic(Dataset):
    """One split of a Cityscapes-format folder.

    Args:
        root: folder holding `leftImg8bit/` and `gtFine/`.
        split: e.g. "train" or "val".
        transforms: `(LabeledImage, numpy Generator) -> LabeledImage` applied to the uint8 image
            and train-id label (e.g. `TrainTransform`, possibly preceded by AnomalyMix), or None.
        outliers: allow label 254 and return an outlier mask (stage-2 fine-tuning).

    Items are `(image [3, H, W] float32 RGB 0..255, Target)`. An item key is either an index
    (augmentation drawn from fresh OS entropy) or `(index, seed)` for reproducible augmentation.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Transform | None = None,
        *,
        outliers: bool = False,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.outliers = outliers
        # decoded, validated items, kept per process (each loader worker fills its own)
        self._cache: dict[int, LabeledImage] | None = {} if cache else None
        self.image_paths = self._find_images()
        self.label_paths = [self._find_label(path) for path in self.image_paths]
        self._label_id_table = _label_id_table()

    def _find_images(self) -> list[Path]:
        if not self.root.is_dir():
            raise UserError(f"{self.root}: data root does not exist")
        folder = self.root / "leftImg8bit" / self.split
        if not folder.is_dir():
            raise UserError(f"{self.root}: not a Cityscapes folder (no leftImg8bit/{self.split})")
        paths = sorted(folder.glob(f"*/*{IMAGE_SUFFIX}"))
        if not paths:
            raise UserError(f"{folder}: no <city>/*{IMAGE_SUFFIX} images")
        return paths

    def _find_label(self, image_path: Path) -> Path:
        stem = image_path.name[: -len(IMAGE_SUFFIX)]
        folder = self.root / "gtFine" / self.split / image_path.parent.name
        for suffix in (TRAIN_ID_SUFFIX, LABEL_ID_SUFFIX):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        raise UserError(
            f"{folder / (stem + TRAIN_ID_SUFFIX)}: missing label file (and no *{LABEL_ID_SUFFIX})"
        )

    def __len__(self) -> int:
        return len(self.image_paths)

    def read_label(self, index: int) -> np.ndarray:
        """[H, W] uint8 train ids of item `index` (labelIds converted), validated."""
        path = self.label_paths[index]
        values = read_label_map(path)
        if values.dtype.kind not in "ui":
            raise UserError(f"{path}: label map of {values.dtype} values, expected integers")
        if values.dtype.kind == "i" and values.size and values.min() < 0:
            raise UserError(f"{path}: negative label values")
        is_label_ids = path.name.endswith(LABEL_ID_SUFFIX)
        valid = range(MAX_LABEL_ID + 1) if is_label_ids else range(NUM_CLASSES)
        allowed = {*valid, IGNORE_INDEX}
        if self.outliers:
            allowed.add(OUTLIER_LABEL)
        present = np.flatnonzero(np.bincount(values.ravel()))  # O(pixels), sorted
        bad = [int(v) for v in present if int(v) not in allowed]
        if bad:
            expected = f"0..{valid[-1]} and 255" + (" (labelIds)" if is_label_ids else "")
            extra = " (and 254 outliers)" if self.outliers else ""
            raise UserError(f"{path}: label values {bad[:5]} outside {expected}{extra}")
        if is_label_ids:
            values = self._label_id_table[values]
        return values.astype(np.uint8)

    def read(self, index: int) -> LabeledImage:
        """Image and train-id label of item `index` before augmentation, checked for size
        (from the in-memory cache when enabled: a copy, so augmentations may write to it)."""
        if self._cache is not None and index in self._cache:
            cached = self._cache[index]
            return LabeledImage(cached.image.copy(), cached.label.copy())
        image = read_rgb(self.image_paths[index])
        label = self.read_label(index)
        if image.shape[:2] != label.shape:
            raise UserError(
                f"{self.label_paths[index]}: label size {label.shape[1]}x{label.shape[0]} does not"
                f" match image size {image.shape[1]}x{image.shape[0]}"
            )
        if self._cache is not None:
            self._cache[index] = LabeledImage(image.copy(), label.copy())
        return LabeledImage(image, label)

    def load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, Target]:
        """Item `index` augmented with `rng`."""
        sample = self.read(index)
        if self.transforms is not None:
            sample = self.transforms(sample, rng)
        image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1)))
        return image.float(), target_from_label(sample.label, outliers=self.outliers)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target]:
        if isinstance(key, tuple):
            index, seed = key
            return self.load(index, np.random.default_rng(seed))
        return self.load(key, np.random.default_rng())
