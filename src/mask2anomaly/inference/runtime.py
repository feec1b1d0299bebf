"""How the network runs: numeric precision, the CPU memory allocator, and per-stage timings.

* `fp32` is exact float32 (TF32 off on GPUs): the official numbers.
* `bf16` on CPU runs a bfloat16 copy of the network (oneDNN's bf16 kernels, NHWC convolutions;
  the deformable sampling locations and sums stay float32); on GPUs it is autocast, as are
  `fp16` and `tf32` (TF32 matmuls and convolutions).
* `tune_allocator()` keeps glibc from handing every large tensor back to the kernel and faulting
  it in again on the next allocation, which on CPU costs as much as the arithmetic of the
  memory-bound layers.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ..config import Precision
from ..model.backbone import fold_frozen_batchnorm

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# glibc mallopt parameters: allocations up to 64 MiB come from the heap (not fresh mmap pages:
# larger ones are few and returned at once), and freed heap stays for the next tensors.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD, TRIM_THRESHOLD = 64 << 20, (1 << 31) - 1
_allocator_tuned = False


def tune_allocator() -> bool:
    """Tune glibc's malloc for large tensors, once per process; False where there is no glibc
    (macOS, musl) or it refuses. Freed heap memory then stays with the process until
    `release_memory` hands it back."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _allocator_tuned = bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _allocator_tuned


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc malloc_trim), e.g. between views: with
    the tuned allocator, memory freed in one pass would otherwise stay fragmented."""
    if _allocator_tuned:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def runs_bf16_copy(precision: Precision, device: torch.device) -> bool:
    return precision == "bf16" and device.type == "cpu"


def network_for(model: Any, precision: Precision, device: torch.device) -> Any:
    """The network to run: the model itself, or for bf16 on CPU a bfloat16 copy of it."""
    if runs_bf16_copy(precision, device) and isinstance(model, nn.Module):
        network = copy.deepcopy(model).eval()
        fold_frozen_batchnorm(network)  # in float32, before rounding the weights to bf16
        return network.to(torch.bfloat16).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextmanager
def precision_context(precision: Precision, device: torch.device) -> Iterator[None]:
    """fp32: exact float32 (TF32 off); tf32: TF32 on GPUs that have it; fp16 / bf16 on GPUs:
    autocast (the pixel decoder stays float32). bf16 on CPU needs nothing here: its network
    is a bf16 copy (`network_for`)."""
    with ExitStack() as stack:
        if device.type == "cuda":
            stack.callback(
                _set_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            )
            _set_tf32(precision != "fp32", precision != "fp32")
        if precision in AUTOCAST_DTYPES and not runs_bf16_copy(precision, device):
            stack.enter_context(torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]))
        yield


class StageTimer:
    """Seconds spent per named stage, accumulated over calls (`seconds`); the network's parts
    (backbone, pixel decoder, query decoder) are timed with forward hooks while `hooks` is
    active, which also calls `after_part()` when each part ends."""

    PARTS = ("backbone", "pixel_decoder", "decoder")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    @contextmanager
    def hooks(self, network: Any, after_part: Callable[[], None] = lambda: None) -> Iterator[None]:
        handles = []
        for name in self.PARTS:
            part = getattr(network, name, None)
            if isinstance(part, nn.Module):
                starts: list[float] = []
                handles.append(
                    part.register_forward_pre_hook(
                        lambda module, args, s=starts: s.append(time.perf_counter())
                    )
                )
                handles.append(part.register_forward_hook(
                    lambda module, args, out, s=starts, n=name: self._add(n, s, after_part)
                ))  # fmt: skip
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _add(self, name: str, starts: list[float], after_part: Callable[[], None]) -> None:
        self.seconds[name] += time.perf_counter() - starts.pop()
        after_part()
