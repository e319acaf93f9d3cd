"""The work queue of a sweep's warm workers: files in the sweep's private job-files folder.

The launcher puts one item per job (a run, with the runs evaluated with its model) into
``queue/``; a worker claims the oldest by renaming it into ``running/<worker>/`` (a rename is
atomic: two workers never claim one item), runs it, and moves it to ``done/``. ``closed`` says
no more items will come, so an idle worker may end. Every file lives in the private folder
(0700): what a worker runs is what the user's launcher queued, never a file of the shared runs
folder.

>>> import tempfile
>>> q = WorkQueue(Path(tempfile.mkdtemp()))
>>> _ = q.put(WorkItem("/runs/s/a-1", {"a-1": "ff"}))
>>> item = q.claim("w0")
>>> item.run_dir, q.claim("w1") is None, q.running("w0") == [item]
('/runs/s/a-1', True, True)
>>> q.finish("w0", item, "done"); q.outcomes()
{'a-1': 'done'}
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.fileio import atomic_write_json, read_json

ITEM_SCHEMA = 1


@dataclass(frozen=True)
class WorkItem:
    """One job for a worker: run_pipeline on run_dir, with its followers."""

    run_dir: str
    identities: dict[str, str]
    """{run id: config SHA-256} of the run and its followers (jobs.pipeline)."""
    seq: int = 0
    """Queue order (set by put)."""
    queued_at: float = field(default=0.0, compare=False)
    records: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    """{run id: its job.json} for a worker pool that writes the records itself when a worker
    takes the item (a Slurm pool: launcher.backends.pool); empty where the launcher does."""

    @property
    def run_id(self) -> str:
        return Path(self.run_dir).name

    @property
    def name(self) -> str:
        return f"{self.seq:06d}-{self.run_id}.json"


class WorkQueue:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def _queue(self) -> Path:
        return self.root / "queue"

    def _running(self, worker: str) -> Path:
        return self.root / "running" / worker

    @property
    def _done(self) -> Path:
        return self.root / "done"

    def put(self, item: WorkItem) -> WorkItem:
        """Queue an item (after every item queued before it)."""
        seq = 1 + max((int(p.name.split("-", 1)[0]) for p in self._all() if
                       p.name.split("-", 1)[0].isdigit()), default=0)
        item = WorkItem(item.run_dir, dict(item.identities), seq, time.time(),
                        dict(item.records))
        atomic_write_json(self._queue / item.name, {"schema": ITEM_SCHEMA, **asdict(item)})
        return item

    def _all(self) -> list[Path]:
        return [p for d in (self._queue, self._done, *self._running_dirs())
                if d.is_dir() for p in d.iterdir() if p.suffix == ".json"]

    def _running_dirs(self) -> list[Path]:
        base = self.root / "running"
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def claim(self, worker: str) -> WorkItem | None:
        """The oldest queued item, now this worker's; None when the queue is empty."""
        mine = self._running(worker)
        mine.mkdir(parents=True, exist_ok=True)
        for path in sorted(self._queue.iterdir()) if self._queue.is_dir() else []:
            if path.suffix != ".json" or path.name.startswith("."):
                continue
            try:
                os.rename(path, mine / path.name)
            except FileNotFoundError:
                continue  # another worker took it
            return _item(mine / path.name)
        return None

    def running(self, worker: str | None = None) -> list[WorkItem]:
        dirs = [self._running(worker)] if worker else self._running_dirs()
        return [_item(p) for d in dirs if d.is_dir() for p in sorted(d.iterdir())
                if p.suffix == ".json" and not p.name.startswith(".")]

    def running_by_worker(self) -> dict[str, list[WorkItem]]:
        return {d.name: self.running(d.name) for d in self._running_dirs()}

    def finish(self, worker: str, item: WorkItem, outcome: str) -> None:
        """The item is over (done, failed, cancelled, interrupted): out of running/."""
        src = self._running(worker) / item.name
        doc = {"schema": ITEM_SCHEMA, **asdict(item), "outcome": outcome, "worker": worker,
               "ended_at": time.time()}
        atomic_write_json(self._done / item.name, doc)
        src.unlink(missing_ok=True)

    def requeue(self, worker: str) -> list[WorkItem]:
        """A dead worker's claimed items go back to the queue (each resumes its run)."""
        back = []
        for item in self.running(worker):
            os.replace(self._running(worker) / item.name, self._queue / item.name)
            back.append(item)
        return back

    def queued(self) -> list[WorkItem]:
        return [_item(p) for p in sorted(self._queue.iterdir())
                if p.suffix == ".json" and not p.name.startswith(".")] \
            if self._queue.is_dir() else []

    def outcomes(self) -> dict[str, str]:
        """{run id: outcome} of every finished item (the last one per run)."""
        out: dict[str, str] = {}
        for p in sorted(self._done.iterdir()) if self._done.is_dir() else []:
            if p.suffix == ".json":
                doc = read_json(p)
                out[Path(doc["run_dir"]).name] = str(doc.get("outcome"))
        return out

    def own(self, pid: int) -> None:
        """Record the launcher process that feeds this queue: idle workers end once it is gone
        (a launcher killed before it could close the queue leaves no worker waiting)."""
        atomic_write_json(self.root / "owner.json", {"pid": pid, "start": _start_of(pid)})

    @property
    def orphaned(self) -> bool:
        """Whether the launcher that owns this queue has ended (False where none is recorded)."""
        try:
            doc = read_json(self.root / "owner.json")
        except ValueError:
            return False
        if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
            return False
        now = _start_of(doc["pid"])
        return now is None or now != doc.get("start")

    def stop(self, worker: str) -> None:
        """This worker ends once it is idle (a pool's task whose work is over)."""
        (self.root / "stop").mkdir(parents=True, exist_ok=True)
        (self.root / "stop" / worker).touch()

    def stopping(self, worker: str) -> bool:
        return (self.root / "stop" / worker).exists()

    def unstop(self, worker: str) -> None:
        (self.root / "stop" / worker).unlink(missing_ok=True)

    def pending(self, run_id: str) -> bool:
        """Whether an item of this run is queued or in a worker's hands."""
        return any(i.run_id == run_id for i in (*self.queued(), *self.running()))

    def ended_count(self) -> int:
        """How many items have finished (a directory listing, no file read)."""
        done = self._done
        return sum(p.suffix == ".json" for p in done.iterdir()) if done.is_dir() else 0

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in any worker's hands (listings, no file read)."""
        dirs = [self._queue, *self._running_dirs()]
        return not any(p.suffix == ".json" and not p.name.startswith(".")
                       for d in dirs if d.is_dir() for p in d.iterdir())

    def ended(self) -> list[dict[str, Any]]:
        """Every finished item's record, in queue order (outcome and worker included)."""
        done = self._done
        return [read_json(p) for p in sorted(done.iterdir()) if p.suffix == ".json"] \
            if done.is_dir() else []

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The queue's own lock: the workers' claims need none (renames), but a pool's
        coordinators, one per Slurm task, take it to requeue an item only once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def close(self) -> None:
        """No more items will come: idle workers end."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "closed").touch()

    @property
    def closed(self) -> bool:
        return (self.root / "closed").exists()


def _item(path: Path) -> WorkItem:
    return item_from_doc(json.loads(path.read_text(encoding="utf-8")))


def item_from_doc(doc: dict[str, Any]) -> WorkItem:
    """The item a queued, running or finished item's file holds."""
    records = doc.get("records")
    return WorkItem(str(doc["run_dir"]), {str(k): str(v) for k, v in
                                          dict(doc["identities"]).items()},
                    int(doc.get("seq", 0)), float(doc.get("queued_at", 0.0)),
                    dict(records) if isinstance(records, dict) else {})


def _start_of(pid: int) -> str | None:
    """A process's start time (/proc/PID/stat field 22), None where it does not exist."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 and fields[0] not in ("Z", "X") else None
