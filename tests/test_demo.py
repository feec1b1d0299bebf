"""`mask2anomaly demo --quick`: the whole pipeline on a small synthetic world, and its resume."""

from __future__ import annotations

import json
import math

from PIL import Image

from mask2anomaly.cli import main


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
    # a second run finds every stage done and reproduces the table without training
    mtime = (out / "stage1" / "model_final.pt").stat().st_mtime
    assert main(args) == 0
    assert (out / "stage1" / "model_final.pt").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text()) == results
