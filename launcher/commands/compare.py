"""``compare RUN_A RUN_B [--metric exact] [--stat f1]``: is one run better than another on the
same records? A paired bootstrap over each run's results/true_pred_entities.json; reads files
only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.metrics import BOOTSTRAP_REPS
from launcher.commands.common import DEFAULT_RUNS_DIR
from launcher.leaderboard import METRIC_NAMES
from launcher.paired import compare_files, true_pred_file, verdict


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare", help="paired bootstrap: is one run better than another",
        description="Resamples the evaluated records of two runs together "
        f"({BOOTSTRAP_REPS:,} times, fixed seed) and reports the difference of a metric with "
        "its 95%% interval. Both runs must have been evaluated on the same records.")
    for name in ("run_a", "run_b"):
        p.add_argument(name, metavar=name.upper(),
                       help="A run folder (runs/SWEEP/RUN_ID, or SWEEP/RUN_ID under "
                       "--runs-dir), its results folder, or a true_pred_entities.json.")
    p.add_argument("--metric", default="exact", choices=METRIC_NAMES)
    p.add_argument("--stat", default="f1", choices=("p", "r", "f1"))
    p.add_argument("--runs-dir", default=None,
                   help=f"Where SWEEP/RUN_ID is looked up (default: {DEFAULT_RUNS_DIR}).")
    p.add_argument("--format", default="text", choices=("text", "json"))


def run(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir or DEFAULT_RUNS_DIR)
    files = [true_pred_file(x, runs_dir) for x in (args.run_a, args.run_b)]
    r = compare_files(files[0], files[1], args.metric, args.stat)
    if args.format == "json":
        print(json.dumps({**r, "verdict": verdict(r)}, indent=2))
        return 0
    m = r["metric"]
    lo, hi = r["ci95"] or [0.0, 0.0]
    print(f"A  {r['run_a']}\n   {m} {r['a']:.3f}")
    print(f"B  {r['run_b']}\n   {m} {r['b']:.3f}")
    print(f"A - B = {r['diff']:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}); A higher in "
          f"{r['a_better']:.1%} of {r['reps']:,} paired resamples of {r['records']} records")
    print(verdict(r))
    return 0
