"""Evaluation datasets: one small adapter per benchmark layout, labels mapped to {0, 1, 255}.

Spec ../shared/spec/benchmarks.md A.4 (SMIYC RoadAnomaly21 / RoadObstacle21 / LostAndFound), B
(Fishyscapes Lost & Found and Static), C (Road Anomaly), D (Mask2Anomaly re-packaged folders),
E.1 (Cityscapes val, train IDs). Each adapter declares its file layout and a label map (source
value -> 0 inlier, 1 anomaly; every other value becomes void 255 and is counted). `BENCHMARKS` maps
a command-line name to its class; nothing is inferred from path substrings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..config import IGNORE_INDEX
from ..errors import UserError
from .io import read_label_map, read_rgb
from .labels import LABEL_ID_TO_TRAIN_ID

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LAF_OBSTACLE_IDS = range(2, 201)  # LostAndFound labelIds 2..200 are obstacles (A.4)


@dataclass(frozen=True)
class Frame:
    """One evaluation frame: its id and files (overlay: Fishyscapes Static `_rgb.npz`)."""

    frame_id: str
    image_path: Path
    label_path: Path
    overlay_path: Path | None = None


def parse_label_map(text: str) -> dict[int, int]:
    """ "0:0,1:1,2-200:1" -> {0: 0, 1: 1, 2: 1, ..., 200: 1}; unlisted values become void."""
    mapping: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            source, target = item.split(":")
            first, _, last = source.partition("-")
            values = range(int(first), int(last or first) + 1)
            mapping.update(dict.fromkeys(values, int(target)))
        except ValueError:
            raise UserError(
                f"label map item {item!r}: expected SOURCE:TARGET or A-B:TARGET"
            ) from None
    if not set(mapping.values()) <= {0, 1, IGNORE_INDEX}:
        raise UserError(f"label map {text!r}: targets must be 0, 1 or {IGNORE_INDEX}")
    return mapping


def _find_image(stem_path: Path) -> Path | None:
    """`stem_path` + the first existing image suffix."""
    for suffix in IMAGE_SUFFIXES:
        if (path := stem_path.with_name(stem_path.name + suffix)).is_file():
            return path
    return None


class Benchmark:
    """Frames of a benchmark; `dataset[i]` -> (image uint8 [H, W, 3] RGB, label uint8 [H, W]).

    Subclasses set `name`, `track` (component size limits, None for inlier segmentation),
    `label_map` and implement `find_frames()`.

    Args:
        root: dataset folder.
        image_root: where Fishyscapes takes its base images (LostAndFound or Cityscapes root).
        split: sub-folder of split-based layouts (LostAndFound, Cityscapes).
        label_map: replaces the class's label map (the `folder` adapter needs one).
    """

    name: ClassVar[str]
    track: ClassVar[str | None] = "anomaly"
    label_map: ClassVar[dict[int, int]] = {0: 0, 1: 1}
    default_split: ClassVar[str] = ""
    report_unmapped: ClassVar[bool] = True  # count label values outside the map (and not 255)

    def __init__(
        self,
        root: str | Path,
        *,
        image_root: str | Path | None = None,
        split: str | None = None,
        label_map: dict[int, int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_root = Path(image_root) if image_root else None
        self.split = split or self.default_split
        if label_map is not None:
            self.label_map = label_map
        if not self.root.is_dir():
            raise UserError(f"{self.name}: dataset root {self.root} is not a folder")
        table = np.full(256, IGNORE_INDEX, np.uint8)
        for source, target in self.label_map.items():
            table[source] = target
        self._table = table  # raw value -> 0, 1 or 255
        self._mapped = np.isin(np.arange(256), [*self.label_map, IGNORE_INDEX])
        self.frames = sorted(self.find_frames(), key=lambda f: f.frame_id)
        if not self.frames:
            raise UserError(f"{self.name}: no frames found under {self.root} ({self.layout()})")
        self.unmapped_pixels: dict[str, int] = {}  # frame id -> pixels voided as unmapped

    def find_frames(self) -> list[Frame]:
        raise NotImplementedError

    def layout(self) -> str:
        """The expected layout, for error messages."""
        return "images/<id>.png + labels_masks/<id>.png"

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.load_image(index), self.load_label(index)
        if image.shape[:2] != label.shape:
            raise UserError(
                f"{self.frames[index].label_path}: label size {label.shape} differs "
                f"from image size {image.shape[:2]}"
            )
        return image, label

    def load_image(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB."""
        return read_rgb(self.frames[index].image_path)

    def load_label(self, index: int) -> np.ndarray:
        """uint8 [H, W]: 0 inlier, 1 anomaly, 255 void (unmapped source values counted)."""
        frame = self.frames[index]
        raw = read_label_map(frame.label_path)
        if raw.ndim != 2:
            raise UserError(f"{frame.label_path}: label must have one channel, got {raw.shape}")
        if raw.dtype == np.uint8:
            label, mapped = self._table[raw], self._mapped[raw]
        else:  # 16-bit PNG: values above 255 are void
            small = (raw >= 0) & (raw < 256)
            label = np.where(small, self._table[np.where(small, raw, 0)], IGNORE_INDEX)
            mapped = small & self._mapped[np.where(small, raw, 0)]
        unmapped = int(np.count_nonzero(~mapped)) if self.report_unmapped else 0
        if unmapped:
            self.unmapped_pixels[frame.frame_id] = unmapped
            log.warning(
                "%s: %d pixels with values outside the label map set to void",
                frame.label_path,
                unmapped,
            )
        return label.astype(np.uint8)


def _paired(
    name: str, images: list[Path], label_for: Callable[[Path], tuple[str, Path]]
) -> list[Frame]:
    """Frames of image files whose label file must exist (one-line error naming the image)."""
    frames = []
    for image in images:
        frame_id, label = label_for(image)
        if not label.is_file():
            raise UserError(f"{name}: no label for image {image} (expected {label})")
        frames.append(Frame(frame_id, image, label))
    return frames


def _images_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


class RoadAnomaly21(Benchmark):
    """SMIYC anomaly track: images/<id>.<ext>, labels_masks/<id>_labels_semantic.png (0/1/255)."""

    name = "road-anomaly-21"

    def layout(self) -> str:
        return "images/<id>.jpg + labels_masks/<id>_labels_semantic.png"

    def find_frames(self) -> list[Frame]:
        labels = self.root / "labels_masks"
        return _paired(
            self.name,
            _images_in(self.root / "images"),
            lambda p: (p.stem, labels / f"{p.stem}_labels_semantic.png"),
        )


class RoadObstacle21(RoadAnomaly21):
    """SMIYC obstacle track: the same layout (images are .webp), obstacle size limits."""

    name = "road-obstacle-21"
    track = "obstacle"


class LostAndFound(Benchmark):
    """LostAndFound raw labelIds (A.4): 1 free road -> 0, 2..200 obstacle -> 1, rest void."""

    name = "lost-and-found"
    track = "obstacle"
    label_map = {1: 0, **dict.fromkeys(LAF_OBSTACLE_IDS, 1)}
    default_split = "test"

    def layout(self) -> str:
        return (
            f"leftImg8bit/{self.split}/<scene>/<id>_leftImg8bit.png + "
            f"gtCoarse/{self.split}/<scene>/<id>_gtCoarse_labelIds.png"
        )

    def find_frames(self) -> list[Frame]:
        images = [
            p
            for p in sorted((self.root / "leftImg8bit" / self.split).glob("*/*_leftImg8bit.*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]

        def label_for(image: Path) -> tuple[str, Path]:
            frame_id = image.stem.removesuffix("_leftImg8bit")
            folder = self.root / "gtCoarse" / self.split / image.parent.name
            return frame_id, folder / f"{frame_id}_gtCoarse_labelIds.png"

        return _paired(self.name, images, label_for)


class FishyscapesLostAndFound(Benchmark):
    """Fishyscapes L&F: <NNNN>_<LAF id>_labels.png (0/1/255); the image is the LostAndFound left
    image <LAF id>_leftImg8bit.png, next to the labels or under `image_root` (LAF root)."""

    name = "fs-lost-and-found"

    def layout(self) -> str:
        return "<NNNN>_<LAF id>_labels.png (+ --image-root: LostAndFound root)"

    def find_frames(self) -> list[Frame]:
        frames = []
        for label in sorted(self.root.glob("*_labels.png")):
            frame_id = label.name.removesuffix("_labels.png")
            base_id = frame_id.split("_", 1)[1] if "_" in frame_id else frame_id
            image = self._base_image(base_id)
            if image is None:
                raise UserError(
                    f"{self.name}: no image {base_id}_leftImg8bit.png for {label} "
                    f"(next to it or under --image-root)"
                )
            frames.append(Frame(frame_id, image, label))
        return frames

    def _base_image(self, base_id: str) -> Path | None:
        candidates = [self.root / f"{base_id}_leftImg8bit"]
        if self.image_root is not None:
            scene = base_id.rsplit("_", 2)[0]  # <NN>_<scene>_<seq>_<frame> -> <NN>_<scene>
            candidates += [
                self.image_root / "leftImg8bit" / split / scene / f"{base_id}_leftImg8bit"
                for split in ("test", "train")
            ]
        return next(filter(None, map(_find_image, candidates)), None)


class FishyscapesStatic(FishyscapesLostAndFound):
    """Fishyscapes Static: <NNNN>_<cityscapes id>_labels.png + ..._rgb.npz overlay added to the
    Cityscapes val image (under `image_root`, or next to the labels) and clipped to 0..255."""

    name = "fs-static"

    def layout(self) -> str:
        return "<NNNN>_<id>_labels.png + <NNNN>_<id>_rgb.npz (+ --image-root: Cityscapes root)"

    def find_frames(self) -> list[Frame]:
        frames = []
        for label in sorted(self.root.glob("*_labels.png")):
            frame_id = label.name.removesuffix("_labels.png")
            overlay = self.root / f"{frame_id}_rgb.npz"
            base_id = frame_id.split("_", 1)[1] if "_" in frame_id else frame_id
            candidates = [self.root / f"{base_id}_leftImg8bit"]
            if self.image_root is not None:
                city = base_id.split("_", 1)[0]
                candidates.append(
                    self.image_root / "leftImg8bit" / "val" / city / f"{base_id}_leftImg8bit"
                )
            image = next(filter(None, map(_find_image, candidates)), None)
            if image is None or not overlay.is_file():
                missing = overlay if image is not None else f"{base_id}_leftImg8bit.png"
                raise UserError(f"{self.name}: {missing} not found for {label}")
            frames.append(Frame(frame_id, image, label, overlay))
        return frames

    def load_image(self, index: int) -> np.ndarray:
        frame = self.frames[index]
        base = read_rgb(frame.image_path).astype(np.int64)
        try:
            overlay = np.load(frame.overlay_path)["rgb"].astype(np.int64)
        except (OSError, KeyError, ValueError) as error:
            raise UserError(
                f"{frame.overlay_path}: cannot read the 'rgb' overlay ({error})"
            ) from None
        if overlay.shape != base.shape:
            raise UserError(f"{frame.overlay_path}: overlay {overlay.shape} != image {base.shape}")
        return np.clip(base + overlay, 0, 255).astype(np.uint8)


class RoadAnomaly(Benchmark):
    """Road Anomaly (Lis et al. 2019, C): frames/<name>.webp|jpg and
    frames/<name>.labels/labels_semantic.png with 0 background, 2 anomaly."""

    name = "road-anomaly"
    label_map = {0: 0, 2: 1}

    def layout(self) -> str:
        return "frames/<name>.jpg + frames/<name>.labels/labels_semantic.png"

    def find_frames(self) -> list[Frame]:
        frames_dir, listing = self.root / "frames", self.root / "frame_list.json"
        if listing.is_file():
            images = [frames_dir / name for name in json.loads(listing.read_text())]
        else:
            images = _images_in(frames_dir)
        return _paired(
            self.name,
            images,
            lambda p: (p.stem, frames_dir / f"{p.stem}.labels" / "labels_semantic.png"),
        )


class Mask2AnomalyFolder(Benchmark):
    """The official Mask2Anomaly re-packaged sets (D): images/<stem>.*, labels_masks/<stem>.png;
    RoadAnomaly21, RoadObsticle21, FS_LostFound_full and fs_static use 0/1/255 as is."""

    name = "m2a"

    def find_frames(self) -> list[Frame]:
        labels = self.root / "labels_masks"
        return _paired(
            self.name,
            _images_in(self.root / "images"),
            lambda p: (p.stem, labels / f"{p.stem}.png"),
        )


class Mask2AnomalyRoadAnomaly(Mask2AnomalyFolder):
    """The re-packaged Road Anomaly (D): the script turns value 2 into 1 (1 stays anomaly)."""

    name = "m2a-road-anomaly"
    label_map = {0: 0, 1: 1, 2: 1}


class Folder(Mask2AnomalyFolder):
    """Any folder: images/<stem>.*, labels/<stem>.png; label map given by the user."""

    name = "folder"

    def layout(self) -> str:
        return "images/<stem>.png + labels/<stem>.png"

    def find_frames(self) -> list[Frame]:
        labels = self.root / "labels"
        return _paired(
            self.name,
            _images_in(self.root / "images"),
            lambda p: (p.stem, labels / f"{p.stem}.png"),
        )


class CityscapesVal(Benchmark):
    """Cityscapes (E.1) for inlier mIoU: leftImg8bit/val/<city>/<id>_leftImg8bit.png with
    gtFine/val/<city>/<id>_gtFine_labelTrainIds.png, or else _labelIds.png mapped to train IDs
    (others 255)."""

    name = "cityscapes"
    track = None
    label_map = LABEL_ID_TO_TRAIN_ID
    default_split = "val"
    report_unmapped = False
    TRAIN_ID_TABLE = np.where(np.arange(256) < 19, np.arange(256), IGNORE_INDEX).astype(np.uint8)

    def layout(self) -> str:
        return (
            f"leftImg8bit/{self.split}/<city>/<id>_leftImg8bit.png + gtFine/... "
            "_labelTrainIds.png or _labelIds.png"
        )

    def find_frames(self) -> list[Frame]:
        images = sorted((self.root / "leftImg8bit" / self.split).glob("*/*_leftImg8bit.png"))

        def label_for(image: Path) -> tuple[str, Path]:
            frame_id = image.stem.removesuffix("_leftImg8bit")
            folder = self.root / "gtFine" / self.split / image.parent.name
            train_ids = folder / f"{frame_id}_gtFine_labelTrainIds.png"
            return frame_id, train_ids if train_ids.is_file() else folder / (
                f"{frame_id}_gtFine_labelIds.png"
            )

        return _paired(self.name, images, label_for)

    def load_label(self, index: int) -> np.ndarray:
        """uint8 [H, W] train IDs (0..18, 255 void)."""
        path = self.frames[index].label_path
        if not path.name.endswith("_labelTrainIds.png"):
            return super().load_label(index)
        raw = read_label_map(path)
        if raw.ndim != 2 or raw.dtype != np.uint8:
            raise UserError(f"{path}: trainIds label must be one 8-bit channel, got {raw.shape}")
        return self.TRAIN_ID_TABLE[raw]


BENCHMARKS: dict[str, type[Benchmark]] = {
    "road-anomaly-21": RoadAnomaly21,
    "road-obstacle-21": RoadObstacle21,
    "lost-and-found": LostAndFound,
    "fs-lost-and-found": FishyscapesLostAndFound,
    "fs-static": FishyscapesStatic,
    "road-anomaly": RoadAnomaly,
    "m2a": Mask2AnomalyFolder,
    "m2a-road-anomaly": Mask2AnomalyRoadAnomaly,
    "cityscapes": CityscapesVal,
    "folder": Folder,
}


def load_benchmark(name: str, root: str | Path, **options) -> Benchmark:
    """The adapter registered under `name` (a key of BENCHMARKS) for the folder `root`."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](root, **options)
