"""Inputs that used to end in a traceback (issue 15.5): each is now a one-line error, exit 2."""

import json
import os

import pytest

from core.rundir import job_files_dir

from .conftest import run_module


def one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture()
def tp_file(tmp_path):
    f = tmp_path / "tp.json"
    f.write_text(json.dumps({"true_ents": [[]], "pred_ents": [[]], "texts": ["x"]}))
    return f


def test_output_folders_that_are_files(tmp_path, tp_file):
    a_file = tmp_path / "afile"
    a_file.write_text("")
    one_line_error(run_module("jobs.score", "--true-pred-file", str(tp_file),
                              "--results-dir", str(a_file)), "is a file, not a folder")
    one_line_error(run_module("jobs.train", "--train-dataset-file", str(tp_file),
                              "--output-dir", str(a_file / "sub"), "--model-name",
                              "scratch:llama-tiny"), "--output-dir", "is a file, not a folder")
    one_line_error(run_module("launcher", "submit", "sweeps/demo.yaml", "--runs-dir",
                              str(a_file), "--dry-run"), "--runs-dir", "is a file")


def test_true_pred_file_that_is_a_folder_or_a_fifo(tmp_path):
    one_line_error(run_module("jobs.score", "--true-pred-file", str(tmp_path),
                              "--results-dir", str(tmp_path / "o")), "is a folder")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    one_line_error(run_module("jobs.score", "--true-pred-file", str(fifo), "--results-dir",
                              str(tmp_path / "o"), timeout=60), "not a regular file")


def test_deep_nesting_and_list_keys(tmp_path):
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(run_module("jobs.score", "--true-pred-file", str(deep_json),
                              "--results-dir", str(tmp_path / "o")), "nested too deeply")
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("name: x\nbase: " + "[" * 100_000 + "]" * 100_000 + "\n")
    one_line_error(run_module("launcher", "submit", str(deep_yaml), "--dry-run"),
                   "nested more than 200 levels")
    list_key = tmp_path / "listkey.yaml"
    list_key.write_text("name: x\n? [1, 2]\n: v\n")
    one_line_error(run_module("launcher", "submit", str(list_key), "--dry-run"),
                   "a list cannot be a key")


def test_a_damaged_training_record_is_named(tmp_path, tp_file):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"text": "fever", "entities": []}]))
    model = tmp_path / "m"
    model.mkdir()
    (model / "medsweep_train.json").write_text('{"identity": ')
    one_line_error(run_module("jobs.train", "--train-dataset-file", str(data),
                              "--output-dir", str(model), "--model-name", "scratch:llama-tiny"),
                   "medsweep_train.json", "delete that file")
    one_line_error(run_module("jobs.evaluate", "--eval-dataset-file", str(data),
                              "--results-dir", str(tmp_path / "r"), "--model-dir", str(model)),
                   "medsweep_train.json", "train it again")


def processes_mentioning(path):
    """PIDs of live processes whose command line names path (a run's submitit folder)."""
    from pathlib import Path

    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(path) in cmd and state not in ("Z", "X"):
                found.append(int(d.name))
    return found


def start_endless_local_sweep(tmp_path, name):
    import signal
    import subprocess
    import sys
    import time

    from .conftest import ROOT, job_env

    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: {name}\nenv: local\ndata: {{demo: true}}\nbase: "
                     "{model.name_or_path: scratch:llama-tiny, model.load_in_4bit: false, "
                     "train.max_steps: 100000}\n")
    # Started as a shell starts a background job: SIGINT ignored. The submit must still stop
    # on it (launcher.commands.submit installs its handler).
    p = subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-dir",
                          str(tmp_path / "runs")], cwd=ROOT, env=job_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 300
    progress = next((tmp_path / "runs" / name).glob("*/progress.json"), None)
    while progress is None and time.time() < deadline:
        time.sleep(1)
        progress = next((tmp_path / "runs" / name).glob("*/progress.json"), None)
    assert progress is not None, "the run never started"
    assert processes_mentioning(job_files_dir(tmp_path / "runs" / name))
    return p


def assert_no_run_process_left(folder):
    import time

    deadline = time.time() + 60
    while processes_mentioning(folder) and time.time() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(folder), "a run's process outlived the stop"


@pytest.mark.slow
def test_ctrl_c_on_a_local_submit_is_one_line_and_stops_the_runs(tmp_path):
    import signal

    p = start_endless_local_sweep(tmp_path, "intr")
    # SIGINT to the submit alone (no terminal sends it to the runs too): they must stop anyway;
    # their worker ignores SIGTERM, which is what a stop by SIGTERM left running for good.
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out[-1000:], err[-2000:])
    assert "Traceback" not in err and "interrupted:" in err
    assert_no_run_process_left(job_files_dir(tmp_path / "runs" / "intr"))


@pytest.mark.slow
def test_cancel_stops_a_running_local_run(tmp_path):
    from .conftest import run_module

    p = start_endless_local_sweep(tmp_path, "cnl")
    try:
        r = run_module("launcher", "cancel", "cnl", "--runs-dir", str(tmp_path / "runs"))
        assert r.returncode == 0, r.stderr[-2000:]
        # Its warm worker stops the run in hand and goes on; nothing else is queued, so the
        # submit sees the run end, closes the queue, and every process ends.
        assert "asked 1 run(s) to stop" in r.stdout
        p.communicate(timeout=120)
        assert_no_run_process_left(job_files_dir(tmp_path / "runs" / "cnl"))
        status = run_module("launcher", "status", "cnl", "--runs-dir", str(tmp_path / "runs"))
        assert "RUNNING" not in status.stdout, status.stdout
    finally:
        if p.poll() is None:
            p.kill()
