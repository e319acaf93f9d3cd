"""The local executor on a machine with GPUs (issue 26): detection through nvidia-smi, a plan
per card, and what it asks submitit for. This CPU machine has no GPU, so the end-to-end tests
put an nvidia-smi on PATH that lists cards; the runs then train on the CPU with the
CUDA_VISIBLE_DEVICES submitit gave them, which each records in medsweep_train.json. The real
card is the GPU tier's (tests/test_gpu.py) and benchmarks/gpu_acceptance.sh."""

import json
import os
import re
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from core.config import config_from_dict
from launcher.backends.local import initial_placement
from launcher.envs import EnvProfile, parse_env
from launcher.gpus import GpuError, LocalGpu, detect_gpus, place, with_local_gpus
from launcher.plan import plan_run
from launcher.tasks import PlannedRun, packs_of, tasks_of

from .conftest import ROOT, job_env


def local_tasks(runs, env):
    return [t for group in tasks_of(runs, env) for t in group]


H200 = [LocalGpu(i, "NVIDIA H200", 150.0) for i in range(4)]
LOCAL = EnvProfile()


def test_detection_respects_cuda_visible_devices_and_the_profile():
    assert detect_gpus(LOCAL, {}, H200) == tuple(H200)
    assert [g.index for g in detect_gpus(LOCAL, {"CUDA_VISIBLE_DEVICES": "3,1"}, H200)] == [3, 1]
    assert detect_gpus(LOCAL, {"CUDA_VISIBLE_DEVICES": ""}, H200) == ()
    assert detect_gpus(LOCAL, {"CUDA_VISIBLE_DEVICES": "-1"}, H200) == ()
    assert detect_gpus(LOCAL, {}, []) == ()  # a CPU-only machine: as before
    assert detect_gpus(parse_env({"gpus": "none"}, "x"), {}, H200) == ()
    assert detect_gpus(parse_env({"executor": "slurm", "partitions": [
        {"name": "g", "gpu_type": "h100", "vram_gb": 80}]}, "x"), {}, H200) == ()
    two = parse_env({"name": "ws", "gpus": [2, 0]}, "x")
    assert [g.index for g in detect_gpus(two, {}, H200)] == [2, 0]
    with pytest.raises(GpuError, match="ws: gpus lists 2, which this machine does not offer"):
        detect_gpus(two, {"CUDA_VISIBLE_DEVICES": "0,1"}, H200)
    with pytest.raises(GpuError, match="CUDA_VISIBLE_DEVICES='GPU-1a2b'"):
        detect_gpus(LOCAL, {"CUDA_VISIBLE_DEVICES": "GPU-1a2b"}, H200)


def _cfg(name: str, **model):
    return config_from_dict({"model": {"name_or_path": name, "load_in_4bit": False,
                                       **model}}, "t")


def test_a_local_run_gets_one_card_and_a_run_too_big_for_one_gets_several():
    env = with_local_gpus(LOCAL, [LocalGpu(i, "NVIDIA RTX 4090", 24.0) for i in range(8)])
    small, _ = plan_run(_cfg("scratch:llama-tiny"), env)
    assert (small.partition, small.gpus, small.gpu_type) == ("local", 1, "rtx-4090")
    big, est = plan_run(_cfg("unsloth/Llama-3.1-8B-Instruct",
                             full_finetuning=True), env)
    assert big.gpus > 1 and est.total_gb > 24
    assert plan_run(_cfg("scratch:llama-tiny"), LOCAL)[0].gpus == 0  # no GPU: the CPU


def _planned(need_gb: float, gpus: int = 1) -> PlannedRun:
    from launcher.plan import Resources
    from launcher.sweep import Run

    run = Run(f"r{need_gb}-{gpus}-{id(object())}", _cfg("scratch:llama-tiny"), {})
    return PlannedRun(run, Resources("local", "h200", gpus, 150.0, need_gb, 1, 0, 60), need_gb)


def test_small_runs_pack_onto_one_card_and_the_dry_run_placement_covers_the_cards():
    env = with_local_gpus(parse_env({"runs_per_gpu": 2}, "x"), H200[:2])
    runs = [_planned(5.0) for _ in range(5)]
    tasks = local_tasks(runs, env)
    assert [len(t.runs) for t in tasks] == [2, 2, 1]
    first = initial_placement(tasks, tuple(H200[:2]))
    assert [t.gpus for t in first] == [[0], [1]]
    assert [len(p) for p in packs_of([_planned(5.0, gpus=2)] * 2, env)] == [1, 1]
    free = [0, 1, 2]
    assert place(["a", "b"], [2, 2], free) == [("a", [0, 1])] and free == [2]


FAKE_SMI = """#!/bin/sh
echo "0, NVIDIA H200, 143771"
echo "1, NVIDIA H200, 143771"
"""


def _local_sweep(tmp_path: Path, **env_changes) -> tuple[list[str], dict[str, str]]:
    """A three-run sweep, its env profile and an environment whose nvidia-smi lists two
    H200 cards; returns the submit command and the environment."""
    from core.demo_data import write_demo_data

    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    train, dev = write_demo_data(tmp_path / "data", n_train=16, n_dev=4)
    env = yaml.safe_load((ROOT / "envs" / "local.yaml").read_text())
    env.update(env_changes)
    (tmp_path / "ws.yaml").write_text(yaml.safe_dump(env))
    doc = {"name": "ws", "env": str(tmp_path / "ws.yaml"),
           "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.max_steps": 6,
                    "eval.max_new_tokens": 8, "eval.max_examples": 2},
           "grid": {"peft.rank": [2, 4, 8]}}
    sweep = tmp_path / "ws-sweep.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    environ = job_env(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    environ.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-dir",
           str(tmp_path / "runs")]
    return cmd, environ


@pytest.mark.slow
def test_local_submit_places_runs_on_the_cards_nvidia_smi_lists(tmp_path):
    cmd, environ = _local_sweep(tmp_path, runs_per_gpu=1, max_parallel=1)
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, env=environ, capture_output=True,
                         text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "this machine's GPUs: 0 (NVIDIA H200" in dry.stdout
    assert "  GPU 0: " in dry.stdout and "  GPU 1: " in dry.stdout
    assert "warm workers, 1 per card" in dry.stdout and "then 1 more run(s)" in dry.stdout

    r = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    started = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("started ")]
    assert len(started) == 3 and all(" on GPU 0" in ln or " on GPU 1" in ln for ln in started)
    assert r.stdout.count("warm worker(s) on GPU") == 2, r.stdout
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for run_dir in (tmp_path / "runs" / "ws").iterdir():
        if not (run_dir / "config.yaml").is_file():
            continue
        job = json.loads((run_dir / "job.json").read_text())
        train_doc = json.loads((run_dir / "adapter" / "medsweep_train.json").read_text())
        cards = job["sbatch"]["gpus"]
        assert len(cards) == 1 and cards[0] in (0, 1)
        # The run's process saw exactly the card it was given.
        assert train_doc["device"]["cuda_visible_devices"] == str(cards[0])
        start = datetime.fromisoformat(job["submitted_at"])
        end = datetime.fromisoformat(train_doc["finished_at"])
        spans.setdefault(str(cards[0]), []).append((start, end))
    assert sum(len(v) for v in spans.values()) == 3 and len(spans) == 2
    for card, s in spans.items():  # never two runs on one card at once (runs_per_gpu 1)
        s.sort()
        assert all(a[1] <= b[0] for a, b in zip(s, s[1:], strict=False)), (card, s)


def test_cpu_machine_dry_run_says_the_runs_train_on_the_cpu(tmp_path):
    environ = job_env(PATH=str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin")
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", "sweeps/demo.yaml",
                        "--dry-run", "--runs-dir", str(tmp_path / "runs")], cwd=ROOT,
                       env={**environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no GPU found" in r.stdout and "train on this CPU, 1 at a time" in r.stdout


@pytest.mark.slow
def test_small_local_runs_share_a_card_in_one_pack(tmp_path):
    """With warm workers off, a process per run: small runs go into one pack on one card."""
    cmd, environ = _local_sweep(tmp_path, runs_per_gpu="auto", warm_workers=False)
    r = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count(" on GPU 0") == 3 and " on GPU 1" not in r.stdout, r.stdout
    assert r.stdout.count("  finished r") == 3, r.stdout
    packs = set()
    for run_dir in (tmp_path / "runs" / "ws").iterdir():
        if (run_dir / "config.yaml").is_file():
            job = json.loads((run_dir / "job.json").read_text())
            packs.add(tuple(job["pack"]["runs"]))
            train_doc = json.loads((run_dir / "adapter" / "medsweep_train.json").read_text())
            assert train_doc["device"]["cuda_visible_devices"] == "0"
            assert (run_dir / "results" / "performance.json").is_file()
    assert len(packs) == 1 and len(next(iter(packs))) == 3


def _fake_smi(tmp_path: Path, body: str) -> Path:
    bindir = tmp_path / "smibin"
    bindir.mkdir(exist_ok=True)
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + body + "\n")
    smi.chmod(0o755)
    return bindir


@pytest.mark.parametrize("body,words", [
    ('echo "Failed to initialize NVML: Driver/library version mismatch"; exit 9',
     "nvidia-smi failed (Failed to initialize NVML"),
    ("sleep 5", "did not answer"),
    ('echo "0, NVIDIA H100, [N/A]"', "not a card with its memory"),
    ('echo "0, NVIDIA H100, nan"', "not a card with its memory"),
    ('echo "0, NVIDIA H100, 0"', "not a card with its memory"),
    ('echo "0, NVIDIA H100, -81559"', "not a card with its memory"),
    ('echo "², NVIDIA H100, 81559"', "not a card with its memory"),
    ('printf "0, NVIDIA H100, 81559\\n0, NVIDIA H100, 81559\\n"', "a card twice"),
    ("exit 0", "lists no GPU"),
])
def test_a_gpu_machine_whose_cards_cannot_be_read_stops_instead_of_training_on_the_cpu(
        tmp_path, monkeypatch, body, words):
    from launcher import gpus as lg
    from launcher.envs import parse_env

    monkeypatch.setattr(lg, "SMI_TIMEOUT_S", 1)
    monkeypatch.setenv("PATH", f"{_fake_smi(tmp_path, body)}{os.pathsep}/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(lg.GpuError, match=re.escape(words)) as e:
        lg.detect_gpus(parse_env({"name": "workstation"}, "ws"))
    assert "gpus: none" in str(e.value) or "twice" in str(e.value)
    assert lg.detect_gpus(parse_env({"name": "cpu", "gpus": "none"}, "cpu")) == ()


@pytest.mark.parametrize("visible,words", [("4", "names card(s) 4"), ("0,0", "named twice")])
def test_cuda_visible_devices_naming_absent_or_repeated_cards_is_refused(
        tmp_path, visible, words):
    two = _fake_smi(tmp_path, 'echo "0, NVIDIA H100, 81559"; echo "1, NVIDIA H100, 81559"')
    environ = job_env(PATH=f"{two}{os.pathsep}{os.environ['PATH']}",
                      CUDA_VISIBLE_DEVICES=visible)
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", "sweeps/demo.yaml",
                        "--env", "workstation", "--runs-dir", str(tmp_path / "runs")],
                       cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "runs" / "demo").exists()
