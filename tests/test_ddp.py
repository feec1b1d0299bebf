"""Two CPU processes under torchrun (gloo): replicas stay identical, the loss falls as in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cityscapes_fixture import write_cityscapes

ARGS = ["--config", "tiny", "--device", "cpu", "--no-progress",
        "--set", "data.crop_size=(64, 128)", "--set", "data.train_min_sizes=(64,)",
        "--set", "data.color_jitter=False", "--set", "data.flip=False",
        "--set", "train.batch_size=2", "--set", "train.max_iters=25", "--set", "train.lr=1e-3",
        "--set", "train.log_every=1", "--set", "train.eval_every=0",
        "--set", "train.checkpoint_every=1000"]  # fmt: skip


def mean_losses(run) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


def test_two_processes_keep_identical_replicas_and_learn(tmp_path):
    data = write_cityscapes(tmp_path / "data", num_train=4, num_val=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "mask2anomaly", "train", "--data", str(data), "--out", str(tmp_path / "ddp"),
         "--check-replicas", *ARGS],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "mask2anomaly", "train", "--data", str(data),
         "--out", str(tmp_path / "single"), *ARGS],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_losses, single_losses = mean_losses(tmp_path / "ddp"), mean_losses(tmp_path / "single")
    assert len(ddp_losses) == len(single_losses) == 25
    # the same global batches: the first loss agrees closely, both fall by the same order
    assert abs(ddp_losses[0] - single_losses[0]) < 0.05 * single_losses[0]
    ddp_drop = 1 - min(ddp_losses[-3:]) / ddp_losses[0]
    single_drop = 1 - min(single_losses[-3:]) / single_losses[0]
    assert ddp_drop > 0.5 and abs(ddp_drop - single_drop) < 0.15
