"""``cancel SWEEP...``: scancel every active job of the sweeps, in one call."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import Any

from core.rundir import RunDir
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.state import ACTIVE, local_process_alive, read_job, run_states, stop_local_jobs


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel the active runs of a sweep")
    add_sweep_arg(p)


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    active = [s for f in folders for s in run_states(f) if s.state in ACTIVE and s.job_id]
    slurm_ids, local = [], []
    for st in active:
        job = read_job(RunDir(st.path)) or {}
        if job.get("cluster") == "slurm":
            slurm_ids.append(str(st.job_id))
        else:
            local.append((st, job))
    if not active:
        print("nothing to cancel")
        return 0
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
