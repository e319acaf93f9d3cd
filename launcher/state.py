"""Run states from files and one sacct call: what status, resubmit and submit decide on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from core.fileio import read_json
from core.results import has_results
from core.rundir import CONFIG_FILE, JOB_FILE, SUBMITIT, RunDir, clean_progress, job_files_dir

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SUBMITTED", "STAGE_OUT", "SIGNALING"}
RETRYABLE = {"FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE", "LOST"}


@dataclass
class RunState:
    run_id: str
    path: Path
    state: str
    job_id: str | None
    varied: dict[str, Any]
    model: str
    elapsed: str = ""
    error: str = ""
    progress: dict[str, Any] | None = None


def sacct_states(job_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """One sacct call for every job id; {} when sacct is missing or fails."""
    ids = sorted({j for j in job_ids if j})
    if not ids or shutil.which("sacct") is None:
        return {}
    # Array tasks are queried through their parent id.
    parents = sorted({j.split("_", 1)[0] for j in ids})
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "--parsable2", "-o", "JobID,State,Elapsed,ExitCode,Reason",
             "-j", ",".join(parents)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    info: dict[str, dict[str, str]] = {}
    for line in out.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        jid, state, elapsed, code, reason = parts[:5]
        info[jid] = {"state": state.split()[0] if state else "UNKNOWN",
                     "detail": state, "elapsed": elapsed, "exit_code": code, "reason": reason}
    return info


def read_job(rd: RunDir) -> dict[str, Any] | None:
    if not rd.job.is_file():
        return None
    try:
        doc = read_json(rd.job)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _error_line(rd: RunDir, job: dict[str, Any] | None) -> str:
    if rd.error.is_file():
        try:
            return str(read_json(rd.error).get("error", ""))
        except (ValueError, AttributeError):
            pass
    log = _own_log(rd, (job or {}).get("stderr"))
    if log is not None:
        lines = [ln.strip() for ln in _tail(log).splitlines() if ln.strip()]
        for ln in reversed(lines):
            if "Error" in ln or "error" in ln or "CANCELLED" in ln or "Killed" in ln:
                return ln[:300]
        return lines[-1][:300] if lines else ""
    return ""


LOG_TAIL_BYTES = 64 * 1024
"""How much of a log status reads: its last lines are what it shows."""


def _own_log(rd: RunDir, named: object) -> Path | None:
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


def _tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - size))
        return fh.read().decode("utf-8", errors="replace")


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


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to reap it."""
    try:
        os.kill(pid, 0)
    except OSError:
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


def local_process_alive(job: dict[str, Any]) -> bool:
    """Whether the local job's own process still runs (same PID and same start time)."""
    try:
        pid = int(job.get("pid"))  # type: ignore[arg-type]
        os.kill(pid, 0)
    except (OSError, ValueError, TypeError):
        return False
    started = job.get("pid_start")
    # Without its start time a PID names whichever process has it now (a planted job.json
    # could name any of yours): not ours.
    return started is not None and process_start(pid) in (None, str(started))


def run_states(sweep_dir: Path) -> list[RunState]:
    """States of every run folder of a sweep, with a single sacct round trip."""
    # A run folder is one with any of its own files (a finished run whose config.yaml was
    # deleted is still a run: the leaderboard shows it, so status must too).
    dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (
        (p / CONFIG_FILE).is_file() or (p / JOB_FILE).is_file() or RunDir(p).performance.is_file()))
    jobs = {d: read_job(RunDir(d)) for d in dirs}
    info = sacct_states(j["job_id"] for j in jobs.values() if j and j.get("cluster") == "slurm")
    seen_keys = list(dict.fromkeys(k for j in jobs.values() if j
                                   for k in (j.get("varied") or {})))
    out = []
    for d in dirs:
        rd, job = RunDir(d), jobs[d]
        progress = None
        if rd.progress.is_file():
            try:
                progress = clean_progress(read_json(rd.progress))
            except ValueError:
                progress = None
        st = RunState(rd.run_id, d, "NOT_SUBMITTED", None, (job or {}).get("varied", {}),
                      (job or {}).get("model", ""), progress=progress)
        if job:
            st.job_id = str(job.get("job_id"))
            st.elapsed = info.get(st.job_id, {}).get("elapsed", "")
        else:
            # Queued (not yet started) local runs: model and varied values from their config.
            st.model, st.varied = _from_config(rd, seen_keys)
        if has_results(rd.performance):
            st.state = "COMPLETED"
        elif job is None:
            st.state = "NOT_SUBMITTED"
        elif (job.get("pack") or job.get("trained_in")) and (
                rd.error.is_file() or rd.cancel_request.is_file()):
            # A packed run, or one evaluated in the job of the run whose model it shares, ends
            # on its own while its job goes on with the others; a cancel request counts at
            # once (its pack stops the run within a second or so; a shared-model run is
            # skipped when its turn comes).
            cancelled = not rd.error.is_file() or _cancelled(rd)
            st.state = "CANCELLED" if cancelled else "FAILED"
            st.error = _error_line(rd, job) if rd.error.is_file() else "cancel requested"
        elif job.get("cluster") == "slurm":
            row = info.get(st.job_id or "")
            if row is None:
                st.state = "PENDING"  # sacct lags the controller by a few seconds
            else:
                st.state = row["state"]
                if st.state == "COMPLETED":  # the job ended but left no valid results
                    st.state = "FAILED"
                if st.state in RETRYABLE:
                    st.error = _error_line(rd, job) or row["detail"]
        else:  # local executor
            if rd.error.is_file():
                st.state = "FAILED"
                st.error = _error_line(rd, job)
            elif local_process_alive(job):
                st.state = "RUNNING"
            else:
                st.state = "FAILED"
                st.error = _error_line(rd, job) or "the local job ended without results"
        if job and job.get("cluster") != "slurm" and not st.elapsed:
            st.elapsed = _local_elapsed(rd, job, st.state)
        out.append(st)
    return out


def _cancelled(rd: RunDir) -> bool:
    try:
        return read_json(rd.error).get("cancelled") is True
    except (ValueError, AttributeError):
        return False


def _from_config(rd: RunDir, keys: list[str]) -> tuple[str, dict[str, Any]]:
    try:
        import yaml

        cfg = yaml.safe_load(rd.config.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return "", {}
    if not isinstance(cfg, dict):
        return "", {}

    def get(key: str) -> Any:
        section, _, name = key.partition(".")
        sec = cfg.get(section)
        return sec.get(name) if isinstance(sec, dict) else None

    return str(get("model.name_or_path") or ""), {k: get(k) for k in keys}


def _local_elapsed(rd: RunDir, job: dict[str, Any], state: str) -> str:
    """Wall time of a local run, from its submission to its results (or to now while it runs),
    as Slurm's sacct writes it (H:MM:SS)."""
    from datetime import datetime, timezone

    try:
        start = datetime.fromisoformat(str(job.get("submitted_at")))
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
