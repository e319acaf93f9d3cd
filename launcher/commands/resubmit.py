"""``resubmit SWEEP...``: submit again only failed, timed-out and cancelled runs.

They resume from their last checkpoint. The sweep is re-read from the copy saved at submit;
its env profile is used only where it names one of this checkout's envs/ (else --env).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from core.rundir import SWEEP_FILE
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.envs import ENVS_DIR, load_env, resolve_env_path
from launcher.submit import submit_sweep
from launcher.sweep import load_sweep
from launcher.yamlio import YamlError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("resubmit", help="resubmit failed / timed-out / cancelled runs")
    add_sweep_arg(p)
    p.add_argument("--env", help="Env profile override.")


def trusted_env_name(folder: Any, name: str) -> str:
    """The env a saved sweep names, only where it is a profile of this checkout's envs/.

    A runs folder is shared storage that others can write; the environment a job runs with
    (setup lines, PYTHONPATH, ...) must come from the person typing the command, so a saved
    sweep may not point the resubmit at a profile file of its own.
    """
    path = resolve_env_path(name)
    if path.resolve().parent != ENVS_DIR.resolve():
        raise YamlError(f"{folder}/sweep.yaml names the env profile {name!r}, a file outside "
                        f"{ENVS_DIR}; a runs folder is not trusted to choose the jobs' "
                        "environment: pass --env PROFILE to resubmit")
    return name


def yours(folder: Path) -> bool:
    """Whether you submitted the sweep in folder (its sweep.yaml is yours): a plain resubmit
    takes only those, never a sweep someone else put into a shared runs folder."""
    try:
        return (folder / SWEEP_FILE).stat().st_uid == os.getuid()
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    if not args.sweep:
        others = [f for f in folders if not yours(f)]
        for f in others:
            print(f"skipped {f.name}: its sweep.yaml is not yours (someone else submitted it); "
                  f"name it to resubmit it: python -m launcher resubmit {f.name}")
        folders = [f for f in folders if yours(f)]
    for folder in folders:
        sweep = load_sweep(folder / SWEEP_FILE)
        env = load_env(args.env or trusted_env_name(folder, sweep.env))
        print(f"sweep {sweep.name}: env profile {env.name} "
              f"({resolve_env_path(args.env or sweep.env)})")
        planned = submit_sweep(sweep, env, runs_dir=str(folder.parent), only_retryable=True)
        n = sum(1 for p in planned if p.action == "submit")
        print(f"sweep {sweep.name}: resubmitted {n} run(s)"
              + "".join(f"\n  {p.run.run_id}" for p in planned if p.action == "submit"))
    return 0
