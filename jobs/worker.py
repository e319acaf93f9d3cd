"""A warm worker: one process per card slot (or CPU slot) that runs a sweep's work items back
to back, so torch, Unsloth, transformers and TRL are imported once, not once per run.

Items come from the sweep's private work queue (core.workqueue). Each is run in this process
by jobs.pipeline.run_pipeline, exactly as a job of its own would run it: same files, same
checks of the config's digest, same resume. Between items the worker drops what the item
held (the model, the trainer) and empties the CUDA cache. What an item does wrong stays its
own:

* an exception (a bad record, CUDA out of memory) is the run's error.json; the worker goes on;
* ``launcher cancel`` of the run in hand (its cancel.request) interrupts it; the worker goes on;
* an item whose Unsloth switches (compiled or eager, flex attention) differ from those this
  process imported Unsloth with runs in a child process of its own (they apply only at import);
* a Ctrl-C, a stop, a time-limit checkpoint ends the worker after the run in hand has
  stopped resumably; its item says "interrupted" and the run resumes when submitted again.
"""

from __future__ import annotations

import _thread
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from core.rundir import RunDir
from core.workqueue import WorkItem, WorkQueue
from jobs.joblog import log

POLL_S = 0.2
CANCEL_POLL_S = 0.5
REFIRE_S = 5.0


class WorkerJob:
    """The callable a backend starts once per slot (submitit, picklable)."""

    def __init__(self, queue_root: str, name: str) -> None:
        self.queue_root = queue_root
        self.name = name

    def __call__(self) -> dict[str, Any]:
        return serve(WorkQueue(Path(self.queue_root)), self.name)


def serve(queue: WorkQueue, name: str, poll_s: float = POLL_S) -> dict[str, Any]:
    """Run items until the queue is closed and empty; {run id: outcome} of this worker's."""
    outcomes: dict[str, str] = {}
    n = 0
    while True:
        item = queue.claim(name)
        if item is None:
            if queue.closed or queue.orphaned or queue.stopping(name):
                return outcomes
            time.sleep(poll_s)
            continue
        n += 1
        try:
            outcome = run_item(item, n)
        except BaseException:
            queue.finish(name, item, "interrupted")
            raise
        queue.finish(name, item, outcome)
        outcomes[item.run_id] = outcome


def run_item(item: WorkItem, n: int) -> str:
    """One item: done, failed or cancelled (an interrupt of the worker is raised)."""
    import jobs

    jobs.STARTED_AT, jobs.WORKER_ITEM = time.time(), n
    log(f"worker item {n}: {item.run_id}")
    from jobs.runcontrol import CANCELLED_ERROR, write_error

    rd = RunDir(Path(item.run_dir))
    if rd.cancel_request.exists():  # cancelled while it was queued
        write_error(rd, CANCELLED_ERROR, cancelled=True)
        return "cancelled"
    if _needs_own_process(item):
        return _in_child(item)
    from jobs.checkpointing import StoppedToResume
    from jobs.pipeline import run_pipeline

    watch = _CancelWatch(rd)
    try:
        with watch:
            run_pipeline(item.run_dir, item.identities)
        return "done"
    except KeyboardInterrupt:
        if not watch.fired:
            raise
        write_error(rd, CANCELLED_ERROR, cancelled=True)
        return "cancelled"
    except StoppedToResume:
        raise
    except Exception as exc:  # noqa: BLE001 - run_pipeline wrote the run's error.json
        log(f"{item.run_id} failed ({type(exc).__name__}); the worker goes on")
        return "failed"
    finally:
        _release()


class _CancelWatch:
    """Interrupts the main thread when the run's cancel.request appears, again every
    REFIRE_S until the run has stopped: an interrupt that lands in a weakref callback or a
    __del__ is printed as "Exception ignored" and lost (seen on the local Slurm). No interrupt
    is sent once the with block is left."""

    def __init__(self, rd: RunDir) -> None:
        self.rd, self.fired = rd, False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        wait = CANCEL_POLL_S
        while not self._stop.wait(wait):
            if self.rd.cancel_request.exists():
                with self._lock:
                    if self._stop.is_set():
                        return
                    self.fired = True
                    _thread.interrupt_main()
                wait = REFIRE_S


def _release() -> None:
    """Drop what the item held: the model and trainer are garbage once run_pipeline returned."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _needs_own_process(item: WorkItem) -> bool:
    """Whether Unsloth was imported here with other switches than this item's (on a machine
    without CUDA they change nothing: Unsloth's CPU path is stock transformers, PEFT, TRL)."""
    torch = sys.modules.get("torch")
    if "unsloth" not in sys.modules or torch is None or not torch.cuda.is_available():
        return False
    try:
        from jobs import modeling
        from jobs.pipeline import _load_config

        want = modeling.resolve_switches(_load_config(RunDir(Path(item.run_dir)),
                                                      item.identities)).env()
    except Exception:  # noqa: BLE001 - the run itself will say what is wrong with its config
        return False
    keys = ("UNSLOTH_COMPILE_DISABLE", "UNSLOTH_ENABLE_FLEX_ATTENTION")
    return any(os.environ.get(k) != want.get(k) for k in keys)


def _in_child(item: WorkItem) -> str:
    """The item in a process of its own (jobs.pack's per-run entry point)."""
    import json

    from core.identity import CONFIG_SHA_ENV
    from jobs.pack import PARENT_ENV

    log(f"{item.run_id}: other Unsloth switches than this worker's: run in its own process")
    env = {k: v for k, v in os.environ.items()
           if k not in ("UNSLOTH_COMPILE_DISABLE", "UNSLOTH_ENABLE_FLEX_ATTENTION")}
    env[CONFIG_SHA_ENV] = json.dumps(item.identities)
    env[PARENT_ENV] = str(os.getpid())  # it dies with this worker, not with the card's job
    code = subprocess.call([sys.executable, "-m", "jobs.pack", item.run_dir], env=env)
    return "done" if code == 0 else "failed"


RESTARTS = 3
"""How often a card's supervisor starts a worker again that died with items left."""


class CardJob:
    """The job a backend starts per card (or once for the CPU): ``slots`` warm workers, each
    a process of its own on this job's card(s), sharing the card through a CUDA MPS daemon
    this job starts where there are several (jobs.mps), each growing its micro-batch into its
    share of the free memory only. A worker that dies with items left is started again."""

    def __init__(self, queue_root: str, names: list[str], mps: bool = True) -> None:
        self.queue_root = queue_root
        self.names = list(names)
        self.mps = mps

    def __call__(self) -> dict[str, Any]:
        queue = WorkQueue(Path(self.queue_root))
        with card_env(len(self.names), self.mps) as env:
            return supervise(queue, self.names, env)


@contextmanager
def card_env(k: int, mps: bool = True) -> Iterator[dict[str, str]]:
    """The environment of k workers sharing this job's card: an MPS daemon where k > 1, the
    threads split between them, and each one's share of the card."""
    from jobs.mps import MPS_STATUS_ENV, PACK_RUNS_ENV, MpsDaemon, client_devices
    from jobs.pack import thread_env

    with MpsDaemon(mps and k > 1) as daemon:
        yield {**daemon.env, **thread_env(k), MPS_STATUS_ENV: daemon.status,
               PACK_RUNS_ENV: str(k),
               **client_devices(daemon.status, os.environ.get("CUDA_VISIBLE_DEVICES"))}


def _start_worker(queue: WorkQueue, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    from jobs.pack import PARENT_ENV

    here = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, "-m", "jobs.worker", str(queue.root), name],
                            stdin=subprocess.DEVNULL,
                            env={**os.environ, **env, "PYTHONUNBUFFERED": "1",
                                 "PYTHONPATH": path, PARENT_ENV: str(os.getpid())})


def supervise(queue: WorkQueue, names: list[str], env: dict[str, str],
              tick: Callable[[], bool] | None = None,
              procs: dict[str, subprocess.Popen[bytes]] | None = None) -> dict[str, Any]:
    """Start a worker per name and wait for them all to end; a worker that dies with work
    left is started again (at most RESTARTS times). tick, where given, is called about once a
    second (a pool's coordinator): once it says the work is over, the workers end when idle.
    procs: the live workers, kept where a caller's signal handler can reach them."""
    procs = {} if procs is None else procs
    procs.update({n: _start_worker(queue, n, env) for n in names})
    restarts = dict.fromkeys(names, 0)
    codes: dict[str, int] = {}
    try:
        while procs:
            time.sleep(POLL_S * 5)
            for name, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[name]
                codes[name] = code
                for item in queue.running(name):  # it died in the middle of an item
                    queue.finish(name, item, "interrupted")
                if code != 0 and not queue.closed and not queue.orphaned \
                        and not queue.stopping(name) and restarts[name] < RESTARTS:
                    restarts[name] += 1
                    log(f"worker {name} ended with {code}; starting it again")
                    procs[name] = _start_worker(queue, name, env)
            if tick is not None and tick():
                for name in names:
                    queue.stop(name)
    except BaseException:
        from jobs.pack import _stop

        for proc in procs.values():
            _stop(proc)  # SIGINT: the run in hand stops resumably
        raise
    return {"workers": codes}


def main(argv: list[str] | None = None) -> int:
    """One warm worker's process: ``python -m jobs.worker QUEUE NAME``."""
    import signal

    from jobs.pack import PARENT_ENV, _die_with_parent

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m jobs.worker QUEUE_FOLDER WORKER_NAME", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the card's job stops it with SIGINT
    # Slurm's time-limit warning reaches every process of the job: while training it makes
    # the run checkpoint and stop (jobs.checkpointing); an idle worker lets its job handle it.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _die_with_parent(int(parent))
    from jobs.checkpointing import RESUMABLE_EXIT, StoppedToResume

    try:
        serve(WorkQueue(Path(args[0])), args[1])
    except KeyboardInterrupt:
        return 130
    except StoppedToResume:
        return RESUMABLE_EXIT  # checkpointed at the job's time limit: the run resumes
    return 0


if __name__ == "__main__":
    sys.exit(main())
