"""The Slurm worker pool's pieces without a cluster (launcher.backends.pool): its size, a queued
run's state from the array's sacct rows, the coordinator's records and requeues, cancel of a
queued run, and the dry run's plan. The pool itself runs on the real local Slurm in
tests/test_slurm_pool.py."""

import json
from pathlib import Path

import pytest

from core.rundir import RunDir
from core.workqueue import WorkItem, WorkQueue
from launcher.backends.pool import Coordinator, pool_state
from launcher.cli import main
from launcher.envs import EnvProfile

from .conftest import ROOT


def _item(folder: Path, run: str) -> WorkItem:
    rd = RunDir(folder / run)
    rd.path.mkdir(parents=True, exist_ok=True)
    doc = {"run_id": run, "cluster": "slurm", "job_id": "", "pool": True, "varied": {}}
    return WorkItem(str(rd.path), {run: "0" * 64}, records={run: doc})


def _coordinator(tmp_path: Path, max_requeues: int = 1) -> tuple[Coordinator, WorkQueue]:
    q = WorkQueue(tmp_path / "q")
    env = EnvProfile(executor="slurm", max_requeues=max_requeues)
    return Coordinator(q, ["7_0-0"], "7_0", tmp_path / "runs", env, {}, None), q


def test_a_taken_run_names_its_task_and_worker_and_an_interrupted_one_is_queued_again_once(
        tmp_path):
    coord, q = _coordinator(tmp_path, max_requeues=1)
    q.put(_item(tmp_path / "runs", "a-1"))
    item = q.claim("7_0-0")
    assert coord.tick() is False
    rec = json.loads(RunDir(tmp_path / "runs" / "a-1").job.read_text())
    assert (rec["job_id"], rec["worker"], rec["pool"]) == ("7_0", "7_0-0", True)

    q.finish("7_0-0", item, "interrupted")  # its worker died
    for _ in range(3):  # idempotent: one requeue however often the coordinators look
        with q.locked():
            coord.requeue_interrupted()
    assert [i.run_id for i in q.queued()] == ["a-1"]
    rec = json.loads(RunDir(tmp_path / "runs" / "a-1").job.read_text())
    assert rec["job_id"] == "7" and "worker" not in rec  # queued in the pool again

    again = q.claim("7_0-0")
    q.finish("7_0-0", again, "interrupted")  # a second stop: max_requeues 1 is spent
    with q.locked():
        coord.requeue_interrupted()
    assert q.queued() == []
    err = json.loads(RunDir(tmp_path / "runs" / "a-1").error.read_text())["error"]
    assert err.startswith("stopped 2 times before it finished")


def test_the_pool_ends_when_nothing_is_queued_or_in_hand_and_nothing_is_promoted(tmp_path):
    coord, q = _coordinator(tmp_path)
    promoted: list = []
    coord.promoter = lambda: promoted
    q.put(_item(tmp_path / "runs", "a-1"))
    assert coord.tick() is False  # queued
    item = q.claim("7_0-0")
    assert coord.tick() is False  # in a worker's hands
    q.finish("7_0-0", item, "done")
    assert coord.tick() is True  # idle, and the search promotes nothing


@pytest.mark.parametrize("rows, state", [
    ({}, "PENDING"),  # sacct does not list the array yet
    ({"9_0": {"state": "RUNNING"}, "9_1": {"state": "COMPLETED"}}, "PENDING"),
    ({"9_[1-3]": {"state": "PENDING"}}, "PENDING"),
    ({"9_0": {"state": "COMPLETED"}, "9_1": {"state": "TIMEOUT"}}, None),
    ({"9": {"state": "CANCELLED"}}, None),  # a pool of one task is a plain job
    ({"12_0": {"state": "RUNNING"}}, "PENDING"),  # another sweep's array: not this pool's
])
def test_a_queued_run_is_pending_while_a_task_of_its_pool_lives(rows, state):
    if "12_0" in rows:
        assert pool_state({**rows, "9_0": {"state": "FAILED"}}, "9") is None
    else:
        assert pool_state(rows, "9") == state


def test_a_dry_run_on_slurm_shows_the_pool(tmp_path, capsys):
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=8, n_dev=4)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({
        "name": "s", "env": str(ROOT / "envs" / "slurm.yaml"),
        "data": {"train": str(train), "eval": str(dev)},
        "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False},
        "grid": {"train.learning_rate": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]}}))
    assert main(["submit", str(sweep), "--dry-run", "--runs-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "5 run(s) in a pool of warm workers" in out and "--array=0-1%16" in out, out
    assert "4 worker(s) per task taking run after run" in out


def test_cancel_asks_a_queued_pool_run_to_stop_and_cancels_the_pool_only_with_its_last_run():
    from launcher.commands.cancel import _job_goes_on
    from launcher.jobrecord import JobRecord
    from launcher.state import RunState

    def st(run: str, job: str, worker: str | None = None) -> RunState:
        rec = JobRecord(run, "slurm", job, worker=worker, pool=True)
        return RunState(run, Path(run), "RUNNING" if worker else "PENDING", job, {}, "",
                        record=rec)

    states = [st("a", "9"), st("b", "9"), st("c", "9_0", "9_0-0")]
    assert _job_goes_on(states[0], states[0].record, states, {"a"})  # b and c go on
    assert _job_goes_on(states[2], states[2].record, states, {"a", "b", "c"})  # a worker's
    assert not _job_goes_on(states[0], states[0].record, states, {"a", "b", "c"})  # scancel


def test_at_its_time_limit_a_pool_task_stops_its_workers_queues_their_runs_and_requeues(
        tmp_path):
    import subprocess
    import sys

    from launcher.backends.pool import PoolJob

    q = WorkQueue(tmp_path / "q")
    q.put(_item(tmp_path / "runs", "a-1"))
    q.put(_item(tmp_path / "runs", "b-1"))
    q.claim("7_0-0")
    job = PoolJob(str(q.root), str(tmp_path / "runs"), 1,
                  EnvProfile(executor="slurm", max_requeues=2), {}, None)
    job._names = ["7_0-0"]
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job._procs = {"7_0-0": worker}
    again = job.checkpoint()
    assert worker.poll() is not None  # the worker was stopped
    assert [i.run_id for i in q.queued()] == ["b-1", "a-1"]  # the run in hand queued again
    assert q.stopping("7_0-0")  # the task's workers take nothing more before the requeue
    assert isinstance(again.function, PoolJob) and again.function.queue_root == str(q.root)


def test_a_pool_runs_elapsed_time_counts_from_when_its_worker_took_it(tmp_path):
    from datetime import datetime, timedelta, timezone

    from launcher.backends.slurm import SlurmBackend
    from launcher.jobrecord import JobRecord

    rd = RunDir(tmp_path / "a-1")
    rd.path.mkdir()
    took = (datetime.now(timezone.utc) - timedelta(seconds=75)).isoformat()
    rec = JobRecord("a-1", "slurm", "9_0", worker="9_0-0", pool=True, submitted_at=took)
    polled = {"9_0": {"elapsed": "02:00:00"}}  # the pool task's whole time
    assert SlurmBackend().elapsed(rd, rec, "RUNNING", polled) in ("0:01:15", "0:01:16")
    plain = JobRecord("b-1", "slurm", "9_0")
    assert SlurmBackend().elapsed(rd, plain, "RUNNING", polled) == "02:00:00"


def test_a_failing_decision_step_leaves_the_pool_going_and_says_so_once(tmp_path, capsys):
    coord, q = _coordinator(tmp_path)

    def broken():
        raise ValueError("search.json: not a medsweep search record")

    coord.promoter = broken
    q.put(_item(tmp_path / "runs", "a-1"))
    assert coord.tick() is False and coord.tick() is False
    assert capsys.readouterr().err.count("the search's decision step failed") == 1
    item = q.claim("7_0-0")
    q.finish("7_0-0", item, "done")
    assert coord.tick() is True  # nothing left: the pool ends; the next submit decides


def test_a_queued_record_written_after_a_worker_took_the_run_is_put_right(tmp_path):
    from launcher.backends.pool import write_records

    coord, q = _coordinator(tmp_path)
    q.put(_item(tmp_path / "runs", "a-1"))
    item = q.claim("7_0-0")
    coord.tick()
    write_records(tmp_path / "runs", item, "7")  # the submit's record, late
    coord.tick()
    rec = json.loads(RunDir(tmp_path / "runs" / "a-1").job.read_text())
    assert (rec["job_id"], rec["worker"]) == ("7_0", "7_0-0")
