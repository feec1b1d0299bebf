"""Stage 2 end to end: a short fine-tune with AnomalyMix and the mask contrastive loss widens
the anomaly-score gap between pasted outlier pixels and inlier pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cityscapes_fixture import write_cityscapes
from mask2anomaly.checkpoint import load_model, read_checkpoint
from mask2anomaly.cli import main
from mask2anomaly.config import InferenceConfig, ScoringConfig
from mask2anomaly.data.anomaly_mix import AnomalyMix
from mask2anomaly.data.cityscapes import CityscapesSemantic
from mask2anomaly.data.outliers import open_outliers
from mask2anomaly.inference.predictor import Predictor

COMMON = [
    "--config",
    "tiny",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "data.crop_size=(64, 128)",
    "--set",
    "data.train_min_sizes=(64,)",
    "--set",
    "train.log_every=5",
    "--set",
    "train.eval_every=0",
    "--set",
    "train.checkpoint_every=1000",
    "--set",
    "train.lr=1e-3",
]


def write_outliers(root: Path, count: int = 6, seed: int = 0) -> Path:
    """Pre-made outlier layout: striped magenta/yellow discs (colours no inlier class has)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "ood_annotations").mkdir()
    for i in range(count):
        h, w = 40, 40
        y, x = np.mgrid[0:h, 0:w]
        disc = (y - h / 2) ** 2 + (x - w / 2) ** 2 < (rng.uniform(10, 18)) ** 2
        stripes = ((x + y) // 4) % 2 == 0
        image = np.where(stripes[..., None], [230, 40, 200], [240, 230, 30]).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i:012d}.png")
        Image.fromarray((disc * 254).astype(np.uint8)).save(
            root / "ood_annotations" / f"{i:012d}.png"
        )
    return root


def score_gap(checkpoint: Path, data: Path, outliers: Path) -> float:
    """Mean anomaly score on pasted outlier pixels minus on inlier pixels (val images)."""
    model = load_model(checkpoint)
    predictor = Predictor(
        model,
        scoring=ScoringConfig(refinement="none"),
        inference=InferenceConfig(resize=False, flip=False),
    )
    mix = AnomalyMix(open_outliers(outliers), probability=1.0)
    dataset = CityscapesSemantic(data, "val")
    rng = np.random.default_rng(123)
    gaps = []
    for i in range(len(dataset)):
        sample = mix(dataset.read(i), rng)
        score = predictor.predict(sample.image).anomaly_score
        outlier = sample.label == 254
        gaps.append(score[outlier].mean() - score[~outlier].mean())
    return float(np.mean(gaps))


def test_short_finetune_raises_outlier_scores(tmp_path):
    data = write_cityscapes(tmp_path / "data", num_train=4, num_val=3)
    outliers = write_outliers(tmp_path / "outliers")
    stage1 = tmp_path / "stage1"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(stage1),
                *COMMON,
                "--set",
                "train.max_iters=40",
            ]
        )
        == 0
    )
    stage2 = tmp_path / "stage2"
    assert (
        main(
            [
                "finetune",
                "--init",
                str(stage1 / "model_final.pt"),
                "--data",
                str(data),
                "--outliers",
                str(outliers),
                "--out",
                str(stage2),
                *COMMON,
                "--set",
                "train.max_iters=40",
                "--set",
                "outlier.anomaly_mix_prob=1.0",
                "--set",
                "train.batch_size=2",
            ]
        )
        == 0
    )
    cfg = read_checkpoint(stage2 / "model_final.pt")["config"]
    assert cfg["outlier"]["enabled"] and cfg["model"]["backbone"]["depth"] == 18
    before = score_gap(stage1 / "model_final.pt", data, outliers)
    after = score_gap(stage2 / "model_final.pt", data, outliers)
    assert after > before + 0.05, (before, after)


def test_stage2_can_freeze_a_backbone_trained_unfrozen(tmp_path):
    """Official fine-tuning freezes the backbone (FrozenBatchNorm, no step counter): a stage-1
    checkpoint trained with BatchNorm must load into it value for value."""
    import torch

    from mask2anomaly.checkpoint import save_checkpoint
    from mask2anomaly.config import load_config
    from mask2anomaly.model import build_model
    from mask2anomaly.train.trainer import init_weights

    torch.manual_seed(0)
    cfg = load_config("tiny", ["model.backbone.freeze=false"])
    trained = build_model(cfg.model)
    with torch.no_grad():
        for name, buffer in trained.named_buffers():
            if "running_" in name:
                buffer.uniform_(0.5, 1.5)  # stand-in for statistics learnt in stage 1
    save_checkpoint(tmp_path / "s1.pt", trained, cfg)
    frozen = build_model(load_config("tiny", ["model.backbone.freeze=true"]).model)
    init_weights(frozen, init=tmp_path / "s1.pt", backbone_weights=None)
    expected = {k: v for k, v in trained.state_dict().items() if "num_batches" not in k}
    assert frozen.state_dict().keys() == expected.keys()
    for key, value in frozen.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
