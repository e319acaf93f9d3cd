"""Planned runs become tasks once: a task is one job of a backend (a run, or a pack of runs
sharing a card), each run with the runs it evaluates with its model (its followers,
launcher.sharing). The job records of a task, its pack and its followers are written here and
nowhere else, whichever backend submitted it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.fileio import atomic_write_json, read_json
from core.results import now_iso
from core.rundir import RunDir
from core.search import budget_from_doc
from launcher.envs import EnvProfile, pack_cap
from launcher.plan import PlanError, Resources, pack_runs, plan_run
from launcher.sweep import Run, Sweep
from launcher.yamlio import YamlError


@dataclass
class PlannedRun:
    run: Run
    resources: Resources
    need_gb: float
    action: str = "submit"  # submit | skip-done | skip-active | skip-failed
    trained_in: str | None = None
    """The run whose trained model this one is evaluated with (launcher.sharing), if any."""
    followers: list[PlannedRun] = field(default_factory=list)
    """The runs this one's job evaluates with the model it trains (launcher.sharing)."""
    attached: bool = False
    """Evaluated in the job of the run it follows (after that run has trained), not in a job
    of its own."""
    config_sha256: str | None = None
    """The SHA-256 of the config.yaml this submit wrote for the run: the job trains only a
    config with this digest (it travels in the private job call, not the runs folder)."""

    @property
    def run_id(self) -> str:
        return self.run.run_id


@dataclass
class Task:
    """One job: a run, or a pack of runs sharing a card, and the GPUs it holds (local)."""

    runs: list[PlannedRun]
    gpus: list[int] = field(default_factory=list)
    job: Any = None
    """The backend's handle once started (a submitit job)."""

    @property
    def gpus_needed(self) -> int:
        return self.runs[0].resources.gpus

    def run_dirs(self, folder: Path) -> list[str]:
        return [str(folder / p.run_id) for p in self.runs]

    def with_followers(self) -> list[PlannedRun]:
        """The runs of the job: each with the runs it evaluates with its model after it."""
        return [q for p in self.runs for q in (p, *p.followers)]


def plan_sweep(sweep: Sweep, env: EnvProfile) -> list[PlannedRun]:
    """Each run of the sweep with its resources and memory estimate (every problem at once)."""
    planned, errors = [], []
    for run in sweep.runs:
        try:
            res, est = plan_run(run.config, env)
        except PlanError as exc:
            errors.append(f"{sweep.path}: run {run.run_id}: {exc}")
            continue
        planned.append(PlannedRun(run, res, est.total_gb))
    if errors:
        raise YamlError("\n".join(errors))
    return planned


def resource_groups(planned: list[PlannedRun]) -> list[list[PlannedRun]]:
    """Runs with the same resources: one job array each."""
    groups: dict[tuple[Any, ...], list[PlannedRun]] = {}
    for p in planned:
        groups.setdefault(p.resources.key(), []).append(p)
    return list(groups.values())


def packs_of(members: list[PlannedRun], env: EnvProfile) -> list[list[PlannedRun]]:
    """The array tasks of one resource group: runs packed onto one GPU where their memory
    estimates fit (env runs_per_gpu), else one task per run (multi-GPU runs never share)."""
    res = members[0].resources
    if res.gpus != 1:
        return [[p] for p in members]
    idx = pack_runs([p.need_gb for p in members], res.vram_per_gpu_gb * env.vram_margin,
                    pack_cap(env))
    return [[members[i] for i in pack] for pack in idx]


def tasks_of(todo: list[PlannedRun], env: EnvProfile) -> list[list[Task]]:
    """The tasks of each resource group, in sweep order (attached followers ride in their
    owner's task, not in one of their own)."""
    own = [p for p in todo if not p.attached]
    return [[Task(pack) for pack in packs_of(members, env)] for members in resource_groups(own)]


def job_function(task: Task, folder: Path, env: EnvProfile) -> Any:
    """The picklable callable the task's job runs (its import is deferred: jobs.* loads no
    torch at import, but the launcher need not load jobs at all to plan)."""
    from jobs.pack import PackJob
    from jobs.pipeline import PipelineJob

    dirs = task.run_dirs(folder)
    ids = identities(task)
    return (PipelineJob(dirs[0], ids) if len(dirs) == 1
            else PackJob(dirs, mps=env.cuda_mps, identities=ids))


def identities(task: Task) -> dict[str, str]:
    """{run id: its config.yaml's SHA-256} for every run the task's job may train or evaluate
    (followers included); the job refuses any other run or config."""
    missing = [p.run_id for p in task.with_followers() if not p.config_sha256]
    if missing:
        raise ValueError(f"{missing[0]}: no config digest; its config.yaml was not written by "
                         "this submit")
    return {p.run_id: str(p.config_sha256) for p in task.with_followers()}


def _rung(rd: RunDir) -> dict[str, Any]:
    """job.json's rung, for a run of an adaptive sweep (launcher.search archives by it)."""
    if not rd.budget.is_file():
        return {}
    try:
        return {"rung": budget_from_doc(read_json(rd.budget), str(rd.budget), math.inf).rung}
    except ValueError:
        return {}


def job_doc(p: PlannedRun, env: EnvProfile, job_id: str, backend: str, params: dict[str, Any],
            stdout: str, stderr: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": p.run_id, "cluster": backend, "job_id": job_id,
            "env": env.name, "model": p.run.config.model.name_or_path,
            "varied": p.run.varied, "resources": p.resources.as_dict(),
            "need_gb": p.need_gb, "sbatch": params, "submitted_at": now_iso(),
            "stdout": stdout, "stderr": stderr, **extra}


def job_docs(task: Task, folder: Path, env: EnvProfile, backend: str, job_id: str,
             params: dict[str, Any], logs: tuple[str, str],
             **extra: Any) -> dict[Path, dict[str, Any]]:
    """{job.json path: its document} of every run of a task and of each one's followers. A
    packed run's own process logs into its folder; the task's log (the pack's supervisor) is
    named beside it."""
    docs: dict[Path, dict[str, Any]] = {}
    for p in task.runs:
        rd = RunDir(folder / p.run_id)
        own_logs, more = logs, {**_rung(rd), **extra}
        if len(task.runs) > 1:
            more["pack"] = {"runs": [q.run_id for q in task.runs],
                            "stdout": logs[0], "stderr": logs[1]}
            own_logs = (str(rd.run_log), str(rd.run_log))
        docs[rd.job] = job_doc(p, env, job_id, backend, params, *own_logs, **more)
        for f in p.followers:
            docs[RunDir(folder / f.run_id).job] = job_doc(
                f, env, job_id, backend, params, *own_logs, **{**more, "trained_in": p.run_id})
    return docs


def write_job_records(task: Task, folder: Path, env: EnvProfile, backend: str, job_id: str,
                      params: dict[str, Any], logs: tuple[str, str], **extra: Any) -> list[Path]:
    """job.json of every run of a started task and of each one's followers (job_docs); the
    files written."""
    docs = job_docs(task, folder, env, backend, job_id, params, logs, **extra)
    for path, doc in docs.items():
        atomic_write_json(path, doc)
    return list(docs)
