"""An adaptive sweep's promotions, decided where its runs end: in the launcher of a local sweep
(as each run ends) or inside a Slurm worker pool (launcher.backends.pool), always under the
sweep's lock and through the strategy's one decision step (launcher.search)."""

from __future__ import annotations

from pathlib import Path

from core.search import SearchSpec
from launcher import search
from launcher.envs import EnvProfile
from launcher.runfolders import sweep_lock, write_run_folders
from launcher.sweep import Sweep
from launcher.tasks import PlannedRun, plan_sweep


def promote_now(planned: list[PlannedRun], sweep: Sweep, spec: SearchSpec, folder: Path,
                known: set[str]) -> list[PlannedRun]:
    """The search's decision step (under the sweep's lock): the runs it promotes now, their
    folders written anew (each config and its digest) so a worker can take them."""
    ids = set(search.step(spec)(folder, spec, known))
    todo = [p for p in planned if p.run_id in ids]
    write_run_folders(todo, sweep, folder)
    return todo


class SweepPromoter:
    """The promotions of an adaptive sweep, decided inside a Slurm worker pool as its runs end
    (launcher.backends.pool): the sweep and the profile travel pickled in the private job
    files, and every decision is taken under the sweep's lock, as a submit takes it."""

    def __init__(self, sweep: Sweep, env: EnvProfile, runs_dir: str) -> None:
        self.sweep, self.env, self.runs_dir = sweep, env, runs_dir

    def __call__(self) -> list[PlannedRun]:
        assert self.sweep.search is not None
        folder = Path(self.runs_dir).resolve() / self.sweep.name
        with sweep_lock(folder):
            planned = plan_sweep(self.sweep, self.env)
            known = search.known_runs(folder, [p.run_id for p in planned])
            return promote_now(planned, self.sweep, self.sweep.search, folder, known)
