"""Run a Predictor over images and videos and write every frame's outputs (issue 7).

Per frame, beside each other under the output folder (`<name>` for an image, `<video>/<frame
number>` for a video frame):

* `<name>_anomaly.npy`: the anomaly map, float16 [H, W] (higher = more anomalous);
* `<name>_anomaly.png`: the same as a 16-bit grey PNG, `round(clip(score, 0, 1) * 65535)`;
* `<name>_overlay.jpg`: the heat map on the image (contours of score >= threshold if asked);
* `<name>_semantic.png`: the semantic map in Cityscapes colours;
* `<name>_panel.jpg`: input | heat map | semantic map [| open-set map] side by side;
* with an open-set threshold: `<name>_open_set_labels.png` (train IDs, the unknown label where
  the score exceeds the threshold) and `<name>_open_set.png` (in colours, unknown white);
* with instances (`InstanceOptions`): `<name>_instances.json`, the anomaly instances as COCO
  results (compressed RLE masks, boxes, areas, confidences), drawn on the overlay; in the OoDIS
  format the folder holds only the OoDIS submission files instead (`evaluation/oodis.py`);

The maps are those of the predictor's first score (`Predictor(scores=...)`); the .npy holds
its values, the pictures and the 16-bit PNG its display scale (`pictures.to_display`: Eq. 2
as it is).

and for a video `<video>_annotated.mp4`, the overlays at the original frame rate. Every file is
written atomically, and a frame counts as done only once all its files are written and journalled
in the output folder (`fileio.OutputFolder`) with the signature of its input: a re-run skips the
frames that are done and whose input is unchanged, and redoes the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import IGNORE_INDEX
from ..errors import UserError
from ..evaluation.instances import MIN_AREA, Confidence, InstanceMethod
from ..evaluation.oodis import oodis_stem, write_oodis_frame
from ..fileio import (
    OutputFolder,
    file_signature,
    save_image_atomic,
    save_npy_atomic,
    write_json_atomic,
)
from .media import MediaInput, VideoReader, VideoWriter, read_image
from .pictures import (
    anomaly_to_png16,
    colorize_semantic,
    draw_instances,
    heat_overlay,
    prediction_panel,
    threshold_to_display,
    to_display,
)
from .predictor import Prediction, Predictor

OUTPUT_SECTIONS = ("model", "scoring", "inference")  # the config sections outputs depend on
OUTPUT_SUFFIXES = ("_anomaly.npy", "_anomaly.png", "_overlay.jpg", "_semantic.png", "_panel.jpg")
OPEN_SET_SUFFIXES = ("_open_set_labels.png", "_open_set.png")  # with AnnotateOptions.open_set
INSTANCES_SUFFIX = "_instances.json"  # with AnnotateOptions.instances (COCO format)
JPEG_QUALITY = 92
FRAME_DIGITS = 6  # video frame file names: 000000, 000001, ...


@dataclass(frozen=True)
class InstanceOptions:
    """Anomaly instances per frame (`Prediction.instances`): method, score threshold, smallest
    area in pixels, confidence (mean / max score inside), file format (coco: a JSON per frame
    beside the pictures; oodis: only the OoDIS submission files)."""

    method: InstanceMethod
    threshold: float
    min_area: int = MIN_AREA
    confidence: Confidence = "mean"
    format: str = "coco"


@dataclass(frozen=True)
class AnnotateOptions:
    """threshold: contour level of the anomaly score (None: no contours); batch_size: frames
    predicted together; open_set: the score above which pixels are unknown (None: no open-set
    outputs), unknown_label their label; display: the score's display range (pictures)."""

    threshold: float | None = None
    batch_size: int = 1
    max_pixels: int | None = None  # larger images are skipped with a warning
    open_set: float | None = None
    unknown_label: int = IGNORE_INDEX
    display: tuple[float, float] = (0.0, 1.0)
    instances: InstanceOptions | None = None


def frame_outputs(
    out_dir: Path, name: str, open_set: bool = False, instances: bool = False
) -> dict[str, Path]:
    """Output files of one frame, keyed by suffix."""
    suffixes = OUTPUT_SUFFIXES + (OPEN_SET_SUFFIXES if open_set else ())
    suffixes += (INSTANCES_SUFFIX,) if instances else ()
    return {suffix: out_dir / f"{name}{suffix}" for suffix in suffixes}


def frame_instances(prediction: Prediction, options: InstanceOptions) -> list:
    return prediction.instances(options.method, options.threshold, min_area=options.min_area,
                                confidence=options.confidence)  # fmt: skip


def write_instances_json(
    path: Path, name: str, instances: list, size: tuple[int, ...], how: dict[str, Any]
) -> None:
    """The frame's instances as COCO results (`Instance.to_coco`) with how they were made
    (`how`: method, threshold, min_area, confidence, ...)."""
    write_json_atomic(path, {
        "image": name, "height": int(size[0]), "width": int(size[1]), **how,
        "instances": [instance.to_coco(i) for i, instance in enumerate(instances)],
    })  # fmt: skip


def write_frame(
    out_dir: Path,
    name: str,
    image: np.ndarray,
    prediction: Prediction,
    options: AnnotateOptions,
) -> tuple[np.ndarray, list[Path]]:
    """Write one frame's files; returns the overlay uint8 [H, W, 3] and the files."""
    paths = frame_outputs(out_dir, name, options.open_set is not None,
                          options.instances is not None)  # fmt: skip
    score = prediction.anomaly_score
    shown = to_display(score, options.display)
    threshold = options.threshold
    if threshold is not None:
        threshold = threshold_to_display(threshold, options.display)
    overlay = heat_overlay(image, shown, threshold=threshold)
    if options.instances is not None:
        instances = frame_instances(prediction, options.instances)
        overlay = draw_instances(overlay, instances)
        how = options.instances
        write_instances_json(paths[INSTANCES_SUFFIX], name, instances, image.shape,
                             {"method": how.method, "threshold": how.threshold,
                              "min_area": how.min_area, "confidence": how.confidence})  # fmt: skip
    semantic = colorize_semantic(prediction.semantic)
    save_npy_atomic(paths["_anomaly.npy"], score.astype(np.float16))
    save_image_atomic(paths["_anomaly.png"], anomaly_to_png16(shown))
    save_image_atomic(paths["_semantic.png"], semantic)
    save_image_atomic(paths["_overlay.jpg"], overlay, quality=JPEG_QUALITY)
    open_set = None
    if options.open_set is not None:
        labels = prediction.open_set(options.open_set, unknown=options.unknown_label)
        open_set = colorize_semantic(labels, unknown=options.unknown_label)
        save_image_atomic(paths["_open_set_labels.png"], labels)
        save_image_atomic(paths["_open_set.png"], open_set)
    panel = prediction_panel(image, overlay, semantic, open_set)
    save_image_atomic(paths["_panel.jpg"], panel, quality=JPEG_QUALITY)
    return overlay, list(paths.values())


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def annotate_images(
    predictor: Predictor,
    inputs: list[MediaInput],
    out: OutputFolder,
    options: AnnotateOptions,
    *,
    on_error: Callable[[str], None],
    on_frame: Callable[[], None] = lambda: None,
) -> int:
    """Predict and write every image input not done yet; returns the number predicted.

    An image that cannot be read (or predicted) is reported through `on_error` with its path;
    the others go on.
    """
    signatures = {item.name: file_signature(item.path) for item in inputs}
    todo = [item for item in inputs if not out.is_done(item.name, signatures[item.name])]
    for _ in range(len(inputs) - len(todo)):
        on_frame()
    done = 0
    for batch in _batches(todo, options.batch_size):
        loaded = []
        for item in batch:
            try:
                loaded.append((item, read_image(item.path, max_pixels=options.max_pixels)))
            except UserError as error:
                on_error(str(error))
                on_frame()
        if not loaded:
            continue
        try:
            predictions = predictor.predict_batch(
                [image for _, image in loaded], return_query_masks=_queries(options)
            )
        except UserError as error:
            on_error(f"{', '.join(str(item.path) for item, _ in loaded)}: {error}")
            predictions = []
        for (item, image), prediction in zip(loaded, predictions):
            if options.instances is not None and options.instances.format == "oodis":
                instances = frame_instances(prediction, options.instances)
                files = write_oodis_frame(out.root, oodis_stem(item.name), instances,
                                          image.shape[:2])  # fmt: skip
            else:
                _, files = write_frame(out.root, item.name, image, prediction, options)
            out.mark_done(item.name, signatures[item.name], files)
            done += 1
        for _ in loaded:
            on_frame()
    return done


def _queries(options: AnnotateOptions) -> bool:
    return options.instances is not None and options.instances.method == "queries"


def annotated_video_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_annotated.mp4"


def _overlay_of(frames_dir: Path, frame_name: str) -> np.ndarray:
    with Image.open(frames_dir / f"{frame_name}_overlay.jpg") as picture:
        return np.asarray(picture.convert("RGB"))


def annotate_video(
    predictor: Predictor,
    item: MediaInput,
    out: OutputFolder,
    options: AnnotateOptions,
    *,
    on_frame: Callable[[], None] = lambda: None,
    on_open: Callable[[int], None] = lambda num_frames: None,
) -> int:
    """Predict and write the frames of one video not done yet, then its annotated video (at the
    source frame rate). Returns the number of frames predicted; a video that cannot be opened
    or decoded raises UserError naming it (its finished frames stay on disk)."""
    video_path = annotated_video_path(out.root, item.name)
    signature = file_signature(item.path)
    if out.is_done(item.name, signature):
        return 0
    frames_dir = out.root / item.name
    done = 0
    with VideoReader(item.path) as reader:
        on_open(reader.num_frames)
        writer = VideoWriter(video_path, reader.fps)
        try:
            numbered = ((f"{i:0{FRAME_DIGITS}d}", frame) for i, frame in enumerate(reader))
            for batch in _batches(numbered, options.batch_size):
                keys = {n: f"{item.name}/{n}" for n, _ in batch}
                todo = [(n, f) for n, f in batch if not out.is_done(keys[n], signature)]
                predictions = (
                    predictor.predict_batch([f for _, f in todo],
                                            return_query_masks=_queries(options))
                    if todo else []
                )  # fmt: skip
                overlays = {}
                for (n, f), p in zip(todo, predictions):
                    overlays[n], files = write_frame(frames_dir, n, f, p, options)
                    out.mark_done(keys[n], signature, files)
                for frame_name, _ in batch:
                    overlay = overlays.get(frame_name)
                    if overlay is None:  # written by an earlier run
                        overlay = _overlay_of(frames_dir, frame_name)
                    writer.write(overlay)
                    on_frame()
                done += len(todo)
        except BaseException:
            writer.abort()
            raise
        if not writer.has_frames:
            writer.abort()
            raise UserError(f"{item.path}: video has no frames")
        writer.close()
    out.mark_done(item.name, signature, [video_path])
    return done
