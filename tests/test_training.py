"""Stage-1 trainer: deterministic data stream, over-fitting, exact kill-and-resume, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cityscapes_fixture import write_cityscapes
from mask2anomaly.checkpoint import read_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.train.step import SampleStream

# Small and fast: 64x128 crops, no scale jitter, the tiny model.
FAST = [
    "--config",
    "tiny",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "data.crop_size=(64, 128)",
    "--set",
    "data.train_min_sizes=(64, 80)",
    "--set",
    "train.log_every=1",
    "--set",
    "train.eval_every=0",
]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    return write_cityscapes(tmp_path_factory.mktemp("cityscapes"), num_train=6, num_val=2)


def losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


def test_sample_stream_replays_and_partitions():
    full = SampleStream(5, batch_size=4, seed=3)
    keys = [full.keys(t) for t in range(6)]
    resumed = iter(SampleStream(5, batch_size=4, seed=3, start_iteration=2))
    assert [next(resumed) for _ in range(4)] == keys[2:]
    ranks = [SampleStream(5, batch_size=4, seed=3, rank=r, world_size=2) for r in range(2)]
    for t in range(6):
        assert ranks[0].keys(t) + ranks[1].keys(t) == keys[t]
    indices = [i for batch in keys[:5] for i, _ in batch]  # 20 samples = 4 epochs of 5 items
    for epoch in range(4):
        assert sorted(indices[epoch * 5 : (epoch + 1) * 5]) == list(range(5))
    seeds = [s for batch in keys for _, s in batch]
    assert len(set(seeds)) == len(seeds)
    assert SampleStream(5, batch_size=4, seed=4).keys(0) != keys[0]


def test_tiny_model_overfits_two_images(tmp_path):
    data = write_cityscapes(tmp_path / "two", num_train=2, num_val=1)
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            *FAST,
            "--set",
            "data.train_min_sizes=(64,)",
            "--set",
            "data.color_jitter=False",
            "--set",
            "data.flip=False",
            "--set",
            "train.max_iters=60",
            "--set",
            "train.lr=1e-3",
            "--set",
            "train.checkpoint_every=1000",
        ]
    )
    assert code == 0
    trajectory = losses(tmp_path / "run")
    assert len(trajectory) == 60
    assert min(trajectory[-5:]) < 0.2 * trajectory[0]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mask2anomaly", *args]


def test_killed_and_resumed_run_ends_with_identical_weights(cityscapes, tmp_path):
    common = [
        "train",
        "--data",
        str(cityscapes),
        *FAST,
        "--set",
        "train.max_iters=10",
        "--set",
        "train.checkpoint_every=2",
    ]
    subprocess.run(
        _cli(*common, "--out", str(tmp_path / "straight")), check=True, capture_output=True
    )
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _cli(*common, "--out", str(interrupted)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (interrupted / "checkpoints" / "iter_0000004.pt").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "model_final.pt").exists(), "the run finished before the kill"
    with (interrupted / "metrics.jsonl").open("a") as log:
        log.write('{"iteration": 7, "loss": 0.12')  # a line torn by the kill
    result = subprocess.run(
        _cli(*common, "--out", str(interrupted), "--resume"), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    a = read_checkpoint(tmp_path / "straight" / "model_final.pt")["model"]
    b = read_checkpoint(interrupted / "model_final.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "straight") == losses(interrupted)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_checkpoint(cityscapes, tmp_path, capsys):
    run = tmp_path / "nan"
    code = main(
        [
            "train",
            "--data",
            str(cityscapes),
            "--out",
            str(run),
            *FAST,
            "--set",
            "train.max_iters=6",
            "--set",
            "train.checkpoint_every=1",
            "--set",
            "train.lr=1e30",
            "--set",
            "train.clip_grad_norm=0.0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert re.search(r"iteration \d+: non-finite", err) and "last good checkpoint" in err
    last = run / "checkpoints" / (run / "checkpoints" / "last").read_text().strip()
    assert str(last) in err  # still on disk, loadable, and the iteration it names
    step = int(re.search(r"iteration (\d+):", err).group(1))
    assert read_checkpoint(last)["iteration"] == step - 1
    assert not (run / "model_final.pt").exists()


def test_bad_input_gives_one_line_errors(cityscapes, tmp_path, capsys):
    cases = [
        (["--data", str(tmp_path / "nowhere")], "data root does not exist"),
        (["--data", str(tmp_path)], "not a Cityscapes folder"),
        (["--data", str(cityscapes), "--set", "train.lr=fast"], "train.lr: expected a number"),
    ]
    for extra, message in cases:
        code = main(["train", "--out", str(tmp_path / "run"), *FAST, *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and "\n" not in err
    broken = write_cityscapes(tmp_path / "broken", num_train=2, num_val=0)
    label = next((broken / "gtFine" / "train").rglob("*labelTrainIds.png"))
    os.remove(label)
    assert main(["train", "--data", str(broken), "--out", str(tmp_path / "r2"), *FAST]) == 2
    assert f"{label}: missing label file" in capsys.readouterr().err


def test_existing_run_needs_resume(cityscapes, tmp_path, capsys):
    args = [
        "train",
        "--data",
        str(cityscapes),
        "--out",
        str(tmp_path / "run"),
        *FAST,
        "--set",
        "train.max_iters=2",
        "--set",
        "train.checkpoint_every=1",
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "--resume", "--set", "train.max_iters=3"]) == 0
    assert read_checkpoint(tmp_path / "run" / "model_final.pt")["iteration"] == 3


def test_channels_last_training_follows_the_same_trajectory(cityscapes, tmp_path):
    """NHWC convolutions change the memory layout, not the arithmetic: a few steps log the same
    losses and end with the same weights (up to float reassociation), also after a resume."""
    runs = {}
    for layout in ("false", "true"):
        out = tmp_path / f"nhwc-{layout}"
        args = ["train", "--data", str(cityscapes), "--out", str(out), *FAST]
        args += ["--set", "train.max_iters=4", "--set", "train.checkpoint_every=2"]
        assert main([*args, "--set", f"train.channels_last={layout}"]) == 0
        runs[layout] = out
    torch.testing.assert_close(losses(runs["true"]), losses(runs["false"]), rtol=1e-4, atol=0)
    flat = {
        layout: read_checkpoint(run / "model_final.pt")["model"] for layout, run in runs.items()
    }
    for key, value in flat["false"].items():
        torch.testing.assert_close(flat["true"][key], value, rtol=1e-4, atol=1e-5)


def test_stem_pools_nchw_training_maps_exactly_as_the_plain_max_pool():
    """Training (NCHW) pools in NHWC for speed: values and input gradients are exactly those of
    the plain NCHW max-pool, ties between zeros after the ReLU included."""
    import torch.nn.functional as F

    from mask2anomaly.model.backbone import Stem

    torch.manual_seed(0)
    stem = Stem(8, frozen=False)
    images = torch.randn(2, 3, 40, 52)
    grad = torch.randn(2, 8, 10, 13)
    fast_in, plain_in = images.clone().requires_grad_(), images.clone().requires_grad_()
    fast = stem(fast_in)
    features = F.relu(stem.conv1(plain_in))
    plain = F.max_pool2d(features, kernel_size=3, stride=2, padding=1)
    assert fast.is_contiguous() and torch.equal(fast, plain)
    assert (features == 0).float().mean() > 0.3  # many ties between zeros in the windows
    fast.backward(grad)
    plain.backward(grad)
    assert torch.equal(fast_in.grad, plain_in.grad)


def test_fpn_resize_in_nhwc_gives_the_nchw_values_and_gradients():
    """The pixel decoder resizes the encoder's top map from a canonical NHWC copy (its own
    strides take a slow path): forward values and gradients equal the NCHW resize exactly."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    tokens = torch.randn(2, 9 * 13, 16)  # the encoder's layout: [B, h*w, C] viewed as a map
    grad = torch.randn(2, 16, 36, 52)
    outputs, grads = [], []
    for canonical in (False, True):
        source = tokens.clone().requires_grad_()
        top = source.transpose(1, 2).view(2, 16, 9, 13)
        if canonical:
            top = top.clone(memory_format=torch.channels_last)
        else:
            top = top.contiguous()
        up = F.interpolate(top, size=(36, 52), mode="bilinear", align_corners=False)
        up.backward(grad)
        outputs.append(up.contiguous())
        grads.append(source.grad)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(grads[0], grads[1])
