"""What one sweep job runs: train then evaluate into its run folder.

``PipelineJob`` is a submitit ``Checkpointable``: on a time limit (submitit's USR2 warning) it
asks to be requeued with itself, and the restarted job resumes from the trainer's last
checkpoint in ``checkpoints/``. Failures leave ``error.json`` (one line a user can act on) so
``launcher status`` can show it without parsing logs.
"""

from __future__ import annotations

import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from core.config import config_from_dict
from core.fileio import atomic_write_json, read_json
from core.identity import submitted_hashes, text_sha256
from core.results import has_results, now_iso
from core.rundir import (
    ADAPTER,
    ERROR_FILE,
    PERFORMANCE,
    TRAIN_SUMMARY,
    WRITTEN_IN_RUN,
    RunDir,
    planted_links,
    refuse_links,
)
from core.search import Budget, budget_from_doc
from jobs.checkpointing import StoppedToResume

_ID_HASH = re.compile(r"-([0-9a-f]{8})$")


def check_config_matches_id(rd: RunDir, cfg: Any, raw: Any = None) -> None:
    """The run id ends in the hash of the config it was submitted with: a config.yaml changed
    in the (shared) runs folder after the submit is refused, not trained. Demo sweeps' data
    paths are compared as submitted (demo:train / demo:eval). raw, config.yaml as read, also
    matches a run id of the hash medsweep wrote before stop 38 (core.config.legacy_config_hash)."""
    m = _ID_HASH.search(rd.run_id)
    if m is None:
        return  # not a launcher run id (a folder named by hand)
    if m.group(1) not in submitted_hashes(rd.path, cfg, raw):
        raise ValueError(f"{rd.config}: does not match its run id (config hash {m.group(1)}); "
                         "it was changed after the submit: submit the sweep again")


def run_budget(rd: RunDir, cfg: Any) -> Budget | None:
    """The rung an adaptive sweep's run trains to (its budget.json), None for a grid run."""
    if not rd.budget.is_file():
        return None
    return budget_from_doc(read_json(rd.budget), str(rd.budget), float(cfg.train.num_epochs))


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def _run_name(value: object, where: Path) -> str:
    """A run id read from a sharing file: a plain folder name of the same sweep."""
    if not isinstance(value, str) or not _RUN_NAME.match(value) or ".." in value:
        raise ValueError(f"{where}: {value!r} is not a run id of this sweep; submit the sweep "
                         "again to rewrite it")
    return value


def shared_model(rd: RunDir, cfg: Any) -> tuple[Path, str] | None:
    """The trained model this run is evaluated with instead of training its own, and whose it
    is: the run its shared_training.json names (launcher.sharing), where that run's model is
    trained with this run's exact training identity (config less eval, data hashes). None:
    the run trains its own model (no such file, or that model is missing or another's)."""
    if not rd.shared_training.is_file():
        return None
    doc = read_json(rd.shared_training)
    owner = _run_name(doc.get("trained_in") if isinstance(doc, dict) else None,
                      rd.shared_training)
    other = RunDir(rd.path.parent / owner)
    refuse_links(other.path, (ADAPTER, f"{ADAPTER}/{TRAIN_SUMMARY}"))
    from jobs import modeling
    from jobs.train import model_mismatch

    why = model_mismatch(cfg, other.adapter)
    if why is not None:
        modeling.log(f"{rd.run_id}: not evaluating {owner}'s model ({why}); training its own")
        return None
    modeling.log(f"{rd.run_id}: evaluating {owner}'s model (trained with this run's settings)")
    return other.adapter, owner


Identities = dict[str, str]
"""{run id: SHA-256 of its config.yaml} from the private job call (launcher.tasks.identities):
the runs a job may train or evaluate, and the exact config of each."""


def check_identity(rd: RunDir, data: bytes, identities: Identities | None) -> None:
    """The run is one this job was submitted for, with the config.yaml submit wrote (a runs
    folder may be shared: a planted follower, or a config forged to match the run id's 8 hex
    digits, is refused). None: a job call from before digests were recorded."""
    if identities is None:
        return
    want = identities.get(rd.run_id)
    if want is None:
        raise ValueError(f"{rd.path}: not a run this job was submitted for; submit the sweep "
                         "again")
    if text_sha256(data) != want:
        raise ValueError(f"{rd.config}: not the config submit wrote for this run (its SHA-256 "
                         "differs); it was changed after the submit: submit the sweep again")


def _load_config(rd: RunDir, identities: Identities | None = None) -> Any:
    data = rd.config.read_bytes()
    check_identity(rd, data, identities)
    raw = yaml.safe_load(data.decode("utf-8"))
    cfg = config_from_dict(raw, str(rd.config))
    check_config_matches_id(rd, cfg, raw)
    return cfg


def run_pipeline(run_dir: str | Path, identities: Identities | None = None) -> dict[str, Any]:
    """Train (or resume) then evaluate the run in run_dir, or only evaluate it with the model
    of the run it shares training with; then evaluate the runs that share this run's model
    (its followers.json, those of them the job call names). Returns the performance summary."""
    rd = RunDir(Path(run_dir))
    try:
        refuse_links(rd.path, WRITTEN_IN_RUN)
        cfg = _load_config(rd, identities)
        from jobs.evaluate import evaluate
        from jobs.train import train

        budget = run_budget(rd, cfg)
        if rd.error.exists():
            rd.error.unlink()
        shared = shared_model(rd, cfg) if budget is None else None
        if shared is None:
            train(cfg, rd.adapter, checkpoint_dir=rd.checkpoints, progress_path=rd.progress,
                  budget_epochs=budget.epochs if budget else None)
        model_dir, trained_in = shared if shared else (rd.adapter, None)
        doc = evaluate(cfg, model_dir, rd.results, progress_path=rd.progress,
                       budget=budget.as_dict() if budget else None, trained_in=trained_in)
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit, StoppedToResume)):
            _write_error_file(rd, {
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                "at": now_iso(), "traceback": traceback.format_exc()[-4000:]})
            _fail_followers(rd, exc, identities)
        raise
    evaluate_followers(rd, identities)
    return {"run_dir": str(rd.path), "f1": {m: v["f1"] for m, v in
                                            doc["metrics"]["total"].items()},
            "performance": str(rd.results / PERFORMANCE)}


def _followers(rd: RunDir, identities: Identities | None = None) -> list[RunDir]:
    """The runs this run's job evaluates with its model: those followers.json names that the
    job call names too (a name planted in the shared folder is not run)."""
    if not rd.followers.is_file():
        return []
    doc = read_json(rd.followers)
    names = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(names, list):
        raise ValueError(f"{rd.followers}: expected {{\"runs\": [RUN_ID, ...]}}; submit the "
                         "sweep again to rewrite it")
    runs = [RunDir(rd.path.parent / _run_name(n, rd.followers)) for n in names]
    return [r for r in runs if identities is None or r.run_id in identities]


def evaluate_followers(rd: RunDir, identities: Identities | None = None) -> None:
    """Evaluate each follower with this run's model, in turn; one that fails gets its own
    error.json and the others go on. Skipped: a follower with results already (a requeued
    job), one cancelled (launcher cancel), one submitted again elsewhere since."""
    from jobs.runcontrol import CANCELLED_ERROR, current_job_id, moved_elsewhere, write_error

    job_id = current_job_id()
    for other in _followers(rd, identities):
        if has_results(other.performance) or moved_elsewhere(other, job_id):
            continue
        if other.cancel_request.exists():
            write_error(other, CANCELLED_ERROR, cancelled=True)
            continue
        try:
            run_pipeline(other.path, identities)
        except StoppedToResume:
            raise
        except Exception as exc:  # noqa: BLE001 - run_pipeline wrote its error.json
            from jobs import modeling

            modeling.log(f"{other.run_id} failed ({type(exc).__name__}); its error.json says "
                         "why; the other runs sharing this model go on")


def _write_error_file(rd: RunDir, doc: dict[str, Any]) -> None:
    """error.json, never through a link planted in the (shared) runs folder: a run folder
    swapped for a link, or an error.json that is one, gets nothing written (the job's log says
    why it failed)."""
    if planted_links(rd.path, (ERROR_FILE,)):
        from jobs.joblog import log

        log(f"{rd.path}: a symbolic link in the runs folder; its error.json is not written")
        return
    atomic_write_json(rd.error, doc)


def _fail_followers(rd: RunDir, exc: BaseException,
                    identities: Identities | None = None) -> None:
    """The followers of a run that failed: not evaluated, each told why in its error.json."""
    try:
        followers = _followers(rd, identities)
    except ValueError:
        return
    why = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    for other in followers:
        if not has_results(other.performance) and not other.error.exists():
            _write_error_file(other, {
                "error": f"not evaluated: {rd.run_id}, whose model it shares, failed ({why})",
                "at": now_iso()})


class PipelineJob:
    """Callable submitted per run; requeued on time limit, resumed from checkpoints."""

    def __init__(self, run_dir: str, identities: Identities | None = None) -> None:
        self.run_dir = run_dir
        self.identities = identities

    def __call__(self) -> dict[str, Any]:
        try:
            return run_pipeline(self.run_dir, getattr(self, "identities", None))
        except StoppedToResume as exc:
            # Training took the time-limit warning (USR2) and wrote a checkpoint: now hand the
            # signal to submitit's own handler, which requeues this job and exits.
            handler = signal.getsignal(signal.SIGUSR2)
            if exc.signum == signal.SIGUSR2 and callable(handler):
                handler(signal.SIGUSR2, None)
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        # Training wrote its checkpoint when the signal came (jobs.checkpointing); a signal
        # outside training finds the last one. Resubmitting ourselves is enough.
        import submitit

        print(f"[medsweep] {self.run_dir}: requeued, will resume from the last checkpoint",
              file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(
            PipelineJob(self.run_dir, getattr(self, "identities", None)))

