"""``compare RUN_A RUN_B [--metric exact] [--stat f1]``: is one run better than another on the
same records? A paired bootstrap over each run's results/true_pred_entities.json; reads files
only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.data import DataError
from core.fileio import read_json
from core.metrics import BOOTSTRAP_REPS, paired_bootstrap, record_counts
from core.results import TRUE_PRED, read_true_pred
from launcher.commands.common import DEFAULT_RUNS_DIR
from launcher.leaderboard import METRIC_NAMES


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


def true_pred_file(arg: str, runs_dir: Path) -> Path:
    tried = []
    for base in (Path(arg), runs_dir / arg):
        if base.is_file():
            return base
        for cand in (base / "results" / TRUE_PRED, base / TRUE_PRED):
            if cand.is_file():
                return cand
            tried.append(str(cand))
    raise DataError(f"{arg}: no {TRUE_PRED} found (looked at {', '.join(tried)}); pass a run "
                    "whose evaluation has finished")


def _unique_setting(tp_file: Path) -> bool:
    """The run's own eval.unique_entities (from its performance.json), default on."""
    try:
        doc = read_json(tp_file.parent / "performance.json")
        value = doc["config"]["eval"]["unique_entities"]
        return value if isinstance(value, bool) else True
    except (ValueError, KeyError, TypeError):
        return True


def compare(a_arg: str, b_arg: str, metric: str, stat: str, runs_dir: Path
            ) -> dict[str, Any]:
    files = [true_pred_file(x, runs_dir) for x in (a_arg, b_arg)]
    loaded = [read_true_pred(f) for f in files]
    (gold_a, _, texts_a), (gold_b, _, texts_b) = loaded
    same = (texts_a == texts_b) if texts_a is not None and texts_b is not None \
        else gold_a == gold_b
    if not same:
        raise DataError(f"{files[0]} and {files[1]} hold different records ({len(gold_a)} vs "
                        f"{len(gold_b)}); compare needs two runs evaluated on the same eval "
                        "file")
    counts = [record_counts(g, p, t, metric, _unique_setting(f))
              for f, (g, p, t) in zip(files, loaded, strict=True)]
    return {"metric": f"{metric}.{stat}", "run_a": str(files[0]), "run_b": str(files[1]),
            **paired_bootstrap(counts[0], counts[1], stat=stat)}


def verdict(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"] or [0.0, 0.0]
    if lo > 0:
        return "A is better: the interval lies above 0"
    if hi < 0:
        return "B is better: the interval lies below 0"
    return "no clear difference: the interval includes 0"


def run(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir or DEFAULT_RUNS_DIR)
    try:
        r = compare(args.run_a, args.run_b, args.metric, args.stat, runs_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
