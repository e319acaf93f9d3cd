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
from core.identity import submitted_hashes
from core.results import now_iso
from core.rundir import PERFORMANCE, WRITTEN_IN_RUN, RunDir, refuse_links
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


def run_pipeline(run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) then evaluate the run in run_dir; returns the performance summary."""
    rd = RunDir(Path(run_dir))
    try:
        refuse_links(rd.path, WRITTEN_IN_RUN)
        raw = yaml.safe_load(rd.config.read_text(encoding="utf-8"))
        cfg = config_from_dict(raw, str(rd.config))
        check_config_matches_id(rd, cfg, raw)
        from jobs.evaluate import evaluate
        from jobs.train import train

        budget = run_budget(rd, cfg)
        if rd.error.exists():
            rd.error.unlink()
        train(cfg, rd.adapter, checkpoint_dir=rd.checkpoints, progress_path=rd.progress,
              budget_epochs=budget.epochs if budget else None)
        doc = evaluate(cfg, rd.adapter, rd.results, progress_path=rd.progress,
                       budget=budget.as_dict() if budget else None)
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit, StoppedToResume)):
            atomic_write_json(rd.error, {
                "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                "at": now_iso(), "traceback": traceback.format_exc()[-4000:]})
        raise
    return {"run_dir": str(rd.path), "f1": {m: v["f1"] for m, v in
                                            doc["metrics"]["total"].items()},
            "performance": str(rd.results / PERFORMANCE)}


class PipelineJob:
    """Callable submitted per run; requeued on time limit, resumed from checkpoints."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def __call__(self) -> dict[str, Any]:
        try:
            return run_pipeline(self.run_dir)
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
        return submitit.helpers.DelayedSubmission(PipelineJob(self.run_dir))

