"""OoDIS submission files of anomaly instances (issue 17; Nekrasov et al., 2024, the instance
segmentation track of kumuji/anomaly-benchmark-suite: verify_submission.py,
scoring_program/preprocess_files.py, assets/expected_files.txt).

One flat folder per dataset (`fishyscapes`, `roadanomaly`, `roadobstacle` in the zip). Per image
`<stem>_instanceIds_pred.txt`, one line per instance `<mask png> <class> <confidence>` (single
spaces; the PNG beside it), and per instance `<stem>_instanceIds_<i>_1.png`, 8-bit, 255 on the
instance, at the image's size. The scorer relabels every instance as Cityscapes car (26); we
write 26 so that cityscapesScripts reads the files as they are. An image without instances
still needs one line (an empty file is refused): it points to an all-zero mask with confidence
0, which the evaluator skips. `<stem>` is the image's name, with Cityscapes' `_leftImg8bit`
turned into `_gtCoarse` (Fishyscapes Lost & Found names: `<city>_<seq>_<frame>_gtCoarse`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from ..fileio import STATE_DIR, save_image_atomic, write_text_atomic
from .instances import Instance

TXT_SUFFIX = "_instanceIds_pred.txt"
MASK_PATTERN = re.compile(r".*_instanceIds_\d+_1\.png$")  # the verifier's rule
CLASS_ID = 26  # the class the OoDIS scorer gives every instance (Cityscapes car)


def oodis_stem(name: str) -> str:
    """An image's output name (`predict`) -> its OoDIS stem (flat, no suffix)."""
    stem = Path(name).name
    return stem[: -len("_leftImg8bit")] + "_gtCoarse" if stem.endswith("_leftImg8bit") else stem


def oodis_files(stem: str) -> tuple[str, str]:
    """(txt name, name pattern of its masks with {index})."""
    return f"{stem}{TXT_SUFFIX}", f"{stem}_instanceIds_{{index}}_1.png"


def write_oodis_frame(
    folder: Path, stem: str, instances: list[Instance], size: tuple[int, int]
) -> list[Path]:
    """Write one image's masks, then its txt file (atomically, masks of an earlier run of this
    stem removed first); returns the files."""
    txt_name, mask_name = oodis_files(stem)
    for old in folder.glob(f"{glob_escape(stem)}_instanceIds_*_1.png"):
        old.unlink()
    paths, lines = [], []
    for index, instance in enumerate(instances or [None]):
        name = mask_name.format(index=index)
        pixels = np.zeros(size, np.uint8)
        if instance is not None:
            pixels[instance.rows, instance.cols][instance.crop] = 255
        save_image_atomic(folder / name, pixels)
        confidence = 0.0 if instance is None else instance.confidence
        lines.append(f"{name} {CLASS_ID} {confidence!r}\n")
        paths.append(folder / name)
    write_text_atomic(folder / txt_name, "".join(lines))
    return [*paths, folder / txt_name]


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def read_oodis_frame(txt: Path) -> list[tuple[np.ndarray, float]]:
    """(mask bool [H, W], confidence) of every line of an OoDIS txt file, as the scorer reads
    it (every non-zero pixel is the instance).

    Raises:
        UserError: a line that is not `<png> <class> <confidence>`, or a missing mask.
    """
    found = []
    for number, line in enumerate(txt.read_text().splitlines(), start=1):
        parts = line.split(" ")
        if len(parts) != 3 or not MASK_PATTERN.match(parts[0]):
            raise UserError(f"{txt}:{number}: expected '<..._instanceIds_N_1.png> CLASS SCORE'")
        try:
            with Image.open(txt.parent / parts[0]) as image:
                mask = np.asarray(image.convert("L")) != 0
            found.append((mask, float(parts[2])))
        except (OSError, ValueError) as error:
            raise UserError(f"{txt}:{number}: {error}") from None
    return found


def check_oodis_folder(folder: Path) -> None:
    """One-line error when `folder` holds anything but OoDIS files (and our bookkeeping): the
    folder is the submission."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.name == STATE_DIR:
            continue
        if path.is_dir() or not (path.name.endswith(TXT_SUFFIX) or MASK_PATTERN.match(path.name)):
            raise UserError(
                f"--out {folder}: an OoDIS folder holds only its submission files, but it "
                f"holds {path.name}; choose an empty --out"
            )
