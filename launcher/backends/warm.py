"""Warm workers on this machine (the local backend's default): one job per card (or one for
the CPU) runs a warm worker per slot (jobs.worker), and every run of the submit goes through
one work queue in the sweep's private job files. A worker imports torch and Unsloth once and
takes run after run, so a sweep pays the start-up once per slot, not once per run; a search's
promoted runs join the same queue as soon as they are promoted (``more``), with no new process.

Job records are written when a worker takes a run (its card job's process, the worker's name),
so status shows the runs in hand RUNNING and the rest not yet started, as before.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from core.fileio import atomic_write_json
from core.results import has_results
from core.rundir import RunDir
from core.workqueue import WorkItem, WorkQueue, item_from_doc
from launcher.backends.base import SubmitContext
from launcher.backends.procs import (
    NAME,
    PRIVATE_PIDS,
    drop_placeholder,
    process_start,
    progress_line,
    stderr_into,
    stop_local_jobs,
)
from launcher.envs import EnvProfile, pack_cap
from launcher.gpus import LocalGpu
from launcher.tasks import PlannedRun, Task, identities, write_job_records

REQUEUES = 1
"""How often a run whose worker died in its middle is queued again (it resumes)."""


@dataclass
class CardJob:
    """One card's (or the CPU's) job and its workers."""

    gpus: list[int]
    names: list[str]
    job: Any = None
    pid: int = 0
    pid_start: str | None = None
    runs: list[str] = field(default_factory=list)


def usable(groups: list[list[Task]], env: EnvProfile) -> bool:
    """Warm workers take runs of one card or none (a multi-GPU run is a job of its own)."""
    return env.warm_workers and all(t.gpus_needed <= 1 for g in groups for t in g)


def slots_per_card(runs: list[PlannedRun], env: EnvProfile) -> int:
    """How many workers share a card: as many of the sweep's largest runs as its memory holds
    (by their estimates, within the profile's margin), at most runs_per_gpu."""
    gpu_runs = [p for p in runs if p.resources.gpus == 1]
    if not gpu_runs:
        return 1
    card = min(p.resources.vram_per_gpu_gb for p in gpu_runs) * env.vram_margin
    biggest = max(p.need_gb for p in gpu_runs)
    fit = math.floor(card / biggest) if biggest > 0 else pack_cap(env)
    return max(1, min(pack_cap(env), fit, len(gpu_runs)))


def plan_lines(env: EnvProfile, runs: list[PlannedRun], gpus: tuple[LocalGpu, ...],
               cards: str) -> list[str]:
    """What a dry run shows: the workers per card and the first run each takes."""
    k = slots_per_card(runs, env)
    lines = [f"\nthis machine's GPUs: {cards}; {len(runs)} run(s) in warm workers, {k} per "
             f"card (runs_per_gpu: {env.runs_per_gpu}), each taking run after run:"]
    for i, g in enumerate(gpus):
        first = [p.run_id for p in runs[i * k:(i + 1) * k]]
        if first:
            lines.append(f"  GPU {g.index}: " + ", ".join(first))
    left = len(runs) - min(len(runs), k * len(gpus))
    if left:
        lines.append(f"  then {left} more run(s), each on the next worker that comes free")
    return lines


def card_jobs(runs: list[PlannedRun], ctx: SubmitContext) -> list[CardJob]:
    if ctx.gpus and any(p.resources.gpus for p in runs):
        k = slots_per_card(runs, ctx.env)
        return [CardJob([g.index], [f"gpu{g.index}-{i}" for i in range(k)]) for g in ctx.gpus]
    return [CardJob([], [f"cpu-{i}" for i in range(max(1, ctx.env.max_parallel))])]


def serve(groups: list[list[Task]], ctx: SubmitContext) -> None:
    """Queue every run, start the card jobs, and follow the queue until it is drained and
    nothing more comes (ctx.more: a search's promotions)."""
    runs = [q for g in groups for t in g for q in t.runs]
    queue = WorkQueue(ctx.jobs_dir / "work" / f"{int(time.time() * 1000)}-{os.getpid()}")
    queue.own(os.getpid())
    planned: dict[str, PlannedRun] = {}
    for p in runs:
        _put(queue, p, ctx, planned)
    cards = card_jobs(runs, ctx)
    try:
        for card in cards:
            _start(card, queue, ctx)
        _follow(queue, cards, planned, ctx)
    except KeyboardInterrupt:
        stop_local_jobs(c.pid for c in cards if c.job is not None)
        for c in cards:
            proc = getattr(c.job, "_process", None)
            if proc is not None:
                proc.wait()
        raise
    finally:
        queue.close()
    for card in cards:
        while not card.job.done():
            time.sleep(0.2)
    drop_placeholder(ctx.folder)


def _put(queue: WorkQueue, p: PlannedRun, ctx: SubmitContext,
         planned: dict[str, PlannedRun]) -> None:
    planned[p.run_id] = p
    for f in p.followers:
        planned[f.run_id] = f
    queue.put(WorkItem(str(ctx.folder / p.run_id), identities(Task([p]))))
    ctx.started.append(Task([p]))


def _start(card: CardJob, queue: WorkQueue, ctx: SubmitContext) -> None:
    import submitit

    from jobs.worker import CardJob as CardCall

    env = ctx.env
    ex = submitit.LocalExecutor(folder=ctx.jobs_dir / "%j")
    ex.update_parameters(timeout_min=env.time_limit_min, gpus_per_node=len(card.gpus),
                         visible_gpus=tuple(card.gpus), signal_delay_s=env.signal_delay_s)
    with stderr_into(ctx.jobs_dir / "controllers.log"):
        card.job = ex.submit(CardCall(str(queue.root), card.names, mps=env.cuda_mps))
    card.pid = int(card.job.job_id)
    card.pid_start = process_start(card.pid)
    where = f"GPU {card.gpus[0]}" if card.gpus else "the CPU"
    ctx.on_event(f"{len(card.names)} warm worker(s) on {where}")


def _follow(queue: WorkQueue, cards: list[CardJob], planned: dict[str, PlannedRun],
            ctx: SubmitContext) -> None:
    seen: set[str] = set()
    ended: set[str] = set()
    requeued: dict[str, int] = {}
    shown: dict[str, tuple[float, str]] = {}
    by_worker = {n: c for c in cards for n in c.names}
    while True:
        time.sleep(0.5)
        for worker, items in queue.running_by_worker().items():
            for item in items:
                if item.name not in seen and worker in by_worker:
                    seen.add(item.name)
                    _taken(item, worker, by_worker[worker], planned, ctx)
        for rid in [r for r in planned if r not in ended]:
            line = progress_line(RunDir(ctx.folder / rid), shown)
            if line:
                ctx.on_event(line)
        outcomes = _new_outcomes(queue, ended)
        for name, outcome, worker in outcomes:
            if name not in seen and worker in by_worker:  # ended before it was seen running
                seen.add(name)
                _taken(_item_named(queue, name), worker, by_worker[worker], planned, ctx)
            _ended(name, outcome, planned, ctx)
            rid = name.split("-", 1)[1].removesuffix(".json")
            if outcome == "interrupted" and requeued.get(rid, 0) < REQUEUES \
                    and not all(c.job.done() for c in cards):
                requeued[rid] = requeued.get(rid, 0) + 1
                ctx.on_event(f"{rid}: its worker died; queued again (it resumes)")
                _put(queue, planned[rid], ctx, planned)
        drained = not queue.queued() and not queue.running()
        if outcomes or drained:
            more = ctx.more()  # a search's runs promoted by what just ended
            for p in more:
                _put(queue, p, ctx, planned)
            if drained and not more:
                return
        if all(c.job.done() for c in cards):
            ctx.on_event("every worker has ended; the runs left resume when submitted again")
            return


def _new_outcomes(queue: WorkQueue, ended: set[str]) -> list[tuple[str, str, str]]:
    """(item file, outcome, worker) of the items that ended since the last call."""
    done = queue.root / "done"
    out = []
    for p in sorted(done.iterdir()) if done.is_dir() else []:
        if p.suffix == ".json" and p.name not in ended:
            ended.add(p.name)
            doc = json.loads(p.read_text())
            out.append((p.name, str(doc.get("outcome")), str(doc.get("worker", ""))))
    return out


def _item_named(queue: WorkQueue, name: str) -> WorkItem:
    return item_from_doc(json.loads((queue.root / "done" / name).read_text()))


def _taken(item: WorkItem, worker: str, card: CardJob, planned: dict[str, PlannedRun],
           ctx: SubmitContext) -> None:
    """A worker took a run: its job records, and the card job's private record of the runs
    it holds (what cancel may signal)."""
    p = planned[item.run_id]
    card.runs += [q.run_id for q in (p, *p.followers)]
    private = ctx.jobs_dir / PRIVATE_PIDS
    private.mkdir(mode=0o700, exist_ok=True)
    atomic_write_json(private / f"{card.pid}.json", {"pid": card.pid,
                                                    "pid_start": card.pid_start,
                                                    "runs": card.runs})
    logs = (str(card.job.paths.stdout), str(card.job.paths.stderr))
    write_job_records(Task([p], card.gpus), ctx.folder, ctx.env, NAME, str(card.pid),
                      {"timeout_min": ctx.env.time_limit_min, "gpus": card.gpus}, logs,
                      pid=card.pid, pid_start=card.pid_start, worker=worker)
    where = f"on GPU {card.gpus[0]}" if card.gpus else "on the CPU"
    ctx.on_event(f"started {p.run_id} {where} (warm worker {worker})")
    for f in p.followers:
        ctx.on_event(f"queued {f.run_id}: evaluated with {p.run_id}'s model once it is trained")


def _ended(name: str, outcome: str, planned: dict[str, PlannedRun],
           ctx: SubmitContext) -> None:
    rid = name.split("-", 1)[1].removesuffix(".json")
    p = planned.get(rid)
    for q in (p, *p.followers) if p else ():
        rd = RunDir(ctx.folder / q.run_id)
        ok = has_results(rd.performance) and not rd.error.exists()
        ctx.on_event(f"{'finished' if ok else outcome if outcome != 'done' else 'failed'} "
                     f"{q.run_id}")
