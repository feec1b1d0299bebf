"""The demo's table over training seeds: mean ± sd per row, and whether the gains hold.

Every run uses the same synthetic world (world seed 0, so the same test frames) and the demo's
settings. Stage 1 trains once per `--stage1-seeds` seed (each a full demo: stage 2 with the same
seed, evaluation); from the first stage-1 model, stage 2 and the evaluation run again for every
`--stage2-seeds` seed. Each run is a demo folder OUT/s1-A_s2-B (the shared world and stage-1
models are linked, not copied), so an interrupted bench resumes. Writes OUT/seeds.md:

* per run: AuPRC / FPR95 (x100) of every row on RA21 and RO21, the share of anomaly pixels at
  exactly 0, and val mIoU;
* per row: mean ± sd over all runs;
* the checks of the demo's claims: the full method beats stage 1 in AuPRC on both sets in every
  run, and its mean FPR95 is lower on both.

    python bench/demo_seeds.py --out demo-seeds [--stage1-seeds 0 1] [--stage2-seeds 0 1 2 3]
        [--threads 2] [--quick]

Time on 2 cores: about 6 min per stage-1 seed and 2 min per extra stage-2 seed (default: ~18 min).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from mask2anomaly.demo.plan import PLANS, ROWS, TEST_SETS, DemoRow
from mask2anomaly.demo.run import pinned_threads, prepare_world, run_demo
from mask2anomaly.fileio import write_text_atomic

SETS = [name for name, _ in TEST_SETS]
SHORT = {"road-anomaly-21": "RA21", "road-obstacle-21": "RO21"}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target.resolve(), target_is_directory=True)


def _cells(row: DemoRow) -> dict[str, float]:
    """The numbers of one row (x100), keyed by column."""
    cells = {}
    for name in SETS:
        pixel = row.results[name].pixel["smiyc"]
        cells[f"{SHORT[name]} AuPRC"] = 100 * pixel.auprc
        cells[f"{SHORT[name]} FPR95"] = 100 * pixel.fpr95
        cells[f"{SHORT[name]} at 0"] = 100 * row.zeroed.get(name, 0.0)
    cells["val mIoU"] = 100 * row.miou
    return cells


def run_all(args: argparse.Namespace) -> dict[str, list[DemoRow]]:
    """Every (stage-1 seed, stage-2 seed) run's rows, keyed by run name."""
    out, quick = Path(args.out), args.quick
    with pinned_threads(args.threads):
        world = prepare_world(out, PLANS["quick" if quick else "default"], 0, progress=True)
    runs: dict[str, list[DemoRow]] = {}

    def run(first: int, second: int) -> None:
        name = f"s1-{first}_s2-{second}"
        folder = out / name
        _link(folder / "world", world)
        if first != second:  # stage 1 of seed `first`, trained in its own run
            _link(folder / "stage1", out / f"s1-{first}_s2-{first}" / "stage1")
        result = run_demo(folder, quick=quick, seed=second, threads=args.threads,
                          device=args.device, progress=False)  # fmt: skip
        runs[name] = result.rows
        print(f"{name}: {result.seconds / 60:.1f} min", flush=True)

    for first in args.stage1_seeds:
        run(first, first)
    for second in args.stage2_seeds:
        if second != args.stage1_seeds[0]:
            run(args.stage1_seeds[0], second)
    return runs


def summary(runs: dict[str, list[DemoRow]]) -> str:
    """Markdown: per-run table, mean ± sd per row, and the checks of the gains."""
    columns = list(_cells(next(iter(runs.values()))[0]))
    lines = [f"{len(runs)} runs: " + ", ".join(runs) + " (a stage-1 row's mean counts each "
             "stage-1 model once)\n", "## Mean ± sd over the runs\n"]  # fmt: skip
    lines += ["| row | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for index, (title, stage, _) in enumerate(ROWS):
        values = [_cells(rows[index]) for rows in _models(runs, stage).values()]
        cells = []
        for column in columns:
            series = [v[column] for v in values]
            spread = statistics.stdev(series) if len(series) > 1 else 0.0
            cells.append(f"{statistics.mean(series):.1f} ± {spread:.1f}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "## Every run\n", "| run | row | " + " | ".join(columns) + " |",
              "|" + "---|" * (len(columns) + 2)]  # fmt: skip
    for name, rows in runs.items():
        for row in rows:
            values = _cells(row)
            lines.append(f"| {name} | {row.title} | "
                         + " | ".join(f"{values[c]:.1f}" for c in columns) + " |")  # fmt: skip
    return "\n".join(lines + ["", "## The demo's claims\n", *checks(runs)]) + "\n"


def _models(runs: dict[str, list[DemoRow]], stage: str) -> dict[str, list[DemoRow]]:
    """The runs with a distinct model at `stage`: a stage-1 model shared by several runs
    counts once in a stage-1 row's mean."""
    if stage != "stage1":
        return runs
    distinct: dict[str, list[DemoRow]] = {}
    for name, rows in runs.items():
        distinct.setdefault(name.split("_")[0], rows)
    return distinct


def checks(runs: dict[str, list[DemoRow]]) -> list[str]:
    """Full method (last row) against stage 1 (first row), per test set."""
    lines = []
    for name in SETS:
        firsts = [_cells(rows[0]) for rows in runs.values()]
        fulls = [_cells(rows[-1]) for rows in runs.values()]
        auprc = f"{SHORT[name]} AuPRC"
        wins = sum(full[auprc] > first[auprc] for first, full in zip(firsts, fulls))
        fpr = f"{SHORT[name]} FPR95"
        mean_first = statistics.mean(
            _cells(rows[0])[fpr] for rows in _models(runs, ROWS[0][1]).values()
        )
        mean_full = statistics.mean(full[fpr] for full in fulls)
        lines.append(f"- {SHORT[name]}: the full method beats stage 1 in AuPRC in {wins} of "
                     f"{len(runs)} runs ({'holds' if wins == len(runs) else 'does NOT hold'}); "
                     f"mean FPR95 {mean_full:.1f} vs {mean_first:.1f} "
                     f"({'lower' if mean_full < mean_first else 'NOT lower'})")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-seeds")
    parser.add_argument("--stage1-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--stage2-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes")
    args = parser.parse_args()
    text = summary(run_all(args))
    write_text_atomic(Path(args.out) / "seeds.md", text)
    print(text)


if __name__ == "__main__":
    main()
