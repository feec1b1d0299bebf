"""Score-zoo benchmark: `mask2anomaly evaluate` of N frames with one score against all eight.

A synthetic world's RoadAnomaly21 frames (256x512, the demo's images) and a randomly initialised
model of the `demo` config (its speed does not depend on its weights) run through the CLI,
twice into fresh folders: `--score mask2anomaly`, then `--score` with every score. The network's
forward calls are counted (Mask2Anomaly.infer, one call per view), so the table shows that the
model runs once per frame (and view) whatever the number of scores. Times: the whole command,
and the part spent storing maps (model + post-processing + writing), the rest being metrics;
the best of alternating runs.

    python bench/scores.py [--frames 10] [--out DIR] [--no-flip] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from mask2anomaly.checkpoint import save_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import ScoreName, choices, load_config
from mask2anomaly.data.synthetic import write_world
from mask2anomaly.evaluation import driver
from mask2anomaly.model import Mask2Anomaly, build_model


def run(args: argparse.Namespace, scores: list[str], world: Path, weights: Path) -> dict:
    """One evaluate run: seconds in all (wall clock and this process's CPU time), seconds
    storing maps, forward calls and views."""
    out = args.out / f"eval-{len(scores)}"
    shutil.rmtree(out, ignore_errors=True)
    calls: list[int] = []
    infer, store = Mask2Anomaly.infer, driver.store_maps
    stored = [0.0]

    def counted(self, images):
        calls.append(len(images))
        return infer(self, images)

    def timed(*a, **k):
        start = time.perf_counter()
        store(*a, **k)
        stored[0] += time.perf_counter() - start

    Mask2Anomaly.infer, driver.store_maps = counted, timed  # type: ignore[method-assign]
    try:
        argv = ["evaluate", "--weights", str(weights), "--device", "cpu", "--dataset",
                "road-anomaly-21", "--root", str(world / "dataset_AnomalyTrack"), "--out",
                str(out), "--score", *scores]  # fmt: skip
        if args.no_flip:
            argv += ["--set", "inference.flip=False"]
        start, cpu = time.perf_counter(), time.process_time()
        assert main(argv) == 0
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        Mask2Anomaly.infer, driver.store_maps = infer, store  # type: ignore[method-assign]
    return {"seconds": seconds, "cpu": cpu, "maps": stored[0], "calls": len(calls),
            "views": sum(calls)}  # fmt: skip


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-scores"))
    parser.add_argument("--no-flip", action="store_true", help="one view per frame, not two")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    world, weights = args.out / "world", args.out / "demo.pt"
    write_world(world, num_train=0, num_val=0, num_outliers=0, num_test=args.frames)
    cfg = load_config("demo")
    torch.manual_seed(0)
    save_checkpoint(weights, build_model(cfg.model).eval(), cfg)
    run(args, ["mask2anomaly"], world, weights)  # warm-up, not counted
    runs: dict[str, list[dict]] = {"1 score": [], "8 scores": []}
    for _ in range(args.repeat):  # alternating, so that load on the machine hits both alike
        runs["1 score"].append(run(args, ["mask2anomaly"], world, weights))
        runs["8 scores"].append(run(args, list(choices(ScoreName)), world, weights))
    rows = {name: min(results, key=lambda r: r["seconds"]) for name, results in runs.items()}
    threads = torch.get_num_threads()
    print(f"\n{args.frames} frames, flip {'off' if args.no_flip else 'on'}, {threads} threads, "
          f"best of {args.repeat} alternating runs")  # fmt: skip
    print("| scores | forward calls | views | evaluate s | CPU s | storing maps s | metrics s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['calls']} | {r['views']} | {r['seconds']:.1f} | {r['cpu']:.1f} "
              f"| {r['maps']:.1f} | {r['seconds'] - r['maps']:.1f} |")  # fmt: skip
    one, eight = rows["1 score"], rows["8 scores"]
    ratios = [eight[key] / one[key] for key in ("seconds", "cpu", "maps")]
    print("ratio 8 / 1: evaluate {:.2f}x (CPU time {:.2f}x), storing maps {:.2f}x".format(*ratios))


if __name__ == "__main__":
    main_bench()
