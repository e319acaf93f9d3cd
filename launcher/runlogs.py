"""A run's error line for status: from its error.json, else the tail of its own log."""

from __future__ import annotations

import os
from pathlib import Path

from core.fileio import read_json
from core.rundir import SUBMITIT, RunDir, job_files_dir
from launcher.jobrecord import JobRecord

LOG_TAIL_BYTES = 64 * 1024
"""How much of a log status reads: its last lines are what it shows."""


def error_line(rd: RunDir, rec: JobRecord | None) -> str:
    if rd.error.is_file():
        try:
            return str(read_json(rd.error).get("error", ""))
        except (ValueError, AttributeError):
            pass
    log = own_log(rd, rec.stderr if rec else None)
    if log is not None:
        lines = [ln.strip() for ln in tail(log).splitlines() if ln.strip()]
        for ln in reversed(lines):
            if "Error" in ln or "error" in ln or "CANCELLED" in ln or "Killed" in ln:
                return ln[:300]
        return lines[-1][:300] if lines else ""
    return ""


def cancelled(rd: RunDir) -> bool:
    """Whether the run's error.json says it was cancelled."""
    try:
        return read_json(rd.error).get("cancelled") is True
    except (ValueError, AttributeError):
        return False


def own_log(rd: RunDir, named: object) -> Path | None:
    """The log job.json names, if it is a plain file of this run (its folder) or of its
    sweep's private job files (core.rundir.job_files_dir; the old _submitit/ too); anything
    else (a token file a planted job.json names, a link) is not read."""
    if not isinstance(named, str) or not named:
        return None
    path = Path(named)
    try:
        if path.is_symlink() or not path.is_file():
            return None
        real = path.resolve()
        allowed = (rd.path.resolve(), (rd.path.parent / SUBMITIT).resolve(),
                   job_files_dir(rd.path.parent).resolve())
    except OSError:
        return None
    return real if any(real.is_relative_to(a) for a in allowed) else None


def tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - size))
        return fh.read().decode("utf-8", errors="replace")
