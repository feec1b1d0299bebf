"""`mask2anomaly train` (stage 1) and `mask2anomaly finetune` (stage 2).

Both run one process or many under `torchrun --nproc_per_node N -m mask2anomaly ...` (DDP).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device, add_no_progress, add_overrides


def _common(parser: argparse.ArgumentParser, default_config: str) -> None:
    parser.add_argument(
        "--config",
        default=default_config,
        help=f"YAML file or packaged config name (default: {default_config})",
    )
    parser.add_argument(
        "--data", required=True, help="Cityscapes-format root (leftImg8bit/, gtFine/)"
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--seed", type=int, help="sets train.seed")
    add_device(parser)
    add_overrides(parser)
    add_no_progress(parser)
    parser.add_argument(
        "--check-replicas",
        action="store_true",
        help="under torchrun: verify after every step that all processes hold identical weights",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="stage 1: train on the inlier classes of a Cityscapes-format dataset",
        description="Stage 1 of Mask2Anomaly: mask-classification training on the 19 inlier "
        "classes, iteration-based, with exact resume and DDP under torchrun.",
    )
    _common(train, "cityscapes_r50")
    train.add_argument(
        "--backbone-weights",
        help="ResNet weights, torchvision names (e.g. Barlow Twins resnet50.pth) "
        "or detectron2 names (.pth/.pkl)",
    )
    train.set_defaults(func=run_train)
    finetune = subparsers.add_parser(
        "finetune",
        help="stage 2: AnomalyMix + mask contrastive fine-tuning",
        description="Stage 2 of Mask2Anomaly: paste outlier objects into inlier images and "
        "fine-tune with the mask contrastive loss, starting from a stage-1 checkpoint.",
    )
    _common(finetune, "finetune_anomalymix")
    finetune.add_argument("--init", required=True, help="stage-1 checkpoint (native format)")
    finetune.add_argument(
        "--outliers",
        required=True,
        help="outlier source: a COCO-format folder or the prepared layout "
        "(ood_annotations/*.png + images/)",
    )
    finetune.set_defaults(func=run_finetune)


def _overrides(args: argparse.Namespace) -> list[str]:
    seed = [] if args.seed is None else [f"train.seed={args.seed}"]
    return [*seed, *args.overrides]


def _run(args: argparse.Namespace, *, stage2: bool) -> int:
    from .. import distributed
    from ..fileio import FolderLock, ensure_folder
    from ..train.run import resolve_run
    from ..train.step import seed_everything
    from ..train.trainer import build_trainer

    ensure_folder(Path(args.out), "--out")
    ctx = distributed.setup(args.device)
    lock = FolderLock(Path(args.out), "train")
    try:
        if ctx.is_main:
            lock.acquire()
        run, cfg, last = resolve_run(
            args.out,
            config=args.config,
            overrides=_overrides(args),
            resume=args.resume,
            init=args.init if stage2 else None,
        )
        seed_everything(cfg.train.seed)
        trainer = build_trainer(
            cfg,
            data_root=args.data,
            run=run,
            last=last,
            ctx=ctx,
            init=args.init if stage2 else None,
            backbone_weights=None if stage2 else args.backbone_weights,
            outliers=args.outliers if stage2 else None,
            progress=not args.no_progress,
            check_replicas=args.check_replicas,
        )
        if last is not None and ctx.is_main:
            print(f"resuming {run.root} from iteration {trainer.iteration}")
        final = trainer.fit()
        if ctx.is_main:
            print(f"wrote {final}")
    finally:
        lock.release()
        distributed.teardown()
    return 0


def run_train(args: argparse.Namespace) -> int:
    return _run(args, stage2=False)


def run_finetune(args: argparse.Namespace) -> int:
    return _run(args, stage2=True)
