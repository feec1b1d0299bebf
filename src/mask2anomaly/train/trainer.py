"""The training loop of both stages: data, optimiser, checkpoints, exact resume, logging, DDP.

Stage 1 (`train`) learns the inlier classes; stage 2 (`finetune`) adds AnomalyMix and the mask
contrastive loss (spec official-implementation.md §2, §5); the run folder's files are described
in `run.py`. Resuming restores weights, optimiser,
schedule, AMP scaler, RNG states and the data position, so a resumed run ends with the same
weights as an uninterrupted one (deterministic CPU runs).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed
from ..checkpoint import (
    load_backbone_weights,
    load_exactly,
    read_checkpoint,
    save_checkpoint,
)
from ..config import Config, save_config
from ..data.anomaly_mix import build_anomaly_mix
from ..data.benchmarks import Benchmark, load_benchmark
from ..data.cityscapes import CityscapesSemantic
from ..data.transforms import build_train_transform
from ..data.types import collate
from ..errors import UserError
from ..evaluation.driver import evaluate_semantic
from ..fileio import json_safe, read_jsonl, write_text_atomic
from ..inference.predictor import Predictor
from ..inference.runtime import tune_allocator
from ..model import Mask2Anomaly, build_model
from .losses import SetCriterion, build_criterion
from .optim import build_optimizer, build_scheduler
from .outlier_loss import OutlierLoss, build_outlier_loss
from .run import RunPaths
from .step import SampleStream, step_seed, train_step


def _numpy_rng_state() -> list[Any]:
    """numpy's global RNG state with its key array as a tensor (weights_only-loadable)."""
    name, keys, position, has_gauss, cached = cast(tuple, np.random.get_state(legacy=True))
    return [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]


def _unwrap_worker_error(error: Exception) -> UserError | None:
    """A UserError raised in a DataLoader worker arrives wrapped in a multi-line message."""
    text = str(error)
    match = re.search(r"UserError: (.+?)\s*$", text)
    if isinstance(error, UserError) and "\n" not in text:
        return error
    return UserError(match.group(1)) if match else None


@dataclasses.dataclass
class Trainer:
    """State of one training run; `fit()` runs it to the end."""

    cfg: Config
    run: RunPaths
    ctx: distributed.Context
    model: Mask2Anomaly
    train_set: CityscapesSemantic
    val_set: Benchmark | None
    criterion: SetCriterion
    outlier_loss: OutlierLoss | None = None  # stage 2
    progress: bool = True
    check_replicas: bool = False

    def __post_init__(self) -> None:
        train = self.cfg.train
        self.model.to(self.ctx.device).train()
        if train.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.criterion.to(self.ctx.device)
        self.optimizer = build_optimizer(
            self.model,
            lr=train.lr,
            weight_decay=train.weight_decay,
            weight_decay_norm=train.weight_decay_norm,
            weight_decay_embed=train.weight_decay_embed,
            backbone_lr_multiplier=train.backbone_lr_multiplier,
        )
        self.scheduler = build_scheduler(
            self.optimizer, max_iters=train.max_iters, power=train.poly_power
        )
        use_amp = train.amp and self.ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_amp else None
        self.iteration = 0
        self.net: torch.nn.Module = self.model
        if self.ctx.world_size > 1:
            device_ids = [self.ctx.device] if self.ctx.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    # -- checkpoints ------------------------------------------------------------------------

    def save(self) -> Path:
        path = self.run.snapshot(self.iteration)
        if self.ctx.is_main:
            save_checkpoint(
                path,
                self.model,
                self.cfg,
                iteration=self.iteration,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=None if self.scaler is None else self.scaler.state_dict(),
                rng={"torch": torch.get_rng_state(), "numpy": _numpy_rng_state()},
            )
            write_text_atomic(self.run.pointer, path.name + "\n")
        distributed.barrier()
        return path

    def restore(self, path: Path) -> None:
        data = read_checkpoint(path)
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        if self.scaler is not None and data.get("scaler"):
            self.scaler.load_state_dict(data["scaler"])
        torch.set_rng_state(data["rng"]["torch"])
        name, keys, position, has_gauss, cached = data["rng"]["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        self.iteration = int(data["iteration"])

    # -- logging ----------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            with self.run.metrics.open("a") as f:
                f.write(json.dumps(json_safe(record)) + "\n")

    def trim_log(self) -> None:
        """Drop log lines written after the checkpoint a resumed run restarts from."""
        if not (self.ctx.is_main and self.run.metrics.is_file()):
            return
        kept = [  # a torn last line (a killed run) is dropped too
            record
            for record in read_jsonl(self.run.metrics)
            if isinstance(record.get("iteration"), int) and record["iteration"] <= self.iteration
        ]
        write_text_atomic(self.run.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    # -- the loop ---------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        if self.val_set is None:
            return {}
        result: dict[str, Any] = {}
        if self.ctx.is_main:
            self.model.eval()
            predictor = Predictor(
                self.model,
                scoring=dataclasses.replace(self.cfg.scoring, refinement="none"),
                inference=dataclasses.replace(self.cfg.inference, flip=False),
            )
            semantic = evaluate_semantic(
                self.val_set, lambda image: predictor.predict(image).semantic
            ).semantic
            result = {"val_miou": semantic.miou, "val_iou": list(semantic.iou)}
            self.model.train()
            self.log({"iteration": self.iteration, **result})
        distributed.barrier()
        return result

    def step_generator(self) -> torch.Generator:
        """The point-sampling generator of the next step, from (seed, iteration, rank) alone."""
        generator = torch.Generator(device=self.ctx.device)
        generator.manual_seed(step_seed(self.cfg.train.seed, self.iteration, self.ctx.rank))
        return generator

    def loader(self) -> DataLoader:
        stream = SampleStream(
            len(self.train_set),
            batch_size=self.cfg.train.batch_size,
            seed=self.cfg.train.seed,
            start_iteration=self.iteration,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
        )
        workers = self.cfg.data.num_workers
        return DataLoader(
            self.train_set,
            batch_sampler=stream,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.ctx.device.type == "cuda",
        )

    def fit(self) -> Path:
        train = self.cfg.train
        tune_allocator()  # steps free and reallocate MBs of tensors: reuse, not fresh pages
        batches = iter(self.loader())
        bar = tqdm(
            total=train.max_iters,
            initial=self.iteration,
            desc="train",
            unit="it",
            disable=not (self.progress and self.ctx.is_main),
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        while self.iteration < train.max_iters:
            try:
                batch = next(batches)
            except Exception as error:  # a worker's UserError arrives wrapped
                unwrapped = _unwrap_worker_error(error)
                if unwrapped is None:
                    raise
                raise unwrapped from None
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
            try:
                logged = train_step(
                    self.net,
                    self.criterion,
                    batch,
                    self.optimizer,
                    self.scheduler,
                    generator=self.step_generator(),
                    outlier_loss=self.outlier_loss,
                    scaler=self.scaler,
                    max_grad_norm=train.clip_grad_norm,
                    channels_last=train.channels_last,
                )
            except FloatingPointError as error:
                last = self.run.last_checkpoint()
                kept = f"last good checkpoint: {last}" if last else "no checkpoint written yet"
                raise UserError(f"iteration {self.iteration + 1}: {error}; {kept}") from None
            self.iteration += 1
            if self.check_replicas:
                assert_replicas_identical(self.model, self.iteration)
            bar.update(1)
            bar.set_postfix(loss=f"{logged['loss']:.3f}")
            if self.iteration % train.log_every == 0 or self.iteration == train.max_iters:
                logged = distributed.all_reduce_mean(logged, self.ctx.device)
                elapsed = time.perf_counter() - started
                self.log({"iteration": self.iteration, **logged, "lr": lr, "seconds": elapsed})
            if self.iteration % train.checkpoint_every == 0 and self.iteration < train.max_iters:
                self.save()
            if train.eval_every and self.iteration % train.eval_every == 0:
                self.validate()
        bar.close()
        self.save()
        if train.eval_every and self.iteration % train.eval_every:
            self.validate()
        if self.ctx.is_main:
            save_checkpoint(self.run.final, self.model, self.cfg, iteration=self.iteration)
        distributed.barrier()
        return self.run.final


def assert_replicas_identical(model: torch.nn.Module, iteration: int) -> None:
    """Every process holds bitwise the same trainable weights (a DDP sanity check)."""
    if not distributed.is_distributed():
        return
    flat = torch.cat([p.detach().flatten().double() for p in model.parameters() if p.requires_grad])
    summary = torch.stack([flat.sum(), (flat * torch.arange(len(flat), device=flat.device)).sum()])
    gathered = [torch.zeros_like(summary) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, summary)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"replicas differ after iteration {iteration}")


def init_weights(
    model: Mask2Anomaly, *, init: str | Path | None, backbone_weights: str | Path | None
) -> None:
    """Stage-2 initialisation from a native checkpoint, or backbone weights for stage 1; weights
    that do not fit the model, or hold NaN / inf, are a one-line error."""
    if init is not None:
        data = read_checkpoint(init)
        # BatchNorm's step counter has no place in a frozen (FrozenBatchNorm) backbone
        weights = {k: v for k, v in data["model"].items() if not k.endswith("num_batches_tracked")}
        load_exactly(model, weights, init)
    elif backbone_weights is not None:
        load_backbone_weights(model.backbone, backbone_weights)


def build_trainer(
    cfg: Config,
    *,
    data_root: str | Path,
    run: RunPaths,
    last: Path | None,
    ctx: distributed.Context,
    init: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    outliers: str | Path | None = None,
    progress: bool = True,
    check_replicas: bool = False,
) -> Trainer:
    """Everything a run needs, from its config: data (with AnomalyMix over `outliers` when
    `cfg.outlier.enabled`), model (from `init`, `backbone_weights` or the checkpoint `last` to
    resume), criterion and outlier loss. Seed first (`seed_everything`): the model's initial
    weights come from torch's global generator."""
    anomaly_mix = outlier_loss = None
    if cfg.outlier.enabled:
        if outliers is None:
            raise UserError("fine-tuning (outlier.enabled) needs an outlier source (--outliers)")
        anomaly_mix = build_anomaly_mix(cfg, outliers)
        outlier_loss = build_outlier_loss(cfg)
    if ctx.is_main:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.root / "config.yaml")
    distributed.barrier()
    train_set = CityscapesSemantic(
        data_root,
        "train",
        build_train_transform(cfg, anomaly_mix),
        outliers=cfg.outlier.enabled,
        cache=cfg.data.cache_images,
    )
    has_val = (Path(data_root) / "leftImg8bit" / "val").is_dir()
    val_set = load_benchmark("cityscapes", data_root, split="val") if has_val else None
    model = build_model(cfg.model)
    if last is None:
        init_weights(model, init=init, backbone_weights=backbone_weights)
    trainer = Trainer(
        cfg=cfg,
        run=run,
        ctx=ctx,
        model=model,
        train_set=train_set,
        val_set=val_set,
        criterion=build_criterion(cfg),
        outlier_loss=outlier_loss,
        progress=progress,
        check_replicas=check_replicas,
    )
    if last is not None:
        trainer.restore(last)
        trainer.trim_log()
    return trainer
