"""Inference benchmark: the predictor against a reference commit, measured in the same run.

The reference is the package at another commit (default: the one before the performance work),
checked out into a temporary git worktree. Both run the same R-50 Mask2Anomaly (official sizes,
random weights built once and loaded by each), on the same synthetic street image, with
`inference.resize=false` (the network sees the size in the table) and the official scoring, in
alternating subprocesses (reference, new, reference, new, ...), so machine load hits both alike.
Per row: best seconds per image of the later calls, peak extra memory of the first call (on CPU
the resident-set high-water mark, reset before it, minus the resident set before it), and the
largest difference of the anomaly maps from the reference's fp32 maps plus the share of pixels
whose semantic class agrees. Then the new code's seconds per stage (network parts by forward
hooks, post-processing by the predictor's own timer) at each size.

    python bench/inference.py [--reference REV] [--sizes 512x1024,1024x2048]
        [--precisions fp32,bf16,bf16+compile] [--flip both|on|off] [--rounds 2] [--threads 2]

A precision with `+compile` runs with `inference.compile=true`; "first call s" is the new code's
first image (model copy, compilation), not part of the timed calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REFERENCE = "1be254d5fa33d20700d561517be648b09d6b47a5"  # the commit before the speed work
ROOT = Path(__file__).resolve().parents[1]
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


# ----------------------------------------------------------------------------------------------
# worker: one configuration, in its own process, with the mask2anomaly on its PYTHONPATH


def worker(job: dict) -> dict:
    from PIL import Image

    from mask2anomaly.config import InferenceConfig, config_from_dict
    from mask2anomaly.inference.predictor import Predictor
    from mask2anomaly.model import build_model

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    cfg = config_from_dict({"model": job["model"]})
    model = build_model(cfg.model)
    model.load_state_dict(torch.load(job["weights"], weights_only=True))
    model = model.to(device).eval()
    precision, _, compiled = job["precision"].partition("+")  # e.g. bf16+compile
    options = {"compile": True} if compiled else {}
    inference = InferenceConfig(resize=False, flip=job["flip"], precision=precision, **options)
    image = np.asarray(Image.open(job["image"]).convert("RGB"))
    options = {"batch_size": job["batch_size"]} if job["batch_size"] else {}  # else its default
    with PeakMemory(device) as cold:
        predictor = Predictor(model, inference=inference, **options)
        prediction = predictor.predict(image)
    timer = getattr(predictor, "timer", None)
    if timer is not None:
        timer.seconds.clear()
    times = []
    for _ in range(job["repeats"]):
        with PeakMemory(device) as warm:
            predictor.predict(image)
        times.append(warm.seconds)
    np.save(job["out"] + "_anomaly.npy", prediction.anomaly_score)
    np.save(job["out"] + "_semantic.npy", prediction.semantic)
    stages = {k: v / job["repeats"] for k, v in timer.seconds.items()} if timer else {}
    return {"seconds": min(times), "first": cold.seconds, "peak_bytes": cold.peak, "stages": stages}


# ----------------------------------------------------------------------------------------------
# the parent: reference worktree, shared weights and image, alternating runs, table


def _worktree(rev: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), rev],
                   check=True, capture_output=True)  # fmt: skip
    return folder / "src"


def _shared_inputs(folder: Path, sizes: list[tuple[int, int]]) -> dict:
    from PIL import Image

    from mask2anomaly.config import ModelConfig, config_to_dict
    from mask2anomaly.data.synthetic.scene import render_scene
    from mask2anomaly.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig())
    torch.save(model.state_dict(), folder / "weights.pt")
    images = {}
    for height, width in sizes:
        scene = render_scene(np.random.default_rng(1), (height, width), anomalies="anywhere")
        path = folder / f"image_{height}x{width}.png"
        Image.fromarray(scene.image).save(path)
        images[(height, width)] = str(path)
    return {"weights": str(folder / "weights.pt"), "model": config_to_dict(ModelConfig()),
            "images": images}  # fmt: skip


def _run(src: Path, job: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(job["threads"])}
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode:
        raise RuntimeError(f"worker failed ({src}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _compare(reference: str, new: str) -> tuple[float, float]:
    a, b = np.load(reference + "_anomaly.npy"), np.load(new + "_anomaly.npy")
    sa, sb = np.load(reference + "_semantic.npy"), np.load(new + "_semantic.npy")
    return float(np.abs(a - b).max()), float((sa == sb).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=REFERENCE)
    parser.add_argument("--sizes", default="512x1024,1024x2048")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--flip", choices=("both", "on", "off"), default="on")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batch-size", type=int, help="views per forward, both sides (default: each its own)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    flips = {"both": (True, False), "on": (True,), "off": (False,)}[args.flip]
    with tempfile.TemporaryDirectory(prefix="m2a-bench-") as tmp:
        folder = Path(tmp)
        reference_src = _worktree(args.reference, folder / "reference")
        new_src = ROOT / "src"
        shared = _shared_inputs(folder, sizes)
        batch = args.batch_size or "default"
        print(f"reference {args.reference[:10]} vs working tree; R-50, random weights, "
              f"{args.threads} threads, {args.device}, batch {batch}, best of "
              f"{args.rounds} alternating runs x {args.repeats} calls\n")  # fmt: skip
        print(
            "| size | flip | precision | reference s | new s | speed-up | reference peak MiB "
            "| new peak MiB | peak ratio | max abs diff vs ref fp32 | semantic agreement "
            "| new first call s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        stages = {}
        for size in sizes:
            for flip in flips:
                base = {"weights": shared["weights"], "model": shared["model"],
                        "image": shared["images"][size], "flip": flip, "threads": args.threads,
                        "device": args.device, "repeats": args.repeats,
                        "batch_size": args.batch_size}  # fmt: skip
                ref_out = str(folder / f"ref_{size[0]}_{flip}_fp32")
                runs: dict[str, list[dict]] = {}
                for precision in args.precisions.split(","):
                    new_out = str(folder / f"new_{size[0]}_{flip}_{precision}")
                    for _ in range(args.rounds):
                        if precision == "fp32" or "ref" not in runs:
                            job = {**base, "precision": "fp32", "out": ref_out}
                            runs.setdefault("ref", []).append(_run(reference_src, job))
                        job = {**base, "precision": precision, "out": new_out}
                        runs.setdefault(precision, []).append(_run(new_src, job))
                    ref, new = runs["ref"], runs[precision]
                    ref_s = min(r["seconds"] for r in ref)
                    new_s = min(r["seconds"] for r in new)
                    ref_peak = min(r["peak_bytes"] for r in ref) / MIB
                    new_peak = min(r["peak_bytes"] for r in new) / MIB
                    diff, agree = _compare(ref_out, new_out)
                    print(f"| {size[0]}x{size[1]} | {'on' if flip else 'off'} | {precision} | "
                          f"{ref_s:.2f} | {new_s:.2f} | {ref_s / new_s:.2f}x | {ref_peak:.0f} | "
                          f"{new_peak:.0f} | {new_peak / ref_peak:.2f} | {diff:.1e} | "
                          f"{100 * agree:.2f} % | {min(r['first'] for r in new):.1f} |",
                          flush=True)  # fmt: skip
                    best = min(new, key=lambda r: r["seconds"])
                    stages[(size, flip, precision)] = best["stages"]
        print("\nNew code, seconds per image by stage (mean of the timed calls of its best run):\n")
        names = sorted({n for s in stages.values() for n in s})
        print("| size | flip | precision | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for (size, flip, precision), seconds in stages.items():
            cells = " | ".join(f"{seconds.get(n, 0.0):.2f}" for n in names)
            print(f"| {size[0]}x{size[1]} | {'on' if flip else 'off'} | {precision} | {cells} |")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(folder / "reference")], capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
