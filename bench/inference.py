"""Inference benchmark: seconds per image and peak extra memory of the full predictor.

R-50 Mask2Anomaly (official sizes, random weights: speed does not depend on their values),
batch 1, at 512x1024 and 1024x2048, with and without horizontal-flip averaging; then one
deformable-attention encoder layer at 1024x2048 against the unchunked formulation (all levels'
samples stacked at once, as the official CPU fallback does) measured in the same run.

Each measurement runs in a fresh subprocess so that peak memory is its own, measured on the
first call: on CPU the peak resident set (VmHWM, reset before the call) minus the resident set
before it; on CUDA torch.cuda.max_memory_allocated minus the allocation before it. Times are
the best of the later calls.

    python bench/inference.py [--device cpu|cuda] [--threads 2] [--sizes 512x1024,1024x2048]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MIB = 2**20


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Extra peak memory of a block: CUDA allocator peak, or resident-set high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.before = _rss_bytes("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.before
        else:
            self.peak = _rss_bytes("VmHWM") - self.before
        self.seconds = time.perf_counter() - self.start


def worker_predictor(size: tuple[int, int], flip: bool, device: torch.device, repeats: int) -> dict:
    from mask2anomaly.config import InferenceConfig, ModelConfig
    from mask2anomaly.inference.predictor import Predictor
    from mask2anomaly.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig()).to(device)
    # no resize: the network sees the size in the table
    inference = InferenceConfig(resize=False, flip=flip)
    predictor = Predictor(model, inference=inference)
    image = np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    return _measure(lambda: predictor.predict(image), device, repeats)


def _measure(call, device: torch.device, repeats: int) -> dict:
    """Peak extra memory of the first (cold) call; best time of `repeats` later calls."""
    with PeakMemory(device) as cold:
        call()
    times = []
    for _ in range(repeats):
        with PeakMemory(device) as measured:
            call()
        times.append(measured.seconds)
    return {"seconds": min(times), "peak_bytes": cold.peak}


def stacked_reference(value, shapes, locations, weights):
    """Unchunked formulation: every level's samples for every query stacked, then weighted."""
    batch, _, heads, dim = value.shape
    queries, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    grids = 2 * locations - 1
    samples = []
    for level, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], 1), shapes)):
        v = v.flatten(2).transpose(1, 2).reshape(batch * heads, dim, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(
            F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(batch, heads * dim, queries).transpose(1, 2)


def worker_deformable(implementation: str, device: torch.device, repeats: int) -> dict:
    from mask2anomaly.model.deformable_attention import multi_scale_deformable_attention

    shapes = [(32, 64), (64, 128), (128, 256)]  # 1024x2048 input at strides 32, 16, 8
    total = sum(h * w for h, w in shapes)
    g = torch.Generator().manual_seed(0)
    value = torch.randn(1, total, 8, 32, generator=g).to(device)
    locations = torch.rand(1, total, 8, 3, 4, 2, generator=g).to(device)
    weights = torch.rand(1, total, 8, 3, 4, generator=g).softmax(-1).to(device)
    fn = multi_scale_deformable_attention if implementation == "ours" else stacked_reference
    with torch.no_grad():
        return _measure(lambda: fn(value, shapes, locations, weights), device, repeats)


def run_worker(args: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="512x1024,1024x2048")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker:
        kind, *rest = args.worker
        if kind == "predictor":
            h, w = (int(v) for v in rest[0].split("x"))
            result = worker_predictor((h, w), rest[1] == "flip", device, args.repeats)
        else:
            result = worker_deformable(rest[0], device, args.repeats)
        print(json.dumps(result))
        return
    common = [
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
    ]
    print(
        f"mask2anomaly inference benchmark: R-50, batch 1, device {args.device}, "
        f"{args.threads} threads, best of {args.repeats}\n"
    )
    print("| input | flip averaging | s / image | peak extra memory (MiB) |")
    print("|---|---|---|---|")
    for size in args.sizes.split(","):
        for flip in ("plain", "flip"):
            r = run_worker(["predictor", size, flip, *common])
            print(
                f"| {size} | {'on' if flip == 'flip' else 'off'} | {r['seconds']:.2f} | "
                f"{r['peak_bytes'] / MIB:.0f} |",
                flush=True,
            )
    ours = run_worker(["deformable", "ours", *common])
    reference = run_worker(["deformable", "stacked", *common])
    print(
        "\nOne deformable attention call at 1024x2048 (43,008 queries, 8 heads, 3 levels, "
        "4 points):\n"
    )
    print("| implementation | s | peak extra memory (MiB) | memory vs stacked | time vs stacked |")
    print("|---|---|---|---|---|")
    for name, r in (("ours (chunked, level by level)", ours), ("stacked reference", reference)):
        print(
            f"| {name} | {r['seconds']:.3f} | {r['peak_bytes'] / MIB:.0f} | "
            f"{r['peak_bytes'] / reference['peak_bytes']:.2f} | "
            f"{r['seconds'] / reference['seconds']:.2f} |"
        )


if __name__ == "__main__":
    main()
