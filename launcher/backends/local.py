"""This machine: each task through submitit's local executor, on its own card(s) as they come
free (or max_parallel at a time on the CPU); submit returns when the runs have ended.

A local job's process is recorded twice: in job.json (shared runs folder: what status reads,
so a lab-mate sees the run RUNNING) and in the sweep's private job-files folder
(``local/<pid>.json``, yours alone). Only the private record is ever signalled.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import launcher.backends.warm as warm
from core.fileio import atomic_write_json, read_json
from core.results import has_results
from core.rundir import RunDir, job_files_dir
from launcher.backends.base import JobState, SubmitContext, elapsed_since_record
from launcher.backends.procs import (
    NAME,
    PRIVATE_PIDS,
    drop_placeholder,
    local_process_alive,
    process_start,
    progress_line,
    same_process,
    stderr_into,
    stop_local_jobs,
)
from launcher.envs import EnvProfile
from launcher.gpus import LocalGpu, place
from launcher.jobrecord import JobRecord
from launcher.runlogs import error_line
from launcher.tasks import Task, job_function, write_job_records

__all__ = ["LocalBackend", "confirmed_pid", "initial_placement", "local_process_alive",
           "process_start", "progress_line", "same_process", "stop_local_jobs"]


def _private_record(folder: Path, job_id: str) -> Path | None:
    """Where the private folder records local job job_id (None for an id that is no PID)."""
    if not (job_id.isascii() and job_id.isdigit()) or len(job_id) > 10:
        return None
    return job_files_dir(folder) / PRIVATE_PIDS / f"{job_id}.json"


def confirmed_pid(folder: Path, rec: JobRecord) -> int | None:
    """The process of a local job as this user's private job files recorded it, while it
    still runs; None where they never recorded this run's job (a planted job.json)."""
    path = _private_record(folder, rec.job_id)
    if path is None or path.is_symlink() or not path.is_file():
        return None
    try:
        doc = read_json(path)
    except ValueError:
        return None
    if not isinstance(doc, dict) or rec.run_id not in (doc.get("runs") or []):
        return None
    pid = doc.get("pid")
    return pid if same_process(pid, doc.get("pid_start")) else None  # type: ignore[return-value]


def _on_free_cards(tasks: list[Task], free: list[int]) -> list[Task]:
    """The GPU tasks (in order) that fit on the free cards now, each with its cards; the cards
    taken leave free (launcher.gpus.place)."""
    gpu_tasks = [t for t in tasks if t.gpus_needed > 0]
    return [Task(t.runs, cards) for t, cards in
            place(gpu_tasks, [t.gpus_needed for t in gpu_tasks], free)]


def initial_placement(tasks: list[Task], gpus: tuple[LocalGpu, ...]) -> list[Task]:
    """The tasks that start at once on an idle machine, with their cards (what --dry-run
    shows; the rest start as cards come free)."""
    return _on_free_cards(tasks, [g.index for g in gpus])


def _startable(queue: list[Task], running: list[Task], env: EnvProfile,
               free: list[int]) -> list[Task]:
    """Tasks of the queue that may start now: GPU tasks on free cards, CPU tasks up to
    max_parallel."""
    out = _on_free_cards(queue, free)
    cpu_slots = env.max_parallel - sum(1 for t in running if not t.gpus)
    out += [t for t in queue if t.gpus_needed == 0][:max(0, cpu_slots)]
    return out


def _where(task: Task) -> str:
    cards = ",".join(map(str, task.gpus))
    return f"on GPU {cards}" if len(task.gpus) == 1 else (
        f"on GPUs {cards}" if task.gpus else "on the CPU")


class LocalBackend:
    name = NAME
    waits_for_runs = True

    def submit(self, groups: list[list[Task]], ctx: SubmitContext) -> None:
        for k, v in ctx.env.env_vars.items():
            os.environ.setdefault(k, v)
        # nvidia-smi numbers cards by PCI bus; CUDA must read CUDA_VISIBLE_DEVICES the same way.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        if warm.usable(groups, ctx.env):
            warm.serve(groups, ctx)
            return
        queue = [t for tasks in groups for t in tasks]
        running: list[Task] = []
        try:
            _loop(queue, running, ctx, [g.index for g in ctx.gpus])
        except KeyboardInterrupt:
            # Stop what runs: they resume from their checkpoints later. In a terminal the runs
            # got the Ctrl-C too; a SIGINT sent to this process alone must stop them as well.
            stop_local_jobs(int(t.job.job_id) for t in running)
            for t in running:
                proc = getattr(t.job, "_process", None)
                if proc is not None:
                    proc.wait()  # reaped, so no zombie outlives the submit
            raise

    def poll(self, records: list[JobRecord]) -> None:
        return None

    def job_state(self, rd: RunDir, rec: JobRecord, polled: Any) -> JobState:
        if rd.error.is_file():
            return JobState("FAILED", error_line(rd, rec))
        if same_process(rec.pid, rec.pid_start):
            return JobState("RUNNING")
        return JobState("FAILED", error_line(rd, rec) or "the local job ended without results")

    def elapsed(self, rd: RunDir, rec: JobRecord, state: str, polled: Any) -> str:
        return elapsed_since_record(rd, rec, state)

    def stop(self, records: list[tuple[Path, JobRecord]]) -> tuple[str, str]:
        pids = {r.run_id: confirmed_pid(folder, r) for folder, r in records}
        stop_local_jobs(dict.fromkeys(p for p in pids.values() if p is not None))
        stopped = [r for r, p in pids.items() if p is not None]
        return (f"stopped {len(stopped)} local run(s)" + "".join(f"\n  {r}" for r in stopped),
                "")

    def plan_lines(self, env: EnvProfile, groups: list[list[Task]],
                   gpus: tuple[LocalGpu, ...]) -> list[str]:
        tasks = [t for g in groups for t in g]
        if not gpus:
            return [f"\nno GPU found (nvidia-smi, CUDA_VISIBLE_DEVICES, the profile's gpus: "
                    f"{env.gpus}): the runs train on this CPU, {env.max_parallel} at a time"]
        cards = ", ".join(f"{g.index} ({g.name}, {g.vram_gb:g} GB)" for g in gpus)
        if warm.usable(groups, env):
            return warm.plan_lines(env, [p for t in tasks for p in t.runs], gpus, cards)
        started = initial_placement(tasks, gpus)
        n_runs = sum(len(t.runs) for t in tasks)
        lines = [f"\nthis machine's GPUs: {cards}; {n_runs} run(s) in {len(tasks)} local "
                 f"job(s) (runs_per_gpu: {env.runs_per_gpu}), each on its own card(s):"]
        for t in started:
            lines.append(f"  GPU {','.join(map(str, t.gpus))}: "
                         + ", ".join(p.run_id for p in t.runs))
        if len(tasks) > len(started):
            lines.append(f"  then {len(tasks) - len(started)} more job(s), each on the next "
                         "card(s) that come free")
        return lines


def _start(task: Task, ctx: SubmitContext) -> Any:
    import submitit

    env, folder, jobs_dir = ctx.env, ctx.folder, ctx.jobs_dir
    # The LocalExecutor itself: the AutoExecutor does not pass visible_gpus on.
    ex = submitit.LocalExecutor(folder=jobs_dir / "%j")
    ex.update_parameters(timeout_min=env.time_limit_min, gpus_per_node=len(task.gpus),
                         visible_gpus=tuple(task.gpus), signal_delay_s=env.signal_delay_s)
    with stderr_into(jobs_dir / "controllers.log"):
        job = ex.submit(job_function(task, folder, env))
    pid = int(job.job_id)
    pid_start = process_start(pid)
    runs = [p.run_id for p in task.with_followers()]
    private = jobs_dir / PRIVATE_PIDS
    private.mkdir(mode=0o700, exist_ok=True)
    atomic_write_json(private / f"{pid}.json", {"pid": pid, "pid_start": pid_start,
                                                "runs": runs})
    write_job_records(task, folder, env, NAME, str(job.job_id),
                      {"timeout_min": env.time_limit_min, "gpus": task.gpus},
                      (str(job.paths.stdout), str(job.paths.stderr)),
                      pid=pid, pid_start=pid_start)
    return job


def _loop(queue: list[Task], running: list[Task], ctx: SubmitContext, free: list[int]) -> None:
    order = list(free)
    shown: dict[str, tuple[float, str]] = {}
    while queue or running:
        for task in _startable(queue, running, ctx.env, free):
            queue[:] = [t for t in queue if t.runs is not task.runs]
            task.job = _start(task, ctx)
            ctx.started.append(task)
            _say_started(task, ctx)
            running.append(task)
        time.sleep(0.5)
        for task in running:
            for p in task.with_followers():
                line = progress_line(RunDir(ctx.folder / p.run_id), shown)
                if line:
                    ctx.on_event(line)
        for task in list(running):
            if task.job.done():
                running.remove(task)
                free[:] = [i for i in order if i in free or i in task.gpus]
                _say_ended(task, ctx)
    drop_placeholder(ctx.folder)  # the local controllers create it as they start


def _say_started(task: Task, ctx: SubmitContext) -> None:
    for p in task.runs:
        ctx.on_event(f"started {p.run_id} {_where(task)}")
        for f in p.followers:
            ctx.on_event(f"queued {f.run_id}: evaluated with {p.run_id}'s model once it is "
                         "trained")


def _say_ended(task: Task, ctx: SubmitContext) -> None:
    # Outcome from medsweep's own files, not submitit's result pickle (the runs folder may be
    # shared: a pickle there is not ours to load).
    for p in task.with_followers():
        rd = RunDir(ctx.folder / p.run_id)
        ok = has_results(rd.performance) and not rd.error.exists()
        ctx.on_event(f"{'finished' if ok else 'failed'} {p.run_id}")
