"""``status [SWEEP...] [--watch]``: one sacct call, a table per run, counts per state."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.textnorm import terminal_safe
from launcher.commands.common import add_sweep_arg, sweep_folders
from launcher.search import RunRung, SearchStateError, read_search, run_rungs, rung_progress
from launcher.state import RETRYABLE, RunState, run_states


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="state of every run of a sweep",
                       description="One sacct round trip for the whole sweep; exit code 1 "
                       "when any run failed, 0 otherwise.")
    add_sweep_arg(p)
    p.add_argument("--watch", nargs="?", const=10.0, type=float, metavar="SECONDS",
                   help="Refresh every SECONDS (default 10) until every run has ended.")


def _progress(st: RunState) -> str:
    pr = st.progress or {}
    if st.state == "COMPLETED":
        return "done"
    if not pr.get("total"):
        return ""
    frac = min(1.0, pr.get("step", 0) / pr["total"])
    bar = "#" * int(frac * 10) + "." * (10 - int(frac * 10))
    eta = pr.get("eta_s")
    return (f"{pr.get('phase', '')} [{bar}] {pr.get('step', 0)}/{pr['total']}"
            + (f" eta {eta:.0f}s" if isinstance(eta, (int, float)) else ""))


def render(states: list[RunState],
           rungs: dict[str, RunRung] | None = None) -> tuple[str, dict[str, int]]:
    from tabulate import tabulate

    from core.textnorm import terminal_safe
    from launcher.leaderboard import config_number

    keys: list[str] = []
    for s in states:
        for k in s.varied:
            if k not in keys:
                keys.append(k)
    rows = []
    for s in states:
        pr = s.progress or {}
        loss = pr.get("loss") or (pr.get("history") or [{}])[-1].get("loss")
        varied = [config_number(v) if isinstance(v, float) else v
                  for v in (s.varied.get(k, "") for k in keys)]
        rows.append([s.run_id, *varied, s.state, s.job_id or "",
                     _progress(s), f"{loss:.3f}" if isinstance(loss, float) else "",
                     s.elapsed, *_rung_cells(rungs, s.run_id)])
    headers = ["run_id", *[k.split(".", 1)[1] for k in keys], "state", "job", "progress",
               "loss", "elapsed", *(["rung", "epochs", "search"] if rungs else [])]
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    # Everything shown comes from files of a runs folder others may write: one printable line
    # per cell, no terminal escapes.
    rows = [[terminal_safe(c) if isinstance(c, str) else c for c in row] for row in rows]
    table = tabulate(rows, headers=[terminal_safe(h) for h in headers], tablefmt="github",
                     disable_numparse=True)
    errors = [terminal_safe(f"  {s.run_id} ({s.state}): {s.error}") for s in states if s.error]
    if errors:
        table += "\nlast error line of each failed run:\n" + "\n".join(errors)
    return table, counts


def _rung_cells(rungs: dict[str, RunRung] | None, run_id: str) -> list[str]:
    if not rungs:
        return []
    rr = rungs.get(run_id)
    return [str(rr.rung), f"{rr.budget:g}", rr.outcome] if rr else ["", "", ""]


def search_line(folder: Path, states: list[RunState] | None = None) -> str | None:
    """One line on an adaptive sweep: its rungs, which one it is at, and what it waits for."""
    try:
        doc = read_search(folder)
    except SearchStateError as exc:
        return f"search: {exc}"
    if doc is None:
        return None
    spec = doc.get("spec") or {}
    rungs = spec.get("rungs") or []
    done = len(doc["rungs"])
    head = (f"search: {spec.get('strategy')} by {spec.get('metric')}, rungs "
            f"{rungs} epochs, keep {spec.get('keep')}: ")
    if done >= len(rungs):
        return head + "finished"
    rung, n, settled = rung_progress(folder, doc,
                                     run_states(folder) if states is None else states)
    return head + (f"rung {rung} ({rungs[rung]:g} epochs): {settled} of {n} runs have their "
                   "outcome; the rung is decided when all have (a run that ended without "
                   "results or an error waits for `resubmit`)")


def report_line(folder: Path) -> str:
    """Where the sweep's HTML report is, or how to write it."""
    from launcher.report import REPORT_FILE

    page = folder / REPORT_FILE
    if page.is_file() and not page.is_symlink():
        return terminal_safe(f"report: {page} (refresh: python -m launcher report {folder})")
    return terminal_safe(f"report: none yet; write it with: python -m launcher report {folder}")


def run(args: argparse.Namespace) -> int:
    if args.watch is not None and not (args.watch > 0 and args.watch < 86400):
        raise UserError(f"status --watch {args.watch:g}: give a refresh interval in seconds "
                        "between 0 and 86400 (e.g. --watch 10)")
    folders = sweep_folders(args)
    while True:
        any_failed = False
        active = False
        out = []
        for folder in folders:
            states = run_states(folder)
            table, counts = render(states, run_rungs(folder))
            out.append(f"sweep {folder.name} ({folder})")
            line = search_line(folder, states)
            if line:
                out.append(terminal_safe(line))
            out.append(table)
            out.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
            out.append(report_line(folder))
            any_failed |= any(s in RETRYABLE for s in counts)
            active |= any(s not in RETRYABLE and s not in ("COMPLETED", "NOT_SUBMITTED")
                          for s in counts)
        if args.watch:
            print("\033[2J\033[H" if sys.stdout.isatty() else "", end="")
        print("\n".join(out), flush=True)
        if not args.watch or not active:
            return 1 if any_failed else 0
        time.sleep(args.watch)
