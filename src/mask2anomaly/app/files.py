"""The app's files: uploads read as the `predict` command reads images (one-line errors naming
the upload, not the server's path), downloads written per request, the built-in examples (frames
of the synthetic world rendered at start-up) and annotated videos."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.synthetic.scene import render_scene
from ..errors import UserError
from ..evaluation.instances import MIN_AREA
from ..fileio import save_image_atomic, save_npy_atomic
from ..inference.annotate import write_instances_json
from ..inference.media import VideoReader, VideoWriter, read_image
from ..inference.pictures import prediction_panel
from .analysis import Analyser, Analysis, AppSettings, anomaly_picture

KEEP_FOLDERS = 16  # request folders kept (the page has copied their files by then)
PNG_OPTIONS = {"compress_level": 1}  # fast: pictures are re-encoded on every threshold change
EXAMPLES = (("anywhere", 3), ("obstacle", 7), ("anywhere", 11))  # (anomaly kind, seed)
EXAMPLE_SIZE = (512, 1024)  # (H, W) of the built-in examples


def _named(error: UserError, path: Path, name: str) -> UserError:
    """The error with the upload's name in place of its path on the server."""
    return UserError(str(error).replace(str(path), name))


def read_upload(path: Path, name: str, *, max_pixels: int | None) -> np.ndarray:
    """An uploaded image -> uint8 [H, W, 3]; UserError (one line, naming the upload `name`)
    when it is not a readable image or has more than `max_pixels` pixels."""
    try:
        return read_image(path, max_pixels=max_pixels)
    except UserError as error:
        raise _named(error, path, name) from None


class Scratch:
    """Numbered folders under `root` for the files of each request; only the newest
    KEEP_FOLDERS are kept."""

    def __init__(self, root: Path, keep: int = KEEP_FOLDERS) -> None:
        self.root, self.keep = root, keep
        self._count = 0
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def folder(self) -> Path:
        with self._lock:
            self._count += 1
            number = self._count
        shutil.rmtree(self.root / f"{number - self.keep:06d}", ignore_errors=True)
        folder = self.root / f"{number:06d}"
        folder.mkdir()
        return folder


def write_downloads(analysis: Analysis, folder: Path, stem: str) -> dict[str, Path]:
    """The analysis' files in `folder`: "map" the anomaly map as float32 .npy (refined or not,
    as its settings say), "anomaly" the picture of its view, "semantic" the Cityscapes-coloured
    semantic map, "open_set" the open-set map (when shown), "instances" the instances as COCO
    results with RLE masks (when shown), "panel" input | anomaly | semantic [| open set]."""
    settings = analysis.settings
    files = {
        "map": folder / f"{stem}_anomaly.npy",
        "anomaly": folder / f"{stem}_{settings.view.replace(' ', '_')}.png",
        "semantic": folder / f"{stem}_semantic.png",
    }
    anomaly, semantic = analysis.anomaly_picture(), analysis.semantic_picture()
    open_set = analysis.open_set_picture()
    save_npy_atomic(files["map"], analysis.anomaly_map.astype(np.float32))
    save_image_atomic(files["anomaly"], anomaly, **PNG_OPTIONS)
    save_image_atomic(files["semantic"], semantic, **PNG_OPTIONS)
    if open_set is not None:
        files["open_set"] = folder / f"{stem}_open_set.png"
        save_image_atomic(files["open_set"], open_set, **PNG_OPTIONS)
    if settings.instances != "off":
        files["instances"] = folder / f"{stem}_instances.json"
        write_instances_json(files["instances"], stem, analysis.instances, analysis.image.shape,
                             {"score": settings.score, "method": settings.instances,
                              "threshold": settings.threshold, "min_area": MIN_AREA,
                              "confidence": "mean"})  # fmt: skip
    files["panel"] = folder / f"{stem}_panel.png"
    panel = prediction_panel(analysis.image, anomaly, semantic, open_set)
    save_image_atomic(files["panel"], panel, **PNG_OPTIONS)
    return files


def write_examples(folder: Path, size: tuple[int, int] = EXAMPLE_SIZE) -> list[Path]:
    """Render the built-in example frames (synthetic road scenes with anomalies) as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, seed in EXAMPLES:
        scene = render_scene(np.random.default_rng(seed), size, anomalies=kind)
        path = folder / f"synthetic-{kind}-{seed}.png"
        save_image_atomic(path, scene.image)
        paths.append(path)
    return paths


def annotate_video(
    analyser: Analyser,
    source: str | Path,
    target: Path,
    settings: AppSettings,
    *,
    max_pixels: int | None,
    on_frame: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Draw the anomaly map of every frame of `source` (its view at the threshold) into an
    H.264 video at the source frame rate; returns the number of frames. `on_frame(done,
    total)` after each frame (total 0 when the container does not say). UserError, naming the
    upload, when the video cannot be decoded or its frames exceed `max_pixels`."""
    source = Path(source)
    try:
        with VideoReader(source) as reader:
            writer = VideoWriter(target, reader.fps)
            try:
                count = _annotate_frames(analyser, reader, writer, settings, max_pixels, on_frame)
            except BaseException:
                writer.abort()
                raise
            if not count:
                writer.abort()
                raise UserError(f"{source}: video has no frames")
            writer.close()
    except UserError as error:
        raise _named(error, source, source.name) from None
    return count


def _annotate_frames(
    analyser: Analyser,
    reader: VideoReader,
    writer: VideoWriter,
    settings: AppSettings,
    max_pixels: int | None,
    on_frame: Callable[[int, int], None],
) -> int:
    count = 0
    for frame in reader:
        height, width = frame.shape[:2]
        if max_pixels is not None and height * width > max_pixels:
            raise UserError(
                f"{reader.path}: {width}x{height} frames have more pixels than the limit of "
                f"{max_pixels} (--max-pixels)"
            )
        prediction = analyser.predict_frame(frame, settings)
        writer.write(anomaly_picture(frame, prediction, settings))
        count += 1
        on_frame(count, reader.num_frames)
    return count
