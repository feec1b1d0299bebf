"""Media in and out for `predict`: finding inputs (files, folders, globs), reading images of any
PIL mode as RGB uint8, reading and writing videos (PyAV, the optional `video` extra), and
atomic file writes (temporary file + rename, so an interrupted run never leaves half a file).
"""

from __future__ import annotations

import glob
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError
from ..fileio import publish, temporary_beside

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
VIDEO_EXTRA_HINT = "video needs PyAV: pip install 'mask2anomaly[video]'"


@dataclass(frozen=True)
class MediaInput:
    """One input file; `name` is its output name (relative path inside a given folder, without
    suffix; unique among the inputs of one run)."""

    path: Path
    kind: Literal["image", "video"]
    name: str


def media_kind(path: Path) -> Literal["image", "video"] | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def _files_of(spec: str) -> tuple[list[tuple[Path, str]], str | None]:
    """(file, name) pairs a command-line argument stands for, or a problem naming it."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        found = [(p, p.relative_to(path).with_suffix("").as_posix()) for p in files]
        media = [(p, n) for p, n in found if media_kind(p)]
        return media, None if media else f"{spec}: folder has no images or videos"
    if path.is_file():
        return [(path, path.stem)], None
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        return [(p, p.stem) for p in files], None if files else f"{spec}: matches no file"
    return [], f"{spec}: no such file or folder"


def discover_inputs(specs: Sequence[str]) -> tuple[list[MediaInput], list[str]]:
    """Files, folders (searched recursively) and glob patterns -> inputs, problems.

    Problems (a missing path, an empty folder, a pattern matching nothing, a file of an
    unsupported type) are one line each naming the argument or file; they do not stop the
    other inputs. A file reached twice is taken once; clashing output names get a suffix.
    """
    inputs: list[MediaInput] = []
    problems: list[str] = []
    seen_files: set[Path] = set()
    used_names: set[str] = set()
    for spec in specs:
        files, problem = _files_of(spec)
        if problem:
            problems.append(problem)
        for path, name in files:
            kind = media_kind(path)
            if kind is None:
                problems.append(f"{path}: unsupported file type '{path.suffix or '(none)'}'")
                continue
            if path.resolve() in seen_files:
                continue
            seen_files.add(path.resolve())
            unique, count = name, 1
            while unique in used_names:
                count += 1
                unique = f"{name}-{count}"
            used_names.add(unique)
            inputs.append(MediaInput(path=path, kind=kind, name=unique))
    return inputs, problems


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL image -> uint8 [H, W, 3]: alpha dropped, grey repeated, 16-bit and float
    greys scaled to 0..255 (16-bit by 1/257, float by its maximum when above 1)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            values = values * (255.0 if values.max(initial=0) <= 1.0 else 1.0)
        elif image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "transparency" in image.info else image.mode)
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image))


DEFAULT_MAX_PIXELS = 150_000_000  # larger images are refused (a header can claim anything)


def read_image(path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] (EXIF orientation applied); one-line UserError if the
    file cannot be decoded (truncated, not an image) or has more than `max_pixels` pixels
    (None: no limit), checked before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                opened = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise UserError(
                    f"{path}: {width}x{height} pixels is more than the limit of {max_pixels} "
                    "(--max-pixels)"
                )
            opened.load()
            return to_rgb_uint8(ImageOps.exif_transpose(opened))
    except UnidentifiedImageError:
        raise UserError(f"{path}: not a readable image") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: cannot read image ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    """The reason in one line (PyAV's errors carry it in strerror, without the file name)."""
    text = (getattr(error, "strerror", None) or str(error)).strip().splitlines()
    return text[0] if text else type(error).__name__


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError(VIDEO_EXTRA_HINT) from None
    return av


class VideoReader:
    """Decoded RGB frames of a video file; `fps` (Fraction) and `num_frames` (0 if the
    container does not say) are known after opening."""

    def __init__(self, path: Path) -> None:
        av = _import_av()
        self.path = path
        try:
            self._container = av.open(str(path))
            streams = self._container.streams.video
            if not streams:
                raise UserError(f"{path}: no video stream")
            self._stream = streams[0]
        except av.FFmpegError as error:
            raise UserError(f"{path}: cannot open video ({_first_line(error)})") from None
        rate = self._stream.average_rate or self._stream.guessed_rate or Fraction(25)
        self.fps = Fraction(rate)
        self.num_frames = int(self._stream.frames or 0)

    def __iter__(self) -> Iterator[np.ndarray]:
        """uint8 [H, W, 3] frames; a decoding error is a UserError naming the frame."""
        av = _import_av()
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.FFmpegError as error:
            raise UserError(
                f"{self.path}: cannot decode frame {index} ({_first_line(error)})"
            ) from None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """H.264 (yuv420p) video written to a temporary file and renamed on `close`; frames of odd
    width or height are padded by one edge pixel (the encoder needs even sizes)."""

    def __init__(self, path: Path, fps: Fraction) -> None:
        av = _import_av()
        self.path = path
        self._temporary = temporary_beside(path, path.suffix)
        self._container = av.open(str(self._temporary), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=fps)
        self._stream.pix_fmt = "yuv420p"
        self._av = av
        self._size: tuple[int, int] | None = None

    @property
    def has_frames(self) -> bool:
        return self._size is not None

    def write(self, frame: np.ndarray) -> None:
        """uint8 [H, W, 3], the same size for every frame."""
        pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
        frame = np.pad(frame, pad, mode="edge") if any(p[1] for p in pad[:2]) else frame
        if self._size is None:
            self._size = frame.shape[:2]
            self._stream.height, self._stream.width = self._size
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and move the finished file into place."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        publish(self._temporary, self.path)

    def abort(self) -> None:
        self._container.close()
        self._temporary.unlink(missing_ok=True)
