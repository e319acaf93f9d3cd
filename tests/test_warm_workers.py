"""Warm workers (jobs.worker, launcher.backends.warm) and asynchronous successive halving
(strategy: asha): queue semantics, a failing item that leaves the worker going, a worker
killed in the middle of a run that resumes it, and ASHA's decisions as files replayed after a
kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.rundir import SEARCH_FILE, RunDir, job_files_dir
from core.search import SearchSpec, asha_promotions
from core.workqueue import WorkItem, WorkQueue
from launcher import search as lsearch

from .conftest import ROOT, job_env, run_module
from .test_search import _finished_rung


def test_two_workers_never_claim_one_item_and_the_order_is_kept(tmp_path):
    q = WorkQueue(tmp_path / "q")
    for i in range(5):
        q.put(WorkItem(f"/r/run{i}", {f"run{i}": "x"}))
    got = [q.claim("a"), q.claim("b"), q.claim("a")]
    assert [g.run_id for g in got if g] == ["run0", "run1", "run2"]
    assert {i.run_id for i in q.running("a")} == {"run0", "run2"}
    q.finish("a", got[0], "done")
    assert q.requeue("a") == [got[2]]  # a dead worker's item goes back, first in line
    assert [i.run_id for i in q.queued()] == ["run2", "run3", "run4"]
    assert q.outcomes() == {"run0": "done"}


def test_a_failing_item_is_its_own_and_the_worker_takes_the_next(tmp_path):
    """Two runs whose configs the job refuses (not the digest submit wrote): each fails with
    its own error.json, in one worker process that goes on and ends when the queue closes."""
    q = WorkQueue(tmp_path / "q")
    for name in ("a-00000000", "b-00000000"):
        rd = RunDir(tmp_path / "runs" / name)
        rd.path.mkdir(parents=True)
        rd.config.write_text("model: {name_or_path: scratch:llama-tiny}\n")
        q.put(WorkItem(str(rd.path), {name: "0" * 64}))
    q.close()
    r = subprocess.run([sys.executable, "-m", "jobs.worker", str(q.root), "w0"], cwd=ROOT,
                       env=job_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert q.outcomes() == {"a-00000000": "failed", "b-00000000": "failed"}
    for name in ("a-00000000", "b-00000000"):
        err = json.loads(RunDir(tmp_path / "runs" / name).error.read_text())
        assert "not the config submit wrote" in err["error"]
    assert r.stderr.count("the worker goes on") == 2


def test_a_run_cancelled_while_queued_is_not_started(tmp_path):
    q = WorkQueue(tmp_path / "q")
    rd = RunDir(tmp_path / "runs" / "a-00000000")
    rd.path.mkdir(parents=True)
    rd.cancel_request.write_text("7\n")
    q.put(WorkItem(str(rd.path), {"a-00000000": "0" * 64}))
    q.close()
    r = subprocess.run([sys.executable, "-m", "jobs.worker", str(q.root), "w0"], cwd=ROOT,
                       env=job_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert q.outcomes() == {"a-00000000": "cancelled"}
    assert json.loads(rd.error.read_text())["cancelled"] is True


def test_a_cancel_watch_fires_again_when_its_interrupt_is_lost(tmp_path, monkeypatch):
    """An interrupt that lands where Python ignores exceptions (a weakref callback) is lost;
    the watch sends another until the run stops."""
    import jobs.worker as worker

    monkeypatch.setattr(worker, "CANCEL_POLL_S", 0.05)
    monkeypatch.setattr(worker, "REFIRE_S", 0.1)
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.cancel_request.write_text("7\n")
    swallowed = 0
    with pytest.raises(KeyboardInterrupt):
        with worker._CancelWatch(rd):
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    time.sleep(0.01)
                except KeyboardInterrupt:
                    if swallowed == 0:  # what "Exception ignored in ..." does to the first
                        swallowed += 1
                        continue
                    raise
    assert swallowed == 1


def _sweep_file(tmp_path: Path, name: str, strategy: str | None, steps: int = 0,
                lrs: tuple[float, ...] = (0.003, 0.001, 0.0003)) -> Path:
    doc = {"name": name, "env": "local", "data": {"demo": True},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "eval.max_new_tokens": 16,
                    "train.per_device_batch_size": 8, **(
                        {"train.max_steps": steps, "train.checkpoint_every_min": 0.02}
                        if steps else {})},
           "grid": {"train.learning_rate": list(lrs)}}
    if strategy:
        doc["search"] = {"strategy": strategy, "rungs": [1, 2], "keep": "1/3"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_an_asha_search_runs_in_one_warm_worker_through_launcher_submit(tmp_path):
    sweep = _sweep_file(tmp_path, "asha", "asha")
    r = run_module("launcher", "submit", str(sweep), "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("warm worker(s) on the CPU") == 1  # one worker for every item
    doc = json.loads((tmp_path / "runs" / "asha" / SEARCH_FILE).read_text())
    promoted = [e["run"] for e in doc["asha"]["promotions"]]
    assert promoted and "search: rung 1 with 1 run(s)" in r.stdout
    assert len(doc["asha"]["scores"]["0"]) == 3
    assert set(doc["asha"]["scores"]["1"]) == set(promoted)
    assert len(doc["asha"]["stopped"]) == 3  # the rung-0 losers, then the top rung's
    summaries = [json.loads(p.read_text())["startup"] for p in
                 (tmp_path / "runs" / "asha").glob("*/adapter/medsweep_train.json")]
    items = sorted(s["worker_item"] for s in summaries)
    assert items[0] >= 1 and items[-1] >= 3  # later runs were later items of one worker
    status = run_module("launcher", "status", "asha", "--runs-dir", str(tmp_path / "runs"))
    assert "promoted" in status.stdout or "finished (top rung)" in status.stdout


def _worker_pids(folder: Path) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jobs.worker" in cmd and str(folder).encode() in b" ".join(cmd):
            out.append(int(proc.name))
    return out


@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_run_is_replaced_and_the_run_resumes(tmp_path):
    sweep = _sweep_file(tmp_path, "kill", None, steps=120, lrs=(0.003, 0.001))
    p = subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-dir",
                          str(tmp_path / "runs")], cwd=ROOT, env=job_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jobs = job_files_dir(tmp_path / "runs" / "kill")
    deadline = time.time() + 300
    ckpt = None
    while ckpt is None and time.time() < deadline:
        time.sleep(0.5)
        # A whole checkpoint (its trainer state written last), so the resume has one to take.
        ckpt = next((tmp_path / "runs" / "kill").glob(
            "*/checkpoints/checkpoint-*/trainer_state.json"), None)
    assert ckpt is not None, "no checkpoint was written"
    victim = ckpt.parent.parent.parent.name
    pids = _worker_pids(jobs)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    assert f"{victim}: its worker died; queued again (it resumes)" in out
    st = run_module("launcher", "status", "kill", "--runs-dir", str(tmp_path / "runs"))
    assert st.stdout.count("| COMPLETED |") == 2, st.stdout
    log = (tmp_path / "runs" / "kill" / victim / "adapter" / "medsweep_train.json")
    assert json.loads(log.read_text()).get("resumed_from") not in (None, ""), log.read_text()


def test_asha_promotes_as_runs_finish_and_a_killed_step_is_finished_by_the_next(
        tmp_path, monkeypatch):
    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2", strategy="asha")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    known = {"r0", "r1", "r2", "r3"}
    _finished_rung(folder, "r0", 0, 0.2)
    assert lsearch.asha_step(folder, spec, known) == []  # 1 finished: top floor(0.5) = none
    _finished_rung(folder, "r1", 0, 0.6)
    # Killed after the decision was written, before the run was moved on.
    real = lsearch._promote
    monkeypatch.setattr(lsearch, "_promote", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        lsearch.asha_step(folder, spec, known)
    doc = json.loads((folder / SEARCH_FILE).read_text())
    assert [e["run"] for e in doc["asha"]["promotions"]] == ["r1"]
    assert json.loads(RunDir(folder / "r1").budget.read_text())["rung"] == 0
    monkeypatch.setattr(lsearch, "_promote", real)
    assert lsearch.asha_step(folder, spec, known) == []  # decided already: only finished
    assert json.loads(RunDir(folder / "r1").budget.read_text())["rung"] == 1
    _finished_rung(folder, "r2", 0, 0.1)
    _finished_rung(folder, "r3", 0, 0.9)
    assert lsearch.asha_step(folder, spec, known) == ["r3"]  # top 2 of 4: r3 and r1
    doc = json.loads((folder / SEARCH_FILE).read_text())
    assert set(doc["asha"]["stopped"]) == {"r0", "r2"}  # rung 0 can promote no more
    assert not RunDir(folder / "r0").checkpoints.exists()
    assert lsearch.stopped_runs(folder) == {"r0", "r2"}
    assert asha_promotions(spec, 1, {"r1": 0.5}, set(), True) == []  # the top rung


def test_strategy_asha_is_accepted_and_a_typo_lists_both(tmp_path):
    from core.search import parse_search

    errors: list[str] = []
    assert parse_search({"strategy": "asha", "rungs": [1, 2]}, "s.yaml", errors).strategy == "asha"
    parse_search({"strategy": "ashaa", "rungs": [1, 2]}, "s.yaml", errors)
    assert errors and "successive-halving, asha" in errors[0]


def test_an_idle_worker_ends_when_the_launcher_that_fed_it_is_gone(tmp_path):
    """A launcher killed before it closed its queue leaves no worker waiting for ever."""
    q = WorkQueue(tmp_path / "q")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    q.own(os.getpid())
    assert not q.orphaned
    q.own(gone.pid)
    assert q.orphaned
    r = subprocess.run([sys.executable, "-m", "jobs.worker", str(q.root), "w0"], cwd=ROOT,
                       env=job_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and q.outcomes() == {}
