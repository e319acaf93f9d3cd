"""Submission: run folders, one job array per resource group, idempotent and locked.

Submitting a sweep again skips finished and in-flight runs and submits only what is missing
(or, with ``only_retryable``, only failed / timed-out / cancelled runs). A file lock on the
sweep folder serialises concurrent submits, so each run is submitted exactly once. If any
array fails to submit, the arrays already submitted by this call are cancelled and their
job.json files removed: a submit is all or nothing.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from core.demo_data import DEMO_FILES, demo_path, write_demo_data
from core.errors import UserError
from core.fileio import atomic_write_json, atomic_write_yaml, open_no_follow, read_json
from core.identity import folder_hashes, training_key
from core.results import has_results, now_iso
from core.rundir import (
    DEMO_DATA,
    SEARCH_FILE,
    SUBMIT_LOCK,
    SUBMITIT,
    SWEEP_FILE,
    WRITTEN_IN_RUN,
    RunDir,
    clean_progress,
    job_files_dir,
    private_job_files_dir,
    refuse_links,
)
from core.search import SearchSpec
from launcher.envs import EnvProfile, pack_cap
from launcher.gpus import LocalGpu, detect_gpus, place, with_local_gpus
from launcher.hubcache import cache_dir, missing_models, offline
from launcher.plan import PlanError, Resources, pack_runs, plan_run, sbatch_parameters
from launcher.search import (
    DECIDER_FILE,
    advance,
    budget_of,
    read_search,
    refuse_new_runs,
    start_search,
    stopped_runs,
    write_budget,
)
from launcher.sharing import has_trained_model, share_training
from launcher.state import (
    ACTIVE,
    RETRYABLE,
    process_start,
    run_states,
    sacct_states,
    stop_local_jobs,
)
from launcher.sweep import Run, Sweep
from launcher.yamlio import YamlError


class SubmitError(UserError):
    """Submission refused or failed; nothing of this call stays submitted."""


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


def sweep_dir(sweep: Sweep, env: EnvProfile, runs_dir: str | None = None) -> Path:
    return Path(runs_dir or env.runs_dir).resolve() / sweep.name


def plan_sweep(sweep: Sweep, env: EnvProfile) -> list[PlannedRun]:
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


@contextmanager
def sweep_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_no_follow(folder / SUBMIT_LOCK)
    except OSError as exc:
        hint = ("it is a symbolic link: remove it" if (folder / SUBMIT_LOCK).is_symlink()
                else "the sweep folder must be yours and writable")
        raise SubmitError(f"{folder / SUBMIT_LOCK}: cannot open the sweep's lock file "
                          f"({exc.strerror}); {hint}") from None
    with os.fdopen(fd, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def _materialise_data(sweep: Sweep, folder: Path, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    if sweep.demo_data:
        demo = folder / DEMO_DATA
        if not all((demo / name).is_file() for name in DEMO_FILES.values()):
            write_demo_data(demo)
        for key in ("train_dataset_file", "eval_dataset_file"):
            cfg_dict["data"][key] = demo_path(cfg_dict["data"][key], demo)
    return cfg_dict


def _saved_sweep(sweep: Sweep) -> dict[str, Any]:
    """The sweep as submitted, with data paths made absolute so resubmit works anywhere."""
    raw = dict(sweep.raw)
    if not sweep.demo_data and sweep.runs:
        data = sweep.runs[0].config.data
        raw["data"] = {"train": data.train_dataset_file, "eval": data.eval_dataset_file}
        if data.validation_dataset_file:
            raw["data"]["validation"] = data.validation_dataset_file
    return raw


def _refuse_other_data(folder: Path, sweep: Sweep) -> None:
    """A sweep folder holds one sweep's runs: a submit of another sweep file with the same
    name on other data would mix runs scored on different files in one leaderboard."""
    saved_file = folder / SWEEP_FILE
    if not saved_file.is_file():
        return
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        saved = {}
    before = saved.get("data") if isinstance(saved, dict) else None
    now = _saved_sweep(sweep).get("data")
    if before is not None and before != now:
        raise SubmitError(
            f"{sweep.path}: {folder} already holds a sweep named {sweep.name!r} on other data "
            f"({_data_line(before)}); give this sweep another name: or another --runs-dir")


def _data_line(data: Any) -> str:
    if not isinstance(data, dict):
        return "unreadable"
    return ", ".join(f"{k} {v}" for k, v in sorted(data.items()))[:200]


def _env_setup_lines(env: EnvProfile) -> list[str]:
    lines = list(env.setup)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.env_vars.items()]
    return lines


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
    folder = sweep_dir(sweep, env, runs_dir)
    new_sweep = not (folder / SWEEP_FILE).exists()
    try:
        return _submit_locked(planned, sweep, env, folder, new_sweep, only_retryable, on_event,
                              gpus)
    except SubmitError:
        if new_sweep:
            # Nothing of a refused first submit stays: not even the lock or the empty folder.
            for leftover in (folder / SUBMIT_LOCK, folder):
                try:
                    leftover.unlink() if leftover.is_file() else leftover.rmdir()
                except OSError:
                    pass
        raise


def _submit_locked(planned: list[PlannedRun], sweep: Sweep, env: EnvProfile, folder: Path,
                   new_sweep: bool, only_retryable: bool, on_event: Callable[[str], None],
                   gpus: tuple[LocalGpu, ...]) -> list[PlannedRun]:
    with sweep_lock(folder):
        todo = _choose_todo(planned, sweep, folder, only_retryable)
        share_planned(todo, planned, sweep, folder)
        created = _write_run_folders(todo, sweep, folder)
        todo = [p for p in todo if not p.attached]
        if not todo:
            if sweep.search is not None and env.executor == "slurm":
                _submit_decider(sweep, sweep.search, env, folder)
        elif env.executor == "slurm":
            _submit_slurm_or_undo(todo, sweep, env, folder, created, new_sweep)
        else:
            _run_local_rungs(planned, todo, sweep, env, folder, on_event, gpus)
    return planned


def _choose_todo(planned: list[PlannedRun], sweep: Sweep, folder: Path,
                 only_retryable: bool) -> list[PlannedRun]:
    """Mark each planned run's action (an adaptive sweep first decides its finished rungs) and
    return those to submit, once nothing in the sweep folder is a link planted there."""
    if sweep.search is not None:
        _refuse_links_search(folder)
        start_search(folder, sweep.search, sweep.path)
        refuse_new_runs(folder, [p.run.run_id for p in planned], sweep.path)
        advance(folder, sweep.search)
    _mark_actions(planned, folder, only_retryable)
    if sweep.search is not None:
        _skip_stopped(planned, folder)
    todo = [p for p in planned if p.action == "submit"]
    try:
        refuse_links(folder, (SWEEP_FILE, SUBMITIT, DEMO_DATA, f"{SUBMITIT}/controllers.log"))
        for p in todo:
            refuse_links(folder / p.run.run_id, WRITTEN_IN_RUN)
    except ValueError as exc:
        raise SubmitError(str(exc)) from None
    _refuse_other_data(folder, sweep)
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
    ids = {p.run.run_id for p in todo}
    keys = {p.run.run_id: training_key(p.run.config) for p in planned}
    trained = [(p.run.run_id, keys[p.run.run_id]) for p in planned if p.run.run_id not in ids
               and has_trained_model(RunDir(folder / p.run.run_id))]
    owners = share_training([(p.run.run_id, keys[p.run.run_id]) for p in todo], trained)
    by_id = {p.run.run_id: p for p in todo}
    for p in todo:
        owner = owners.get(p.run.run_id)
        if owner is None:
            continue
        p.trained_in = owner
        if owner in by_id:
            p.attached = True
            by_id[owner].followers.append(p)


def _write_sharing(rd: RunDir, p: PlannedRun) -> None:
    """The run's shared_training.json and followers.json as planned (stale ones removed)."""
    for path, doc in ((rd.shared_training, {"trained_in": p.trained_in} if p.trained_in
                       else None),
                      (rd.followers, {"runs": [f.run.run_id for f in p.followers]}
                       if p.followers else None)):
        if doc is not None:
            atomic_write_json(path, doc)
        elif path.exists():
            path.unlink()


def _write_run_folders(todo: list[PlannedRun], sweep: Sweep, folder: Path) -> list[Path]:
    """The sweep file and each run's config (stale error and cancel files removed); the run
    folders this call created."""
    atomic_write_yaml(folder / SWEEP_FILE, _saved_sweep(sweep))
    created = []
    for p in todo:
        rd = RunDir(folder / p.run.run_id)
        if not rd.path.exists():
            created.append(rd.path)
        cfg = _materialise_data(sweep, folder, p.run.config.to_dict())
        atomic_write_yaml(rd.config, cfg)
        _write_sharing(rd, p)
        if sweep.search is not None and not rd.budget.exists():
            write_budget(rd, sweep.search, 0)
        for stale in (rd.error, rd.cancel_request):
            if stale.exists():
                stale.unlink()
    return created


def _submit_slurm_or_undo(todo: list[PlannedRun], sweep: Sweep, env: EnvProfile, folder: Path,
                          created: list[Path], new_sweep: bool) -> None:
    """Submit to Slurm (and an adaptive sweep's decider); all or nothing: a refused submission
    leaves no folder this call created."""
    try:
        _submit_slurm(todo, env, folder, sweep)
    except SubmitError:
        for path in created:
            shutil.rmtree(path, ignore_errors=True)
        if new_sweep:
            for leftover in (SWEEP_FILE, DEMO_DATA, SUBMITIT, SEARCH_FILE):
                target = folder / leftover
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                elif target.exists():
                    target.unlink()
        raise
    if sweep.search is not None:
        _submit_decider(sweep, sweep.search, env, folder)


def _run_local_rungs(planned: list[PlannedRun], todo: list[PlannedRun], sweep: Sweep,
                     env: EnvProfile, folder: Path, on_event: Callable[[str], None],
                     gpus: tuple[LocalGpu, ...]) -> None:
    """Run here, holding the sweep lock until the runs end (a second submit then finds them
    done); an adaptive sweep decides each rung as it ends and runs the promoted runs on."""
    _run_local(todo, env, folder, on_event, gpus)
    while sweep.search is not None:
        promoted = advance(folder, sweep.search)
        if not promoted:
            break
        on_event(f"search: rung {_rung_of(folder, promoted[0])} with "
                 f"{len(promoted)} run(s): {', '.join(promoted)}")
        todo = [p for p in planned if p.run.run_id in promoted]
        _run_local(todo, env, folder, on_event, gpus)


def _rung_field(rd: RunDir) -> dict[str, Any]:
    """job.json's rung, for a run of an adaptive sweep (launcher.search archives by it)."""
    b = budget_of(rd)
    return {"rung": b.rung} if b else {}


def _rung_of(folder: Path, run_id: str) -> int:
    b = budget_of(RunDir(folder / run_id))
    return b.rung if b else 0


def _refuse_links_search(folder: Path) -> None:
    try:
        refuse_links(folder, (SEARCH_FILE,))
    except ValueError as exc:
        raise SubmitError(str(exc)) from None


def _skip_stopped(planned: list[PlannedRun], folder: Path) -> None:
    """A run the search stopped is not submitted again (resubmit included)."""
    stopped = stopped_runs(folder)
    for p in planned:
        if p.run.run_id in stopped and p.action == "submit":
            p.action = "skip-stopped"


DECIDER_TIME_MIN = 15


class SearchDecider:
    """The Slurm job that decides a rung when its runs have ended (an afterany dependency)
    and submits the next: the same as a user's next `launcher submit` of the sweep, so the
    search goes on with no terminal open. The sweep and the profile travel pickled in the
    private job files, not re-read from the (possibly shared) runs folder."""

    def __init__(self, sweep: Sweep, env: EnvProfile, runs_dir: str) -> None:
        self.sweep, self.env, self.runs_dir = sweep, env, runs_dir

    def __call__(self) -> str:
        # This job's own Slurm variables must not reach the jobs it submits (srun reads some
        # of them, e.g. the memory ones, and refuses mixed ones).
        for key in [k for k in os.environ if k.startswith(("SLURM_", "SBATCH_"))
                    and k != "SLURM_CONF"]:
            del os.environ[key]
        planned = submit_sweep(self.sweep, self.env, runs_dir=self.runs_dir, gpus=())
        return ", ".join(f"{p.run.run_id}: {p.action}" for p in planned)


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


def _submit_decider(sweep: Sweep, spec: SearchSpec, env: EnvProfile, folder: Path) -> None:
    """A one-CPU decider job after every active run of the search (none when nothing
    runs: the search has ended or waits for a submit)."""
    import submitit

    ids = sorted({st.job_id.split("_")[0] for st in run_states(folder)
                  if st.state in ACTIVE and st.job_id})
    doc = read_search(folder)
    if not ids or doc is None or len(doc["rungs"]) >= len(spec.rungs):
        return
    if _decider_waits_for(folder, ids):
        return
    ex = submitit.AutoExecutor(folder=_jobs_dir(folder) / "%j", cluster="slurm")
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
    ex.update_parameters(name=f"medsweep-{sweep.name}-decide",
                         slurm_setup=_env_setup_lines(env), **params)
    try:
        job = ex.submit(SearchDecider(sweep, env, str(folder.parent)))
    except Exception as exc:  # the runs are submitted: say how to go on by hand
        raise SubmitError(f"the search's decider job was refused ({str(exc).strip()[:200]}); "
                          f"the runs are submitted: run `python -m launcher submit "
                          f"{sweep.path}` after they end to decide the rung") from None
    _drop_placeholder(folder)
    atomic_write_json(folder / DECIDER_FILE, {"job_id": str(job.job_id), "after": ids,
                                             "submitted_at": now_iso()})


def _job_doc(p: PlannedRun, env: EnvProfile, job_id: str, cluster: str, params: dict[str, Any],
             stdout: str, stderr: str, **extra: Any) -> dict[str, Any]:
    return {"run_id": p.run.run_id, "cluster": cluster, "job_id": job_id,
            "env": env.name, "model": p.run.config.model.name_or_path,
            "varied": p.run.varied, "resources": p.resources.as_dict(),
            "need_gb": p.need_gb, "sbatch": params, "submitted_at": now_iso(),
            "stdout": stdout, "stderr": stderr, **extra}


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


def _submit_slurm(todo: list[PlannedRun], env: EnvProfile, folder: Path, sweep: Sweep) -> None:
    import submitit

    from jobs.pack import PackJob
    from jobs.pipeline import PipelineJob

    jobs_dir = _jobs_dir(folder)
    submitted: list[tuple[Any, PlannedRun]] = []
    try:
        for members in resource_groups(todo):
            params = sbatch_parameters(members[0].resources, env)
            ex = submitit.AutoExecutor(folder=jobs_dir / "%j", cluster="slurm",
                                       slurm_max_num_timeout=env.max_requeues)
            setup = _env_setup_lines(env)
            ex.update_parameters(name=f"medsweep-{sweep.name}", slurm_setup=setup,
                                 **{k: v for k, v in params.items() if k != "slurm_setup"})
            packs = packs_of(members, env)
            with ex.batch():
                jobs = [ex.submit(PipelineJob(str(folder / pack[0].run.run_id)) if len(pack) == 1
                                  else PackJob([str(folder / p.run.run_id) for p in pack],
                                                  mps=env.cuda_mps))
                        for pack in packs]
            _drop_placeholder(folder)
            for job, pack in zip(jobs, packs, strict=True):
                for p in pack:
                    submitted.append((job, p))
                    rd = RunDir(folder / p.run.run_id)
                    logs = (str(job.paths.stdout), str(job.paths.stderr))
                    extra: dict[str, Any] = _rung_field(rd)
                    if len(pack) > 1:
                        # A packed run's own process logs into its folder; the task's log
                        # (the pack's supervisor) is named beside it.
                        extra["pack"] = {"runs": [q.run.run_id for q in pack],
                                         "stdout": logs[0], "stderr": logs[1]}
                        logs = (str(rd.run_log), str(rd.run_log))
                    atomic_write_json(rd.job, _job_doc(p, env, str(job.job_id), "slurm", params,
                                                       *logs, **extra))
                    for f in p.followers:
                        submitted.append((job, f))
                        atomic_write_json(RunDir(folder / f.run.run_id).job, _job_doc(
                            f, env, str(job.job_id), "slurm", params, *logs,
                            **{**extra, "trained_in": p.run.run_id}))
    except Exception as exc:  # sbatch refused: undo this call's submissions
        ids = sorted({str(job.job_id).split("_")[0] for job, _ in submitted})
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True)
        for _, p in submitted:
            job_file = RunDir(folder / p.run.run_id).job
            if job_file.exists():
                job_file.unlink()
        msg = str(exc).strip().splitlines()
        detail = next((ln for ln in msg if "error" in ln.lower()), msg[0] if msg else repr(exc))
        raise SubmitError(f"sbatch refused the sweep ({detail.strip()}); nothing was "
                          "submitted") from None


PROGRESS_EVERY_S = 5.0


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
def _stderr_into(log: Path) -> Iterator[None]:
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


def _jobs_dir(folder: Path) -> Path:
    """The sweep's private folder for submitit's files (core.rundir.job_files_dir)."""
    try:
        return private_job_files_dir(folder)
    except (ValueError, OSError) as exc:
        raise SubmitError(str(exc)) from None


def _drop_placeholder(folder: Path) -> None:
    """submitit creates its folder pattern (%j) as a folder of its own; the jobs write into
    folders named by their ids, so the empty pattern folder goes."""
    try:
        (job_files_dir(folder) / "%j").rmdir()
    except OSError:
        pass


@dataclass
class LocalTask:
    """One local job: a run, or a pack of runs sharing a card, and the GPUs it holds."""
    runs: list[PlannedRun]
    gpus: list[int]
    job: Any = None


def local_tasks(todo: list[PlannedRun], env: EnvProfile) -> list[LocalTask]:
    """The local jobs, in sweep order: packs where runs share a card (runs_per_gpu)."""
    return [LocalTask(pack, []) for members in resource_groups(todo)
            for pack in packs_of(members, env)]


def _on_free_cards(tasks: list[LocalTask], free: list[int]) -> list[LocalTask]:
    """The GPU tasks (in order) that fit on the free cards now, each with its cards; the cards
    taken leave free (launcher.gpus.place)."""
    gpu_tasks = [t for t in tasks if t.runs[0].resources.gpus > 0]
    return [LocalTask(t.runs, cards) for t, cards in
            place(gpu_tasks, [t.runs[0].resources.gpus for t in gpu_tasks], free)]


def initial_placement(tasks: list[LocalTask], gpus: tuple[LocalGpu, ...]) -> list[LocalTask]:
    """The tasks that start at once on an idle machine, with their cards (what --dry-run
    shows; the rest start as cards come free)."""
    return _on_free_cards(tasks, [g.index for g in gpus])


def _run_local(todo: list[PlannedRun], env: EnvProfile, folder: Path,
               on_event: Callable[[str], None], gpus: tuple[LocalGpu, ...] = ()) -> None:
    """Run on this machine through submitit's local executor: with GPUs each task on its own
    card(s) as they come free; without, max_parallel at a time on the CPU."""
    for k, v in env.env_vars.items():
        os.environ.setdefault(k, v)
    # nvidia-smi numbers cards by PCI bus; CUDA must read CUDA_VISIBLE_DEVICES the same way.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    queue = local_tasks(todo, env)
    running: list[LocalTask] = []
    try:
        _local_loop(queue, running, env, folder, on_event, [g.index for g in gpus])
        _drop_placeholder(folder)  # the local controllers create it as they start
    except KeyboardInterrupt:
        # Stop what runs: they resume from their checkpoints later. In a terminal the runs got
        # the Ctrl-C too; a SIGINT sent to this process alone must stop them as well.
        stop_local_jobs(int(t.job.job_id) for t in running)
        for t in running:
            proc = getattr(t.job, "_process", None)
            if proc is not None:
                proc.wait()  # reaped, so no zombie outlives the submit
        raise


def _startable(queue: list[LocalTask], running: list[LocalTask], env: EnvProfile,
               free: list[int]) -> list[LocalTask]:
    """Tasks of the queue that may start now: GPU tasks on free cards, CPU tasks up to
    max_parallel."""
    out = _on_free_cards(queue, free)
    cpu_slots = env.max_parallel - sum(1 for t in running if not t.gpus)
    out += [t for t in queue if t.runs[0].resources.gpus == 0][:max(0, cpu_slots)]
    return out


def _start_local(task: LocalTask, env: EnvProfile, folder: Path, jobs_dir: Path) -> Any:
    import submitit

    from jobs.pack import PackJob
    from jobs.pipeline import PipelineJob

    # The LocalExecutor itself: the AutoExecutor does not pass visible_gpus on.
    ex = submitit.LocalExecutor(folder=jobs_dir / "%j")
    ex.update_parameters(timeout_min=env.time_limit_min, gpus_per_node=len(task.gpus),
                         visible_gpus=tuple(task.gpus), signal_delay_s=env.signal_delay_s)
    dirs = [str(folder / p.run.run_id) for p in task.runs]
    fn = PipelineJob(dirs[0]) if len(dirs) == 1 else PackJob(dirs, mps=env.cuda_mps)
    with _stderr_into(jobs_dir / "controllers.log"):
        job = ex.submit(fn)
    params = {"timeout_min": env.time_limit_min, "gpus": task.gpus}
    for p in task.runs:
        rd = RunDir(folder / p.run.run_id)
        logs = (str(job.paths.stdout), str(job.paths.stderr))
        extra: dict[str, Any] = _rung_field(rd)
        if len(task.runs) > 1:
            extra["pack"] = {"runs": [q.run.run_id for q in task.runs],
                             "stdout": logs[0], "stderr": logs[1]}
            logs = (str(rd.run_log), str(rd.run_log))
        extra.update(pid=int(job.job_id), pid_start=process_start(int(job.job_id)))
        atomic_write_json(rd.job, _job_doc(p, env, str(job.job_id), "local", params, *logs,
                                           **extra))
        for f in p.followers:
            atomic_write_json(RunDir(folder / f.run.run_id).job, _job_doc(
                f, env, str(job.job_id), "local", params, *logs,
                **{**extra, "trained_in": p.run.run_id}))
    return job


def _with_followers(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs of a job: each with the runs it evaluates with its model after it."""
    return [q for p in runs for q in (p, *p.followers)]


def _where(task: LocalTask) -> str:
    cards = ",".join(map(str, task.gpus))
    return f"on GPU {cards}" if len(task.gpus) == 1 else (
        f"on GPUs {cards}" if task.gpus else "on the CPU")


def _local_loop(queue: list[LocalTask], running: list[LocalTask], env: EnvProfile,
                folder: Path, on_event: Callable[[str], None], free: list[int]) -> None:
    order = list(free)
    jobs_dir = _jobs_dir(folder)
    shown: dict[str, tuple[float, str]] = {}
    while queue or running:
        for task in _startable(queue, running, env, free):
            queue[:] = [t for t in queue if t.runs is not task.runs]
            task.job = _start_local(task, env, folder, jobs_dir)
            for p in task.runs:
                on_event(f"started {p.run.run_id} {_where(task)}")
                for f in p.followers:
                    on_event(f"queued {f.run.run_id}: evaluated with {p.run.run_id}'s model "
                             "once it is trained")
            running.append(task)
        time.sleep(0.5)
        for task in running:
            for p in _with_followers(task.runs):
                line = progress_line(RunDir(folder / p.run.run_id), shown)
                if line:
                    on_event(line)
        for task in list(running):
            if task.job.done():
                running.remove(task)
                free[:] = [i for i in order if i in free or i in task.gpus]
                # Outcome from medsweep's own files, not submitit's result pickle (the runs
                # folder may be shared: a pickle there is not ours to load).
                for p in _with_followers(task.runs):
                    rd = RunDir(folder / p.run.run_id)
                    ok = has_results(rd.performance) and not rd.error.exists()
                    on_event(f"{'finished' if ok else 'failed'} {p.run.run_id}")
