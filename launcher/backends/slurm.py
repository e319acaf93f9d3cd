"""Slurm: one job array per resource group (a task per run or pack), states from one sacct
call, scancel to stop; an adaptive sweep's next rung is decided by a one-CPU decider job."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import launcher.backends.pool as pool
from core.fileio import atomic_write_json, read_json
from core.results import now_iso
from core.rundir import RunDir
from launcher.backends.base import JobState, SubmitContext, elapsed_since_record, jobs_dir
from launcher.backends.procs import drop_placeholder
from launcher.envs import EnvProfile
from launcher.errors import SubmitError
from launcher.gpus import LocalGpu
from launcher.jobrecord import ACTIVE, RETRYABLE, JobRecord
from launcher.plan import sbatch_parameters
from launcher.runlogs import error_line
from launcher.tasks import Task, job_function, write_job_records

NAME = "slurm"
DECIDER_FILE = "search-decider.json"
"""The last decider job submitted, for status."""
DECIDER_TIME_MIN = 15


def env_setup_lines(env: EnvProfile) -> list[str]:
    lines = list(env.setup)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.env_vars.items()]
    return lines


def sacct_states(job_ids: Any) -> dict[str, dict[str, str]]:
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


def sbatch_flags(params: dict[str, Any]) -> str:
    names = {"slurm_partition": "--partition", "cpus_per_task": "--cpus-per-task",
             "slurm_gres": "--gres", "gpus_per_node": "--gpus-per-node",
             "slurm_account": "--account", "slurm_qos": "--qos"}
    out = [f"{flag}={params[k]}" for k, flag in names.items() if k in params]
    if "mem_gb" in params:
        out.append(f"--mem={params['mem_gb']}G")
    if "timeout_min" in params:
        out.append(f"--time={params['timeout_min']}")
    for k, v in params.get("slurm_additional_parameters", {}).items():
        out.append(f"--{k}={v}")
    if "slurm_signal_delay_s" in params:
        out.append(f"--signal=USR2@{params['slurm_signal_delay_s']}")
    return " ".join(out)


class SlurmBackend:
    name = NAME
    waits_for_runs = False

    def submit(self, groups: list[list[Task]], ctx: SubmitContext) -> None:
        submitted: list[Path] = []
        try:
            for tasks in groups:
                if pool.usable(tasks, ctx.env):
                    submitted += _submit_pool(tasks, ctx)
                else:
                    submitted += _submit_array(tasks, ctx)
        except Exception as exc:  # sbatch refused: undo this call's submissions
            _undo(ctx.started, submitted)
            msg = str(exc).strip().splitlines()
            detail = next((ln for ln in msg if "error" in ln.lower()),
                          msg[0] if msg else repr(exc))
            raise SubmitError(f"sbatch refused the sweep ({detail.strip()}); nothing was "
                              "submitted") from None

    def poll(self, records: list[JobRecord]) -> dict[str, dict[str, str]]:
        return sacct_states(r.job_id for r in records)

    def job_state(self, rd: RunDir, rec: JobRecord, polled: Any) -> JobState:
        row = polled.get(rec.job_id)
        if row is None and rec.pool:
            state = pool.pool_state(polled, rec.job_id)
            return JobState(state) if state else JobState("FAILED", error_line(rd, rec)
                                                          or pool.POOL_ENDED)
        if row is None:
            return JobState("PENDING")  # sacct lags the controller by a few seconds
        state = row["state"]
        if state == "COMPLETED":  # the job ended but left no valid results
            state = "FAILED"
        return JobState(state, (error_line(rd, rec) or row["detail"])
                        if state in RETRYABLE else "")

    def elapsed(self, rd: RunDir, rec: JobRecord, state: str, polled: Any) -> str:
        if rec.worker:  # a pool's run: since its worker took it, not the task's whole time
            return elapsed_since_record(rd, rec, state)
        return str(polled.get(rec.job_id, {}).get("elapsed", ""))

    def stop(self, records: list[tuple[Path, JobRecord]]) -> tuple[str, str]:
        ids = list(dict.fromkeys(r.job_id for _folder, r in records))
        if not ids:
            return "", ""
        if shutil.which("scancel") is None:
            return "", ("scancel is not on PATH; run cancel where the Slurm tools are "
                        f"(job ids {' '.join(ids)})")
        out = subprocess.run(["scancel", *ids], capture_output=True, text=True)
        if out.returncode != 0:
            return "", f"scancel failed: {out.stderr.strip()}"
        return f"cancelled {len(ids)} job(s): {' '.join(ids)}", ""

    def plan_lines(self, env: EnvProfile, groups: list[list[Task]],
                   gpus: tuple[LocalGpu, ...]) -> list[str]:
        lines = [f"\n{len(groups)} job array(s) (runs_per_gpu: {env.runs_per_gpu}):"]
        for tasks in groups:
            members = [p for t in tasks for p in t.runs]
            params = sbatch_parameters(members[0].resources, env)
            if pool.usable(tasks, env):
                n, k = pool.pool_size(members, env)
                lines.append(f"  {len(members)} run(s) in a pool of warm workers: sbatch "
                             f"{sbatch_flags(params)} --array=0-{n - 1}%{env.max_parallel}, "
                             f"{k} worker(s) per task taking run after run (warm_workers: "
                             "true)")
                continue
            lines.append(f"  {len(members)} run(s) in {len(tasks)} task(s): sbatch "
                         f"{sbatch_flags(params)} --array=0-{len(tasks) - 1}%{env.max_parallel}")
            for i, t in enumerate(tasks):
                if len(t.runs) > 1:
                    need = sum(p.need_gb for p in t.runs)
                    lines.append(f"    task {i}: {len(t.runs)} runs side by side on one GPU "
                                 f"({need:.1f} GB estimated): "
                                 + ", ".join(p.run_id for p in t.runs))
        return lines


def _submit_array(tasks: list[Task], ctx: SubmitContext) -> list[Path]:
    """One job array for tasks with the same resources; the job records written."""

    env, folder = ctx.env, ctx.folder
    params = sbatch_parameters(tasks[0].runs[0].resources, env)
    ex = _executor(ctx, params, f"medsweep-{ctx.sweep_name}", env.max_requeues)
    with ex.batch():
        jobs = [ex.submit(job_function(t, folder, env)) for t in tasks]
    drop_placeholder(folder)
    written: list[Path] = []
    for job, task in zip(jobs, tasks, strict=True):
        task.job = job
        ctx.started.append(task)
        written += write_job_records(task, folder, env, NAME, str(job.job_id), params,
                                     (str(job.paths.stdout), str(job.paths.stderr)))
    return written


def _submit_pool(tasks: list[Task], ctx: SubmitContext) -> list[Path]:
    """A worker pool for tasks with the same resources (launcher.backends.pool)."""
    env = ctx.env
    params = sbatch_parameters(tasks[0].runs[0].resources, env)
    n_runs = sum(len(t.runs) for t in tasks)
    # Each run may be stopped (time limits, a dead worker) max_requeues + 1 times: the pool's
    # coordinators count that per run; submitit's count per task must not end the pool first.
    ex = _executor(ctx, params, f"medsweep-{ctx.sweep_name}-pool",
                   n_runs * (env.max_requeues + 1))
    return pool.submit_pool(tasks, ctx, params, ex)


def _executor(ctx: SubmitContext, params: dict[str, Any], name: str, max_requeues: int) -> Any:
    """A submitit Slurm executor for one resource group's parameters."""
    import submitit

    ex = submitit.AutoExecutor(folder=ctx.jobs_dir / "%j", cluster="slurm",
                               slurm_max_num_timeout=max_requeues)
    ex.update_parameters(name=name, slurm_setup=env_setup_lines(ctx.env),
                         **{k: v for k, v in params.items() if k != "slurm_setup"})
    return ex


def _undo(started: list[Task], written: list[Path]) -> None:
    ids = sorted({str(t.job.job_id).split("_")[0] for t in started if t.job is not None})
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)
    for path in written:
        if path.exists():
            path.unlink()


def _decider_waits_for(folder: Path, ids: list[str]) -> bool:
    """Whether the last decider submitted is still queued after (at least) these jobs."""
    try:
        last = read_json(folder / DECIDER_FILE)
    except ValueError:
        return False
    if not isinstance(last, dict) or not set(ids) <= set(last.get("after") or []):
        return False
    row = sacct_states([str(last.get("job_id"))]).get(str(last.get("job_id")))
    return row is None or row["state"] in ACTIVE


def submit_decider(ctx: SubmitContext, active_job_ids: list[str], decider: Callable[[], str],
                   sweep_path: Path) -> None:
    """A one-CPU decider job after every active job of the search (none when nothing runs:
    the search has ended or waits for a submit). decider runs the sweep's next submit."""
    import submitit

    env, folder = ctx.env, ctx.folder
    ids = sorted({j.split("_")[0] for j in active_job_ids})
    if not ids or _decider_waits_for(folder, ids):
        return
    ex = submitit.AutoExecutor(folder=jobs_dir(folder) / "%j", cluster="slurm")
    params: dict[str, Any] = {"timeout_min": DECIDER_TIME_MIN, "cpus_per_task": 1,
                              "mem_gb": 2,
                              "slurm_partition": env.decider_partition or env.partitions[0].name,
                              "slurm_additional_parameters": {
                                  "dependency": "afterany:" + ":".join(ids),
                                  "kill-on-invalid-dep": "no"}}
    if env.account:
        params["slurm_account"] = env.account
    if env.qos:
        params["slurm_qos"] = env.qos
    ex.update_parameters(name=f"medsweep-{ctx.sweep_name}-decide",
                         slurm_setup=env_setup_lines(env), **params)
    try:
        job = ex.submit(decider)
    except Exception as exc:  # the runs are submitted: say how to go on by hand
        raise SubmitError(f"the search's decider job was refused ({str(exc).strip()[:200]}); "
                          f"the runs are submitted: run `python -m launcher submit "
                          f"{sweep_path}` after they end to decide the rung") from None
    drop_placeholder(folder)
    atomic_write_json(folder / DECIDER_FILE, {"job_id": str(job.job_id), "after": ids,
                                             "submitted_at": now_iso()})


def clear_slurm_env() -> None:
    """A decider job's own Slurm variables must not reach the jobs it submits (srun reads
    some of them, e.g. the memory ones, and refuses mixed ones)."""
    for key in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_"))
                and k != "SLURM_CONF"]:
        del os.environ[key]
