"""Reading dataset images and label maps, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError

READ_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for broken files


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB of any image file PIL reads (no EXIF rotation: labels must align)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except READ_ERRORS as error:
        raise UserError(f"{path}: cannot read image ({error})") from None


def read_label_map(path: Path, what: str = "label") -> np.ndarray:
    """[H, W] values of a single-channel label image (8 or 16 bit), as stored."""
    try:
        with Image.open(path) as image:
            image.load()
            if len(image.getbands()) != 1:
                raise UserError(f"{path}: {what} must be single-channel, got mode {image.mode}")
            return np.asarray(image)
    except READ_ERRORS as error:
        raise UserError(f"{path}: cannot read {what} ({error})") from None
