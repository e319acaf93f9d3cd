"""Warm workers on Slurm: a worker pool per resource group instead of a job per run or pack.

Submit queues every run of the group in a private work queue (core.workqueue, in the sweep's
job-files folder) and submits one job array of at most ``max_parallel`` tasks. Each task
holds one card and runs as many warm workers as the card's memory takes (jobs.worker, the
same workers the local backend starts), which take run after run from the shared queue: a
sweep pays the start-up once per worker, not once per run, and a search's promoted runs go
on in the same workers, decided inside the pool as soon as their rung allows (no decider job
while a worker is alive; the decider is still queued after the pool, as a safety net).

Each task also runs a coordinator (``Coordinator.tick``, about once a second):

* a run a worker takes gets its job.json with that array task's id and the worker's name, so
  ``status`` shows it RUNNING, ``cancel --run`` asks the worker to drop it, and the leaderboard
  is unchanged; a queued run's job.json names the pool's array (PENDING while a task lives);
* a run whose worker died or whose task reached its time limit is queued again and resumes
  from its checkpoint, at most ``max_requeues`` + 1 times, then fails with its error.json;
* an adaptive sweep's decision step (the sweep's promoter, launcher.submit.SweepPromoter)
  runs when a run ends; the runs it promotes join the queue.

Everything the pool acts on comes from the private queue, never from the runs folder.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from core.fileio import atomic_write_json, read_json
from core.results import has_results, now_iso
from core.rundir import RunDir
from core.workqueue import WorkItem, WorkQueue, item_from_doc
from launcher.backends.base import SubmitContext
from launcher.backends.procs import drop_placeholder
from launcher.backends.warm import slots_per_card
from launcher.envs import EnvProfile
from launcher.jobrecord import ACTIVE
from launcher.tasks import PlannedRun, Task, identities, job_docs

NAME = "slurm"
POOL_ENDED = ("its worker pool ended before a worker took it; `launcher resubmit` runs it")


def usable(tasks: list[Task], env: EnvProfile) -> bool:
    """A pool takes runs of one card or none (a multi-GPU run is a job of its own)."""
    return env.warm_workers and all(t.gpus_needed <= 1 for t in tasks)


def pool_size(runs: list[PlannedRun], env: EnvProfile) -> tuple[int, int]:
    """(array tasks, workers per task): as many workers per card as the group's largest run
    lets share it, and no more tasks than max_parallel or than the workers have runs for."""
    k = slots_per_card(runs, env)
    return max(1, min(env.max_parallel, math.ceil(len(runs) / k))), k


def item_of(p: PlannedRun, folder: Path, env: EnvProfile, params: dict[str, Any]) -> WorkItem:
    """A run's work item, with the job records the pool writes for it (job ids filled in
    when a worker takes it)."""
    task = Task([p])
    docs = job_docs(task, folder, env, NAME, "", params, ("", ""), pool=True)
    return WorkItem(str(folder / p.run_id), identities(task),
                    records={path.parent.name: doc for path, doc in docs.items()})


def submit_pool(tasks: list[Task], ctx: SubmitContext, params: dict[str, Any],
                executor: Any) -> list[Path]:
    """Queue the group's runs and submit the pool's array through executor (a submitit
    Slurm executor with the group's parameters); the job records written."""
    env, folder = ctx.env, ctx.folder
    runs = [p for t in tasks for p in t.runs]
    n, k = pool_size(runs, env)
    queue = WorkQueue(ctx.jobs_dir / "work" / f"pool-{int(time.time() * 1000)}-{os.getpid()}")
    queue.root.mkdir(parents=True, mode=0o700)
    items = [item_of(p, folder, env, params) for p in runs]
    for item in items:
        queue.put(item)
    call = PoolJob(str(queue.root), str(folder), k, env, params, ctx.promoter)
    with executor.batch():
        jobs = [executor.submit(call) for _ in range(n)]
    drop_placeholder(folder)
    array = str(jobs[0].job_id).split("_", 1)[0]
    written: list[Path] = []
    for p, item in zip(runs, items, strict=True):
        task = Task([p], job=jobs[0])
        ctx.started.append(task)
        written += write_records(folder, item, array)
    ctx.on_event(f"{len(runs)} run(s) queued for a pool of {n} Slurm task(s) (job {array}), "
                 f"{k} warm worker(s) each")
    return written


def write_records(folder: Path, item: WorkItem, job_id: str, **extra: Any) -> list[Path]:
    """The item's job records with this job id (the pool's array while queued, the task that
    took it after); the files written."""
    written = []
    for run_id, doc in item.records.items():
        rd = RunDir(folder / run_id)
        new = {k: v for k, v in doc.items() if k != "worker"}
        new.update(job_id=job_id, submitted_at=now_iso(), **extra)
        atomic_write_json(rd.job, new)
        written.append(rd.job)
    return written


def pool_state(rows: dict[str, dict[str, str]], job_id: str) -> str | None:
    """A queued pool run's state from its array's sacct rows: PENDING while a task of the
    pool lives (or sacct does not list it yet), None once every task has ended."""
    array = job_id.split("_", 1)[0]
    mine = [r for jid, r in rows.items() if jid.split("_", 1)[0] == array]
    return "PENDING" if not mine or any(r["state"] in ACTIVE for r in mine) else None


class PoolJob:
    """One array task of a pool: warm workers on its card and the pool's coordinator;
    requeued at its time limit with the runs in hand queued again (they resume)."""

    def __init__(self, queue_root: str, folder: str, slots: int, env: EnvProfile,
                 params: dict[str, Any],
                 promoter: Callable[[], list[PlannedRun]] | None) -> None:
        self.queue_root, self.folder, self.slots = queue_root, folder, slots
        self.env, self.params = env, params
        self.promoter = promoter
        self._procs: dict[str, Any] = {}
        self._names: list[str] = []

    def __call__(self) -> dict[str, Any]:
        from jobs.runcontrol import current_job_id
        from jobs.worker import card_env, supervise

        task_id = current_job_id() or str(os.getpid())
        queue = WorkQueue(Path(self.queue_root))
        self._names = [f"{task_id}-{i}" for i in range(self.slots)]
        for name in self._names:  # a requeued task: what it held goes back first
            queue.unstop(name)
            queue.requeue(name)
        coord = self.coordinator(queue, task_id)
        with card_env(self.slots, self.env.cuda_mps) as env:
            out = supervise(queue, self._names, env, tick=coord.tick, procs=self._procs)
        coord.tick()  # the records of what ended last
        return out

    def coordinator(self, queue: WorkQueue, task_id: str) -> Coordinator:
        return Coordinator(queue, self._names, task_id, Path(self.folder), self.env,
                           self.params, self.promoter)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The time limit is near: the runs in hand checkpoint and stop, go back to the queue
        (another task may take them at once), and this task is requeued."""
        import submitit

        from jobs.pack import _checkpoint_and_stop, _stop
        from jobs.runcontrol import current_job_id

        queue = WorkQueue(Path(self.queue_root))
        for name in self._names:
            queue.stop(name)
        _checkpoint_and_stop(list(self._procs.values()))
        for proc in list(self._procs.values()):
            _stop(proc)
        for name in self._names:
            for item in queue.running(name):
                queue.finish(name, item, "interrupted")
        self.coordinator(queue, current_job_id() or "").requeue_interrupted()
        print(f"[medsweep] pool task requeued; {len(queue.queued())} run(s) left in its "
              "queue", file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(
            PoolJob(self.queue_root, self.folder, self.slots, self.env, self.params,
                    self.promoter))


class Coordinator:
    """A pool task's view of the shared queue: job records of the runs its workers take,
    requeues of interrupted runs, and the search's promotions."""

    def __init__(self, queue: WorkQueue, names: list[str], task_id: str, folder: Path,
                 env: EnvProfile, params: dict[str, Any],
                 promoter: Callable[[], list[PlannedRun]] | None) -> None:
        self.queue, self.names, self.task_id, self.folder = queue, names, task_id, folder
        self.env, self.params, self.promoter = env, params, promoter
        self.array = task_id.split("_", 1)[0]
        self._claimed: set[str] = set()
        self._ended = -1
        self._promote_failed = False
        self._task_logs: tuple[str, str] | None = None

    def tick(self) -> bool:
        """One look at the queue; True once this pool's work is over (nothing queued, nothing
        in any worker's hands, nothing more promoted)."""
        self._record_claims()
        ended = self.queue.ended_count()
        changed, self._ended = ended != self._ended, ended
        if changed:  # an item ended (or was interrupted) since the last look
            with self.queue.locked():
                self.requeue_interrupted()
        idle = self.queue.idle
        if self.promoter is not None and (changed or idle) and self._promote():
            return False
        return idle

    def _record_claims(self) -> None:
        """Job records of the runs this task's workers hold: written when a worker takes a
        run, and again if the submit's queued record landed after that (they race)."""
        if self._task_logs is None:
            self._task_logs = self._logs()
        logs = self._task_logs
        for name in self.names:
            for item in self.queue.running(name):
                if item.name in self._claimed and self._names_me(item):
                    continue
                self._claimed.add(item.name)
                write_records(Path(item.run_dir).parent, item, self.task_id, worker=name,
                              stdout=logs[0], stderr=logs[1])

    def _names_me(self, item: WorkItem) -> bool:
        try:
            doc = read_json(RunDir(Path(item.run_dir)).job)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("job_id") == self.task_id

    def _logs(self) -> tuple[str, str]:
        try:
            import submitit

            paths = submitit.JobEnvironment().paths
            return str(paths.stdout), str(paths.stderr)
        except (RuntimeError, KeyError):
            return "", ""

    def requeue_interrupted(self) -> None:
        """Queue again each run whose last item was interrupted (its worker died, or its task
        reached the time limit) and that has no item pending; after max_requeues + 1
        interruptions the run fails instead. Idempotent: call it under the queue's lock."""
        from jobs.runcontrol import write_error

        last: dict[str, dict[str, Any]] = {}
        times: dict[str, int] = {}
        for doc in self.queue.ended():
            rid = Path(str(doc.get("run_dir"))).name
            last[rid] = doc
            times[rid] = times.get(rid, 0) + (doc.get("outcome") == "interrupted")
        for rid, doc in last.items():
            rd = RunDir(Path(str(doc["run_dir"])))
            if doc.get("outcome") != "interrupted" or has_results(rd.performance) \
                    or rd.error.is_file() or self.queue.pending(rid):
                continue
            if times[rid] > self.env.max_requeues:
                write_error(rd, f"stopped {times[rid]} times before it finished (time limits "
                            "or workers that died); `launcher resubmit` runs it again from "
                            "its last checkpoint")
                continue
            item = self.queue.put(item_from_doc(doc))
            write_records(rd.path.parent, item, self.array)
            print(f"[medsweep] {rid}: stopped before it finished; queued again (it resumes)",
                  file=sys.stderr, flush=True)

    def _promote(self) -> bool:
        """The search's decision step; its promoted runs queued. Whether any came."""
        assert self.promoter is not None
        try:
            runs = self.promoter()
        except Exception as exc:  # noqa: BLE001 - the user's next submit says it in one line
            if not self._promote_failed:
                print(f"[medsweep] the search's decision step failed ({exc}); the runs in "
                      "hand go on, and `launcher submit` decides the rung once they end",
                      file=sys.stderr, flush=True)
            self._promote_failed = True
            return False
        for p in runs:
            item = self.queue.put(item_of(p, self.folder, self.env, self.params))
            write_records(self.folder, item, self.array)
        return bool(runs)
