"""Optimisation of the official runs (spec official-implementation.md §2.2): AdamW parameter
groups, the poly learning-rate schedule and full-model gradient-norm clipping.

Parameter groups follow Mask2Former's `build_optimizer`: weight decay 0.05, none on parameters of
normalisation layers and of nn.Embedding modules, learning rate x 0.1 for the backbone (moot in
the official runs: the backbone is frozen), frozen parameters left out.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

# Normalisation layers whose parameters get `weight_decay_norm` (detectron2's list).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.05,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_lr_multiplier: float = 0.1,
    backbone_name: str = "backbone",
    no_decay_names: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """AdamW parameter groups, one per distinct (lr, weight decay).

    Args:
        model: the network; parameters with requires_grad False are skipped, shared ones counted
            once.
        lr: base learning rate.
        weight_decay: default decay (official 0.05).
        weight_decay_norm: decay of normalisation-layer parameters (official 0).
        weight_decay_embed: decay of nn.Embedding weights (official 0).
        backbone_lr_multiplier: lr factor for parameters under the `backbone_name` sub-module.
        backbone_name: name of the backbone sub-module in `model.named_modules()`.
        no_decay_names: extra parameter attribute names (e.g. "level_embed") that get no decay.
            Empty reproduces the official groups, where the pixel decoder's plain-Parameter
            `level_embed` is decayed.

    Returns:
        List of {"params": [...], "lr": float, "weight_decay": float} dicts.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group_lr = lr
            if module_name == backbone_name or module_name.startswith(backbone_name + "."):
                group_lr = lr * backbone_lr_multiplier
            decay = weight_decay
            if name in no_decay_names:
                decay = 0.0
            if isinstance(module, NORM_TYPES):
                decay = weight_decay_norm
            if isinstance(module, nn.Embedding):
                decay = weight_decay_embed
            groups.setdefault((group_lr, decay), []).append(param)
    return [
        {"params": params, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), params in groups.items()
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.05,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_lr_multiplier: float = 0.1,
    no_decay_names: tuple[str, ...] = (),
) -> torch.optim.AdamW:
    """AdamW (PyTorch default betas and eps, as the official runs) over `param_groups`."""
    groups = param_groups(
        model,
        lr=lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        weight_decay_embed=weight_decay_embed,
        backbone_lr_multiplier=backbone_lr_multiplier,
        no_decay_names=no_decay_names,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # foreach: one multi-tensor update per group (PyTorch picks it on GPUs only; on CPU it is
    # the same arithmetic in a handful of calls instead of ~10 per parameter tensor).
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


class PolySchedule:
    """LR factor (1 - iteration / max_iters) ** power, 0 from max_iters on (detectron2
    WarmupPolyLR without warmup). A class, not a lambda, so LambdaLR can save its state.

    Args:
        max_iters: length of the schedule in optimiser steps.
        power: exponent (official 0.9).
    """

    def __init__(self, max_iters: int, power: float = 0.9) -> None:
        if max_iters <= 0:
            raise ValueError(f"max_iters must be positive, got {max_iters}")
        self.max_iters = max_iters
        self.power = power

    def __call__(self, iteration: int) -> float:
        progress = min(max(iteration, 0), self.max_iters) / self.max_iters
        return math.pow(1.0 - progress, self.power)


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, max_iters: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly schedule on every group; call `.step()` once after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, PolySchedule(max_iters, power))


def clip_grad_norm_full_model(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients of all optimised parameters together to L2 norm `max_norm` (official
    "full_model" clipping, value 0.01). With AMP, unscale the gradients first.

    Args:
        optimizer: its parameter groups define "the full model".
        max_norm: clip threshold; <= 0 only measures the norm.

    Returns:
        The total gradient norm before clipping (a 0-d tensor).
    """
    params = list(itertools.chain.from_iterable(g["params"] for g in optimizer.param_groups))
    threshold = max_norm if max_norm > 0 else math.inf
    return torch.nn.utils.clip_grad_norm_(params, threshold)
