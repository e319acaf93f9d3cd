"""Integration tier: the launcher against a real local Slurm with accounting.

The cluster is started by the ``slurm_cluster`` fixture (ci/slurm-local-up.sh installs Debian's
packages when missing) and stopped afterwards. Jobs train scratch models on the CPU.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.state import run_states

from .conftest import ROOT

pytestmark = pytest.mark.slurm


def wait_for(folder: Path, done, timeout: float = 900, every: float = 3.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = run_states(folder)
        if done(states):
            return states
        time.sleep(every)
    raise AssertionError(f"timed out; states: {[(s.run_id, s.state, s.error) for s in states]}")


def all_ended(states):
    return all(s.state not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUBMITTED")
               for s in states)


def sacct_job_count() -> int:
    out = subprocess.run(["sacct", "-X", "-n", "-a", "-P", "-o", "JobID", "-S", "2020-01-01"],
                         capture_output=True, text=True, check=True)
    return len(out.stdout.split())


def write_sweep(tmp: Path, doc: dict) -> Path:
    p = tmp / f"{doc['name']}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_sweep_through_real_slurm(slurm_cluster, tmp_path, capsys):
    runs = tmp_path / "runs"
    t0 = time.time()
    rc = main(["submit", str(ROOT / "sweeps" / "ci.yaml"), "--runs-dir", str(runs)])
    assert rc == 0
    assert time.time() - t0 < 30, "submit must not wait for the jobs"
    folder = runs / "ci"
    jobs = [json.loads((d / "job.json").read_text()) for d in folder.iterdir()
            if (d / "job.json").is_file()]
    assert len(jobs) == 4 and all(j["cluster"] == "slurm" for j in jobs)
    assert len({j["job_id"].split("_")[0] for j in jobs}) == 1, "one array per resource group"
    assert jobs[0]["sbatch"]["slurm_gres"] == "gpu:h100:1"

    states = wait_for(folder, all_ended)
    assert [s.state for s in states] == ["COMPLETED"] * 4, [(s.run_id, s.error) for s in states]
    capsys.readouterr()
    assert main(["status", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.count("COMPLETED") >= 4 and "4 COMPLETED" in out

    assert main(["leaderboard", "ci", "--runs-dir", str(runs), "--format", "json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert len(board["rows"]) == 4 and not board["problems"]
    assert all(isinstance(r["exact.f1"], float) for r in board["rows"])
    assert (folder / "leaderboard.md").is_file() and (folder / "leaderboard.csv").is_file()

    before = sacct_job_count()
    assert main(["submit", str(ROOT / "sweeps" / "ci.yaml"), "--runs-dir", str(runs)]) == 0
    assert "4 skip-done" in capsys.readouterr().out
    assert sacct_job_count() == before, "a finished sweep submitted again submits nothing"


def test_failed_run_shows_its_error_and_resubmit_runs_only_it(slurm_cluster, tmp_path,
                                                              capsys):
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=24, n_dev=6)
    broken = tmp_path / "data" / "broken.json"
    # Valid when submitted (submit reads every data file), damaged before the job reads it:
    # a file on shared storage can change while a run waits in the queue.
    broken.write_text('[{"text": "fine", "entities": []}]')
    doc = {"name": "failing", "env": "localci", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.max_steps": 2,
                    "eval.max_examples": 4, "eval.max_new_tokens": 16},
           # Another seed apiece: runs that differ only in what evaluation reads would share
           # one training (README, "One model per training"); here each trains its own.
           "paired": [{"data.eval_dataset_file": [str(dev), str(broken)],
                       "train.seed": [42, 43]}]}
    sweep = write_sweep(tmp_path, doc)
    runs = tmp_path / "runs"
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 0
    broken.write_text('[{"text": "fine", "entities": []}, {"text": 3, "entities": []}]')
    folder = runs / "failing"
    states = wait_for(folder, all_ended)
    by_state = {s.state: s for s in states}
    assert set(by_state) == {"COMPLETED", "FAILED"}
    failed = by_state["FAILED"]
    assert "record 1: 'text' must be a string" in failed.error
    capsys.readouterr()
    assert main(["status", "failing", "--runs-dir", str(runs)]) == 1
    assert "record 1: 'text' must be a string" in capsys.readouterr().out

    done_job = json.loads((by_state["COMPLETED"].path / "job.json").read_text())["job_id"]
    broken.write_text(json.dumps([{"text": "Fever.", "entities": [{"label": "Symptom",
                                                                   "text": "Fever"}]}]))
    assert main(["resubmit", "failing", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "resubmitted 1 run(s)" in out and failed.run_id in out
    states = wait_for(folder, all_ended)
    assert [s.state for s in states] == ["COMPLETED", "COMPLETED"]
    assert json.loads((by_state["COMPLETED"].path / "job.json").read_text())["job_id"] == done_job
    # The retried run reused its trained adapter instead of training again.
    log = Path(json.loads((failed.path / "job.json").read_text())["stderr"]).read_text()
    assert "already holds this trained model" in log


def test_cancel_ends_a_running_sweep(slurm_cluster, tmp_path, capsys):
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=24, n_dev=6)
    doc = {"name": "long", "env": "localci", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.max_steps": 100000,
                    "train.per_device_batch_size": 1}}
    runs = tmp_path / "runs"
    assert main(["submit", str(write_sweep(tmp_path, doc)), "--runs-dir", str(runs)]) == 0
    folder = runs / "long"
    wait_for(folder, lambda st: all(s.state == "RUNNING" and s.progress for s in st),
             timeout=300, every=1)
    capsys.readouterr()
    assert main(["cancel", "long", "--runs-dir", str(runs)]) == 0
    assert "cancelled 1 job(s)" in capsys.readouterr().out
    states = wait_for(folder, all_ended, timeout=120, every=1)
    assert states[0].state == "CANCELLED"
    assert main(["status", "long", "--runs-dir", str(runs)]) == 1


def test_bad_partition_submits_nothing(slurm_cluster, tmp_path, capsys):
    env = yaml.safe_load((ROOT / "envs" / "localci.yaml").read_text())
    env["partitions"][0]["gpu_type"] = "a100"  # the cluster has only h100: sbatch refuses
    env_file = tmp_path / "wrong.yaml"
    env_file.write_text(yaml.safe_dump(env))
    runs = tmp_path / "runs"
    before = sacct_job_count()
    rc = main(["submit", str(ROOT / "sweeps" / "ci.yaml"), "--env", str(env_file),
               "--runs-dir", str(runs)])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing was submitted" in err
    assert sacct_job_count() == before
    assert not (runs / "ci").exists()  # not even the lock file of the refused first submit


def test_same_sweep_with_local_env_and_no_slurm(tmp_path, capsys, monkeypatch):
    # No SLURM_CONF, no sbatch on PATH: the local executor needs neither.
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setenv("PATH", ":".join(p for p in __import__("os").environ["PATH"].split(":")
                                        if not shutil.which("sbatch", path=p)))
    runs = tmp_path / "runs"
    rc = main(["submit", str(ROOT / "sweeps" / "ci.yaml"), "--env", "local",
               "--runs-dir", str(runs)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("  finished ") == 4
    assert "| llama-tiny-r" in out and "| gemma-tiny-r" in out
    assert [s.state for s in run_states(runs / "ci")] == ["COMPLETED"] * 4
