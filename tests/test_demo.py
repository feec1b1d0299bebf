"""`mask2anomaly demo --quick`: the whole pipeline on a small synthetic world, and its resume."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from PIL import Image

from mask2anomaly.cli import main
from mask2anomaly.data.benchmarks import load_benchmark
from mask2anomaly.demo.plan import TEST_SETS
from mask2anomaly.demo.run import pinned_threads
from mask2anomaly.evaluation.maps import load_map


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [r["refinement"] for r in results] == ["none", "none", "official"]
    for row in results:
        for name in ("road-anomaly-21", "road-obstacle-21"):
            pixel = row[name]["pixel"]["smiyc"]
            assert 0.0 <= pixel["auprc"] <= 1.0 and 0.0 <= pixel["fpr95"] <= 1.0
            assert pixel["num_pos"] > 0 and "components" in row[name]
        assert 0.0 <= row["miou"] <= 1.0
    report = (out / "report.md").read_text()
    assert "| method |" in report and "pr_curves.png" in report
    assert report.rstrip().endswith(f"mask2anomaly app --weights {out}/stage2/model_final.pt\n```")
    assert "| instances |" in report and any((out / "panels").glob("instances_*.png"))
    instances = json.loads((out / "instances.json").read_text())
    for name in ("road-anomaly-21", "road-obstacle-21"):
        for method in ("components", "queries"):
            found = instances[name][method]
            assert found["num_gt"] > 0 and (found["ap"] is None or 0.0 <= found["ap"] <= 1.0)
    assert (out / "pr_curves.png").is_file() and any((out / "panels").glob("*.png"))
    assert "Mask2Anomaly" in printed
    # the score table: every score of the stage-2 model with refinement, from the same forwards
    zoo = json.loads((out / "eval" / "scores" / "metrics.json").read_text())["results"]
    names = ["mask2anomaly", "msp", "maxlogit", "entropy", "energy", "rba", "eam", "void"]
    assert [r["score"] for r in zoo] == names * 2
    for r in zoo:
        assert set(r["operating_points"]) == {"tpr95", "fpr5", "best-f1"}
        assert 0 <= r["open_set"]["closed_miou"] <= 1 and "tpr95" in r["open_set"]["open_miou"]
    for name, first in (("road-anomaly-21", zoo[0]), ("road-obstacle-21", zoo[8])):
        assert first["dataset"] == name  # Eq. 2's maps are the refined row's
        assert first["pixel"]["smiyc"]["auprc"] == results[2][name]["pixel"]["smiyc"]["auprc"]
    assert "| rba |" in report and "open mIoU" in report and "Closed-set mIoU" in report
    panel = Image.open(next((out / "panels").glob("road-anomaly-21_*.png")))
    assert panel.width == 6 * 512  # input, three rows, the open-set map, ground truth
    # the two stage-2 rows share a model: refinement only ever zeroes scores
    unrefined, refined = results[1], results[2]
    assert math.isclose(unrefined["miou"], refined["miou"])
    # the share of anomaly pixels at exactly 0, counted from the stored maps and the labels
    for row in results:
        for name, folder in TEST_SETS:
            dataset = load_benchmark(name, out / "world" / folder)
            maps = out / "eval" / f"{row['stage']}-{row['refinement']}" / "maps" / name
            at_zero = inside = 0
            for i in dataset.labelled:
                label = dataset.load_label(i)
                score = load_map(next(maps.glob(f"{dataset.frames[i].frame_id}.*")))
                at_zero += int(((score == 0) & (label == 1)).sum())
                inside += int((label == 1).sum())
            assert np.isclose(row["anomaly_pixels_at_zero"][name], at_zero / inside)
        assert row["refinement"] == "official" or max(row["anomaly_pixels_at_zero"].values()) == 0
    assert "threads 2" in report and "anomaly px at 0" in report
    # a second run finds every stage done and reproduces the table without training
    mtime = (out / "stage1" / "model_final.pt").stat().st_mtime
    assert main(args) == 0
    assert (out / "stage1" / "model_final.pt").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text()) == results


def test_pinned_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with pinned_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pinned_threads(None):
        assert torch.get_num_threads() == before


def test_step_effects_say_plainly_when_a_step_changes_nothing():
    from types import SimpleNamespace

    from mask2anomaly.demo.report import step_effects

    def row(title, ra, ro):
        results = {name: SimpleNamespace(pixel={"smiyc": SimpleNamespace(auprc=a, fpr95=f)})
                   for name, (a, f) in (("RA", ra), ("RO", ro))}  # fmt: skip
        return SimpleNamespace(title=title, results=results)

    rows = [row("stage 1", (0.10, 0.99), (0.40, 0.06)),
            row("+ fine-tuning", (0.15, 0.40), (0.55, 0.045)),
            row("+ refinement", (0.17, 0.20), (0.552, 0.047))]  # fmt: skip
    text = step_effects(rows, ["RA", "RO"])
    assert text == (
        "What each step changed (points x100): + fine-tuning: RA: AuPRC +5.0, FPR95 -59.0; "
        "RO: AuPRC +15.0, FPR95 -1.5. + refinement: RA: AuPRC +2.0, FPR95 -20.0; "
        "RO: no measurable change.\n"
    )
