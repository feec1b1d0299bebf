"""A training run's folder: where its files go, and which config it runs with.

A run folder holds `config.yaml`, `metrics.jsonl`, `checkpoints/iter_*.pt` (full training state,
written atomically), a `checkpoints/last` pointer and finally `model_final.pt`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import read_checkpoint, reject_model_overrides
from ..config import Config, ConfigError, config_from_dict, load_config
from ..errors import UserError


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def pointer(self) -> Path:
        return self.checkpoints / "last"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def final(self) -> Path:
        return self.root / "model_final.pt"

    def snapshot(self, iteration: int) -> Path:
        return self.checkpoints / f"iter_{iteration:07d}.pt"

    def last_checkpoint(self) -> Path | None:
        if not self.pointer.is_file():
            return None
        path = self.checkpoints / self.pointer.read_text().strip()
        return path if path.is_file() else None


def resolve_run(
    out: str | Path,
    *,
    config: str | Path | None,
    overrides: Sequence[str],
    resume: bool,
    init: str | Path | None = None,
) -> tuple[RunPaths, Config, Path | None]:
    """The run folder, its config and the checkpoint to resume from (None: a fresh start).

    A fresh run reads `config` plus `overrides`; with `init` (stage 2) the model section comes
    from that checkpoint and the outlier stage is switched on. A resumed run keeps the config
    stored in its checkpoint and applies only `overrides` (e.g. a longer `train.max_iters`).
    """
    run = RunPaths(Path(out))
    last = run.last_checkpoint()
    if last is not None and not resume:
        raise UserError(f"{run.root}: already holds a run (pass --resume, or another --out)")
    if resume and last is not None:
        reject_model_overrides(overrides, last)
        cfg = _stored_config(last)
    else:
        cfg = load_config(config)
        if init is not None:  # stage 2: the stage-1 architecture, the outlier stage on
            outlier = dataclasses.replace(cfg.outlier, enabled=True)
            cfg = dataclasses.replace(cfg, model=_stored_config(init).model, outlier=outlier)
    try:
        return run, cfg.with_overrides(overrides), (last if resume else None)
    except ConfigError as error:
        raise UserError(f"--set: {error}") from None


def _stored_config(path: Path | str) -> Config:
    try:
        return config_from_dict(read_checkpoint(path)["config"])
    except ConfigError as error:
        raise UserError(f"{path}: {error}") from None
