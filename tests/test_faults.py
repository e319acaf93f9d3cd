"""Faults that need no cluster: out-of-memory recovery (injected: no GPU here), atomic results
under SIGKILL, and concurrent local submits."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core.rundir import TRAIN_SUMMARY

from .conftest import ROOT, job_env, run_module

pytestmark = pytest.mark.slow


def test_training_oom_halves_the_batch_and_keeps_examples_per_step(demo_data, tmp_path):
    train_file, dev_file = demo_data
    out, res = tmp_path / "m", tmp_path / "r"
    env = job_env(MEDSWEEP_FAULT_OOM_TRAIN_BATCH_ABOVE="2", MEDSWEEP_FAULT_OOM_EVAL_BATCH_ABOVE="3")
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(out), "--model-name", "scratch:llama-tiny", "--model-load-in-4bit",
                   "false", "--model-max-seq-length", "512", "--train-per-device-batch-size",
                   "8", "--train-gradient-accumulation-steps", "2", "--train-max-steps", "3",
                   env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "out of memory at step 1 with batch 8 x GA 2; retrying with 4 x 4" in r.stderr
    assert "retrying with 2 x 8" in r.stderr
    s = json.loads((out / TRAIN_SUMMARY).read_text())
    assert [x["to"] for x in s["oom_retries"]] == ["4x4", "2x8"]
    assert s["per_device_batch_size"] * s["gradient_accumulation_steps"] == 16
    assert s["global_step"] == 3

    r = run_module("jobs.evaluate", "--eval-dataset-file", str(dev_file), "--results-dir",
                   str(res), "--model-dir", str(out), "--eval-batch-size", "8",
                   "--eval-max-new-tokens", "8", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    perf = json.loads((res / "performance.json").read_text())
    assert [x["to"] for x in perf["generation"]["oom_retries"]] == [4, 2]
    assert perf["training"]["oom_retries"][0]["from"] == "8x2"
    assert perf["num_examples"] == 12


def test_oom_at_batch_one_fails_with_what_to_change(demo_data, tmp_path):
    train_file, _ = demo_data
    r = run_module("jobs.train", "--train-dataset-file", str(train_file), "--output-dir",
                   str(tmp_path / "m"), "--model-name", "scratch:llama-tiny",
                   "--model-load-in-4bit", "false", "--model-max-seq-length", "512",
                   "--train-per-device-batch-size", "2", "--train-max-steps", "3",
                   env=job_env(MEDSWEEP_FAULT_OOM_TRAIN_BATCH_ABOVE="0"))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: out of GPU memory at per-device batch 1")
    assert "--model-load-in-4bit true" in last
    assert not (tmp_path / "m" / TRAIN_SUMMARY).exists()


_WRITER = """
import sys
from core.fileio import atomic_write_json
path = sys.argv[1]
i = 0
while True:
    i += 1
    atomic_write_json(path, {"schema_version": 1, "i": i, "pad": ["x" * 200] * 2000})
"""


def test_killed_writer_never_leaves_a_corrupt_result(tmp_path):
    target = tmp_path / "performance.json"
    for k in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=ROOT,
                                env=job_env())
        time.sleep(0.3 + 0.07 * k)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        doc = json.loads(target.read_text())  # old or new, never half
        assert doc["schema_version"] == 1 and len(doc["pad"]) == 2000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "performance.json"]
    assert all(n.startswith(".performance.json.") for n in leftovers)


def test_two_local_submits_at_once_run_each_run_once(tmp_path):
    import yaml

    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=16, n_dev=4)
    doc = {"name": "twice", "env": "local", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.max_steps": 1,
                    "eval.max_new_tokens": 8},
           "grid": {"peft.rank": [4, 8]}}
    sweep = tmp_path / "twice.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-dir",
           str(tmp_path / "runs")]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=job_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    started = sum(o[0].count("  started ") for o in outs)
    assert started == 2, outs
    assert any("2 skip-done" in o[0] for o in outs)
