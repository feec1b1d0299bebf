"""The paper's ablations (Table 3) on the synthetic road world, as one table.

Variants: the decoder's cross-attention (cross / masked / global, paper Table 3c), each scored
after stage 1, after contrastive fine-tuning, and with the refinement mask; then, for global
attention, sweeps of the contrastive margin (Table 3a) and of the outlier probability of
AnomalyMix (Table 3e), and the official code's form of the contrastive loss (outlier.loss=margin,
m = 1) in place of the demo's margin on the anomaly score (see OutlierLoss). Every model trains
with the demo's settings on the same world, so runs are comparable with each other (not with the
paper's Cityscapes numbers). Results go to OUT/ablation.md, a row as soon as it is known. Long:
each variant is a full stage 1 (~12 min on 2 cores) or stage 2 (~2 min); about 45 min after a
finished demo.

    python bench/ablation.py --out ablation [--quick] [--device auto]

With --out pointing at a finished `mask2anomaly demo` folder (same --quick choice), the demo's
world and its two stages are the global-attention / official-setting runs and are not redone.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from mask2anomaly.config import load_config
from mask2anomaly.data.benchmarks import load_benchmark
from mask2anomaly.demo.plan import FINETUNE, PLANS, TEST_SETS
from mask2anomaly.demo.run import StagePredictions, eval_folder, prepare_world, train_stage
from mask2anomaly.evaluation.driver import score_dataset
from mask2anomaly.fileio import write_text_atomic

ATTENTIONS = ("cross", "masked", "global")
MARGINS = (0.5, 0.75, 1.0)
OUTLIER_PROBS = (0.1, 0.2, 0.5)
_DEMO_STAGE2 = load_config("demo", FINETUNE).outlier  # what the demo's stage 2 uses
DEFAULT_MARGIN, DEFAULT_PROB = _DEMO_STAGE2.margin, _DEMO_STAGE2.anomaly_mix_prob


def scores(
    out: Path, world: Path, predictions: StagePredictions, stage: str, refinement: str
) -> list[str]:
    """AuPRC / FPR95 (x100) on each synthetic test set of OUT/<stage>'s model."""
    cells = []
    with eval_folder(out, stage, refinement) as folder:  # the demo's maps, where it made them
        for name, root in TEST_SETS:
            result = score_dataset(
                load_benchmark(name, world / root),
                partial(predictions.anomaly, stage, refinement),
                folder,
                protocols=("smiyc",),
            )
            assert result is not None
            pixel = result.pixel["smiyc"]
            cells += [f"{100 * pixel.auprc:.1f}", f"{100 * pixel.fpr95:.1f}"]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ablation")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out, plan = Path(args.out), PLANS["quick" if args.quick else "default"]
    world = prepare_world(out, plan, seed=0, progress=True)
    data, coco = world / "cityscapes", world / "coco"
    header = ["variant"] + [f"{n} {m}" for n, _ in TEST_SETS for m in ("AuPRC", "FPR95")]
    rows = []
    predictions = StagePredictions(out, args.device)

    def score(checkpoint: Path, refinement: str) -> list[str]:
        return scores(out, world, predictions, checkpoint.parent.name, refinement)

    def stage2(name: str, init: Path, extra: tuple[str, ...]) -> Path:
        if not extra and init == out / "stage1" / "model_final.pt":
            name = "stage2"  # the demo's own stage 2: the official fine-tuning settings
        return train_stage(
            out,
            name,
            plan.stage2 + extra,
            data,
            init=init,
            outliers=coco,
            seed=0,
            device=args.device,
            progress=True,
        )

    def add(row: list[str]) -> None:
        """Append a row and rewrite the table, so an interrupted run keeps what it finished."""
        rows.append(row)
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        write_text_atomic(out / "ablation.md", "\n".join(lines) + "\n")
        if len(rows) == 1:
            print(lines[0], lines[1], sep="\n")
        print(lines[-1], flush=True)

    def stage1(attention: str) -> Path:
        return train_stage(
            out,
            "stage1" if attention == "global" else f"s1-{attention}",  # global: the demo's
            plan.stage1 + (f"model.decoder.cross_attention={attention}",),
            data,
            init=None,
            outliers=None,
            seed=0,
            device=args.device,
            progress=True,
        )

    def attention_rows(attention: str) -> None:
        s1 = stage1(attention)
        s2 = stage2(f"s2-{attention}", s1, ())
        add([f"{attention}: stage 1"] + score(s1, "none"))
        add([f"{attention}: + contrastive"] + score(s2, "none"))
        add([f"{attention}: + refinement"] + score(s2, "official"))

    # Cheapest first (the global-attention stage 1 is the demo's; the sweeps are stage 2 only),
    # the other attentions' stage-1 trainings last.
    attention_rows("global")
    s1 = out / "stage1" / "model_final.pt"
    # The official code's form of Eq. 8 (on l_N, m = 1), as in the official fine-tuning.
    s2 = stage2("s2-official-loss", s1, ("outlier.loss=margin", "outlier.margin=1.0"))
    add(["official loss form (m 1.0)"] + score(s2, "official"))
    for margin in MARGINS:
        extra = () if margin == DEFAULT_MARGIN else (f"outlier.margin={margin}",)
        s2 = stage2(f"s2-margin-{margin}", s1, extra)
        add([f"score margin {margin}"] + score(s2, "official"))
    for prob in OUTLIER_PROBS:
        extra = () if prob == DEFAULT_PROB else (f"outlier.anomaly_mix_prob={prob}",)
        s2 = stage2(f"s2-prob-{prob}", s1, extra)
        add([f"outlier probability {prob}"] + score(s2, "official"))
    for attention in ATTENTIONS:
        if attention != "global":
            attention_rows(attention)
    print((out / "ablation.md").read_text())


if __name__ == "__main__":
    main()
