"""``resubmit SWEEP...``: submit again only failed, timed-out and cancelled runs.

They resume from their last checkpoint. The sweep is re-read from the copy saved at submit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.envs import load_env
from launcher.submit import SubmitError, submit_sweep
from launcher.sweep import load_sweep
from launcher.yamlio import YamlError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("resubmit", help="resubmit failed / timed-out / cancelled runs")
    add_sweep_arg(p)
    p.add_argument("--env", help="Env profile override.")


def run(args: argparse.Namespace) -> int:
    try:
        folders = sweep_folders(args)
        total = 0
        for folder in folders:
            sweep = load_sweep(folder / "sweep.yaml")
            env = load_env(args.env or sweep.env)
            planned = submit_sweep(sweep, env, runs_dir=str(folder.parent), only_retryable=True)
            n = sum(1 for p in planned if p.action == "submit")
            total += n
            print(f"sweep {sweep.name}: resubmitted {n} run(s)"
                  + "".join(f"\n  {p.run.run_id}" for p in planned if p.action == "submit"))
    except (YamlError, SubmitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
