"""Run states from files and one poll per backend (one sacct call for Slurm): what status,
cancel, resubmit and submit decide on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.fileio import read_json
from core.results import has_results
from core.rundir import CONFIG_FILE, JOB_FILE, RunDir, clean_progress
from launcher.backends import BACKENDS, backend_named
from launcher.jobrecord import ACTIVE, RETRYABLE, JobRecord, read_job, read_record
from launcher.runlogs import cancelled, error_line

__all__ = ["ACTIVE", "RETRYABLE", "RunState", "read_job", "run_states"]


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
    record: JobRecord | None = None
    """The run's job record (None before it is submitted)."""


def _run_dirs(sweep_dir: Path) -> list[Path]:
    # A run folder is one with any of its own files (a finished run whose config.yaml was
    # deleted is still a run: the leaderboard shows it, so status must too).
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (
        (p / CONFIG_FILE).is_file() or (p / JOB_FILE).is_file()
        or RunDir(p).performance.is_file()))


def _progress(rd: RunDir) -> dict[str, Any] | None:
    if not rd.progress.is_file():
        return None
    try:
        return clean_progress(read_json(rd.progress))
    except ValueError:
        return None


def run_states(sweep_dir: Path) -> list[RunState]:
    """States of every run folder of a sweep, with a single poll of each backend."""
    dirs = _run_dirs(sweep_dir)
    records = {d: read_record(RunDir(d)) for d in dirs}
    polled = {name: b.poll([r for r in records.values() if r and r.backend == name])
              for name, b in BACKENDS.items()}
    seen_keys = list(dict.fromkeys(k for r in records.values() if r for k in r.varied))
    return [_state(RunDir(d), records[d], polled, seen_keys) for d in dirs]


def _state(rd: RunDir, rec: JobRecord | None, polled: dict[str, Any],
           seen_keys: list[str]) -> RunState:
    st = RunState(rd.run_id, rd.path, "NOT_SUBMITTED", None, {}, "", progress=_progress(rd),
                  record=rec)
    if rec is None:
        # Queued (not yet started) local runs: model and varied values from their config.
        st.model, st.varied = _from_config(rd, seen_keys)
        if has_results(rd.performance):
            st.state = "COMPLETED"
        return st
    backend = backend_named(rec.backend)
    st.job_id, st.varied, st.model = rec.job_id, rec.varied, rec.model
    if has_results(rd.performance):
        st.state = "COMPLETED"
    elif rec.shares_job and (rd.error.is_file() or rd.cancel_request.is_file()):
        # A packed run, or one evaluated in the job of the run whose model it shares, ends on
        # its own while its job goes on with the others; a cancel request counts at once (its
        # pack stops the run within a second or so; a shared-model run is skipped when its
        # turn comes).
        st.state = "CANCELLED" if not rd.error.is_file() or cancelled(rd) else "FAILED"
        st.error = error_line(rd, rec) if rd.error.is_file() else "cancel requested"
    else:
        js = backend.job_state(rd, rec, polled[backend.name])
        st.state, st.error = js.state, js.error
    st.elapsed = backend.elapsed(rd, rec, st.state, polled[backend.name])
    return st


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
