"""One optimisation step and the deterministic sample stream.

Plain functions in DETR's shape; the loop around them (checkpoints, resume, logging) is in
`trainer.py`. Determinism: the stream of (item index, augmentation seed) keys and the point
sampling of the losses depend only on (seed, iteration, rank), so a resumed run replays exactly.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from ..data.types import Batch
from ..errors import UserError
from ..model import Mask2Anomaly, ModelOutput
from .losses import SetCriterion
from .optim import clip_grad_norm_full_model
from .outlier_loss import OutlierLoss


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation draws from
    torch's). Called by the commands that build models, never at import."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, iteration: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed for one (iteration, rank, stream), independent of everything else."""
    state = np.random.SeedSequence([seed, iteration, rank, stream]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class SampleStream(Sampler):
    """Per-process batches of dataset keys `(index, augmentation_seed)`, forever.

    The global stream visits the items in a fresh permutation every epoch; iteration `t` takes
    global samples [t * B, (t + 1) * B) and process `r` its slice of B / world_size of them.
    Starting at `start_iteration` replays exactly what an uninterrupted run would have seen.
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        seed: int,
        start_iteration: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.rank, self.world_size = start_iteration, rank, world_size
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch_cache = (epoch, rng.permutation(self.num_items))
        return self._epoch_cache[1]

    def keys(self, iteration: int) -> list[tuple[int, int]]:
        per_rank = self.batch_size // self.world_size
        first = iteration * self.batch_size + self.rank * per_rank
        keys = []
        for n in range(first, first + per_rank):
            index = int(self._permutation(n // self.num_items)[n % self.num_items])
            keys.append((index, step_seed(self.seed, n, 0, stream=1)))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        iteration = self.start
        while True:
            yield self.keys(iteration)
            iteration += 1


def train_step(
    model: nn.Module,
    criterion: SetCriterion,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    generator: torch.Generator | None = None,
    outlier_loss: OutlierLoss | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_grad_norm: float = 0.0,
    channels_last: bool = False,
) -> dict[str, float]:
    """Forward, the set criterion (and the stage-2 outlier loss), backward, clip, step.

    `generator` drives all point sampling of the criterion. Returns the logged (unreduced)
    scalars.

    Raises:
        FloatingPointError: when the total loss is not finite (nothing is updated).
    """
    device = next(p.device for p in model.parameters())
    net = cast(
        Mask2Anomaly,
        model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model,
    )
    batch = batch.to(device)
    images = net.preprocess(batch.images)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
        outputs = model(images)
    outputs = outputs_in_float32(outputs)
    terms = criterion(outputs, batch.targets, generator=generator)
    if outlier_loss is not None:
        terms.update(outlier_loss(outputs, batch.targets))
    total = torch.stack(list(terms.values())).sum()
    if not torch.isfinite(total):
        bad = sorted(k for k, v in terms.items() if not torch.isfinite(v))
        raise FloatingPointError(f"non-finite loss ({', '.join(bad)})")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    grad_norm = clip_grad_norm_full_model(optimizer, max_grad_norm) if max_grad_norm > 0 else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    logged = {"loss": float(total.detach())}
    for name in ("loss_ce", "loss_mask", "loss_dice", "loss_outlier"):
        if name in terms:
            logged[name] = float(terms[name].detach())
    if grad_norm is not None:
        logged["grad_norm"] = float(grad_norm)
    return logged


def outputs_in_float32(outputs: ModelOutput) -> ModelOutput:
    """Losses are computed in float32 also when the forward ran under autocast."""
    if outputs.class_logits.dtype == torch.float32:
        return outputs
    aux = tuple((c.float(), m.float()) for c, m in outputs.aux)
    return dataclasses.replace(
        outputs,
        class_logits=outputs.class_logits.float(),
        mask_logits=outputs.mask_logits.float(),
        aux=aux,
    )
