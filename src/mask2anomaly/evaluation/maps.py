"""Stored anomaly maps: one file per frame, written by `evaluate` and read from any method.

Formats: .npy (float16, written), .npz (compressed), 16-bit .png (read as float32 0..65535) and
SMIYC's .hdf5 (dataset "value").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from ..fileio import atomic_path

MAP_SUFFIXES = (".npy", ".npz", ".png", ".hdf5", ".h5")


def save_map(path: Path, score: np.ndarray) -> None:
    """Write a float16 map atomically: .npy or compressed .npz."""
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        if path.suffix == ".npz":
            np.savez_compressed(file, anomaly_score=score.astype(np.float16))
        else:
            np.save(file, score.astype(np.float16))


def load_map(path: Path) -> np.ndarray:
    """A stored anomaly map [H, W]: floats keep their dtype, PNG integers become float32."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return archive[archive.files[0]]
        if path.suffix == ".png":
            with Image.open(path) as image:
                return np.asarray(image).astype(np.float32)
        return _load_hdf5(path)
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise UserError(f"{path}: cannot read anomaly map ({error})") from None


def _load_hdf5(path: Path) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise UserError(f"{path}: reading SMIYC .hdf5 maps needs h5py (pip install h5py)") from None
    with h5py.File(path, "r") as file:
        return file["value"][()]


def find_map(maps_dir: Path, frame_id: str) -> Path:
    """The map of a frame: <maps_dir>/<frame_id> + one of MAP_SUFFIXES."""
    for suffix in MAP_SUFFIXES:
        if (path := maps_dir / f"{frame_id}{suffix}").is_file():
            return path
    raise UserError(f"no anomaly map for frame {frame_id}: expected {maps_dir / frame_id}.npy")


def is_stored(maps_dir: Path, frame_id: str) -> bool:
    return any((maps_dir / f"{frame_id}{suffix}").is_file() for suffix in MAP_SUFFIXES)
