"""Stored anomaly maps: one file per frame, written by `evaluate` and read from any method.

Formats: .npy (float16, written), .npz (compressed; the array `anomaly_score`, or its only
array), 16-bit .png (read as float32 0..65535) and SMIYC's .hdf5 (dataset "value"). A frame's
map is found under any of the names the official tools write: `<frame id>.<ext>`, the names its
benchmark declares (SMIYC `<fid>.hdf5`, Fishyscapes containers `<NNNN>_anomaly.npy`), and
`<image stem>_anomaly.npy` as `mask2anomaly predict` writes it, in the folder or below it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.layouts import Frame
from ..errors import UserError
from ..fileio import atomic_path

MAP_SUFFIXES = (".npy", ".npz", ".png", ".hdf5", ".h5")
NPZ_KEY = "anomaly_score"  # what `save_map` writes; preferred in archives with several arrays
HDF5_KEY = "value"  # SMIYC's dataset name (road_anomaly_benchmark/datasets/dataset_io.py)
PREDICT_SUFFIX = "_anomaly.npy"  # `mask2anomaly predict` output


def save_map(path: Path, score: np.ndarray) -> None:
    """Write a float16 map atomically: .npy or compressed .npz."""
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        if path.suffix == ".npz":
            np.savez_compressed(file, anomaly_score=score.astype(np.float16))  # NPZ_KEY
        else:
            np.save(file, score.astype(np.float16))


def load_map(path: Path) -> np.ndarray:
    """A stored anomaly map [H, W]: floats keep their dtype, integers become float32.

    Raises:
        UserError: one line naming the file: unreadable, several arrays without
            `anomaly_score`, not 2-D, complex or non-numeric values.
    """
    try:
        if path.suffix == ".npy":
            score = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            score = _load_npz(path)
        elif path.suffix == ".png":
            with Image.open(path) as image:
                score = np.asarray(image)
        else:
            score = _load_hdf5(path)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: cannot read anomaly map ({first})") from None
    return _checked(path, score)


def _load_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        if NPZ_KEY in archive.files:
            return archive[NPZ_KEY]
        if len(archive.files) != 1:
            raise UserError(
                f"{path}: {len(archive.files)} arrays ({', '.join(archive.files) or 'none'}); "
                f"name the map '{NPZ_KEY}' or keep one array"
            )
        return archive[archive.files[0]]


def _load_hdf5(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as file:
        if HDF5_KEY not in file:
            raise UserError(f"{path}: no dataset '{HDF5_KEY}' (the SMIYC map format)")
        return np.asarray(file[HDF5_KEY][()])


def _checked(path: Path, score: np.ndarray) -> np.ndarray:
    if score.ndim == 3 and 1 in (score.shape[0], score.shape[-1]):
        score = score.reshape(score.shape[:2] if score.shape[-1] == 1 else score.shape[1:])
    if score.ndim != 2:
        raise UserError(f"{path}: an anomaly map must be 2-D [H, W], got shape {score.shape}")
    if score.dtype.kind == "c":
        raise UserError(f"{path}: complex-valued anomaly map")
    if score.dtype.kind not in "fui":
        raise UserError(f"{path}: anomaly map of non-numeric type {score.dtype}")
    return score if score.dtype.kind == "f" else score.astype(np.float32)


class MapFolder:
    """The maps of one folder (searched recursively), looked up per frame by file name."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise UserError(f"{folder}: maps folder not found")
        self.folder = folder
        self.by_name: dict[str, list[Path]] = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):  # hidden: temporaries
                self.by_name.setdefault(path.name, []).append(path)

    @staticmethod
    def names(frame: Frame) -> list[str]:
        """File names a frame's map may have, in order of preference."""
        stems = dict.fromkeys((frame.frame_id, *frame.map_names))
        names = [stem + suffix for stem in stems for suffix in MAP_SUFFIXES]
        return list(dict.fromkeys(names + [frame.image_path.stem + PREDICT_SUFFIX]))

    def find(self, frame: Frame) -> Path:
        """The one map of `frame`; a one-line error when there is none or several."""
        names = self.names(frame)
        found = [path for name in names for path in self.by_name.get(name, ())]
        if len(found) == 1:
            return found[0]
        if not found:
            suffixes = "|".join(s.lstrip(".") for s in MAP_SUFFIXES)
            stems = dict.fromkeys((frame.frame_id, *frame.map_names))
            shown = ", ".join([f"{stem}.{{{suffixes}}}" for stem in stems] + names[-1:])
            raise UserError(
                f"{self.folder}: no anomaly map for frame {frame.frame_id} (looked for {shown})"
            )
        listed = ", ".join(str(p.relative_to(self.folder)) for p in found)
        raise UserError(f"{self.folder}: several maps for frame {frame.frame_id}: {listed}")
