"""job.json, typed: what a backend submitted for one run, read back once.

A job record is written by the backend that submitted the run (launcher.tasks builds it) and
read by status, cancel and the leaderboard. The runs folder may be shared, so a record is
untrusted: every field is checked for its type here, and a local record's process is only
ever signalled once the private job-files folder confirms it (launcher.backends.local).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.fileio import read_json
from core.rundir import RunDir

ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING",
                    "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SUBMITTED", "STAGE_OUT",
                    "SIGNALING"})
RETRYABLE = frozenset({"FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY",
                       "PREEMPTED", "BOOT_FAIL", "DEADLINE", "LOST"})


@dataclass(frozen=True)
class JobRecord:
    """One run's job.json."""

    run_id: str
    backend: str
    """Which backend submitted it (the file's "cluster" key): "slurm" or "local"."""
    job_id: str
    pack: tuple[str, ...] = ()
    """The runs sharing this run's job on one card (a pack), this one included."""
    trained_in: str | None = None
    """The run whose job trains the model this run is evaluated with, if not its own."""
    pid: int | None = None
    pid_start: str | None = None
    stdout: str = ""
    stderr: str = ""
    rung: int | None = None
    worker: str | None = None
    """The warm worker (launcher.backends.warm, .pool) the run was given to, if one."""
    pool: bool = False
    """Queued in a Slurm worker pool (launcher.backends.pool): job_id is the pool's array
    until a worker takes the run, then the array task that took it."""
    model: str = ""
    varied: dict[str, Any] = field(default_factory=dict)
    submitted_at: str = ""

    @property
    def shares_job(self) -> bool:
        """Whether other runs live in this run's job (a pack, the job of its model's run, or
        a warm worker's job or pool, which takes run after run)."""
        return bool(self.pack) or bool(self.trained_in) or bool(self.worker) or self.pool

    @property
    def job_mates(self) -> tuple[str, ...]:
        """The other runs this run's job holds, as far as this record knows them."""
        mates = [r for r in self.pack if r != self.run_id]
        return (*mates, *([self.trained_in] if self.trained_in else []))

    @classmethod
    def from_doc(cls, doc: object, run_id: str) -> JobRecord | None:
        """The record of a job.json document; None where it is not one."""
        if not isinstance(doc, dict) or doc.get("job_id") in (None, ""):
            return None
        pack = doc.get("pack")
        runs = pack.get("runs") if isinstance(pack, dict) else None
        varied = doc.get("varied")
        return cls(run_id=run_id, backend=str(doc.get("cluster") or "local"),
                   job_id=str(doc.get("job_id")),
                   pack=tuple(str(r) for r in runs) if isinstance(runs, list) else (),
                   trained_in=_text(doc.get("trained_in")),
                   pid=_int(doc.get("pid")), pid_start=_text(doc.get("pid_start")),
                   stdout=str(doc.get("stdout") or ""), stderr=str(doc.get("stderr") or ""),
                   rung=_int(doc.get("rung")), worker=_text(doc.get("worker")),
                   pool=doc.get("pool") is True,
                   model=str(doc.get("model") or ""),
                   varied=varied if isinstance(varied, dict) else {},
                   submitted_at=str(doc.get("submitted_at") or ""))


def _text(v: object) -> str | None:
    return str(v) if isinstance(v, (str, int)) and str(v) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_job(rd: RunDir) -> dict[str, Any] | None:
    """The run's job.json as a document (None where missing or unreadable)."""
    if not rd.job.is_file():
        return None
    try:
        doc = read_json(rd.job)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def read_record(rd: RunDir) -> JobRecord | None:
    """The run's job record (None where it has none, or it is unreadable)."""
    return JobRecord.from_doc(read_job(rd), rd.run_id)
