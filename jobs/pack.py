"""Several small runs on one GPU: one Slurm array task, one process per run.

Unsloth patches torch and transformers for the whole process, so runs never share one: the
task's own process (``PackJob``) only starts, watches and stops the runs' processes
(``python -m jobs.pack RUN_DIR``, each ``run_pipeline`` with its log in ``logs/run.log``).
Every run stays a run: its own folder, progress, checkpoints, results and ``error.json``.

* A run that fails, runs out of memory or is killed gets its own ``error.json``; the others go
  on. The task fails at the end if any of its runs did (so sacct shows it), but ``status``
  reads each run's state from its folder.
* ``launcher cancel`` writes ``cancel.request`` into a packed run's folder: the pack stops that
  run's process alone and records it as cancelled.
* On a time limit or preemption (submitit's USR2) the pack is requeued with the runs it has not
  finished; each resumes from its own last checkpoint. A run that was resubmitted elsewhere in
  the meantime (its ``job.json`` names a later job) is left to that job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from core.errors import UserError
from core.fileio import open_no_follow
from core.identity import CONFIG_SHA_ENV
from core.results import has_results, now_iso
from core.rundir import RunDir
from jobs.checkpointing import RESUMABLE_EXIT, StoppedToResume
from jobs.mps import MPS_STATUS_ENV, PACK_RUNS_ENV, MpsDaemon, client_devices
from jobs.runcontrol import CANCELLED_ERROR, current_job_id, moved_elsewhere, write_error

POLL_S = 1.0
STOP_GRACE_S = 20.0
SAVE_GRACE_S = 45.0
"""How long a pack that is being requeued waits for its runs to checkpoint and stop."""


PARENT_ENV = "MEDSWEEP_PACK_PARENT"
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the pack's process ends, however it ends (Linux)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the pack ended before the signal was set
        os._exit(1)


def thread_env(runs: int, cpus: int | None = None,
               environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """CPU threads per run: the task's CPUs shared out, so that runs side by side do not each
    start a thread per core (torch's default); a value the user set is kept.

    >>> thread_env(4, 16, {})
    {'OMP_NUM_THREADS': '4', 'MKL_NUM_THREADS': '4'}
    >>> thread_env(3, 2, {"OMP_NUM_THREADS": "2"})
    {'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '1'}
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    n = str(max(1, cpus // max(1, runs)))
    return {k: environ.get(k, n) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


class PackError(UserError):
    """Some runs of a pack failed (each has its own error.json)."""


def _exit_message(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"the run's process was killed by {name}"
    return f"the run's process exited with code {code}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (run_pipeline stops cleanly, the trainer keeps its checkpoints), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _checkpoint_and_stop(procs: list[subprocess.Popen[bytes]],
                         grace_s: float = SAVE_GRACE_S) -> None:
    """Ask each running run to checkpoint at the end of its step and stop (USR2), and wait
    for them, at most grace_s in all: what is left then dies with the pack."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + grace_s
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


class PackJob:
    """Callable submitted per pack; requeued on time limit with its unfinished runs."""

    def __init__(self, run_dirs: list[str], mps: bool = True,
                 identities: dict[str, str] | None = None) -> None:
        self.run_dirs = list(run_dirs)
        self.mps = mps
        self.identities = identities
        """{run id: config SHA-256} of the pack's runs and their followers (jobs.pipeline)."""
        self._requeuing = False
        self._child_env: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def __call__(self) -> dict[str, Any]:
        return self.run()

    def run(self) -> dict[str, Any]:
        job_id = current_job_id()
        failed: list[str] = []
        done: list[str] = []
        todo: list[RunDir] = []
        for d in self.run_dirs:
            rd = RunDir(Path(d))
            if has_results(rd.performance):
                done.append(rd.run_id)
            elif rd.cancel_request.exists():
                write_error(rd, CANCELLED_ERROR, cancelled=True)  # cancelled while queued
            elif not moved_elsewhere(rd, job_id):
                todo.append(rd)
        with MpsDaemon(self.mps and len(todo) > 1) as mps:
            self._child_env = {**mps.env, **thread_env(len(todo)), MPS_STATUS_ENV: mps.status,
                               PACK_RUNS_ENV: str(len(todo)),
                               **_identity_env(getattr(self, "identities", None)),
                               **client_devices(mps.status,
                                                os.environ.get("CUDA_VISIBLE_DEVICES"))}
            procs = {str(rd.path): self._start(rd) for rd in todo}
            self._procs = procs
            self._watch(procs, job_id, done, failed)
        if failed:
            raise PackError(f"{len(failed)} of {len(self.run_dirs)} packed runs failed: "
                            f"{', '.join(failed)} (each has its error.json)")
        return {"runs": done}

    def _watch(self, procs: dict[str, subprocess.Popen[bytes]], job_id: str | None,
               done: list[str], failed: list[str]) -> None:
        while procs:
            time.sleep(POLL_S)
            for d, proc in list(procs.items()):
                rd = RunDir(Path(d))
                if proc.poll() is None and rd.cancel_request.exists():
                    _stop(proc)
                    write_error(rd, CANCELLED_ERROR, cancelled=True)
                    del procs[d]
                    continue
                if proc.poll() is None and moved_elsewhere(rd, job_id):
                    _stop(proc)  # resubmitted while it ran here: the later job owns it now
                    del procs[d]
                    continue
                code = proc.poll()
                if code is None:
                    continue
                del procs[d]
                if self._requeuing:
                    continue  # the whole task is ending: the run resumes after the requeue
                if code == 0 and has_results(rd.performance):
                    done.append(rd.run_id)
                    continue
                if not rd.error.exists():
                    write_error(rd, _exit_message(code)
                                 + f" (its log: {rd.run_log}); the other runs of its pack "
                                 "went on; `launcher resubmit` runs it again from its last "
                                 "checkpoint")
                failed.append(rd.run_id)

    def _start(self, rd: RunDir) -> subprocess.Popen[bytes]:
        rd.logs.mkdir(parents=True, exist_ok=True)
        if rd.error.exists():
            rd.error.unlink()
        with os.fdopen(open_no_follow(rd.run_log, append=True), "ab") as log:
            log.write(f"[medsweep] {now_iso()}: started in a pack of "
                      f"{len(self.run_dirs)}\n".encode())
            log.flush()
            # The run's process imports medsweep from where this one did.
            here = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
            return subprocess.Popen([sys.executable, "-m", "jobs.pack", str(rd.path)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **self._child_env,
                                         "PYTHONUNBUFFERED": "1",
                                         "PYTHONPATH": path, PARENT_ENV: str(os.getpid())})

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        self._requeuing = True
        _checkpoint_and_stop(list(self._procs.values()))
        left = [d for d in self.run_dirs if not has_results(RunDir(Path(d)).performance)
                and not RunDir(Path(d)).cancel_request.exists()]
        print(f"[medsweep] pack requeued with {len(left)} unfinished run(s); each resumes "
              "from its last checkpoint", file=sys.stderr, flush=True)
        return submitit.helpers.DelayedSubmission(
            PackJob(left, self.mps, getattr(self, "identities", None)))


def _identity_env(identities: dict[str, str] | None) -> dict[str, str]:
    """The pack's expected config digests for its runs' processes (an environment is readable
    by its owner alone; the runs folder is not where they come from)."""
    return {CONFIG_SHA_ENV: json.dumps(identities)} if identities is not None else {}


def _identities_from_env() -> dict[str, str] | None:
    text = os.environ.get(CONFIG_SHA_ENV)
    if not text:
        return None
    doc = json.loads(text)
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def main(argv: list[str] | None = None) -> int:
    """One packed run's process: run_pipeline on its folder."""
    from jobs.pipeline import run_pipeline

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jobs.pack RUN_DIR", file=sys.stderr)
        return 2
    # Slurm signals every process of the step before a time limit (USR2) and on a requeue
    # (TERM): the pack's own process handles both; this one ends when the pack stops it, or
    # with it. Without the parent-death signal a requeued pack's runs went on training as
    # orphans beside their own restarted selves (seen on the local Slurm, proctrack/linuxproc).
    # While it trains, either signal checkpoints the run at the end of its step and stops it
    # (jobs.checkpointing); the pack forwards USR2 and waits for that before it requeues.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _die_with_parent(int(parent))
    try:
        run_pipeline(args[0], _identities_from_env())
    except StoppedToResume:
        return RESUMABLE_EXIT  # checkpointed on the pack's request; resumes after the requeue
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - error.json already holds the one-line reason
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
