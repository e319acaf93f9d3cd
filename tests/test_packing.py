"""Packing small runs onto one GPU: the plan (pure), the env key, the dry run, the per-run
state of a packed run, and the pack's own process running real (scratch) runs on the CPU."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.fileio import atomic_write_json
from core.rundir import RunDir
from launcher.envs import EnvProfile, Partition, pack_cap, parse_env
from launcher.plan import Resources
from launcher.state import run_states
from launcher.tasks import PlannedRun, packs_of
from launcher.yamlio import YamlError

from .conftest import ROOT, job_env

H100 = Partition("gpu", "h100", 80.0, 8)


def slurm_env(**kw) -> EnvProfile:
    return EnvProfile(name="t", executor="slurm", partitions=(H100,), **kw)


def planned(need_gb: float, gpus: int = 1, run_id: str = "r") -> PlannedRun:
    res = Resources("gpu", "h100", gpus, 80.0, need_gb, 4, 32, 60)
    return PlannedRun(run=type("R", (), {"run_id": run_id})(), resources=res,  # type: ignore
                      need_gb=need_gb)


def test_small_runs_are_packed_up_to_the_auto_cap_and_the_card():
    env = slurm_env()
    assert env.runs_per_gpu == "auto" and pack_cap(env) == 4
    sizes = [len(p) for p in packs_of([planned(2.0) for _ in range(10)], env)]
    assert sizes == [4, 4, 2]
    # 0.9 x 80 GB = 72 GB a card: 30 + 30 fit together, a third does not.
    assert [len(p) for p in packs_of([planned(30.0) for _ in range(3)], env)] == [2, 1]
    # More than half the card: alone.
    assert [len(p) for p in packs_of([planned(41.0), planned(1.0)], env)] == [1, 1]


def test_runs_per_gpu_one_and_multi_gpu_runs_are_never_packed():
    assert [len(p) for p in packs_of([planned(1.0)] * 3, slurm_env(runs_per_gpu="1"))] == [1] * 3
    assert [len(p) for p in packs_of([planned(1.0, gpus=2)] * 3, slurm_env())] == [1] * 3
    # A local run on the CPU (no GPU found) is never packed; on a local GPU it is
    # (tests/test_local_gpus.py).
    assert [len(p) for p in packs_of([planned(1.0, gpus=0)] * 3, EnvProfile())] == [1] * 3


def test_runs_per_gpu_takes_auto_or_a_positive_number():
    base = {"executor": "slurm", "partitions": [{"name": "g", "gpu_type": "h100",
                                                 "vram_gb": 80}]}
    assert parse_env({**base, "runs_per_gpu": 3}, "e.yaml").runs_per_gpu == "3"
    assert parse_env({**base, "runs_per_gpu": "auto"}, "e.yaml").runs_per_gpu == "auto"
    for bad in (0, "many", True, 2.5):
        with pytest.raises(YamlError, match=r"e\.yaml: runs_per_gpu: expected auto or a whole"):
            parse_env({**base, "runs_per_gpu": bad}, "e.yaml")


def test_dry_run_shows_the_packs(tmp_path, capsys):
    from core.demo_data import write_demo_data
    from launcher.cli import main

    train, dev = write_demo_data(tmp_path / "data", n_train=10, n_dev=4)
    doc = {"name": "p", "env": "localci", "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False},
           "grid": {"peft.rank": [4, 8, 16, 32, 64]}}
    sweep = tmp_path / "p.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    assert main(["submit", str(sweep), "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "5 run(s) in 2 task(s)" in out and "--array=0-1%4" in out
    assert "task 0: 4 runs side by side on one GPU" in out and "task 1" not in out
    assert not (tmp_path / "runs").exists()


def _packed_run(folder: Path, name: str, job_id: str, pack: list[str]) -> RunDir:
    rd = RunDir(folder / name)
    rd.path.mkdir(parents=True)
    rd.config.write_text("model: {}\n")
    atomic_write_json(rd.job, {"run_id": name, "cluster": "slurm", "job_id": job_id,
                               "varied": {}, "model": "m", "stdout": "", "stderr": "",
                               "pack": {"runs": pack}})
    return rd


def test_a_packed_run_reports_its_own_end_while_its_task_runs(tmp_path, monkeypatch):
    import launcher.backends.slurm as state

    # The pack's task is RUNNING for sacct; its runs' folders say what each did.
    monkeypatch.setattr(state, "sacct_states", lambda ids: {
        j: {"state": "RUNNING", "detail": "RUNNING", "elapsed": "0:01:00", "exit_code": "0:0",
            "reason": ""} for j in ids})
    pack = ["a", "b", "c"]
    a, b, _c = (_packed_run(tmp_path, n, "7_0", pack) for n in pack)
    atomic_write_json(a.error, {"error": "cancelled by `launcher cancel`", "cancelled": True})
    atomic_write_json(b.error, {"error": "the run's process was killed by SIGKILL"})
    got = {s.run_id: (s.state, s.error) for s in run_states(tmp_path)}
    assert got == {"a": ("CANCELLED", "cancelled by `launcher cancel`"),
                   "b": ("FAILED", "the run's process was killed by SIGKILL"),
                   "c": ("RUNNING", "")}


def test_cancel_of_one_packed_run_asks_the_pack_and_scancels_nothing(tmp_path, monkeypatch,
                                                                     capsys):
    import launcher.backends.slurm as state
    from launcher.cli import main

    monkeypatch.setattr(state, "sacct_states", lambda ids: {
        j: {"state": "RUNNING", "detail": "RUNNING", "elapsed": "", "exit_code": "0:0",
            "reason": ""} for j in ids})
    folder = tmp_path / "sw"
    folder.mkdir()
    (folder / "sweep.yaml").write_text("name: sw\n")
    a, b = (_packed_run(folder, n, "9_0", ["a", "b"]) for n in ("a", "b"))
    # No scancel on PATH: a call to it would fail the command.
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    assert main(["cancel", "sw", "--runs-dir", str(tmp_path), "--run", "a"]) == 0
    out = capsys.readouterr().out
    assert "asked 1 run(s) to stop" in out and "cancelled" not in out
    assert a.cancel_request.is_file() and not b.cancel_request.exists()
    assert main(["cancel", "sw", "--runs-dir", str(tmp_path), "--run", "nope"]) == 2
    assert "--run nope: no such run" in capsys.readouterr().err


def test_a_run_cancelled_while_its_pack_waits_is_cancelled_and_a_moved_run_is_left_alone(
        tmp_path, monkeypatch):
    import jobs.pack as pack

    a = _packed_run(tmp_path, "a", "12_0", ["a", "b", "c"])
    b = _packed_run(tmp_path, "b", "15_3", ["a", "b", "c"])  # resubmitted later: job 15
    c = _packed_run(tmp_path, "c", "11_0", ["a", "b", "c"])  # the launcher still writing
    a.cancel_request.write_text("12_0\n")
    assert run_states(tmp_path)[0].state == "CANCELLED"  # before the pack has even started
    monkeypatch.setattr(pack, "current_job_id", lambda: "12_0")
    started = []
    monkeypatch.setattr(pack.PackJob, "_start", lambda self, rd: started.append(rd.run_id) or
                        type("P", (), {"poll": lambda _s: 0})())
    with pytest.raises(pack.PackError, match="1 of 3 packed runs failed: c"):
        pack.PackJob([str(a.path), str(b.path), str(c.path)])()
    assert started == ["c"]  # not the cancelled one, not the one a later job owns
    assert json.loads(a.error.read_text())["cancelled"] is True
    assert not b.error.exists()


@pytest.mark.slow
def test_the_pack_process_runs_each_run_in_its_own_process_and_survives_one_dying(tmp_path):
    """PackJob itself, without Slurm: three scratch runs; one is cancelled through its
    cancel.request, one is SIGKILLed, the third finishes with results equal to the same run
    done alone (run_pipeline in this test's process tree, as an unpacked job runs it)."""
    import subprocess

    from safetensors.torch import load_file

    from core.config import RunConfig
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=16, n_dev=4)

    def make(name: str, steps: int) -> RunDir:
        rd = RunDir(tmp_path / "runs" / name)
        rd.path.mkdir(parents=True)
        cfg = RunConfig().to_dict()
        cfg["model"].update({"name_or_path": "scratch:llama-tiny", "load_in_4bit": False,
                             "max_seq_length": 256})
        cfg["data"].update({"train_dataset_file": str(train), "eval_dataset_file": str(dev)})
        cfg["train"].update({"max_steps": steps, "per_device_batch_size": 1,
                             "gradient_accumulation_steps": 1, "save_steps": 50})
        cfg["eval"].update({"max_examples": 2, "max_new_tokens": 8})
        rd.config.write_text(yaml.safe_dump(cfg))
        return rd

    cancel, kill, keep = make("cancel", 100000), make("kill", 100000), make("keep", 12)
    ref = make("ref", 12)
    env = job_env()
    code = ("import sys; from jobs.pack import PackJob; PackJob(sys.argv[1:])()")
    pack = subprocess.Popen([sys.executable, "-c", code, str(cancel.path), str(kill.path),
                             str(keep.path)], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)
    alone = subprocess.run([sys.executable, "-m", "jobs.pack", str(ref.path)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stdout[-2000:]
    deadline = time.time() + 300
    while time.time() < deadline and not all(r.progress.is_file() for r in (cancel, kill)):
        time.sleep(0.5)
    cancel.cancel_request.write_text("test\n")
    victim = _pack_child(kill.path)
    # Each run grows its micro-batch into its share of the card, not all of it.
    assert b"MEDSWEEP_PACK_RUNS=3" in Path(f"/proc/{victim}/environ").read_bytes().split(b"\0")
    os.kill(victim, signal.SIGKILL)
    _, err = pack.communicate(timeout=600)
    assert pack.returncode != 0 and "1 of 3 packed runs failed: kill" in err, err[-2000:]
    assert json.loads(cancel.error.read_text())["cancelled"] is True
    assert "killed by SIGKILL" in json.loads(kill.error.read_text())["error"]
    assert not keep.error.exists()
    got = json.loads(keep.performance.read_text())
    want = json.loads(ref.performance.read_text())
    assert got["metrics"] == want["metrics"]
    a = load_file(str(keep.adapter / "adapter_model.safetensors"))
    b = load_file(str(ref.adapter / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert "started in a pack of 3" in keep.run_log.read_text()


def pack_children(under: Path) -> list[int]:
    """PIDs of packed runs' processes (``python -m jobs.pack RUN_DIR``) of folders under a path."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            args = (p / "cmdline").read_bytes().split(b"\0") if p.name.isdigit() else []
        except OSError:
            continue
        # Whole arguments: the pack's own process names jobs.pack and the folders inside -c.
        if b"jobs.pack" in args and any(a.startswith(str(under).encode()) for a in args):
            out.append(int(p.name))
    return out


def _pack_child(run_dir: Path) -> int:
    pids = pack_children(run_dir)
    assert pids, f"no process of {run_dir}"
    return pids[0]
