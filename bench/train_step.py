"""Training-step benchmark: seconds per iteration and peak memory of forward (+ losses),
backward and the optimiser step, at batch 2 and crop 380x760 (the official crop), for the R-50
model with its frozen backbone and for the tiny CPU config.

Each phase's time is also given as a ratio to the model's plain forward pass (no losses, no
graph) measured in the same run. Peak memory is the extra resident memory of the phase on CPU
(VmHWM, reset before it) or the CUDA allocator's peak above the memory in use before it.

    python bench/train_step.py [--device cpu|cuda] [--threads 2] [--configs cityscapes_r50,tiny]
"""

from __future__ import annotations

import argparse

import torch

# the sibling benchmark's memory probe (a script's own folder is on sys.path)
from inference import MIB, PeakMemory

from mask2anomaly.config import load_config
from mask2anomaly.data.types import Target
from mask2anomaly.model import build_model
from mask2anomaly.train.losses import build_criterion
from mask2anomaly.train.optim import build_optimizer, clip_grad_norm_full_model


def synthetic_batch(
    crop: tuple[int, int],
    batch: int,
    num_classes: int,
    device: torch.device,
    generator: torch.Generator,
) -> tuple[list[torch.Tensor], list[Target]]:
    """Random images and semantic targets: 10 classes per image as horizontal bands."""
    images, targets = [], []
    h, w = crop
    for _ in range(batch):
        images.append((torch.rand(3, h, w, generator=generator) * 255).to(device))
        labels = torch.randperm(num_classes, generator=generator)[:10]
        band = torch.arange(h)[:, None].expand(h, w) * 10 // h
        masks = torch.stack([band == i for i in range(10)])
        targets.append(Target(labels.to(device), masks.to(device)))
    return images, targets


def measure(
    config: str, device: torch.device, repeats: int, crop: tuple[int, int], batch: int
) -> dict[str, float]:
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    generator = torch.Generator().manual_seed(0)
    images, targets = synthetic_batch(crop, batch, cfg.model.num_classes, device, generator)
    results: dict[str, list[float]] = {}

    def record(name: str, probe: PeakMemory) -> None:
        results.setdefault(f"{name}_s", []).append(probe.seconds)
        results.setdefault(f"{name}_mib", []).append(probe.peak / MIB)

    for _ in range(repeats + 1):  # the first round warms up
        with torch.no_grad(), PeakMemory(device) as probe:
            model(model.preprocess(images))
        record("inference_forward", probe)
        with PeakMemory(device) as probe:
            outputs = model(model.preprocess(images))
            total = criterion.total(criterion(outputs, targets))
        record("forward_and_losses", probe)
        with PeakMemory(device) as probe:
            optimizer.zero_grad(set_to_none=True)
            total.backward()
        record("backward", probe)
        with PeakMemory(device) as probe:
            clip_grad_norm_full_model(optimizer, cfg.train.clip_grad_norm)
            optimizer.step()
        record("optimizer", probe)
        del outputs, total
    return {k: (min(v[1:]) if k.endswith("_s") else max(v)) for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default="cityscapes_r50,tiny")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--crop", default="380x760")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    crop = tuple(int(v) for v in args.crop.split("x"))
    print(
        f"training step, batch {args.batch}, crop {args.crop}, device {args.device}, "
        f"{args.threads} threads, best of {args.repeats}\n"
    )
    print("| config | phase | s | x plain forward | peak extra memory (MiB) |")
    print("|---|---|---|---|---|")
    for config in args.configs.split(","):
        r = measure(config, device, args.repeats, crop, args.batch)
        reference = r["inference_forward_s"]
        step = r["forward_and_losses_s"] + r["backward_s"] + r["optimizer_s"]
        phases = ("inference_forward", "forward_and_losses", "backward", "optimizer")
        for phase in phases:
            print(
                f"| {config} | {phase.replace('_', ' ')} | {r[phase + '_s']:.3f} | "
                f"{r[phase + '_s'] / reference:.2f} | {r[phase + '_mib']:.0f} |"
            )
        print(f"| {config} | **whole step** | {step:.3f} | {step / reference:.2f} | |", flush=True)


if __name__ == "__main__":
    main()
