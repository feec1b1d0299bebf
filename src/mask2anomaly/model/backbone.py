"""ResNet backbone with the detectron2 layout (paper §4, spec official-implementation.md §3).

Depth 50 uses bottleneck blocks with the stride on the 3x3 conv (STRIDE_IN_1X1 False); depths 18
and 34 use basic blocks for cheap CPU runs. Module names follow detectron2 (`stem.conv1`,
`res2.0.conv1`, `.norm`, `.shortcut`) so official backbone weights load without renaming.
Returns `{"res2": ..., "res5": ...}` at strides 4, 8, 16, 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
BN_EPS = 1e-5


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, *, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


class ConvNorm(nn.Conv2d):
    """Bias-free conv followed by a norm held as `.norm` (detectron2's Conv2d(norm=...))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        norm: nn.Module,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        )
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


def fold_frozen_batchnorm(module: nn.Module) -> None:
    """Merge every FrozenBatchNorm2d into the convolution before it, in place (inference
    copies: one pass fewer per convolution; equal up to float rounding)."""
    for conv in module.modules():
        if isinstance(conv, ConvNorm) and isinstance(conv.norm, FrozenBatchNorm2d):
            norm = conv.norm
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            with torch.no_grad():
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(norm.bias - norm.running_mean * scale, requires_grad=False)
            conv.norm = nn.Identity()


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, frozen: bool
) -> ConvNorm:
    norm = FrozenBatchNorm2d(out_channels) if frozen else nn.BatchNorm2d(out_channels)
    return ConvNorm(in_channels, out_channels, kernel_size, stride=stride, norm=norm)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, *, stride: int, frozen: bool) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv_bn(in_channels, width, 3, stride=stride, frozen=frozen)
        self.conv2 = _conv_bn(width, out_channels, 3, frozen=frozen)
        self.shortcut = (
            _conv_bn(in_channels, out_channels, 1, stride=stride, frozen=frozen)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x), inplace=True))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out.add_(identity), inplace=True)


class BottleneckBlock(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, *, stride: int, frozen: bool) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv_bn(in_channels, width, 1, frozen=frozen)
        self.conv2 = _conv_bn(width, width, 3, stride=stride, frozen=frozen)  # stride on 3x3
        self.conv3 = _conv_bn(width, out_channels, 1, frozen=frozen)
        self.shortcut = (
            _conv_bn(in_channels, out_channels, 1, stride=stride, frozen=frozen)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        out = F.relu(self.conv2(out), inplace=True)
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out.add_(identity), inplace=True)


class Stem(nn.Module):
    def __init__(self, out_channels: int, *, frozen: bool) -> None:
        super().__init__()
        self.conv1 = _conv_bn(3, out_channels, 7, stride=2, frozen=frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x), inplace=True)
        if x.is_contiguous():  # NCHW (training): the NHWC kernel is ~3x faster, same result
            x = x.contiguous(memory_format=torch.channels_last)
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=1).contiguous()
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """ResNet returning res2..res5; `channels` and `strides` describe the outputs.

    Args:
        depth: 18, 34 (basic blocks) or 50 (bottlenecks).
        base_width: stem channels and first-stage width (64 for the standard networks).
        freeze: FrozenBatchNorm everywhere and no gradients (the official setting).
    """

    def __init__(self, *, depth: int, base_width: int = 64, freeze: bool = True) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        block = BottleneckBlock if depth >= 50 else BasicBlock
        self.stem = Stem(base_width, frozen=freeze)
        in_channels = base_width
        self.channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
            name, width = f"res{index + 2}", base_width * 2**index
            blocks = []
            for b in range(num_blocks):
                stride = 2 if b == 0 and index > 0 else 1
                blocks.append(block(in_channels, width, stride=stride, frozen=freeze))
                in_channels = width * block.expansion
            self.add_module(name, nn.Sequential(*blocks))
            self.channels[name] = in_channels
            self.strides[name] = 2 ** (index + 2)
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, 3, H, W] normalised image -> {"res2": [B, C2, H/4, W/4], ..., "res5": ...}."""
        features = {}
        if not torch.is_grad_enabled():  # inference: NHWC convolutions, faster with oneDNN
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        for name in self.channels:
            x = getattr(self, name)(x)
            features[name] = x
        return features
