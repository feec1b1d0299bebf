"""`mask2anomaly demo --quick`: the whole pipeline on a small synthetic world, and its resume."""

from __future__ import annotations

import json
import math

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
    assert "| instances |" in report and any((out / "panels").glob("instances_*.png"))
    instances = json.loads((out / "instances.json").read_text())
    for name in ("road-anomaly-21", "road-obstacle-21"):
        for method in ("components", "queries"):
            found = instances[name][method]
            assert found["num_gt"] > 0 and (found["ap"] is None or 0.0 <= found["ap"] <= 1.0)
    assert (out / "pr_curves.png").is_file() and any((out / "panels").glob("*.png"))
    assert "Mask2Anomaly" in printed
    # the two stage-2 rows share a model: refinement only ever zeroes scores
    unrefined, refined = results[1], results[2]
    assert math.isclose(unrefined["miou"], refined["miou"])
    # a second run finds every stage done and reproduces the table without training
    mtime = (out / "stage1" / "model_final.pt").stat().st_mtime
    assert main(args) == 0
    assert (out / "stage1" / "model_final.pt").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text()) == results
