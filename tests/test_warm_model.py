"""A warm worker keeps the base model it fine-tuned in full (jobs.warm_model): its next run of
the same model starts from memory, and trains exactly what a process of its own trains."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, job_env, run_module


def _full_ft_sweep(tmp_path: Path) -> Path:
    doc = {"name": "keep", "env": "local", "data": {"demo": True},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.full_finetuning": True, "model.max_seq_length": 256,
                    "eval.max_new_tokens": 16, "train.per_device_batch_size": 8,
                    "train.max_steps": 6},
           "grid": {"train.learning_rate": [0.003, 0.0003]}}
    path = tmp_path / "keep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_a_workers_second_run_takes_the_kept_model_and_trains_the_same_weights(tmp_path):
    env = job_env(MEDSWEEP_SCRATCH_DIR=str(tmp_path / "scratch"))
    r = run_module("launcher", "submit", str(_full_ft_sweep(tmp_path)), "--runs-dir",
                   str(tmp_path / "runs"), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted((tmp_path / "runs" / "keep").glob("lr*"))
    summaries = {p.name: json.loads((p / "adapter" / "medsweep_train.json").read_text())
                 for p in runs}
    by_item = sorted(summaries.items(), key=lambda kv: kv[1]["startup"]["worker_item"])
    (first, s1), (second, s2) = by_item
    assert s1["startup"]["model_kept"] is False and s2["startup"]["model_kept"] is True
    assert s2["startup"]["worker_item"] == 2

    # The second run again, in a process of its own (a fresh load of the base model).
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "runs" / "keep" / second / "config.yaml", alone / "config.yaml")
    p = subprocess.run([sys.executable, "-m", "jobs.pack", str(alone)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    kept = (tmp_path / "runs" / "keep" / second / "adapter" / "model.safetensors").read_bytes()
    fresh = (alone / "adapter" / "model.safetensors").read_bytes()
    assert kept == fresh  # byte for byte
    assert json.loads((alone / "adapter" / "medsweep_train.json").read_text())[
        "final_loss"] == s2["final_loss"]
