"""Warm workers on the real local Slurm (launcher.backends.pool): a sweep's runs go through one
pool task whose workers take run after run, an asynchronous search is decided inside the pool
(the promoted runs go on in the same task), a worker killed in the middle of a run is replaced
and the run resumes, and a run that fails leaves the others going."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from core.rundir import SEARCH_FILE, job_files_dir
from launcher.cli import main

from .test_slurm import all_ended, wait_for
from .test_slurm_faults import LONG, env_file, submit
from .test_slurm_packs import _jobs
from .test_warm_workers import _worker_pids

pytestmark = pytest.mark.slurm


@pytest.fixture()
def data(tmp_path):
    from core.demo_data import write_demo_data

    return write_demo_data(tmp_path / "data", n_train=120, n_dev=6)


def _startup(folder: Path, run: str) -> dict:
    doc = json.loads((folder / run / "adapter" / "medsweep_train.json").read_text())
    return doc


def test_an_asha_search_runs_in_one_pool_task_and_a_killed_worker_resumes_its_run(
        slurm_cluster, tmp_path, data, capsys):
    env = env_file(tmp_path, warm_workers=True, max_parallel=1, runs_per_gpu=2)
    base = {**LONG, "train.checkpoint_every_min": 0.01, "train.save_steps": 1000}
    folder = submit(tmp_path, "pooled", data, base, env=env,
                    grid={"train.learning_rate": [0.003, 0.001, 0.0003, 0.0001]},
                    search={"strategy": "asha", "rungs": [1, 2], "keep": "1/2"})
    out = capsys.readouterr().out
    assert "4 run(s) queued for a pool of 1 Slurm task(s)" in out, out
    jobs = _jobs(folder)
    assert len(jobs) == 4 and all(j["pool"] is True for j in jobs.values())
    array = {j["job_id"] for j in jobs.values()}
    assert len(array) == 1 and "_" not in next(iter(array)), array  # queued: the pool's id

    # A worker dies in the middle of a run, once a checkpoint of it is on disk.
    deadline = time.time() + 600
    ckpt = None
    while ckpt is None and time.time() < deadline:
        time.sleep(0.5)
        ckpt = next(folder.glob("*/checkpoints/checkpoint-*/trainer_state.json"), None)
    assert ckpt is not None, "no checkpoint was written"
    victim = ckpt.parent.parent.parent.name
    taken = json.loads((folder / victim / "job.json").read_text())
    task = taken["job_id"]  # one task: a job of its own, not an array (submitit)
    assert task in array and taken["worker"] == f"{task}-0" or taken["worker"] == f"{task}-1", \
        taken  # a worker took it: its task and name
    queue = job_files_dir(folder)
    mine = [pid for pid in _worker_pids(queue)
            if taken["worker"].encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert mine, "the victim's worker process was not found"
    os.kill(mine[0], signal.SIGKILL)

    states = wait_for(folder, lambda s: all_ended(s) and _search_over(folder), timeout=900,
                      every=2)
    doc = json.loads((folder / SEARCH_FILE).read_text())
    promoted = [e["run"] for e in doc["asha"]["promotions"]]
    assert len(promoted) == 2 and set(doc["asha"]["scores"]["1"]) == set(promoted), doc
    assert all(s.state == "COMPLETED" for s in states), [(s.run_id, s.state, s.error)
                                                          for s in states]
    # Every run and every promotion went through the one pool task, run after run.
    jobs = _jobs(folder)
    assert {j["job_id"] for j in jobs.values()} == {task}, jobs
    assert all(j["worker"].startswith(f"{task}-") for j in jobs.values()), jobs
    items = [_startup(folder, r)["startup"]["worker_item"] for r in promoted]
    assert min(items) >= 2, items  # each promoted run was a later item of a warm worker
    # The killed run was queued again and resumed from its checkpoint.
    assert _startup(folder, victim).get("resumed_from") not in (None, "")
    log = Path(taken["stderr"]).read_text()
    assert f"{victim}: stopped before it finished; queued again (it resumes)" in log
    capsys.readouterr()
    assert main(["status", "pooled", "--runs-dir", str(tmp_path / "runs")]) == 0
    status = capsys.readouterr().out
    assert "finished (top rung)" in status and status.count("COMPLETED") >= 4, status


def _search_over(folder: Path) -> bool:
    doc = json.loads((folder / SEARCH_FILE).read_text())
    asha = doc.get("asha") or {}
    return len(asha.get("stopped", {})) == 4  # two at rung 0, then the top rung's two


def test_a_run_out_of_memory_fails_alone_and_the_pool_finishes_the_others(
        slurm_cluster, tmp_path, data, capsys):
    """Also: a queued run cancelled alone ends CANCELLED while its pool goes on."""
    env = env_file(tmp_path, warm_workers=True, max_parallel=2, runs_per_gpu=1,
                   env_vars={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                             "MEDSWEEP_FAULT_OOM_TRAIN_LENGTH_ABOVE": "400"})
    base = {**{k: v for k, v in LONG.items() if k != "model.max_seq_length"},
            "train.max_steps": 3}
    folder = submit(tmp_path, "oom", data, base, env=env,
                    grid={"model.max_seq_length": [256, 512, 384, 320]})
    assert "4 run(s) queued for a pool of 2 Slurm task(s)" in capsys.readouterr().out
    last = next(n for n, j in _jobs(folder).items() if j["varied"]["model.max_seq_length"] == 320)
    assert main(["cancel", "oom", "--runs-dir", str(tmp_path / "runs"), "--run", last]) == 0
    assert "asked 1 run(s) to stop (the jobs they share go on)" in capsys.readouterr().out
    states = {s.varied["model.max_seq_length"]: s
              for s in wait_for(folder, all_ended, timeout=600, every=2)}
    assert states[512].state == "FAILED" and "out of GPU memory" in states[512].error, \
        states[512]
    assert states[256].state == states[384].state == "COMPLETED"
    assert states[320].state == "CANCELLED", states[320]
    tasks = {s.job_id for s in states.values() if s.state != "CANCELLED"}
    array = next(iter(tasks)).split("_")[0]
    assert tasks <= {f"{array}_0", f"{array}_1"}, tasks  # the pool's two tasks took them
    logs = {Path(json.loads((s.path / "job.json").read_text())["stderr"]).read_text()
            for s in states.values() if s.state != "CANCELLED"}
    assert any("failed (TrainError); the worker goes on" in t for t in logs)
    assert not any("starting it again" in t for t in logs)  # no worker died of it
