"""``cancel SWEEP... [--run RUN_ID...]``: stop the active runs of the sweeps (or only the named
ones), one stop per backend (one scancel call for Slurm).

A run whose job holds other runs that go on (a pack, or the job of the run whose model it is
evaluated with, launcher.sharing) is stopped alone: cancel writes its ``cancel.request`` and the
job stops that run's process or skips it when its turn comes. A whole job is stopped only when
every run it still has active is being cancelled; a local job only where your private job
files recorded its process (a runs folder may be shared: its job.json names any PID)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.errors import UserError
from core.fileio import atomic_write_text
from core.rundir import RunDir, refuse_links
from launcher.backends import backend_named
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.jobrecord import ACTIVE, JobRecord
from launcher.state import RunState, run_states


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cancel", help="cancel the active runs of a sweep")
    add_sweep_arg(p)
    p.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                   help="Cancel only this run (repeatable); default: every active run.")


def _job_goes_on(st: RunState, rec: JobRecord, states: list[RunState], chosen: set[str]) -> bool:
    """Whether the run's job holds other active runs that are not being cancelled (a warm
    worker's job always goes on: it takes the next run of its queue; a Slurm pool is
    cancelled whole once every active run it has is)."""
    if rec.worker:
        return True
    if rec.pool:  # queued in a Slurm pool: the pool goes on while it has other active runs
        array = rec.job_id.split("_", 1)[0]
        return any(s.run_id not in chosen and s.state in ACTIVE and s.record is not None
                   and s.record.pool and (s.job_id or "").split("_", 1)[0] == array
                   for s in states)
    mates = set(rec.job_mates)
    return any(s.run_id in mates and s.run_id not in chosen and s.state in ACTIVE
               and s.job_id == st.job_id for s in states)


def _request(st: RunState) -> None:
    rd = RunDir(st.path)
    try:
        refuse_links(rd.path, (rd.cancel_request.name,))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    atomic_write_text(rd.cancel_request, f"{st.job_id}\n")


def run(args: argparse.Namespace) -> int:
    folders = sweep_folders(args)
    states = [s for f in folders for s in run_states(f)]
    unknown = sorted(set(args.run) - {s.run_id for s in states})
    if unknown:
        raise UserError(f"--run {unknown[0]}: no such run in {', '.join(map(str, folders))}; "
                        "`python -m launcher status` lists the run ids")
    active = [s for s in states if s.state in ACTIVE and s.record is not None
              and (not args.run or s.run_id in args.run)]
    if not active:
        print("nothing to cancel")
        return 0
    chosen = {s.run_id for s in active}
    requested: list[str] = []
    whole: dict[str, list[tuple[RunState, JobRecord]]] = {}
    for st in active:
        assert st.record is not None
        if _job_goes_on(st, st.record, states, chosen):
            _request(st)
            requested.append(st.run_id)
        else:
            whole.setdefault(st.record.backend, []).append((st, st.record))
    if requested:
        print(f"asked {len(requested)} run(s) to stop (the jobs they share go on)"
              + "".join(f"\n  {r}" for r in requested))
    return _stop_whole_jobs(whole)


def _stop_whole_jobs(whole: dict[str, list[tuple[RunState, JobRecord]]]) -> int:
    rc = 0
    for name, items in whole.items():
        said, error = backend_named(name).stop([(st.path.parent, rec) for st, rec in items])
        if said:
            print(said)
        if error:
            print(f"error: {error}", file=sys.stderr)
            rc = 1
    return rc
