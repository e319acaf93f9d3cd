"""``report [SWEEP...] [--output FILE]``: one self-contained HTML page per sweep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import UserError
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.report import REPORT_FILE, write_report


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write a sweep's HTML report (leaderboard, charts, errors, cost)",
        description=f"Writes runs/<sweep>/{REPORT_FILE}: one file that works offline (no "
        "script or font is fetched), with the leaderboard, the metric against each varied key, "
        "loss curves, a search's rungs, per-label F1, each run against the best, the best "
        "run's worst errors and each run's cost.")
    add_sweep_arg(p)
    p.add_argument("--output", type=Path, metavar="FILE",
                   help=f"Where to write the page (one sweep only; default: "
                   f"<sweep folder>/{REPORT_FILE}).")


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    if args.output is not None and len(folders) != 1:
        raise UserError(f"--output {args.output}: give one sweep with --output (got "
                        f"{len(folders)}), or leave it out to write each sweep's own "
                        f"{REPORT_FILE}")
    for folder in folders:
        print(f"report: {write_report(folder, args.output)}")
    return 0
