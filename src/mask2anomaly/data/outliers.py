"""Outlier object sources for stage-2 fine-tuning (paper §3.3; spec §5.2, benchmarks.md E.2).

Two layouts give one `OutlierPool` of (image, outlier mask) pairs:

* a COCO folder, `annotations/instances_<split>.json` + `<split>/<file_name>`, filtered as
  Meta-OOD's preparation script that the official README points to: images without any person,
  bicycle, car, motorcycle, bus, truck, traffic light or stop sign annotation (crowd included),
  height and width >= 480; the mask is the union of all their annotations;
* the official pre-made layout, `ood_annotations/<stem>.png` (254 = outlier) with the image
  `images/<stem>.jpg` (other image suffixes are accepted too).

`prepare_outliers` writes the second from the first once.
"""

from __future__ import annotations

import difflib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import UserError
from ..fileio import write_atomic
from .cityscapes import OUTLIER_LABEL
from .coco import CocoImage, check_segmentations, read_coco_images, union_mask
from .io import read_label_map, read_rgb

logger = logging.getLogger(__name__)

# Meta-OOD `prepare_coco_segmentation.py`: COCO categories that overlap Cityscapes classes.
EXCLUDED_CATEGORIES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "truck",
    "traffic light",
    "stop sign",
)
# The 80 COCO instance categories (instances_*.json), to tell a misspelt --exclude name from a
# category this file happens not to have.
COCO_CATEGORY_NAMES = frozenset(
    name.replace("_", " ")
    for name in """person bicycle car motorcycle airplane bus train truck boat
traffic_light fire_hydrant stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear
zebra giraffe backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite
baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork knife
spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair couch
potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven
toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush""".split()
)
MIN_SIZE = 480  # Meta-OOD keeps images whose height and width are both >= 480
DEFAULT_SPLIT = "train2017"
MASK_FOLDER = "ood_annotations"
IMAGE_FOLDER = "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class OutlierEntry:
    """One outlier image: `image_path` and either a pre-made `mask_path` (value 254 = outlier)
    or the COCO `segmentations` (of an image of `height` x `width`) whose union is the mask."""

    image_path: Path
    mask_path: Path | None = None
    segmentations: tuple[Any, ...] = ()
    height: int = 0
    width: int = 0


class OutlierPool:
    """Outlier images with their masks, from either layout (see `open_outliers`).

    `load(i)` returns (image [H, W, 3] uint8 RGB, mask [H, W] bool). A pre-made mask without any
    254 pixel, or an image whose size differs from its mask, is a UserError naming the file; a
    COCO image whose annotations rasterise to no pixel gives an all-False mask.
    """

    def __init__(self, entries: Sequence[OutlierEntry], source: Path) -> None:
        self.entries = list(entries)
        self.source = source

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"OutlierPool({len(self)} images from {self.source})"

    @classmethod
    def from_coco(
        cls,
        root: str | Path,
        *,
        split: str = DEFAULT_SPLIT,
        excluded_categories: Sequence[str] = EXCLUDED_CATEGORIES,
        min_size: int = MIN_SIZE,
    ) -> OutlierPool:
        """The filtered images of `root/annotations/instances_<split>.json`.

        Args:
            root: COCO folder.
            split: annotation file and image folder name, e.g. "train2017".
            excluded_categories: category names whose images are dropped (each a category of
                the file or of COCO; names the file lacks have no images to drop).
            min_size: smallest height and width kept.
        """
        root = Path(root)
        json_path = root / "annotations" / f"instances_{split}.json"
        image_folder = root / split
        if not json_path.is_file():
            raise UserError(f"{json_path}: COCO annotation file not found")
        images, categories = read_coco_images(json_path)
        for name in excluded_categories:  # a misspelt name would silently keep its images
            if name not in categories and name not in COCO_CATEGORY_NAMES:
                known = [*categories, *COCO_CATEGORY_NAMES]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise UserError(f"{json_path}: no category named '{name}' to exclude{hint}")
        excluded = {categories[name] for name in excluded_categories if name in categories}
        kept = select_images(images, excluded, min_size)
        if not kept:
            raise UserError(
                f"{json_path}: no image left after the outlier filter ({len(images)} images; "
                f"kept: annotated, none of {len(excluded)} excluded categories, both sides "
                f">= {min_size})"
            )
        entries = []
        for image in kept:
            check_segmentations(json_path, image)
            image_path = image_folder / image.file_name
            if not image_path.is_file():
                raise UserError(
                    f"{json_path}: image {image.image_id} file {image_path} does not exist"
                )
            entries.append(
                OutlierEntry(
                    image_path,
                    segmentations=image.segmentations,
                    height=image.height,
                    width=image.width,
                )
            )
        return cls(entries, json_path)

    @classmethod
    def from_premade(cls, root: str | Path) -> OutlierPool:
        """`root/ood_annotations/*.png` with images `root/images/<stem>.jpg` (or .png, ...)."""
        mask_folder = Path(root) / MASK_FOLDER
        mask_paths = sorted(mask_folder.glob("*.png"))
        if not mask_paths:
            raise UserError(f"{mask_folder}: no outlier masks (*.png)")
        entries = []
        for mask_path in mask_paths:
            stem = Path(root) / IMAGE_FOLDER / mask_path.stem
            candidates = [stem.with_name(stem.name + suffix) for suffix in IMAGE_SUFFIXES]
            image_path = next((p for p in candidates if p.is_file()), None)
            if image_path is None:
                raise UserError(f"{mask_path}: no image {candidates[0]} (or .png/.webp)")
            entries.append(OutlierEntry(image_path, mask_path=mask_path))
        return cls(entries, mask_folder)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image [H, W, 3] uint8 RGB, outlier mask [H, W] bool) of entry `index`."""
        entry = self.entries[index]
        image = read_rgb(entry.image_path)
        if entry.mask_path is not None:
            mask = _read_premade_mask(entry.mask_path)
            expected, owner = mask.shape, entry.mask_path
        else:
            mask = union_mask(entry.segmentations, entry.height, entry.width)
            expected, owner = (entry.height, entry.width), self.source
        if image.shape[:2] != expected:
            raise UserError(
                f"{entry.image_path}: image is {image.shape[1]}x{image.shape[0]} but {owner} "
                f"gives {expected[1]}x{expected[0]}"
            )
        return image, mask


def select_images(images: list[CocoImage], excluded: set[int], min_size: int) -> list[CocoImage]:
    """The Meta-OOD selection: images with at least one annotation, none of an excluded category
    id (crowd annotations included), height and width >= min_size."""
    return [
        image
        for image in images
        if image.segmentations
        and not image.category_ids & excluded
        and min(image.height, image.width) >= min_size
    ]


def _read_premade_mask(path: Path) -> np.ndarray:
    """[H, W] bool: pixels of value 254 in a single-channel PNG."""
    mask = read_label_map(path, "outlier mask") == OUTLIER_LABEL
    if not mask.any():
        raise UserError(f"{path}: outlier mask has no pixel of value {OUTLIER_LABEL}")
    return mask


def find_coco_split(root: Path) -> str:
    """The split of the only `annotations/instances_*.json`, or train2017 among several."""
    names = sorted(p.name for p in (root / "annotations").glob("instances_*.json"))
    splits = [name[len("instances_") : -len(".json")] for name in names]
    if len(splits) == 1:
        return splits[0]
    if DEFAULT_SPLIT in splits:
        return DEFAULT_SPLIT
    if not splits:
        raise UserError(f"{root / 'annotations'}: no instances_*.json annotation file")
    raise UserError(f"{root / 'annotations'}: several splits {splits}; choose one")


def open_outliers(
    path: str | Path,
    *,
    split: str | None = None,
    excluded_categories: Sequence[str] = EXCLUDED_CATEGORIES,
    min_size: int = MIN_SIZE,
) -> OutlierPool:
    """Open a pre-made folder (it has `ood_annotations/`) or a COCO folder (`annotations/`).

    Args:
        path: the folder.
        split: COCO split; default: the only instances_*.json, else train2017.
        excluded_categories, min_size: the COCO selection filter (ignored for pre-made folders,
            which are already filtered).
    """
    root = Path(path)
    if (root / MASK_FOLDER).is_dir():
        return OutlierPool.from_premade(root)
    if (root / "annotations").is_dir():
        return OutlierPool.from_coco(
            root,
            split=split or find_coco_split(root),
            excluded_categories=excluded_categories,
            min_size=min_size,
        )
    if not root.is_dir():
        raise UserError(f"{root}: outlier folder does not exist")
    raise UserError(
        f"{root}: not an outlier folder (expected {MASK_FOLDER}/ + {IMAGE_FOLDER}/, or a COCO "
        "folder with annotations/instances_*.json)"
    )


@dataclass(frozen=True)
class PrepareSummary:
    """Counts of a `prepare_outliers` run: written now, already there, skipped (empty mask), and
    the images left out because they cannot be decoded (with the reason)."""

    written: int
    existing: int
    empty: int
    unreadable: tuple[str, ...] = ()


def prepare_outliers(
    coco_root: str | Path,
    out_dir: str | Path,
    *,
    split: str = DEFAULT_SPLIT,
    excluded_categories: Sequence[str] = EXCLUDED_CATEGORIES,
    min_size: int = MIN_SIZE,
    progress: bool = True,
) -> PrepareSummary:
    """Write the filtered COCO images in the pre-made layout, once.

    For each kept image: `out_dir/images/<stem><suffix>` (a byte copy of the COCO file) and
    `out_dir/ood_annotations/<stem>.png` (uint8, 254 on the union of its annotations, 0 else),
    each written atomically, the mask last; images whose mask already exists are skipped, so an
    interrupted run continues. Images whose annotations rasterise to no pixel, or whose file
    does not decode, are left out (the latter listed in the summary).
    """
    pool = OutlierPool.from_coco(
        coco_root, split=split, excluded_categories=excluded_categories, min_size=min_size
    )
    out = Path(out_dir)
    (out / MASK_FOLDER).mkdir(parents=True, exist_ok=True)
    (out / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    written = existing = empty = 0
    unreadable = []
    for entry in tqdm(pool.entries, desc="prepare-outliers", unit="img", disable=not progress):
        mask_path = out / MASK_FOLDER / f"{entry.image_path.stem}.png"
        if mask_path.exists():
            existing += 1
            continue
        mask = union_mask(entry.segmentations, entry.height, entry.width)
        if not mask.any():
            empty += 1
            continue
        try:
            _check_image(entry, pool.source)
        except UserError as error:
            unreadable.append(str(error))
            continue
        image_path = out / IMAGE_FOLDER / entry.image_path.name
        write_atomic(image_path, partial(_copy, entry.image_path))
        label = Image.fromarray(mask.astype(np.uint8) * OUTLIER_LABEL)
        write_atomic(mask_path, partial(_save_png, label))
        written += 1
    return PrepareSummary(written, existing, empty, tuple(unreadable))


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def _save_png(image: Image.Image, target: Path) -> None:
    image.save(target, format="PNG")


def _check_image(entry: OutlierEntry, source: Path) -> None:
    """UserError unless the image file decodes whole and has the size the JSON gives."""
    try:
        with Image.open(entry.image_path) as image:
            width, height = image.size
            image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise UserError(f"{entry.image_path}: cannot read image ({error})") from None
    if (height, width) != (entry.height, entry.width):
        raise UserError(
            f"{entry.image_path}: image is {width}x{height} but {source} gives "
            f"{entry.width}x{entry.height}"
        )
