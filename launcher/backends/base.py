"""The one protocol every backend implements: submit tasks, read their states, stop them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

from core.rundir import RunDir, private_job_files_dir
from launcher.envs import EnvProfile
from launcher.errors import SubmitError
from launcher.gpus import LocalGpu
from launcher.jobrecord import JobRecord
from launcher.tasks import PlannedRun, Task


@dataclass
class SubmitContext:
    """What a backend needs to start a sweep's tasks."""

    sweep_name: str
    env: EnvProfile
    folder: Path
    """The sweep's folder in the runs folder."""
    on_event: Callable[[str], None] = lambda _m: None
    gpus: tuple[LocalGpu, ...] = ()
    """This machine's GPUs (a local profile)."""
    started: list[Task] = field(default_factory=list)
    """The tasks this submit started (filled in by the backend)."""
    more: Callable[[], list[PlannedRun]] = lambda: []
    """Runs to start as soon as they are known (an adaptive sweep's promotions), asked each
    time a run ends, for a backend whose runs end before its submit returns."""
    promoter: Callable[[], list[PlannedRun]] | None = None
    """The same for a backend whose runs outlive its submit (a Slurm worker pool): picklable,
    it runs inside the pool's jobs, under the sweep's lock (launcher.submit.SweepPromoter)."""

    @property
    def jobs_dir(self) -> Path:
        return jobs_dir(self.folder)


@dataclass(frozen=True)
class JobState:
    state: str
    error: str = ""


class Backend(Protocol):
    name: str
    """The job records' "cluster" value."""
    waits_for_runs: bool
    """Whether submit returns only once the runs have ended (they run in this process's
    care), so an adaptive sweep's next rung is decided right after."""

    def submit(self, groups: list[list[Task]], ctx: SubmitContext) -> None:
        """Start every task (groups: tasks with the same resources); all or nothing
        (SubmitError)."""

    def poll(self, records: list[JobRecord]) -> Any:
        """Whatever job_state needs about these records' jobs, read in one go."""

    def job_state(self, rd: RunDir, rec: JobRecord, polled: Any) -> JobState:
        """The state of a run with a job record and no results."""

    def elapsed(self, rd: RunDir, rec: JobRecord, state: str, polled: Any) -> str:
        """The run's wall time as H:MM:SS ("" where unknown)."""

    def stop(self, records: list[tuple[Path, JobRecord]]) -> tuple[str, str]:
        """Stop these records' whole jobs (each with its sweep folder): (what was stopped, as
        a line for the user; an error line or "")."""

    def plan_lines(self, env: EnvProfile, groups: list[list[Task]],
                   gpus: tuple[LocalGpu, ...]) -> list[str]:
        """What a dry run shows of where the tasks would run."""


def jobs_dir(folder: Path) -> Path:
    """The sweep's private folder for the backends' files (core.rundir.job_files_dir)."""
    try:
        return private_job_files_dir(folder)
    except (ValueError, OSError) as exc:
        raise SubmitError(str(exc)) from None


def elapsed_since_record(rd: RunDir, rec: JobRecord, state: str) -> str:
    """From the record's time (a local job's submission, or when a worker took the run) to its
    results, or to now while it runs, as H:MM:SS the way sacct writes it ("" otherwise)."""
    try:
        start = datetime.fromisoformat(rec.submitted_at)
    except ValueError:
        return ""
    if start.tzinfo is None:  # written without a zone (by hand, or another tool): UTC
        start = start.replace(tzinfo=timezone.utc)
    if state == "COMPLETED" and rd.performance.is_file():
        end = datetime.fromtimestamp(rd.performance.stat().st_mtime, timezone.utc)
    elif state == "RUNNING":
        end = datetime.now(timezone.utc)
    else:
        return ""
    secs = max(0, int((end - start).total_seconds()))
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
