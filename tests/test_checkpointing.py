"""The checkpoint policy (jobs.checkpointing) and the step-time breakdown (jobs.steptime):
checkpoints by time and on a stop signal, never the tokenizer, and a resume from a signal's
checkpoint equal to a run that was never stopped."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.rundir import TRAIN_SUMMARY
from jobs.checkpointing import RESUMABLE_EXIT, CheckpointPolicy
from jobs.steptime import StepClock

from .conftest import ROOT, job_env


def test_policy_saves_by_time_by_count_and_on_request():
    now = [0.0]
    p = CheckpointPolicy(every_s=600, every_steps=0, clock=lambda: now[0])
    p.start()
    assert [p.due(s) for s in range(1, 50)] == [False] * 49
    now[0] = 600.0
    assert p.due(50)
    p.saved()
    assert not p.due(51) and p.saves == 1
    counted = CheckpointPolicy(every_s=0, every_steps=5, clock=lambda: now[0])
    counted.start()
    assert [s for s in range(1, 16) if counted.due(s)] == [5, 10, 15]
    never = CheckpointPolicy(every_s=0, every_steps=0, clock=lambda: now[0])
    never.start()
    now[0] = 1e9
    assert not never.due(7)
    never.stop("signal SIGUSR2")
    never.stop("signal SIGTERM")  # the first reason is kept
    assert never.due(8) and never.stop_reason == "signal SIGUSR2"


def test_step_clock_puts_compile_time_in_its_own_bucket():
    ticks = iter([0.0, 0.5, 10.5, 10.6, 11.6, 12.0])
    compiled = iter([(0.0, 0), (0.0, 0), (9.0, 3), (9.0, 3), (9.0, 3)])
    c = StepClock(clock=lambda: next(ticks), compile_stats=lambda: next(compiled))
    c.train_begin()          # 0.0
    c.step_begin()           # 0.5: data 0.5
    c.step_end()             # 10.5: 10 s in the step, 9 of them compiling
    c.step_begin()           # 10.6: data 0.1
    c.step_end()             # 11.6: compute 1.0
    c.train_end()            # 12.0
    b = c.breakdown()
    assert b["seconds"]["compile"] == 9.0 and b["compiles"] == 3
    assert b["seconds"]["compute"] == pytest.approx(2.0)
    assert b["seconds"]["data"] == pytest.approx(0.6)
    assert b["steps"] == 2 and b["loop_s"] == 12.0


def _argv(train_file: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "jobs.train", "--train-dataset-file", str(train_file),
            "--output-dir", str(out), "--model-name", "scratch:llama-tiny",
            "--model-load-in-4bit", "false", "--model-max-seq-length", "512",
            "--train-per-device-batch-size", "2", "--train-gradient-accumulation-steps", "1",
            "--train-max-steps", str(steps), "--train-save-steps", "0",
            "--train-checkpoint-every-min", "0"]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_stop_signal_checkpoints_then_a_restart_resumes_bit_exact(demo_data, tmp_path):
    train_file, _ = demo_data
    steps = 150
    ref = subprocess.Popen(_argv(train_file, tmp_path / "ref", steps), cwd=ROOT, env=job_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "model"
    proc = subprocess.Popen(_argv(train_file, out, steps), cwd=ROOT, env=job_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The first progress line comes with the first logged step: training is under way.
    assert proc.stderr is not None
    deadline = time.time() + 300
    for line in proc.stderr:
        if "[medsweep] train " in line or time.time() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR2)  # Slurm's time-limit warning
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == RESUMABLE_EXIT, err[-3000:]
    assert "stopped: training stopped at step" in err
    cks = sorted((out / "checkpoints").glob("checkpoint-*"))
    # No checkpoint by count or by time was due: the one there is the signal's.
    assert len(cks) == 1 and (cks[0] / "trainer_state.json").is_file(), cks
    stopped_at = int(cks[0].name.split("-")[1])
    assert 0 < stopped_at < steps
    assert not (cks[0] / "tokenizer.json").exists() and not (
        cks[0] / "tokenizer_config.json").exists()
    assert not (out / TRAIN_SUMMARY).exists()

    r = subprocess.run(_argv(train_file, out, steps), cwd=ROOT, env=job_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / TRAIN_SUMMARY).read_text())
    assert summary["resumed_from"] == cks[0].name and summary["global_step"] == steps
    assert (out / "tokenizer.json").is_file()
    bd = summary["step_time"]
    assert bd["steps"] == steps - stopped_at and bd["seconds"]["compute"] > 0
    assert summary["checkpoints"] == {"every_min": 0.0, "every_steps": 0, "written": 0}
    assert ref.wait(timeout=600) == 0
    got, want = _adapter(out), _adapter(tmp_path / "ref")
    assert got.keys() == want.keys()
    worst = max((got[k].float() - want[k].float()).abs().max().item() for k in got)
    assert worst == 0.0, f"resumed adapter differs from the uninterrupted one by {worst}"


@pytest.mark.slow
def test_a_stop_signal_in_the_last_step_keeps_the_finished_model(demo_data, tmp_path):
    """The signal arrives while the last step runs: no checkpoint is due (the run is over), the
    model and its summary are saved, and the job still stops (StoppedToResume) without
    removing what it finished."""
    import os

    from transformers import TrainerCallback

    from core.config import config_from_dict
    from jobs.checkpointing import StoppedToResume
    from jobs.train import train, train_model

    train_file, _ = demo_data
    cfg = config_from_dict({
        "model": {"name_or_path": "scratch:llama-tiny", "load_in_4bit": False,
                  "max_seq_length": 512},
        "data": {"train_dataset_file": str(train_file)},
        "train": {"max_steps": 4, "per_device_batch_size": 2,
                  "gradient_accumulation_steps": 1, "checkpoint_every_min": 0}}, "t")

    class SignalInLastStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == state.max_steps - 1:
                os.kill(os.getpid(), signal.SIGUSR2)

    out = tmp_path / "model"
    with pytest.raises(StoppedToResume):
        train_model(cfg, out, callbacks=[SignalInLastStep()])
    summary = json.loads((out / TRAIN_SUMMARY).read_text())
    assert summary["global_step"] == 4 and (out / "adapter_model.safetensors").is_file()
    assert not list((out / "checkpoints").glob("checkpoint-*"))
    assert train(cfg, out)["global_step"] == 4  # the restart finds it done


@pytest.mark.slow
def test_the_fused_optimizer_trains_and_is_recorded(demo_data, tmp_path):
    """train.optim adamw_torch_fused reaches the trainer (torch's fused AdamW, also on CPU)."""
    from core.config import config_from_dict
    from jobs.train import train

    train_file, _ = demo_data
    cfg = config_from_dict({
        "model": {"name_or_path": "scratch:llama-tiny", "load_in_4bit": False,
                  "max_seq_length": 512},
        "data": {"train_dataset_file": str(train_file)},
        "train": {"max_steps": 2, "per_device_batch_size": 2, "optim": "adamw_torch_fused",
                  "gradient_accumulation_steps": 1, "checkpoint_every_min": 0}}, "t")
    summary = train(cfg, tmp_path / "model")
    assert summary["global_step"] == 2
    assert summary["optim"] == "adamw_torch_fused"


def test_a_half_written_last_checkpoint_is_passed_over_for_the_one_before(tmp_path, capsys):
    from jobs.checkpointing import last_checkpoint as _last_checkpoint

    for step, state in ((5, '{"global_step": 5}'), (10, ""), (15, "{not json")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert _last_checkpoint(tmp_path) == tmp_path / "checkpoint-5"
    err = capsys.readouterr().err
    assert "checkpoint-15/trainer_state.json: unreadable" in err
    assert "checkpoint-10/trainer_state.json: unreadable" in err
