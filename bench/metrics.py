"""Metric benchmark: time and peak memory of each protocol against pooled scikit-learn.

N generated frames of 1024x2048 (float16 maps, as `mask2anomaly evaluate` stores them; a void
band, anomaly blobs, every fifth frame anomaly-free). Each protocol streams the frames through
its accumulator; scikit-learn pools every valid pixel (float32) and calls roc_curve and
average_precision_score, as the Mask2Anomaly script does. Frame generation is not timed. Peak
memory is tracemalloc's peak above the start (numpy allocations are traced), so it counts what
each method holds, not the interpreter. smiyc and exact are run again at a second frame count to
show that their memory does not grow with the number of frames.

Instance row (issue 17): our instance AP / AP50 against cityscapesScripts' instance evaluator
(OoDIS's settings, tests/cityscapes_instances.py) on the same --instance-frames generated frames:
an instanceIds PNG and a float16 map per frame, whose connected components (score > 0.5) are
the predictions, written beforehand as the reference's mask PNGs and txt files. Both sides read
their files inside the timing; both APs are printed (they agree to 1e-9).

    python bench/metrics.py [--frames 100] [--small-frames 20] [--size 1024x2048] [--no-sklearn]
                            [--instance-frames 20] [--no-instances]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from mask2anomaly.evaluation.pixel_metrics import PROTOCOLS, make_pixel_metrics

MIB = 2**20


def make_frame(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(score float16 [H, W], label uint8 [H, W]) for frame `index`, reproducible."""
    rng = np.random.default_rng(index)
    label = np.zeros((height, width), np.uint8)
    label[: height // 8] = 255  # sky-like void band
    if index % 5:
        for _ in range(3):
            y, x = rng.integers(height // 4, height - 64), rng.integers(0, width - 128)
            label[y : y + int(rng.integers(16, 64)), x : x + int(rng.integers(16, 128))] = 1
    score = rng.random((height, width), dtype=np.float32) * 0.7 + 0.3 * (label == 1)
    return score.astype(np.float16), label


def run_protocol(protocol: str, frames: int, size: tuple[int, int]) -> tuple[float, float]:
    """(seconds, peak MiB) of streaming `frames` frames through a protocol's accumulator."""
    tracemalloc.start()
    accumulator, seconds = make_pixel_metrics(protocol), 0.0
    for i in range(frames):
        score, label = make_frame(i, *size)
        start = time.perf_counter()
        accumulator.update(score, label)
        seconds += time.perf_counter() - start
        del score, label
    start = time.perf_counter()
    accumulator.compute()
    seconds += time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    return seconds, peak


def run_sklearn(frames: int, size: tuple[int, int]) -> tuple[float, float]:
    """(seconds, peak MiB) of pooled scikit-learn roc_curve + average_precision_score."""
    from sklearn.metrics import auc, average_precision_score, roc_curve

    tracemalloc.start()
    scores, labels, seconds = [], [], 0.0
    for i in range(frames):
        score, label = make_frame(i, *size)
        start = time.perf_counter()
        valid = label < 2
        scores.append(score[valid].astype(np.float32))
        labels.append(label[valid])
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    y_score, y_true = np.concatenate(scores), np.concatenate(labels)
    del scores, labels
    fpr, tpr, _ = roc_curve(y_true, y_score)
    auc(fpr, tpr)
    average_precision_score(y_true, y_score)
    seconds += time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    return seconds, peak


def make_instance_frame(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(instanceIds uint16 [H, W], score float16 [H, W]): a void band, 2..6 anomaly instances
    (some touching, some below 10 px), each frame's score bright on and near them plus noise
    blobs."""
    rng = np.random.default_rng(1000 + index)
    ids = np.full((height, width), 7, np.uint16)
    ids[: height // 8] = 0
    score = rng.random((height // 16, width // 16), dtype=np.float32) * 0.6
    score = np.kron(score, np.ones((16, 16), np.float32))  # noise blobs of 16 px
    for k in range(int(rng.integers(2, 7))):
        h, w = (3, 3) if k == 0 else rng.integers(20, 200, 2)
        y, x = rng.integers(height // 4, height - 200), rng.integers(0, width - 400)
        ids[y : y + h, x : x + w] = 26000 + k
        if k == 1:  # a touching neighbour
            ids[y : y + h, x + w : x + 2 * w] = 26000 + 10
        dy, dx = rng.integers(-6, 7, 2)
        score[max(0, y + dy) : y + dy + h, max(0, x + dx) : x + dx + w] = 0.6 + 0.4 * rng.random()
    return ids, score.astype(np.float16)


def run_instances(frames: int, size: tuple[int, int]) -> list[tuple[str, float, float, float]]:
    """[(name, seconds, peak MiB, AP)] of ours and of cityscapesScripts on the same frames."""
    import importlib.util
    import tempfile
    from pathlib import Path

    from mask2anomaly.data.io import read_label_map
    from mask2anomaly.evaluation.instance_metrics import InstanceAP, InstanceTruth
    from mask2anomaly.evaluation.instances import component_instances

    path = Path(__file__).resolve().parents[1] / "tests" / "cityscapes_instances.py"
    spec = importlib.util.spec_from_file_location("cityscapes_instances", path)
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        cases = []
        for i in range(frames):  # not timed: the inputs both sides read
            ids, score = make_instance_frame(i, *size)
            np.save(root / f"{i}.npy", score)
            found = component_instances(score.astype(np.float32), 0.5)
            cases.append((ids, [(p.mask, p.confidence) for p in found]))
        predictions, truths = reference.write_case(root, cases)
        del cases
        tracemalloc.start()
        start = time.perf_counter()
        metric = InstanceAP()
        for i, truth in enumerate(truths):
            score = np.load(root / f"{i}.npy").astype(np.float32)
            ids = read_label_map(Path(truth))
            metric.update(InstanceTruth.from_instance_ids(ids), component_instances(score, 0.5))
        ours = metric.compute().ap
        rows = [("ours", time.perf_counter() - start, tracemalloc.get_traced_memory()[1] / MIB,
                 ours)]  # fmt: skip
        tracemalloc.stop()
        tracemalloc.start()
        start = time.perf_counter()
        result = reference.run_reference(root, predictions, truths)
        rows.append(
            (
                "cityscapesscripts",
                time.perf_counter() - start,
                tracemalloc.get_traced_memory()[1] / MIB,
                result["averages"]["allAp"],
            )
        )
        tracemalloc.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--small-frames", type=int, default=20, help="second count (memory)")
    parser.add_argument("--size", default="1024x2048", help="HxW")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn baseline")
    parser.add_argument("--instance-frames", type=int, default=20)
    parser.add_argument("--no-instances", action="store_true", help="skip the instance row")
    parser.add_argument("--only-instances", action="store_true", help="only the instance row")
    args = parser.parse_args()
    if not args.no_instances:
        instance_row(args)
    if args.only_instances:
        return
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"{args.frames} frames of {size[0]}x{size[1]} (float16 maps)")
    base = None if args.no_sklearn else run_sklearn(args.frames, size)
    rows = [("sklearn (pooled)", *base)] if base else []
    rows += [(protocol, *run_protocol(protocol, args.frames, size)) for protocol in PROTOCOLS]
    print("| method | time (s) | speed-up vs sklearn | peak memory (MiB) | memory vs sklearn |")
    print("|---|---|---|---|---|")
    for name, seconds, peak in rows:
        ratio = f"{base[0] / seconds:.1f}x" if base else "-"
        memory = f"{peak / base[1]:.3f}" if base else "-"
        print(f"| {name} | {seconds:.2f} | {ratio} | {peak:.1f} | {memory} |")
    print(f"\npeak memory (MiB) at {args.small_frames} and {args.frames} frames:")
    for protocol in ("smiyc", "exact"):
        small = run_protocol(protocol, args.small_frames, size)[1]
        large = next(peak for name, _, peak in rows if name == protocol)
        print(f"  {protocol}: {small:.1f} -> {large:.1f}")


def instance_row(args: argparse.Namespace) -> None:
    size = tuple(int(v) for v in args.size.split("x"))
    (_, ours, ours_peak, ours_ap), (_, ref, ref_peak, ref_ap) = run_instances(
        args.instance_frames, size
    )
    print(f"instance AP, {args.instance_frames} frames of {size[0]}x{size[1]}: ours "
          f"{ours_ap:.12f}, cityscapesscripts {ref_ap:.12f}")  # fmt: skip
    print("| method | time (s) | speed-up | peak memory (MiB) | memory ratio |")
    print("|---|---|---|---|---|")
    print(f"| cityscapesscripts | {ref:.2f} | 1x | {ref_peak:.1f} | 1 |")
    print(f"| instance AP (ours) | {ours:.2f} | {ref / ours:.1f}x | {ours_peak:.1f} | "
          f"{ours_peak / ref_peak:.3f} |\n")  # fmt: skip


if __name__ == "__main__":
    main()
