"""``cancel SWEEP...``: scancel every active job of the sweeps, in one call."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from launcher.commands.common import add_sweep_arg, folders_or_report
from launcher.state import ACTIVE, run_states


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel the active runs of a sweep")
    add_sweep_arg(p)


def run(args: argparse.Namespace) -> int:
    folders = folders_or_report(args)
    if folders is None:
        return 2
    ids = [s.job_id for f in folders for s in run_states(f)
           if s.state in ACTIVE and s.job_id]
    if not ids:
        print("nothing to cancel")
        return 0
    out = subprocess.run(["scancel", *ids], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"error: scancel failed: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"cancelled {len(ids)} job(s): {' '.join(ids)}")
    return 0
