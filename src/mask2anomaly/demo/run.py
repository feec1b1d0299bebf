"""The main job: the whole method on the built-in synthetic road world, in one call.

Generate a world (real Cityscapes / COCO / SMIYC / Road Anomaly formats) -> stage-1 training ->
stage-2 fine-tuning (AnomalyMix + mask contrastive loss) -> evaluation on the synthetic
RoadAnomaly21 and RoadObstacle21 sets (`smiyc` protocol: pixel and component metrics) and inlier
mIoU -> `report.md` with PNGs. It uses the same loaders, trainer and evaluator as real data.
Every stage resumes: an interrupted demo continues where it stopped.

Rows of the result table (paper Table 2's progression):
  * stage 1, Eq. 2, no refinement — the Mask2Former-style baseline (with GMA);
  * stage 2 (contrastive fine-tuning), no refinement;
  * stage 2 with the refinement mask — full Mask2Anomaly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .. import distributed
from ..data.benchmarks import Benchmark, load_benchmark
from ..data.synthetic import count_images, existing_world, write_world
from ..data.synthetic.writer import default_workers
from ..evaluation.driver import evaluate_semantic, score_dataset
from ..evaluation.maps import load_map
from ..fileio import OutputFolder, file_digest
from ..inference.predictor import Prediction, Predictor
from ..train.run import resolve_run
from ..train.step import seed_everything
from ..train.trainer import build_trainer
from .instances import evaluate_instances, instance_section
from .plan import PLANS, ROWS, TEST_SETS, DemoPlan, DemoRow
from .report import write_demo_report
from .scores import evaluate_scores, slim, stage_scores


def prepare_world(out: Path, plan: DemoPlan, seed: int, progress: bool) -> Path:
    """The demo's synthetic world in out/world, written unless a finished one is there."""
    world = out / "world"
    sizes: dict[str, Any] = dict(
        num_train=plan.num_train,
        num_val=plan.num_val,
        num_outliers=plan.num_outliers,
        num_test=plan.num_test,
    )
    if existing_world(world, seed=seed, **sizes) is not None:
        return world
    with tqdm(total=count_images(**sizes), desc="world", unit="img", disable=not progress) as bar:
        write_world(world, seed=seed, progress=bar.update, workers=default_workers(), **sizes)
    return world


def train_stage(
    out: Path,
    name: str,
    overrides: tuple[str, ...],
    data: Path,
    *,
    init: Path | None,
    outliers: Path | None,
    seed: int,
    device: str,
    progress: bool,
) -> Path:
    """Train one stage to the end (or resume it); returns its final checkpoint."""
    final = out / name / "model_final.pt"
    if final.is_file():
        return final
    ctx = distributed.setup(device)
    run, cfg, last = resolve_run(
        out / name,
        config="demo",
        overrides=[f"train.seed={seed}", *overrides],
        resume=True,
        init=init,
    )
    seed_everything(cfg.train.seed)
    trainer = build_trainer(
        cfg,
        data_root=data,
        run=run,
        last=last,
        ctx=ctx,
        init=init,
        outliers=outliers,
        progress=progress,
    )
    return trainer.fit()


class StagePredictions:
    """Predictions of the stage models in a run folder (`OUT/<stage>/model_final.pt`), each
    test image computed once per stage: its refined and unrefined anomaly maps come from one
    forward pass (with flip). Holds one stage's model and maps at a time, so score a stage's
    rows together."""

    def __init__(self, out: Path, device: str) -> None:
        self.out, self.device = out, device
        self.stage: str | None = None
        self.predictor: Predictor | None = None
        self.unflipped: Predictor | None = None  # the same model without the flipped pass
        self.memo: dict[bytes, Prediction] = {}

    def _load(self, stage: str) -> Predictor:
        if stage != self.stage:
            self.memo.clear()
            self.predictor = Predictor.from_checkpoint(
                self.out / stage / "model_final.pt",
                device=self.device,
                overrides=["scoring.refinement=official"],
                scores=stage_scores(stage),
            )
            self.unflipped = Predictor(
                self.predictor.model,
                scoring=self.predictor.scoring,
                inference=dataclasses.replace(self.predictor.inference, flip=False),
            )
            self.stage = stage
        assert self.predictor is not None
        return self.predictor

    def __call__(self, stage: str, image: np.ndarray) -> Prediction:
        predictor = self._load(stage)
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()
        if key not in self.memo:
            self.memo[key] = slim(predictor.predict(image))
        return self.memo[key]

    def anomaly(self, stage: str, refinement: str, image: np.ndarray) -> np.ndarray:
        """Anomaly map of `image` by the stage's model, refined unless `refinement` is none."""
        prediction = self(stage, image)
        refined = refinement != "none"
        return prediction.anomaly_score if refined else prediction.anomaly_score_unrefined

    def semantic(self, stage: str, image: np.ndarray) -> np.ndarray:
        """Semantic map of an image not scored for anomalies (val): the semantic map comes from
        the unflipped view alone, so it is predicted without the flipped forward pass."""
        self._load(stage)
        assert self.unflipped is not None
        return self.unflipped.predict(image).semantic


def eval_folder(out: Path, stage: str, refinement: str) -> OutputFolder:
    """The folder of one row's maps: made by the stage's checkpoint with that refinement; maps
    of an earlier checkpoint (a stage trained again) are replaced."""
    settings = {
        "weights_sha256": file_digest(out / stage / "model_final.pt"),
        "refinement": refinement,
    }
    folder = out / "eval" / f"{stage}-{refinement}"
    return OutputFolder(folder, command="demo", settings=settings, replace=True)


def zeroed_share(maps: Path, dataset: Benchmark) -> float:
    """Share of the labelled anomaly pixels whose stored score is exactly 0 (the refinement
    sets scores under confident inlier masks to 0; when more than 5 % of the anomaly pixels
    sit there, a 95 % TPR is only reached at threshold 0 and FPR95 is ~100 %)."""
    zero = anomaly = 0
    for i in dataset.labelled:
        label = dataset.load_label(i)
        score = load_map(next(maps.glob(f"{dataset.frames[i].frame_id}.*")))
        inside = label == 1
        zero += int(np.count_nonzero(score[inside] == 0))
        anomaly += int(np.count_nonzero(inside))
    return zero / max(anomaly, 1)


def _evaluate(out: Path, world: Path, device: str) -> list[DemoRow]:
    """One result per row: pixel + component metrics per test set, and inlier mIoU."""
    rows = []
    val = load_benchmark("cityscapes", world / "cityscapes", split="val")
    predictions = StagePredictions(out, device)
    miou: dict[str, float] = {}
    for title, stage, refinement in ROWS:
        results, zeroed = {}, {}
        with eval_folder(out, stage, refinement) as folder:
            for name, root in TEST_SETS:
                dataset = load_benchmark(name, world / root)
                result = score_dataset(
                    dataset,
                    partial(predictions.anomaly, stage, refinement),
                    folder,
                    protocols=("smiyc",),
                )
                assert result is not None  # compute_metrics is on
                results[name] = result
                zeroed[name] = zeroed_share(folder.root / "maps" / name, dataset)
        if stage not in miou:
            semantic = evaluate_semantic(val, partial(predictions.semantic, stage)).semantic
            miou[stage] = semantic.miou
        rows.append(DemoRow(title, stage, refinement, results, miou[stage], zeroed))
    evaluate_scores(out, world, predictions)  # from the stage-2 forwards just made
    return rows


@dataclasses.dataclass(frozen=True)
class DemoResult:
    rows: list[DemoRow]
    table: str  # Markdown, as in report.md
    seconds: float


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads (restored after). The float sums of convolutions and
    matrix products are split by thread, so another count changes the last bits of every step
    and, over a thousand training steps, the trained model: a fixed count keeps runs
    comparable across machines."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    world_seed: int = 0,
    threads: int | None = 2,
    device: str = "auto",
    progress: bool = True,
) -> DemoResult:
    """Run (or resume) the whole demo in `out`; returns its rows and table.

    Args:
        seed: training seed of both stages (data order, augmentation, AnomalyMix, point
            sampling, initial weights); a finished stage in `out` is kept whatever its seed.
        world_seed: the synthetic world's seed (the test sets stay the same across `seed`s).
        threads: intra-op threads (None: PyTorch's default); see `pinned_threads`.
    """
    out = Path(out)
    plan = PLANS["quick" if quick else "default"]
    started = time.perf_counter()
    with pinned_threads(threads):
        world = prepare_world(out, plan, world_seed, progress)
        data = world / "cityscapes"
        common: dict[str, Any] = dict(seed=seed, device=device, progress=progress)
        stage1 = train_stage(out, "stage1", plan.stage1, data, init=None, outliers=None, **common)
        train_stage(out, "stage2", plan.stage2, data, init=stage1, outliers=world / "coco",
                    **common)  # fmt: skip
        rows = _evaluate(out, world, device)
        instances = instance_section(*evaluate_instances(out, world, rows, device))
    seconds = time.perf_counter() - started
    environment = {
        "torch": torch.__version__,
        "CPU kernels": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads() if threads is None else threads,
        "seed": seed,
        "world seed": world_seed,
    }
    stages = {"Stage 1": plan.stage1, "Stage 2": plan.stage2}
    table = write_demo_report(
        out, world, rows, seconds=seconds, stages=stages, environment=environment, extra=instances
    )
    return DemoResult(rows, table, seconds)
