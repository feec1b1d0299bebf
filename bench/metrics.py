"""Metric benchmark: time and peak memory of each protocol against pooled scikit-learn.

N generated frames of 1024x2048 (float16 maps, as `mask2anomaly evaluate` stores them; a void
band, anomaly blobs, every fifth frame anomaly-free). Each protocol streams the frames through
its accumulator; scikit-learn pools every valid pixel (float32) and calls roc_curve and
average_precision_score, as the Mask2Anomaly script does. Frame generation is not timed. Peak
memory is tracemalloc's peak above the start (numpy allocations are traced), so it counts what
each method holds, not the interpreter. smiyc and exact are run again at a second frame count to
show that their memory does not grow with the number of frames.

    python bench/metrics.py [--frames 100] [--small-frames 20] [--size 1024x2048] [--no-sklearn]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--small-frames", type=int, default=20, help="second count (memory)")
    parser.add_argument("--size", default="1024x2048", help="HxW")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn baseline")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
