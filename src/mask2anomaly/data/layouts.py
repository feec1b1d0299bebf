"""Where each benchmark's files are, as the public downloads unpack them: one frame finder per
layout (globs and naming rules), and the frame lists the benchmarks define as data.

Spec ../shared/spec/benchmarks.md A.4, B, C, D, E.1, and the SMIYC benchmark's dataset code
(road_anomaly_benchmark/datasets/tracks.py, tracks_extra.py) and the Fishyscapes loader
(bdl-benchmark bdlb/fishyscapes/fishyscapes_tfds.py) for the naming rules. A finder returns the
frames of one dataset folder; a frame whose label file is missing has `label_path=None` where the
benchmark ships test images without labels (SMIYC), and is an error elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")  # in SMIYC's order of preference
SEMANTIC_SUFFIX = "_labelTrainIds.png"  # semantic labels beside SMIYC-layout anomaly labels
# anomaly instance labels (Cityscapes instanceIds encoding, as OoDIS scores instances): beside
# SMIYC-layout labels, or found by frame id in an --instance-labels folder
INSTANCE_SUFFIXES = ("_instanceIds.png", "_gtCoarse_instanceIds.png", "_gtFine_instanceIds.png")

# --- SMIYC (tracks.py, tracks_extra.py) ---------------------------------------------------------
# RoadObstacle21: the scene is the frame id's text before the first "_".
RO21_SUBSETS = {
    "test": frozenset({"curvy-street", "one-way-street", "gravel", "greyasphalt", "motorway",
                       "paving", "darkasphalt", "darkasphalt2"}),
    "validation": frozenset({"validation"}),
    "night": frozenset({"driveway"}),
    "snowstorm": frozenset({"snowstorm1", "snowstorm2"}),
}  # fmt: skip
# ObstacleTrack-validation leaves these sequences out.
RO21_VALIDATION_EXCLUDED = ("validation_19", *(f"validation_{n}" for n in range(21, 30)))
# LostAndFound frames whose labels are empty: SMIYC lists them as positions in the sorted test
# (17) and train (6) splits; these are the frame ids at those positions (the LostAndFound frame
# list of bdl-benchmark, bdlb/fishyscapes/tfdsLAF_index.json), so a partial folder works too.
LAF_EMPTY_LABELS = {
    "test": frozenset(
        [f"02_Hanns_Klemm_Str_44_{s}" for s in (
            "000000_000190", "000001_000210", "000002_000190", "000003_000180", "000004_000200",
            "000005_000200", "000006_000200", "000007_000250", "000008_000220", "000009_000240",
            "000010_000220", "000017_000180")]
        + ["04_Maurener_Weg_8_000006_000140", "04_Maurener_Weg_8_000013_000240",
           "05_Schafgasse_1_000003_000170", "05_Schafgasse_1_000011_000100",
           "05_Schafgasse_1_000011_000110"]
    ),
    "train": frozenset(
        [f"01_Hanns_Klemm_Str_45_{s}" for s in (
            "000001_000240", "000002_000240", "000003_000230", "000004_000230", "000005_000230")]
        + ["11_Parkplatz_Flugfeld_000000_000180"]
    ),
}  # fmt: skip
# LostAndFound-testNoKnown also leaves out objects of known classes: children and bicycles.
LAF_KNOWN_OBJECTS = (
    "15_Rechbergstr_Deckenpfronn",  # children
    "01_Hanns_Klemm_Str_45_000006",  # bicycles (train scenes: they never match a test frame)
    "01_Hanns_Klemm_Str_45_000007",
    "10_Schlossberg_9_000004",
)
# subset -> (split folder, leave out empty labels, leave out known objects)
LAF_SUBSETS = {
    "test": ("test", False, False),
    "train": ("train", False, False),
    "testValid": ("test", True, False),
    "trainValid": ("train", True, False),
    "testNoKnown": ("test", True, True),
}


@dataclass(frozen=True)
class Frame:
    """One frame: its id and files. `label_path` None: no ground truth (predicted only).
    `overlay_path`: Fishyscapes Static's additive `_rgb.npz`. `map_names`: other file stems its
    anomaly map may have (the names official tools write). `group`: the SMIYC result folder the
    frame's map belongs to in a submission (e.g. "LostAndFound-test"). `semantic_path`: its
    semantic label (Cityscapes train IDs, 255 void) where the dataset has one beside the
    anomaly label (the synthetic world's test sets, the `folder` adapter): open-set metrics.
    `instance_path`: its anomaly instance label (Cityscapes instanceIds) where it has one."""

    frame_id: str
    image_path: Path
    label_path: Path | None
    overlay_path: Path | None = None
    map_names: tuple[str, ...] = ()
    group: str | None = None
    semantic_path: Path | None = None
    instance_path: Path | None = None


@dataclass(frozen=True)
class Source:
    """What the user pointed at: the dataset folder, the base images (Fishyscapes), the split
    folder (Cityscapes) and the benchmark's subset."""

    root: Path
    image_root: Path | None = None
    split: str | None = None
    subset: str | None = None


def images_in(folder: Path, pattern: str = "*") -> dict[str, Path]:
    """stem -> image file in `folder` matching `pattern` + an image suffix; a stem present with
    several suffixes takes the first in IMAGE_SUFFIXES order (as SMIYC's loaders do)."""
    found: dict[str, Path] = {}
    for suffix in IMAGE_SUFFIXES:
        for path in sorted(folder.glob(pattern + suffix)):
            found.setdefault(path.name[: -len(suffix)], path)
    return found


def paired(
    name: str,
    images: dict[str, Path],
    label_of: dict[str, Path],
    *,
    optional: bool,
    semantic_of: dict[str, Path] | None = None,
) -> list[Frame]:
    """Frames of images (frame id -> path) with their label files; a missing label is a
    predicted-only frame when `optional`, else a one-line error naming the image. Semantic
    labels (`semantic_of`) are optional: a frame has one where its file exists."""
    frames = []
    for frame_id, image in images.items():
        label = label_of[frame_id]
        if not label.is_file() and not optional:
            raise UserError(f"{name}: no label for image {image} (expected {label})")
        semantic = (semantic_of or {}).get(frame_id)
        frames.append(
            Frame(frame_id, image, label if label.is_file() else None,
                  semantic_path=semantic if semantic is not None and semantic.is_file() else None)
        )  # fmt: skip
    return frames


def smiyc_frames(source: Source, name: str, group: str) -> list[Frame]:
    """RoadAnomaly21 / RoadObstacle21: images/<fid>.<jpg|webp|png>, labels (only for the
    validation frames in the public zips) labels_masks/<fid>_labels_semantic.png, semantic
    labels (the synthetic world's) labels_masks/<fid>_labelTrainIds.png, instance labels
    labels_masks/<fid>_instanceIds.png."""
    images = images_in(source.root / "images")
    labels = source.root / "labels_masks"
    label_of = {fid: labels / f"{fid}_labels_semantic.png" for fid in images}
    semantic_of = {fid: labels / f"{fid}{SEMANTIC_SUFFIX}" for fid in images}
    frames = paired(name, images, label_of, optional=True, semantic_of=semantic_of)
    instance_of = {fid: labels / f"{fid}{INSTANCE_SUFFIXES[0]}" for fid in images}
    return [
        dataclasses.replace(f, group=group, instance_path=instance_of[f.frame_id])
        if instance_of[f.frame_id].is_file()
        else dataclasses.replace(f, group=group)
        for f in frames
    ]


def instance_labels_in(folder: Path, frames: Iterable[Frame]) -> list[Frame]:
    """The frames with their instance labels taken from `folder` (searched below it) under
    `<frame id>` + one of INSTANCE_SUFFIXES; frames without a file there keep theirs."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*instanceIds.png")):
        for suffix in INSTANCE_SUFFIXES:
            if path.name.endswith(suffix):
                found.setdefault(path.name[: -len(suffix)], path)
    return [
        dataclasses.replace(f, instance_path=found[f.frame_id]) if f.frame_id in found else f
        for f in frames
    ]


def road_anomaly_21_frames(source: Source) -> list[Frame]:
    frames = smiyc_frames(source, "road-anomaly-21", "AnomalyTrack-all")
    if source.subset in ("validation", "test"):
        validation = [f for f in frames if f.frame_id.startswith("validation")]
        frames = validation if source.subset == "validation" else _minus(frames, validation)
    return frames


def road_obstacle_21_frames(source: Source) -> list[Frame]:
    frames = smiyc_frames(source, "road-obstacle-21", "ObstacleTrack-all")
    if source.subset not in (None, "all"):
        scenes = RO21_SUBSETS[source.subset]
        frames = [f for f in frames if f.frame_id.split("_", 1)[0] in scenes]
        if source.subset == "validation":
            frames = [f for f in frames if not f.frame_id.startswith(RO21_VALIDATION_EXCLUDED)]
    return frames


def _minus(frames: list[Frame], removed: Iterable[Frame]) -> list[Frame]:
    ids = {f.frame_id for f in removed}
    return [f for f in frames if f.frame_id not in ids]


def lost_and_found_frames(source: Source) -> list[Frame]:
    """LostAndFound: leftImg8bit/<split>/<NN>_<scene>/<fid>_leftImg8bit.<png|webp|jpg> with
    gtCoarse/<split>/<NN>_<scene>/<fid>_gtCoarse_labelIds.png, and the SMIYC subsets."""
    split, drop_empty, drop_known = LAF_SUBSETS[source.subset or "testNoKnown"]
    images = images_in(source.root / "leftImg8bit" / split, "*/*_leftImg8bit")
    images = {stem.removesuffix("_leftImg8bit"): path for stem, path in images.items()}
    label_of = {
        fid: source.root / "gtCoarse" / split / path.parent.name / f"{fid}_gtCoarse_labelIds.png"
        for fid, path in images.items()
    }
    frames = paired("lost-and-found", images, label_of, optional=False)
    if drop_empty:
        frames = [f for f in frames if f.frame_id not in LAF_EMPTY_LABELS[split]]
    if drop_known:
        frames = [f for f in frames if not f.frame_id.startswith(LAF_KNOWN_OBJECTS)]
    group = f"LostAndFound-{split}"
    return [Frame(f.frame_id, f.image_path, f.label_path, group=group) for f in frames]


FISHYSCAPES_LABEL = re.compile(r"^([0-9]+)_(.+)_labels\.png$")  # <NNNN>_<base id>_labels.png
SMIYC_FISHY_LABEL = "_fishy-labels.png"  # dataset_FishyLAF/labels/val/<LAF id>_fishy-labels.png


def _base_images(roots: list[Path]) -> dict[str, Path]:
    """base id -> image for files <id>_leftImg8bit.<ext> directly in `roots` or in
    <root>/leftImg8bit/<any split>/<scene or city>/ (LostAndFound / Cityscapes trees, every
    split, as the Fishyscapes loader searches them)."""
    found: dict[str, Path] = {}
    for root in roots:
        for pattern in ("*_leftImg8bit", "leftImg8bit/*/*/*_leftImg8bit"):
            for stem, path in images_in(root, pattern).items():
                found.setdefault(stem.removesuffix("_leftImg8bit"), path)
    return found


def _fishyscapes_labels(root: Path) -> list[tuple[str, str, Path]]:
    """(frame id, base id, label) of the Fishyscapes zip layout (<NNNN>_<id>_labels.png at the
    top) or of SMIYC's dataset_FishyLAF (labels/val/<LAF id>_fishy-labels.png)."""
    found = []
    for path in sorted(root.glob("*_labels.png")):
        if match := FISHYSCAPES_LABEL.match(path.name):
            found.append((f"{match.group(1)}_{match.group(2)}", match.group(2), path))
    if not found:
        for folder in (root / "labels" / "val", root / "dataset_FishyLAF" / "labels" / "val"):
            for path in sorted(folder.glob(f"*{SMIYC_FISHY_LABEL}")):
                laf_id = path.name.removesuffix(SMIYC_FISHY_LABEL)
                found.append((laf_id, laf_id, path))
    return found


def fishyscapes_laf_frames(source: Source) -> list[Frame]:
    """Fishyscapes Lost & Found in the Fishyscapes zip or SMIYC layout; the image is the
    LostAndFound left image of the frame's LAF id, next to the labels or under `image_root`
    (a LostAndFound tree, either split, or a flat folder of <LAF id>_leftImg8bit.* files)."""
    roots = [source.root] + ([source.image_root] if source.image_root else [])
    images = _base_images(roots)
    frames = []
    for frame_id, laf_id, label in _fishyscapes_labels(source.root):
        image = images.get(laf_id)
        if image is None:
            raise UserError(
                f"fs-lost-and-found: no image {laf_id}_leftImg8bit.png for {label} (next to "
                "it, or under --image-root: a LostAndFound folder or a flat folder of images)"
            )
        number = frame_id.split("_", 1)[0] if frame_id != laf_id else None
        names = (laf_id,) if number is None else (laf_id, f"{number}_anomaly")
        frames.append(Frame(frame_id, image, label, map_names=names))
    return frames


def fishyscapes_static_frames(source: Source) -> list[Frame]:
    """Fishyscapes Static: <NNNN>_<Cityscapes id>_labels.png with an overlay file that starts
    with <NNNN> and ends with rgb.npz in the same folder, added to the Cityscapes image of that
    id (next to the labels or under `image_root`: a Cityscapes tree, any split, or a flat
    folder)."""
    roots = [source.root] + ([source.image_root] if source.image_root else [])
    images = _base_images(roots)
    frames = []
    for path in sorted(source.root.glob("*_labels.png")):
        match = FISHYSCAPES_LABEL.match(path.name)
        if match is None:
            continue
        number, base_id = match.groups()
        overlays = sorted(
            p for p in source.root.glob(f"{number}*rgb.npz") if p.name.split("_", 1)[0] == number
        )
        image = images.get(base_id)
        if image is None or not overlays:
            missing = f"{base_id}_leftImg8bit.png" if image is None else f"{number}_*rgb.npz"
            raise UserError(f"fs-static: {missing} not found for {path}")
        frame_id = f"{number}_{base_id}"
        frames.append(Frame(frame_id, image, path, overlays[0], map_names=(f"{number}_anomaly",)))
    return frames


def road_anomaly_frames(source: Source) -> list[Frame]:
    """Road Anomaly (C): frames/<name>.<webp|jpg>, frames/<name>.labels/labels_semantic.png
    (and, in the synthetic world, labelTrainIds.png), the frames listed in frame_list.json when
    it is there."""
    frames_dir, listing = source.root / "frames", source.root / "frame_list.json"
    if listing.is_file():
        try:
            names = json.loads(listing.read_text())
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("expected a list of file names")
        except ValueError as error:
            raise UserError(f"{listing}: not a frame list ({error})") from None
        images = {Path(name).stem: frames_dir / name for name in names}
    else:
        images = images_in(frames_dir)
    label_of = {stem: frames_dir / f"{stem}.labels" / "labels_semantic.png" for stem in images}
    semantic_of = {stem: frames_dir / f"{stem}.labels" / "labelTrainIds.png" for stem in images}
    return paired("road-anomaly", images, label_of, optional=False, semantic_of=semantic_of)


def images_and_masks_frames(source: Source, *, name: str, labels: str) -> list[Frame]:
    """images/<stem>.* with <labels>/<stem>.png (Mask2Anomaly's re-packaged sets, `folder`),
    and semantic/<stem>.png (train IDs) where present."""
    images = images_in(source.root / "images")
    label_of = {stem: source.root / labels / f"{stem}.png" for stem in images}
    semantic_of = {stem: source.root / "semantic" / f"{stem}.png" for stem in images}
    return paired(name, images, label_of, optional=False, semantic_of=semantic_of)


def cityscapes_frames(source: Source) -> list[Frame]:
    """Cityscapes (E.1): leftImg8bit/<split>/<city>/<id>_leftImg8bit.png with
    gtFine/<split>/<city>/<id>_gtFine_labelTrainIds.png, or else _labelIds.png."""
    split = source.split or "val"
    images = images_in(source.root / "leftImg8bit" / split, "*/*_leftImg8bit")
    images = {stem.removesuffix("_leftImg8bit"): path for stem, path in images.items()}
    label_of = {}
    for fid, path in images.items():
        folder = source.root / "gtFine" / split / path.parent.name
        train_ids = folder / f"{fid}_gtFine_labelTrainIds.png"
        label_of[fid] = train_ids if train_ids.is_file() else folder / f"{fid}_gtFine_labelIds.png"
    return paired("cityscapes", images, label_of, optional=False)
