"""This machine's processes as the local backends see them: which one a PID names now (its
start time), stopping a job's processes, a run's progress line, the controllers' log."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from core.fileio import open_no_follow, read_json
from core.rundir import RunDir, clean_progress, job_files_dir

NAME = "local"
PRIVATE_PIDS = "local"
"""The folder of the private job files that records each local job's process."""
PROGRESS_EVERY_S = 5.0


def process_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22), or None where
    /proc is unavailable: with the PID, it names one process, not whichever reused the PID."""
    fields = _proc_fields(pid)
    return fields[19] if len(fields) > 19 else None


def _proc_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 on ([] where unreadable)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError, TypeError):
        return []
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return stat[stat.rfind(")") + 2:].split()


def _exists(pid: int) -> bool:
    """Whether a process has this PID (another user's included: EPERM means it exists)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to reap it."""
    if not _exists(pid):
        return False
    fields = _proc_fields(pid)
    return not fields or fields[0] not in ("Z", "X")


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = [int(k) for t in Path(f"/proc/{pid}/task").iterdir()
                for k in (t / "children").read_text().split()]
    except (OSError, ValueError):
        return out
    for k in kids:
        out += [k, *_descendants(k)]
    return out


def stop_local_jobs(pids: Iterable[int], wait_s: float = 30.0) -> None:
    """Stop local runs: SIGINT to each one's submitit controller, which interrupts and then
    kills its worker (the worker ignores SIGTERM, as submitit's jobs do: a forwarded SIGTERM
    stops nothing); whatever still runs after wait_s (one wait for all) is killed, workers
    first."""
    controllers, workers = [], []
    for pid in pids:
        kids = _descendants(pid)
        try:
            os.kill(pid, signal.SIGINT)
        except OSError:
            continue
        controllers.append(pid)
        workers += kids
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(map(_running, [*controllers, *workers])):
        time.sleep(0.2)
    for p in [*workers, *controllers]:
        if _running(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def same_process(pid: object, started: object) -> bool:
    """Whether PID still names the process that started at `started` (a reused PID, or a
    record without its start time, names whichever process has it now: not ours)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or started is None:
        return False
    if not _exists(pid):
        return False
    return process_start(pid) in (None, str(started))


def local_process_alive(job: dict[str, Any]) -> bool:
    """Whether the local job's own process still runs (same PID and same start time)."""
    pid = job.get("pid")
    return same_process(pid, job.get("pid_start"))


def progress_line(rd: RunDir, shown: dict[str, tuple[float, str]],
                  every_s: float = PROGRESS_EVERY_S) -> str | None:
    """A run's phase, step / total, loss and eta from its progress.json, when it has changed
    and the last line for that run is at least every_s old (a long local sweep shows life)."""
    try:
        pr = clean_progress(read_json(rd.progress)) if rd.progress.is_file() else None
    except ValueError:
        pr = None
    if not pr or not pr.get("total"):
        return None
    text = f"{rd.run_id}: {pr.get('phase', '')} {pr.get('step', 0)}/{pr['total']}"
    if "loss" in pr:
        text += f" loss {pr['loss']:.3f}"
    if "eta_s" in pr:
        text += f" eta {pr['eta_s']:.0f}s"
    now = time.monotonic()
    last = shown.get(rd.run_id)
    if last and (last[1] == text or now - last[0] < every_s):
        return None
    shown[rd.run_id] = (now, text)
    return text


@contextmanager
def stderr_into(log: Path) -> Iterator[None]:
    """The stderr a child started here inherits goes to log: submitit's local controller
    writes there (its traceback when a Ctrl-C stops it), not into the user's terminal; the
    runs' own logs are files of their own."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        fd = open_no_follow(log, append=True)
        try:
            os.dup2(fd, 2)
        finally:
            os.close(fd)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def drop_placeholder(folder: Path) -> None:
    """submitit creates its folder pattern (%j) as a folder of its own; the jobs write into
    folders named by their ids, so the empty pattern folder goes."""
    try:
        (job_files_dir(folder) / "%j").rmdir()
    except OSError:
        pass
