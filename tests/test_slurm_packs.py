"""Packed runs on the real local Slurm: several scratch runs in one array task, each in its own
process. Cancelling one, killing one, resubmitting and a time limit each behave as they do for
an unpacked run, and a packed run's adapter equals the same run done alone."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.rundir import TRAIN_SUMMARY
from launcher.cli import main
from launcher.state import run_states

from .conftest import ROOT, job_env
from .test_packing import _pack_child, pack_children
from .test_slurm import all_ended, wait_for
from .test_slurm_faults import LONG, adapter_tensors, env_file, submit

pytestmark = pytest.mark.slurm


@pytest.fixture()
def data(tmp_path):
    from core.demo_data import write_demo_data

    return write_demo_data(tmp_path / "data", n_train=24, n_dev=6)


def _jobs(folder: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "job.json").read_text()) for d in folder.iterdir()
            if (d / "job.json").is_file()}


def wait_gone(folder: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while pack_children(folder) and time.time() < deadline:
        time.sleep(1)
    assert not pack_children(folder), "run processes outlived their pack"


def test_a_pack_shares_one_task_and_each_run_ends_on_its_own(slurm_cluster, tmp_path, data,
                                                             capsys):
    base = {**LONG, "train.save_steps": 50}
    env = env_file(tmp_path)
    folder = submit(tmp_path, "packed", data, base, env=env,
                    grid={"train.max_steps": [90000, 100000, 40]})
    jobs = _jobs(folder)
    assert len(jobs) == 3 and len({j["job_id"] for j in jobs.values()}) == 1, jobs
    assert all(sorted(j["pack"]["runs"]) == sorted(jobs) for j in jobs.values())
    by_steps = {j["varied"]["train.max_steps"]: n for n, j in jobs.items()}
    cancel, kill, keep = (folder / by_steps[s] for s in (90000, 100000, 40))

    # The same run alone, as an unpacked job runs it (run_pipeline in a process of its own).
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(keep / "config.yaml", ref / "config.yaml")
    alone = subprocess.Popen([sys.executable, "-m", "jobs.pack", str(ref)], cwd=ROOT,
                             env=job_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)

    def running_with_checkpoints(states):
        by = {s.path: s for s in states}
        return all(by[p].state == "RUNNING" and any((p / "checkpoints").glob("checkpoint-*"))
                   for p in (cancel, kill))

    wait_for(folder, running_with_checkpoints, timeout=600, every=1)
    capsys.readouterr()
    assert main(["cancel", "packed", "--runs-dir", str(tmp_path / "runs"), "--run",
                 cancel.name]) == 0
    assert "asked 1 run(s) to stop (the jobs they share go on)" in capsys.readouterr().out
    os.kill(_pack_child(kill), signal.SIGKILL)

    states = {s.path: s for s in wait_for(folder, all_ended, timeout=900, every=2)}
    assert states[cancel].state == "CANCELLED", states[cancel]
    assert states[kill].state == "FAILED" and "killed by SIGKILL" in states[kill].error
    assert states[keep].state == "COMPLETED", states[keep]
    assert alone.wait(timeout=600) == 0
    got, want = adapter_tensors(keep / "adapter"), adapter_tensors(ref / "adapter")
    assert got.keys() == want.keys() and all(bool((got[k] == want[k]).all()) for k in got)

    # Resubmit runs the two that did not finish, packed again, each from its own checkpoint.
    done_job = jobs[keep.name]["job_id"]
    assert main(["resubmit", "packed", "--runs-dir", str(tmp_path / "runs"), "--env",
                 str(env)]) == 0
    assert "resubmitted 2 run(s)" in capsys.readouterr().out
    again = _jobs(folder)
    assert again[keep.name]["job_id"] == done_job
    assert again[cancel.name]["job_id"] == again[kill.name]["job_id"] != done_job
    wait_for(folder, lambda st: all(
        "resuming from checkpoint" in (p / "logs" / "run.log").read_text(errors="replace")
        for p in (cancel, kill)), timeout=600, every=1)
    # Cancelling every active run of a pack cancels its task.
    assert main(["cancel", "packed", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "cancelled 1 job(s)" in capsys.readouterr().out
    states = {s.path: s for s in wait_for(folder, all_ended, timeout=300, every=1)}
    assert [states[p].state for p in (cancel, kill, keep)] == ["CANCELLED", "CANCELLED",
                                                               "COMPLETED"]
    wait_gone(folder)


def test_a_time_limited_pack_is_requeued_and_every_run_resumes(slurm_cluster, tmp_path, data):
    # Each step sleeps 50 ms more: a run's length hardly depends on the machine's speed
    # (without it, 5,000 steps once ended before the first time limit on an idle machine, and
    # 8,000 took four time limits, 945 s, on a loaded one). 2,200 steps take at least 121 s,
    # more than the first allocation trains (about 105 s), and two or three allocations here.
    env = env_file(tmp_path, time_limit_min=3, signal_delay_s=60, max_requeues=10,
                   env_vars={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                             "TOKENIZERS_PARALLELISM": "false",
                             "MEDSWEEP_FAULT_STEP_SLEEP_S": "0.05"})
    folder = submit(tmp_path, "packlimit", data, LONG, env=env,
                    grid={"train.max_steps": [2200, 2300]})
    states = wait_for(folder, all_ended, timeout=2400, every=5)
    # A requeued pack's runs end with it: no run trains on as an orphan beside its restart.
    wait_gone(folder)
    states = run_states(folder)
    assert [s.state for s in states] == ["COMPLETED", "COMPLETED"], [
        (s.run_id, s.state, s.error) for s in states]
    jobs = _jobs(folder)
    assert len({j["job_id"] for j in jobs.values()}) == 1
    task_log = "".join(Path(next(iter(jobs.values()))["pack"][k]).read_text(errors="replace")
                       for k in ("stdout", "stderr"))
    assert "pack requeued with 2 unfinished run(s)" in task_log
    for s in states:
        assert re.search(r"resuming from checkpoint-\d+",
                         (s.path / "logs" / "run.log").read_text(errors="replace"))
        summary = json.loads((s.path / "adapter" / TRAIN_SUMMARY).read_text())
        assert summary["global_step"] == s.varied["train.max_steps"] and summary["resumed_from"]
