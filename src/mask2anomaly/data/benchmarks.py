"""Evaluation datasets: one table entry per benchmark, labels mapped to {0, 1, 255}.

Spec ../shared/spec/benchmarks.md A.4 (SMIYC RoadAnomaly21 / RoadObstacle21 / LostAndFound), B
(Fishyscapes Lost & Found and Static), C (Road Anomaly), D (Mask2Anomaly re-packaged folders),
E.1 (Cityscapes val, train IDs). Each entry of `BENCHMARKS` declares its layout (a frame finder
in `layouts.py`), its subsets and its label map (source value -> 0 inlier, 1 anomaly, 255 void;
every other value becomes void and is counted as unmapped). One class, `Benchmark`, serves them
all; nothing is inferred from path substrings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..config import IGNORE_INDEX, TrackName
from ..errors import UserError
from . import layouts
from .io import read_label_map, read_rgb
from .labels import LABEL_ID_TO_TRAIN_ID
from .layouts import Frame, Source

log = logging.getLogger(__name__)

BINARY = {0: 0, 1: 1}  # the 0 / 1 / 255 encoding of SMIYC, Fishyscapes and Mask2Anomaly's sets


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: CLI name, SMIYC track (component size limits; None: inlier mIoU), how its
    frames are found, its subsets (the first is the default), its label map, and the layout in
    words for error messages."""

    name: str
    track: TrackName | None
    find_frames: Callable[[Source], list[Frame]]
    layout: str
    label_map: Mapping[int, int] = field(default_factory=lambda: dict(BINARY))
    subsets: tuple[str, ...] = ()
    train_ids: bool = False  # labels are Cityscapes train IDs (mIoU), not anomaly labels


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "road-anomaly-21", "anomaly", layouts.road_anomaly_21_frames,
            "images/<id>.jpg + labels_masks/<id>_labels_semantic.png (labels optional)",
            subsets=("all", "validation", "test"),
        ),
        BenchmarkSpec(
            "road-obstacle-21", "obstacle", layouts.road_obstacle_21_frames,
            "images/<id>.webp + labels_masks/<id>_labels_semantic.png (labels optional)",
            subsets=("all", *layouts.RO21_SUBSETS),
        ),
        BenchmarkSpec(
            "lost-and-found", "obstacle", layouts.lost_and_found_frames,
            "leftImg8bit/<split>/<scene>/<id>_leftImg8bit.png + "
            "gtCoarse/<split>/<scene>/<id>_gtCoarse_labelIds.png",
            # labelIds (A.4): 0 void, 1 free road, 2..200 obstacles
            label_map={0: IGNORE_INDEX, 1: 0, **dict.fromkeys(range(2, 201), 1)},
            subsets=("testNoKnown", "test", "testValid", "train", "trainValid"),  # SMIYC's first
        ),
        BenchmarkSpec(
            "fs-lost-and-found", "anomaly", layouts.fishyscapes_laf_frames,
            "<NNNN>_<LAF id>_labels.png or labels/val/<LAF id>_fishy-labels.png "
            "(+ --image-root: LostAndFound folder or a flat folder of its images)",
        ),
        BenchmarkSpec(
            "fs-static", "anomaly", layouts.fishyscapes_static_frames,
            "<NNNN>_<id>_labels.png + <NNNN>_*rgb.npz (+ --image-root: Cityscapes folder)",
        ),
        BenchmarkSpec(
            "road-anomaly", "anomaly", layouts.road_anomaly_frames,
            "frames/<name>.jpg + frames/<name>.labels/labels_semantic.png",
            label_map={0: 0, 2: 1},  # background 0, anomaly 2 (C)
        ),
        BenchmarkSpec(
            "m2a", "anomaly",
            partial(layouts.images_and_masks_frames, name="m2a", labels="labels_masks"),
            "images/<id>.png + labels_masks/<id>.png",
        ),
        BenchmarkSpec(
            "m2a-road-anomaly", "anomaly",
            partial(layouts.images_and_masks_frames, name="m2a-road-anomaly",
                    labels="labels_masks"),
            "images/<id>.jpg + labels_masks/<id>.png",
            label_map={0: 0, 1: 1, 2: 1},  # the official script turns 2 into 1 (D)
        ),
        BenchmarkSpec(
            "folder", "anomaly",
            partial(layouts.images_and_masks_frames, name="folder", labels="labels"),
            "images/<stem>.png + labels/<stem>.png (--label-map) [+ semantic/<stem>.png: "
            "train IDs, 255 void, for open-set metrics]",
        ),
        BenchmarkSpec(
            "cityscapes", None, layouts.cityscapes_frames,
            "leftImg8bit/<split>/<city>/<id>_leftImg8bit.png + gtFine/... "
            "_labelTrainIds.png or _labelIds.png",
            label_map=LABEL_ID_TO_TRAIN_ID, train_ids=True,
        ),
    )
}  # fmt: skip


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
        if values and (values[0] < 0 or values[-1] > 65535):
            raise UserError(f"label map item {item!r}: label values are 0..65535")
    if not set(mapping.values()) <= {0, 1, IGNORE_INDEX}:
        raise UserError(f"label map {text!r}: targets must be 0, 1 or {IGNORE_INDEX}")
    return mapping


class Benchmark:
    """Frames of one benchmark folder; `dataset[i]` -> (image uint8 [H, W, 3] RGB, label uint8
    [H, W]) for frames with ground truth (`labelled`); the others are predicted only.

    Args:
        spec: the benchmark's table entry.
        root: dataset folder.
        image_root: where Fishyscapes takes its base images (LostAndFound or Cityscapes).
        split: split folder of Cityscapes.
        subset: one of `spec.subsets` (default: the first).
        label_map: replaces the spec's label map (the `folder` adapter needs one).
    """

    def __init__(
        self,
        spec: BenchmarkSpec,
        root: str | Path,
        *,
        image_root: str | Path | None = None,
        split: str | None = None,
        subset: str | None = None,
        label_map: Mapping[int, int] | None = None,
    ) -> None:
        self.spec, self.name, self.track = spec, spec.name, spec.track
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.name}: dataset root {self.root} is not a folder")
        if subset is not None and subset not in spec.subsets:
            choices = ", ".join(spec.subsets) or "none"
            raise UserError(f"{self.name}: unknown subset {subset!r} (choose from {choices})")
        self.subset = subset or (spec.subsets[0] if spec.subsets else None)
        self.label_map = dict(spec.label_map if label_map is None else label_map)
        self._table = np.full(1 << 16, IGNORE_INDEX, np.uint8)  # raw value -> 0, 1 or 255
        for value, target in self.label_map.items():
            self._table[value] = target
        self._mapped = np.zeros(1 << 16, bool)
        self._mapped[[*self.label_map, IGNORE_INDEX]] = True
        source = Source(self.root, Path(image_root) if image_root else None, split, self.subset)
        self.frames = sorted(spec.find_frames(source), key=lambda f: f.frame_id)
        if not self.frames:
            raise UserError(f"{self.name}: no frames found under {self.root} ({spec.layout})")
        self.labelled = [i for i, f in enumerate(self.frames) if f.label_path is not None]
        # labelled frames that also have a semantic label: open-set metrics are computed on them
        self.with_semantic = [i for i in self.labelled if self.frames[i].semantic_path is not None]
        self.unmapped_pixels: dict[str, int] = {}  # frame id -> pixels voided as unmapped

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
        """uint8 [H, W, 3] RGB (Fishyscapes Static: the base image plus its overlay)."""
        frame = self.frames[index]
        image = read_rgb(frame.image_path)
        if frame.overlay_path is None:
            return image
        try:
            with np.load(frame.overlay_path) as archive:
                overlay = archive["rgb"].astype(np.int64)
        except (OSError, KeyError, ValueError) as error:
            raise UserError(
                f"{frame.overlay_path}: cannot read the 'rgb' overlay ({error})"
            ) from None
        if overlay.shape != image.shape:
            raise UserError(f"{frame.overlay_path}: overlay {overlay.shape} != image {image.shape}")
        return np.clip(image.astype(np.int64) + overlay, 0, 255).astype(np.uint8)

    def load_label(self, index: int) -> np.ndarray:
        """uint8 [H, W]: 0 inlier, 1 anomaly, 255 void (unmapped source values counted); for
        Cityscapes, train IDs 0..18 and 255."""
        frame = self.frames[index]
        if frame.label_path is None:
            raise UserError(f"{frame.image_path}: this frame has no label (predicted only)")
        raw = read_label_map(frame.label_path)
        if raw.ndim != 2:
            raise UserError(f"{frame.label_path}: label must have one channel, got {raw.shape}")
        if raw.dtype.kind not in "ui":
            raise UserError(f"{frame.label_path}: expected integer labels, got {raw.dtype}")
        if self.spec.train_ids and frame.label_path.name.endswith("_labelTrainIds.png"):
            return np.where(raw < 19, raw, IGNORE_INDEX).astype(np.uint8)
        if raw.dtype.itemsize > 2 or raw.dtype.kind == "i":  # 16-bit PNGs may open as int32
            raw = np.where((raw >= 0) & (raw < 1 << 16), raw, (1 << 16) - 1).astype(np.uint16)
        label, mapped = self._table[raw], self._mapped[raw]
        unmapped = int(np.count_nonzero(~mapped)) if not self.spec.train_ids else 0
        if unmapped:
            self.unmapped_pixels[frame.frame_id] = unmapped
            log.warning(
                "%s: %d pixels with values outside the label map set to void",
                frame.label_path,
                unmapped,
            )
        return label

    def load_semantic(self, index: int) -> np.ndarray:
        """uint8 [H, W] semantic label of a frame: train IDs as stored (values past 255 become
        255, void)."""
        frame = self.frames[index]
        if frame.semantic_path is None:
            raise UserError(f"{frame.image_path}: this frame has no semantic label")
        raw = read_label_map(frame.semantic_path, "semantic label")
        if raw.ndim != 2 or raw.dtype.kind not in "ui":
            raise UserError(
                f"{frame.semantic_path}: a semantic label must be one channel of integers, got "
                f"{raw.dtype} {raw.shape}"
            )
        return np.where((raw >= 0) & (raw < IGNORE_INDEX), raw, IGNORE_INDEX).astype(np.uint8)

    def use_instance_labels(self, folder: str | Path) -> None:
        """Take the frames' instance labels from `folder` (`layouts.instance_labels_in`)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"--instance-labels {folder}: not a folder")
        self.frames = layouts.instance_labels_in(folder, self.frames)

    def load_instance_ids(self, index: int) -> np.ndarray | None:
        """The frame's instance label as stored ([H, W] integers; Cityscapes instanceIds), or
        None when it has none."""
        frame = self.frames[index]
        if frame.instance_path is None:
            return None
        return read_label_map(frame.instance_path, "instance label")


def load_benchmark(name: str, root: str | Path, **options) -> Benchmark:
    """The benchmark called `name` (a key of BENCHMARKS) in the folder `root`; options:
    image_root, split, subset, label_map."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(BENCHMARKS)}")
    return Benchmark(BENCHMARKS[name], root, **options)
