"""Submission: run folders, one job array per resource group, idempotent and locked.

Submitting a sweep again skips finished and in-flight runs and submits only what is missing
(or, with ``only_retryable``, only failed / timed-out / cancelled runs). A file lock on the
sweep folder serialises concurrent submits, so each run is submitted exactly once. If any
array fails to submit, the arrays already submitted by this call are cancelled and their
job.json files removed: a submit is all or nothing.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

from core.identity import folder_hashes, training_key
from core.rundir import (
    DEMO_DATA,
    SEARCH_FILE,
    SUBMIT_LOCK,
    SUBMITIT,
    SWEEP_FILE,
    WRITTEN_IN_RUN,
    RunDir,
    refuse_links,
)
from core.search import SearchSpec
from launcher import search
from launcher.backends import Backend, SubmitContext, backend_for
from launcher.backends.slurm import clear_slurm_env, submit_decider
from launcher.envs import EnvProfile
from launcher.errors import SubmitError
from launcher.gpus import LocalGpu, detect_gpus, with_local_gpus
from launcher.hubcache import cache_dir, missing_models, offline
from launcher.promote import SweepPromoter, promote_now
from launcher.runfolders import refuse_other_data, sweep_lock, write_run_folders
from launcher.sharing import has_trained_model, share_training
from launcher.state import ACTIVE, RETRYABLE, run_states
from launcher.sweep import Sweep
from launcher.tasks import PlannedRun, plan_sweep, tasks_of

__all__ = ["PlannedRun", "SubmitError", "plan_sweep", "share_planned", "submit_sweep",
           "sweep_dir", "sweep_lock"]


def sweep_dir(sweep: Sweep, env: EnvProfile, runs_dir: str | None = None) -> Path:
    return Path(runs_dir or env.runs_dir).resolve() / sweep.name


def _mark_actions(planned: list[PlannedRun], folder: Path, only_retryable: bool) -> None:
    states = {s.run_id: s for s in run_states(folder)} if folder.is_dir() else {}
    # The hash at the end of an id is the resolved config's: a run submitted before under
    # another slug (a reordered sweep) or by an older medsweep (another hash: its config.yaml
    # says which run it is) is the same run.
    by_hash = {rid.rsplit("-", 1)[-1]: st for rid, st in sorted(states.items())}
    wanted = {p.run.run_id.rsplit("-", 1)[-1] for p in planned}
    if not wanted <= set(by_hash):
        for rid, known in sorted(states.items()):
            for h in folder_hashes(RunDir(folder / rid)):
                by_hash.setdefault(h, known)
    for p in planned:
        st = states.get(p.run.run_id)
        if st is None and p.run.run_id.rsplit("-", 1)[-1] in by_hash:
            st = by_hash[p.run.run_id.rsplit("-", 1)[-1]]
            p.run = dataclasses.replace(p.run, run_id=st.run_id)
        state = st.state if st else "NOT_SUBMITTED"
        if state == "COMPLETED":
            p.action = "skip-done"
        elif state in ACTIVE:
            p.action = "skip-active"
        elif only_retryable and state not in RETRYABLE:
            p.action = "skip-not-failed"
        else:
            p.action = "submit"


def submit_sweep(sweep: Sweep, env: EnvProfile, *, runs_dir: str | None = None,
                 only_retryable: bool = False,
                 on_event: Callable[[str], None] = lambda _m: None,
                 gpus: tuple[LocalGpu, ...] | None = None) -> list[PlannedRun]:
    """Plan, then submit what is missing; returns every planned run with its action.
    gpus: this machine's GPUs for a local profile (detected when None)."""
    gpus = detect_gpus(env) if gpus is None else gpus
    env = with_local_gpus(env, gpus)
    planned = plan_sweep(sweep, env)
    if offline(env):
        missing = missing_models(sweep, env)
        if missing:
            raise SubmitError(
                f"{sweep.path}: env {env.name} sets HF_HUB_OFFLINE=1 but {len(missing)} model(s) "
                f"are not in {cache_dir(env)}: {', '.join(missing)}; run `python -m launcher "
                f"prefetch {sweep.path}` where there is internet")
    ctx = SubmitContext(sweep.name, env, sweep_dir(sweep, env, runs_dir), on_event, gpus)
    new_sweep = not (ctx.folder / SWEEP_FILE).exists()
    try:
        with sweep_lock(ctx.folder):
            _submit_locked(planned, sweep, ctx, new_sweep, only_retryable)
    except SubmitError:
        if new_sweep:
            # Nothing of a refused first submit stays: not even the lock or the empty folder.
            for leftover in (ctx.folder / SUBMIT_LOCK, ctx.folder):
                try:
                    leftover.unlink() if leftover.is_file() else leftover.rmdir()
                except OSError:
                    pass
        raise
    return planned


def _submit_locked(planned: list[PlannedRun], sweep: Sweep, ctx: SubmitContext,
                   new_sweep: bool, only_retryable: bool) -> None:
    """Under the sweep lock: choose, write the run folders, hand the tasks to the backend (a
    refused submission leaves no folder this call created), then go on with a search."""
    todo = _choose_todo(planned, sweep, ctx.folder, only_retryable)
    share_planned(todo, planned, sweep, ctx.folder)
    created = write_run_folders(todo, sweep, ctx.folder)
    backend = backend_for(ctx.env)
    if sweep.search is not None:
        ctx.more = _promotions(planned, sweep, sweep.search, ctx)
        ctx.promoter = SweepPromoter(sweep, ctx.env, str(ctx.folder.parent))
    if any(not p.attached for p in todo):
        try:
            backend.submit(tasks_of(todo, ctx.env), ctx)
        except SubmitError:
            _undo_folders(ctx.folder, created, new_sweep)
            raise
    if sweep.search is not None:
        _go_on_searching(planned, sweep, sweep.search, ctx, backend)


def _go_on_searching(planned: list[PlannedRun], sweep: Sweep, spec: SearchSpec,
                     ctx: SubmitContext, backend: Backend) -> None:
    """A backend that waits for its runs decides each rung here; otherwise a decider job
    runs the sweep's next submit once the active runs end."""
    if backend.waits_for_runs:
        def run(ids: list[str]) -> None:
            todo = [p for p in planned if p.run_id in ids]
            write_run_folders(todo, sweep, ctx.folder)  # each config (and its digest) anew
            backend.submit(tasks_of(todo, ctx.env), ctx)

        known = search.known_runs(ctx.folder, [p.run_id for p in planned])
        search.run_rungs_here(ctx.folder, spec, known, run, ctx.on_event)
        return
    doc = search.read_search(ctx.folder)
    if doc is None or len(doc["rungs"]) >= len(spec.rungs):
        return
    active = [st.job_id for st in run_states(ctx.folder) if st.state in ACTIVE and st.job_id]
    submit_decider(ctx, active, SearchDecider(sweep, ctx.env, str(ctx.folder.parent)),
                   sweep.path)


def _promotions(planned: list[PlannedRun], sweep: Sweep, spec: SearchSpec,
                ctx: SubmitContext) -> Callable[[], list[PlannedRun]]:
    """What a backend that keeps its workers asks each time a run ends: the runs the search
    promotes now (their folders written anew), to run at once in the same workers."""
    known = search.known_runs(ctx.folder, [p.run_id for p in planned])

    def more() -> list[PlannedRun]:
        todo = promote_now(planned, sweep, spec, ctx.folder, known)
        if todo:
            ctx.on_event(f"search: rung {search.rung_of(ctx.folder, todo[0].run_id)} with "
                         f"{len(todo)} run(s): {', '.join(p.run_id for p in todo)}")
        return todo

    return more


def _undo_folders(folder: Path, created: list[Path], new_sweep: bool) -> None:
    for path in created:
        shutil.rmtree(path, ignore_errors=True)
    if new_sweep:
        for leftover in (SWEEP_FILE, DEMO_DATA, SUBMITIT, SEARCH_FILE):
            target = folder / leftover
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists():
                target.unlink()


def _choose_todo(planned: list[PlannedRun], sweep: Sweep, folder: Path,
                 only_retryable: bool) -> list[PlannedRun]:
    """Mark each planned run's action (an adaptive sweep first decides its finished rungs) and
    return those to submit, once nothing in the sweep folder is a link planted there."""
    if sweep.search is not None:
        search.prepare(folder, sweep.search, [p.run_id for p in planned], sweep.path)
    _mark_actions(planned, folder, only_retryable)
    if sweep.search is not None:
        stopped = search.stopped_runs(folder)
        for p in planned:
            if p.run_id in stopped and p.action == "submit":
                p.action = "skip-stopped"  # never submitted again (resubmit included)
    todo = [p for p in planned if p.action == "submit"]
    try:
        refuse_links(folder, (SWEEP_FILE, SUBMITIT, DEMO_DATA, f"{SUBMITIT}/controllers.log"))
        for p in todo:
            refuse_links(folder / p.run_id, WRITTEN_IN_RUN)
    except ValueError as exc:
        raise SubmitError(str(exc)) from None
    refuse_other_data(folder, sweep)
    return todo


def share_planned(todo: list[PlannedRun], planned: list[PlannedRun], sweep: Sweep,
                  folder: Path) -> None:
    """Mark the runs to submit that differ from another only in what evaluation reads
    (launcher.sharing): each is evaluated with that run's model, in that run's job when it is
    to be submitted too. Not for adaptive sweeps."""
    for p in todo:
        p.trained_in, p.followers, p.attached = None, [], False
    if sweep.search is not None:
        return
    ids = {p.run_id for p in todo}
    keys = {p.run_id: training_key(p.run.config) for p in planned}
    trained = [(p.run_id, keys[p.run_id]) for p in planned if p.run_id not in ids
               and has_trained_model(RunDir(folder / p.run_id))]
    owners = share_training([(p.run_id, keys[p.run_id]) for p in todo], trained)
    by_id = {p.run_id: p for p in todo}
    for p in todo:
        owner = owners.get(p.run_id)
        if owner is None:
            continue
        p.trained_in = owner
        if owner in by_id:
            p.attached = True
            by_id[owner].followers.append(p)


class SearchDecider:
    """The Slurm job that decides a rung when its runs have ended (an afterany dependency)
    and submits the next: the same as a user's next `launcher submit` of the sweep, so the
    search goes on with no terminal open. The sweep and the profile travel pickled in the
    private job files, not re-read from the (possibly shared) runs folder."""

    def __init__(self, sweep: Sweep, env: EnvProfile, runs_dir: str) -> None:
        self.sweep, self.env, self.runs_dir = sweep, env, runs_dir

    def __call__(self) -> str:
        clear_slurm_env()
        planned = submit_sweep(self.sweep, self.env, runs_dir=self.runs_dir, gpus=())
        return ", ".join(f"{p.run_id}: {p.action}" for p in planned)
