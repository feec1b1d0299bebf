"""cityscapesScripts' instance-level evaluator as OoDIS runs it: the reference that
`evaluation/instance_metrics.py` is checked against (tests, bench/metrics.py).

cityscapesscripts 2.3.0 predates NumPy 2.3: `run_reference` supplies `np.in1d` where NumPy no
longer has it and swaps the module's JSON writer for one that turns NumPy scalars into numbers
(the evaluator writes matches.json with `count_nonzero` results in it). OoDIS settings: minimum
region size 10, every prediction of class 26 (car), AP = allAp and AP50 = allAp50%.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CAR = 26


def _shimmed():
    if not hasattr(np, "in1d"):
        np.in1d = lambda a, b, *args, **kwargs: np.isin(np.asarray(a).ravel(), b, *args, **kwargs)
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as reference

    def write_json(data, path):
        with open(path, "w") as file:
            json.dump(data, file, default=lambda o: o.item() if isinstance(o, np.generic)
                      else o.__dict__, sort_keys=True, indent=4)  # fmt: skip

    reference.writeDict2JSON = write_json
    return reference


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)  # the evaluator writes matches.json into the working directory
    try:
        yield
    finally:
        os.chdir(previous)


def write_case(
    folder: Path,
    frames: Sequence[tuple[np.ndarray, Sequence[tuple[np.ndarray, float]]]],
) -> tuple[list[str], list[str]]:
    """Write frames (instanceIds uint16 [H, W], [(mask bool [H, W], confidence)]) as
    Cityscapes ground truth and prediction files; returns (prediction lists, GT files)."""
    gt_dir, pred_dir = folder / "gt", folder / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    predictions, truths = [], []
    for i, (ids, masks) in enumerate(frames):
        stem = f"synth_000000_{i:06d}"
        gt_path = gt_dir / f"{stem}_gtFine_instanceIds.png"
        Image.fromarray(ids.astype(np.uint16)).save(gt_path)
        lines = []
        for j, (mask, confidence) in enumerate(masks):
            name = f"{stem}_{j}_{CAR}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(pred_dir / name)
            lines.append(f"{name} {CAR} {confidence!r}\n")
        txt = pred_dir / f"{stem}_pred.txt"
        txt.write_text("".join(lines))
        predictions.append(str(txt.resolve()))
        truths.append(str(gt_path.resolve()))
    return predictions, truths


def run_reference(
    folder: Path, predictions: list[str], truths: list[str], prediction_dir: Path | None = None
) -> dict:
    """cityscapesScripts' evaluateImgLists with OoDIS's settings (predictions below
    `prediction_dir`, default folder/pred); returns its result dict (averages,
    resultApMatrix) and leaves the module's global arguments as they were."""
    reference = _shimmed()
    saved = copy.deepcopy(vars(reference.args))
    args = reference.args
    args.minRegionSizes = np.array([10, 10, 10])
    args.gtInstancesFile = str(folder / "gtInstances.json")
    Path(args.gtInstancesFile).unlink(missing_ok=True)  # a stale cache gives wrong numbers
    args.JSONOutput, args.quiet, args.colorized = False, True, False
    args.predictionPath = str((prediction_dir or folder / "pred").resolve())
    args.predictionWalk = None
    try:
        with _inside(folder):
            return reference.evaluateImgLists(predictions, truths, args)
    finally:
        vars(args).clear()
        vars(args).update(saved)


def car_row(result: dict) -> np.ndarray:
    """The reference's AP per IoU threshold of the one class (car) [10]."""
    return np.array(result["resultApMatrix"], np.float64)[0, result["instLabels"].index("car")]
