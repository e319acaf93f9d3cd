"""Faults against the real local Slurm: time limit, preemption, a killed job, concurrent
submits, and secrets. Each causes the fault for real (Slurm's own signals, SIGKILL)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.rundir import TRAIN_SUMMARY
from launcher.cli import main
from launcher.state import run_states

from .conftest import ROOT, job_env
from .test_slurm import all_ended, sacct_job_count, wait_for

pytestmark = pytest.mark.slurm

LONG = {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
        "model.max_seq_length": 256, "train.per_device_batch_size": 1,
        "train.gradient_accumulation_steps": 1, "train.save_steps": 200,
        "eval.max_examples": 4, "eval.max_new_tokens": 8}


@pytest.fixture()
def data(tmp_path):
    from core.demo_data import write_demo_data

    return write_demo_data(tmp_path / "data", n_train=24, n_dev=6)


def env_file(tmp_path: Path, **changes) -> Path:
    env = yaml.safe_load((ROOT / "envs" / "localci.yaml").read_text())
    env.update(changes)
    path = tmp_path / f"env-{len(list(tmp_path.glob('env-*')))}.yaml"
    path.write_text(yaml.safe_dump(env))
    return path


def submit(tmp_path, name, data, base, env=None, **extra) -> Path:
    train, dev = data
    doc = {"name": name, "env": str(env or env_file(tmp_path)),
           "data": {"train": str(train), "eval": str(dev)}, "base": base, **extra}
    sweep = tmp_path / f"{name}.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    assert main(["submit", str(sweep), "--runs-dir", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / name


def wait_checkpoint(run_dir: Path, timeout=300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any((p / "trainer_state.json").is_file()
               for p in (run_dir / "checkpoints").glob("checkpoint-*")):
            return
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


def log_text(run_dir: Path) -> str:
    job = json.loads((run_dir / "job.json").read_text())
    return "".join(Path(job[k]).read_text(errors="replace") for k in ("stdout", "stderr")
                   if Path(job[k]).is_file())


def adapter_tensors(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_time_limit_requeues_and_resumes_equal_to_an_uninterrupted_run(slurm_cluster, tmp_path,
                                                                       data):
    base = {**LONG, "train.max_steps": 2200}
    # The uninterrupted reference, run beside the Slurm job with the same config and seed.
    ref = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", "--train-dataset-file", str(data[0]),
         "--output-dir", str(tmp_path / "ref"), "--model-name", "scratch:llama-tiny",
         "--model-load-in-4bit", "false", "--model-max-seq-length", "256",
         "--train-per-device-batch-size", "1", "--train-gradient-accumulation-steps", "1",
         "--train-save-steps", "200", "--train-max-steps", "2200"],
        cwd=ROOT, env=job_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Requeues to spare: on a loaded machine each 3-minute attempt trains fewer steps, and the
    # test is about resuming exactly, not about how many attempts the run needs (one or more).
    # Each step of the Slurm run sleeps 50 ms more, so 2,200 steps outlast the first
    # allocation on a fast machine too (tests/test_slurm_packs.py says why).
    env = env_file(tmp_path, time_limit_min=3, signal_delay_s=60, max_requeues=10,
                   env_vars={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                             "TOKENIZERS_PARALLELISM": "false",
                             "MEDSWEEP_FAULT_STEP_SLEEP_S": "0.05"})
    folder = submit(tmp_path, "timelimit", data, base, env=env)
    states = wait_for(folder, all_ended, timeout=2400, every=5)
    _, err = ref.communicate(timeout=900)
    assert ref.returncode == 0, err[-2000:]
    run = states[0]
    assert run.state == "COMPLETED", (run.state, run.error)
    log = log_text(run.path)
    assert "requeued, will resume from the last checkpoint" in log
    assert re.search(r"resuming from checkpoint-\d+", log)
    summary = json.loads((run.path / "adapter" / TRAIN_SUMMARY).read_text())
    assert summary["global_step"] == 2200 and summary["resumed_from"]
    got, want = adapter_tensors(run.path / "adapter"), adapter_tensors(tmp_path / "ref")
    assert got.keys() == want.keys()
    worst = max((got[k].float() - want[k].float()).abs().max().item() for k in got)
    assert worst < 1e-4, f"resumed adapter differs from the uninterrupted one by {worst}"


def test_preemption_requeue_resumes_from_the_last_checkpoint(slurm_cluster, tmp_path, data):
    folder = submit(tmp_path, "preempt", data, {**LONG, "train.max_steps": 3000})
    run_dir = next(p for p in folder.iterdir() if (p / "config.yaml").is_file())
    wait_checkpoint(run_dir)
    job_id = json.loads((run_dir / "job.json").read_text())["job_id"]
    # What a preempting partition with PreemptMode=REQUEUE does: SIGTERM, kill, requeue.
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    states = wait_for(folder, all_ended, timeout=900, every=3)
    assert states[0].state == "COMPLETED", (states[0].state, states[0].error)
    log = log_text(run_dir)
    assert re.search(r"resuming from checkpoint-\d+", log), log[-2000:]
    summary = json.loads((run_dir / "adapter" / TRAIN_SUMMARY).read_text())
    assert summary["global_step"] == 3000 and summary["resumed_from"]


def test_killed_job_shows_failed_and_resubmit_resumes(slurm_cluster, tmp_path, data, capsys):
    env = env_file(tmp_path)
    folder = submit(tmp_path, "killed", data, {**LONG, "train.max_steps": 3000}, env=env)
    run_dir = next(p for p in folder.iterdir() if (p / "config.yaml").is_file())
    wait_checkpoint(run_dir)
    job_id = json.loads((run_dir / "job.json").read_text())["job_id"]
    # Node loss / OOM killer: the job's Python process dies by SIGKILL, no chance to clean up.
    listed = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True,
                            check=True).stdout.split("\n")[1:]
    pids = [line.split()[0] for line in listed if line.strip()]
    python = [pid for pid in pids if Path(f"/proc/{pid}/cmdline").is_file()
              and b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert python, f"the job's python process was not found among {pids}"
    for pid in python:
        os.kill(int(pid), 9)
    states = wait_for(folder, all_ended, timeout=300, every=2)
    assert states[0].state == "FAILED", states[0].state
    assert states[0].error, "status must say why"
    capsys.readouterr()
    assert main(["status", "killed", "--runs-dir", str(tmp_path / "runs")]) == 1
    assert "FAILED" in capsys.readouterr().out
    # The saved sweep names a profile file outside envs/: the resubmit names it itself.
    assert main(["resubmit", "killed", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "not trusted to choose the jobs' environment" in capsys.readouterr().err
    assert main(["resubmit", "killed", "--runs-dir", str(tmp_path / "runs"),
                 "--env", str(env)]) == 0
    states = wait_for(folder, all_ended, timeout=900, every=3)
    assert states[0].state == "COMPLETED", states[0].error
    summary = json.loads((run_dir / "adapter" / TRAIN_SUMMARY).read_text())
    assert summary["resumed_from"] and summary["global_step"] == 3000


def test_concurrent_submits_submit_each_run_once_and_secrets_stay_out(slurm_cluster,
                                                                     tmp_path):
    secret = "hf_SLURMSECRET_never_on_disk_42"
    runs = tmp_path / "runs"
    before = sacct_job_count()
    cmd = [sys.executable, "-m", "launcher", "submit", str(ROOT / "sweeps" / "ci.yaml"),
           "--runs-dir", str(runs)]
    env = job_env(HF_TOKEN=secret, SLURM_CONF=os.environ["SLURM_CONF"])
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("4 submit" in o[0] for o in outs) == 1, outs
    assert sum("4 skip-active" in o[0] for o in outs) == 1, outs
    states = wait_for(runs / "ci", all_ended, timeout=900, every=3)
    assert [s.state for s in states] == ["COMPLETED"] * 4, [s.error for s in states]
    # The four small runs share one array task (a pack): one submission in all.
    tasks = {json.loads((s.path / "job.json").read_text())["job_id"] for s in states}
    assert sacct_job_count() - before == len(tasks) == 1, "each run submitted exactly once"
    hits = [str(p) for p in runs.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not hits, f"the token was written to {hits}"
    assert run_states(runs / "ci")
