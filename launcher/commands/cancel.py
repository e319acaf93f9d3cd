"""``cancel SWEEP... [--run RUN_ID...]``: stop the active runs of the sweeps (or only the named
ones), with one scancel call.

A run that shares its array task with others (a pack) is stopped alone: cancel writes its
``cancel.request`` and the pack stops that run's process; a run evaluated in the job of the run
whose model it shares (launcher.sharing) is skipped by that job the same way. A task is
scancelled only when every run it still has active is being cancelled."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import Any

from core.errors import UserError
from core.rundir import RunDir
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.state import ACTIVE, local_process_alive, read_job, run_states, stop_local_jobs


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel the active runs of a sweep")
    add_sweep_arg(p)
    p.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                   help="Cancel only this run (repeatable); default: every active run.")


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    states = [s for f in folders for s in run_states(f)]
    unknown = sorted(set(args.run) - {s.run_id for s in states})
    if unknown:
        raise UserError(f"--run {unknown[0]}: no such run in {', '.join(map(str, folders))}; "
                        "`python -m launcher status` lists the run ids")
    active = [s for s in states if s.state in ACTIVE and s.job_id
              and (not args.run or s.run_id in args.run)]
    slurm_ids, local, requested = [], [], []
    chosen = {s.run_id for s in active}
    for st in active:
        job = read_job(RunDir(st.path)) or {}
        if job.get("cluster") != "slurm":
            local.append((st, job))
            continue
        # The runs its job also holds: its pack's, and the run whose model it is evaluated
        # with (launcher.sharing); a run that others follow is cancelled with its job.
        pack = [*((job.get("pack") or {}).get("runs") or []), str(job.get("trained_in") or "")]
        others = [s for s in states if s.run_id in pack and s.run_id not in chosen
                  and s.state in ACTIVE and s.job_id == st.job_id]
        if others:
            RunDir(st.path).cancel_request.write_text(f"{st.job_id}\n")
            requested.append(st.run_id)
        elif str(st.job_id) not in slurm_ids:
            slurm_ids.append(str(st.job_id))
    if not active:
        print("nothing to cancel")
        return 0
    if requested:
        print(f"asked {len(requested)} run(s) to stop (the jobs they share go on)"
              + "".join(f"\n  {r}" for r in requested))
    # A local run is this machine's process: signalled only while it is still the same process
    # (PID and start time), never through scancel.
    alive = [(st, job) for st, job in local if local_process_alive(job)]
    stop_local_jobs(int(job["pid"]) for _st, job in alive)
    stopped = [st.run_id for st, _job in alive]
    if local:
        print(f"stopped {len(stopped)} local run(s)" + "".join(f"\n  {r}" for r in stopped))
    if slurm_ids:
        if shutil.which("scancel") is None:
            print("error: scancel is not on PATH; run cancel where the Slurm tools are "
                  f"(job ids {' '.join(slurm_ids)})", file=sys.stderr)
            return 1
        out = subprocess.run(["scancel", *slurm_ids], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"error: scancel failed: {out.stderr.strip()}", file=sys.stderr)
            return 1
        print(f"cancelled {len(slurm_ids)} job(s): {' '.join(slurm_ids)}")
    return 0
