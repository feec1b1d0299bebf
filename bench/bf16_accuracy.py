"""Accuracy of bf16 inference on CPU against fp32 on the demo's synthetic test sets (issue 15).

Loads a finished demo's fine-tuned model (OUT/stage2/model_final.pt) twice, with
`inference.precision=fp32` and `=bf16`, predicts every frame of the demo's RoadAnomaly21 and
RoadObstacle21 test sets (OUT/world) with both (flip averaging and the refinement, as the demo
does), and prints per set: AuPRC and FPR95 (`smiyc` protocol, x100) of each precision and their
differences, the largest and the mean absolute difference of the anomaly maps, the share of
pixels whose semantic class agrees, and the seconds per frame of each precision.

    python bench/bf16_accuracy.py --demo mask2anomaly-demo [--threads 2] [--limit N]

Targets: AuPRC and FPR95 within 0.5 points of fp32; the semantic map agrees on >= 99.5 % of
the pixels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mask2anomaly import Predictor, load_benchmark, pixel_metrics
from mask2anomaly.demo.plan import TEST_SETS

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="mask2anomaly-demo", help="a finished demo folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="frames per set (0: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    demo = Path(args.demo)
    weights = demo / "stage2" / "model_final.pt"
    predictors = {
        p: Predictor.from_checkpoint(weights, overrides=[f"inference.precision={p}"])
        for p in PRECISIONS
    }
    header = ["set", "frames"] + [f"{p} {m}" for m in ("AuPRC", "FPR95") for p in PRECISIONS]
    header += ["d AuPRC", "d FPR95", "max abs d map", "mean abs d map", "semantic agree %"]
    header += [f"{p} s/frame" for p in PRECISIONS]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, folder in TEST_SETS:
        dataset = load_benchmark(name, demo / "world" / folder)
        count = min(len(dataset), args.limit or len(dataset))
        frames: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in PRECISIONS}
        seconds = dict.fromkeys(PRECISIONS, 0.0)
        agree = total = 0
        largest = summed = 0.0
        for i in range(count):
            image, label = dataset[i]
            made = {}
            for precision, predictor in predictors.items():
                start = time.perf_counter()
                made[precision] = predictor.predict(image)
                seconds[precision] += time.perf_counter() - start
                frames[precision].append((made[precision].anomaly_score, label))
            agree += int((made["fp32"].semantic == made["bf16"].semantic).sum())
            total += made["fp32"].semantic.size
            difference = np.abs(made["fp32"].anomaly_score - made["bf16"].anomaly_score)
            largest = max(largest, float(difference.max()))
            summed += float(difference.sum(dtype=np.float64))
        metrics = {p: pixel_metrics(frames[p]) for p in PRECISIONS}
        auprc = {p: 100 * metrics[p].auprc for p in PRECISIONS}
        fpr95 = {p: 100 * metrics[p].fpr95 for p in PRECISIONS}
        cells = [name, str(count)]
        cells += [f"{auprc[p]:.2f}" for p in PRECISIONS] + [f"{fpr95[p]:.2f}" for p in PRECISIONS]
        cells += [f"{auprc['bf16'] - auprc['fp32']:+.2f}", f"{fpr95['bf16'] - fpr95['fp32']:+.2f}"]
        cells += [f"{largest:.4f}", f"{summed / total:.5f}", f"{100 * agree / total:.3f}"]
        cells += [f"{seconds[p] / count:.3f}" for p in PRECISIONS]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
