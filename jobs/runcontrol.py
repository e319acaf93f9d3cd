"""What a job checks before it touches a run of its task (a leaf of jobs/: the pipeline and
the pack both use it): its own job id, whether the run was submitted again elsewhere since,
and the error.json it leaves when it does not run it."""

from __future__ import annotations

from typing import Any

from core.fileio import atomic_write_json, read_json
from core.results import now_iso
from core.rundir import ERROR_FILE, RunDir, planted_links

CANCELLED_ERROR = "cancelled by `launcher cancel`"


def current_job_id() -> str | None:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except (ImportError, RuntimeError, KeyError):
        return None


def moved_elsewhere(rd: RunDir, job_id: str | None) -> bool:
    """The run was submitted again after this task (resubmit): its job.json names a later job.
    Slurm's job ids grow, so a job.json of an earlier submission, which the launcher may still
    be replacing when this task starts, is not mistaken for a move."""
    def parent(jid: object) -> int | None:
        head = str(jid).split("_", 1)[0]
        return int(head) if head.isdigit() else None

    if job_id is None or not rd.job.is_file():
        return False
    try:
        theirs = parent(read_json(rd.job).get("job_id"))
    except (ValueError, AttributeError):
        return False
    mine = parent(job_id)
    return theirs is not None and mine is not None and theirs > mine


def write_error(rd: RunDir, message: str, **extra: Any) -> None:
    """The run's error.json, never through a link planted in the runs folder."""
    if planted_links(rd.path, (ERROR_FILE,)):
        return
    atomic_write_json(rd.error, {"error": message, "at": now_iso(), **extra})
