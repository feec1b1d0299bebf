"""Training benchmark: the demo's stage-1 step against a reference commit, in the same run.

The reference is the package at another commit (default: the one before the performance work),
checked out into a temporary git worktree. Both train the `demo` config (the demo's stage-1
recipe: batch 8, 128x256 crops, in-memory data in the main process) from the same seed on the
same small synthetic world with `mask2anomaly train`, in alternating subprocesses, for
`--iterations` steps; seconds per iteration are measured from the run's own metrics.jsonl over
the steps after the first `--warmup`. The loss trajectories are compared step by step (largest
relative difference from the reference's). Extra settings for the new code only (e.g.
`--new-set train.bf16=true`) show an option's speed and loss against the same reference.

    python bench/train_step.py [--reference REV] [--iterations 60] [--rounds 2] [--threads 2]
        [--new-set train.bf16=true]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE = "1be254d5fa33d20700d561517be648b09d6b47a5"  # the commit before the speed work
ROOT = Path(__file__).resolve().parents[1]


def _worktree(rev: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), rev],
                   check=True, capture_output=True)  # fmt: skip
    return folder / "src"


def _train(src: Path, data: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    """One training run; returns its seconds per iteration after the warm-up and its losses."""
    overrides = [f"train.max_iters={args.iterations}", "train.log_every=1", "train.eval_every=0",
                 f"train.checkpoint_every={args.iterations + 1}", *extra]  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "mask2anomaly",
        "train",
        "--config",
        "demo",
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--seed",
        "0",
    ]
    command += [flag for o in overrides for flag in ("--set", o)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"training failed ({src}): {result.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = {r["iteration"]: r for r in records if "loss" in r}
    first, last = steps[args.warmup], steps[args.iterations]
    per_step = (last["seconds"] - first["seconds"]) / (args.iterations - args.warmup)
    return {"seconds": per_step, "losses": [steps[i]["loss"] for i in sorted(steps)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=REFERENCE)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-train", type=int, default=64, help="synthetic training images")
    parser.add_argument("--new-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for the new code only (repeatable)")  # fmt: skip
    args = parser.parse_args()
    from mask2anomaly.data.synthetic import write_world

    with tempfile.TemporaryDirectory(prefix="m2a-train-bench-") as tmp:
        folder = Path(tmp)
        reference_src = _worktree(args.reference, folder / "reference")
        world = folder / "world"
        write_world(world, num_train=args.num_train, num_val=0, num_outliers=0, num_test=0,
                    workers=args.threads)  # fmt: skip
        sides = {"reference": (reference_src, []), "new": (ROOT / "src", [])}
        if args.new_set:
            sides["new + " + " ".join(args.new_set)] = (ROOT / "src", args.new_set)
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            for name, (src, extra) in sides.items():
                out = folder / f"{name.replace(' ', '_')}_{round_}"
                runs[name].append(_train(src, world / "cityscapes", out, args, extra))
        reference = min(runs["reference"], key=lambda r: r["seconds"])
        print(f"demo config, stage-1 step (batch 8, 128x256 crops), {args.threads} threads, "
              f"{args.iterations} iterations (timed after {args.warmup}), best of "
              f"{args.rounds} alternating runs; reference {args.reference[:10]}\n")  # fmt: skip
        print(
            "| code | s / iteration | speed-up | largest relative loss difference "
            "(all steps) | final loss |"
        )
        print("|---|---|---|---|---|")
        for name, results in runs.items():
            best = min(results, key=lambda r: r["seconds"])
            diffs = [abs(a - b) / abs(b) for a, b in zip(best["losses"], reference["losses"])]
            speedup = reference["seconds"] / best["seconds"]
            print(f"| {name} | {best['seconds']:.3f} | {speedup:.2f}x | {max(diffs):.1e} | "
                  f"{best['losses'][-1]:.4f} |")  # fmt: skip
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(folder / "reference")], capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
