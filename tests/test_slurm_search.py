"""Integration tier: an adaptive sweep (search:) on a real local Slurm.

The rungs are decided by a one-CPU decider job with an afterany dependency (no terminal open);
a decider that never runs (cancelled) is made up for by the next `launcher submit`; a run that
fails inside a rung stops there; the promoted run resumes from its checkpoint and ends
bit-identical to the same configuration trained straight through as a plain grid run.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from core.rundir import SEARCH_FILE, TRAIN_SUMMARY, RunDir
from launcher.cli import main
from launcher.search import DECIDER_FILE

from .test_slurm import all_ended, wait_for, write_sweep

pytestmark = pytest.mark.slurm


def _search(folder: Path) -> dict:
    return json.loads((folder / SEARCH_FILE).read_text())


def _wait_decided(folder: Path, n: int, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (folder / SEARCH_FILE).is_file() and len(_search(folder)["rungs"]) >= n:
            return _search(folder)
        time.sleep(3)
    raise AssertionError(f"{n} rung(s) not decided in {timeout:.0f} s: "
                         f"{(folder / SEARCH_FILE).read_text()}")


def _next_decider(folder: Path, old_job: str, timeout: float = 180) -> dict:
    """The decider file once it records a decider other than old_job."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = json.loads((folder / DECIDER_FILE).read_text())
        if doc["job_id"] != old_job:
            return doc
        time.sleep(2)
    raise AssertionError(f"no decider after job {old_job} recorded in {timeout:.0f} s")


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_a_search_is_decided_by_slurm_jobs_and_the_winner_equals_a_straight_run(
        slurm_cluster, tmp_path, capsys):
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=24, n_dev=6)
    broken = tmp_path / "data" / "broken.json"
    broken.write_text('[{"text": "fine", "entities": []}]')
    base = {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
            "model.max_seq_length": 256, "train.per_device_batch_size": 4,
            "train.gradient_accumulation_steps": 1, "eval.max_examples": 4,
            "eval.max_new_tokens": 16}
    doc = {"name": "halving", "env": "localci", "data": {"train": str(train), "eval": str(dev)},
           "base": base,
           "grid": {"train.learning_rate": [0.001, 0.003],
                    "data.eval_dataset_file": [str(dev), str(broken)]},
           "search": {"rungs": [1, 2], "keep": "1/4"}}
    runs = tmp_path / "runs"
    assert main(["submit", str(write_sweep(tmp_path, doc)), "--runs-dir", str(runs)]) == 0
    # Damaged after the submit: the two runs scored on it fail inside rung 0.
    broken.write_text('[{"text": 3, "entities": []}]')
    folder = runs / "halving"
    decider = json.loads((folder / DECIDER_FILE).read_text())
    assert len(decider["after"]) == 1  # one array for the rung

    search = _wait_decided(folder, 1)
    rung0 = search["rungs"][0]
    assert len(rung0["promoted"]) == 1, rung0
    failed = [r for r, why in rung0["stopped"].items() if why.startswith("failed at rung 0")]
    assert len(failed) == 2, rung0
    (winner,) = rung0["promoted"]
    # The decider job (not this test) decided and submitted rung 1 with a decider after it.
    # It writes search.json before it submits that decider and records it, so wait for it.
    nxt = _next_decider(folder, decider["job_id"])
    assert nxt["after"], nxt
    part = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "Partition", "-j",
                           decider["job_id"]], capture_output=True, text=True).stdout.split()
    assert part == ["debug"], part  # the profile's decider_partition
    job = json.loads(RunDir(folder / winner).job.read_text()) if RunDir(
        folder / winner).job.is_file() else {}
    assert job.get("rung", 1) == 1

    search = _wait_decided(folder, 2)
    assert search["rungs"][1]["stopped"] == {winner: "finished (top rung)"}
    rd = RunDir(folder / winner)
    perf = json.loads(rd.performance.read_text())
    assert perf["budget"]["rung"] == 1
    assert json.loads((rd.adapter / TRAIN_SUMMARY).read_text())["resumed_from"]
    capsys.readouterr()
    main(["status", "halving", "--runs-dir", str(runs)])
    out = capsys.readouterr().out
    assert "finished" in out and "failed at rung 0" in out

    # The same configuration as a plain grid run, trained straight through to 2 epochs.
    lr = json.loads((rd.path / "rungs" / "0" / "job.json").read_text())["varied"][
        "train.learning_rate"]
    straight = {"name": "straight", "env": "localci",
                "data": {"train": str(train), "eval": str(dev)},
                "base": {**base, "train.num_epochs": 2, "train.learning_rate": lr}}
    assert main(["submit", str(write_sweep(tmp_path, straight)), "--runs-dir", str(runs)]) == 0
    (sdir,) = [p for p in (runs / "straight").iterdir() if (p / "config.yaml").is_file()]
    assert sdir.name.rsplit("-", 1)[1] == winner.rsplit("-", 1)[1], "same config, same hash"
    states = wait_for(runs / "straight", all_ended)
    assert [s.state for s in states] == ["COMPLETED"], [(s.run_id, s.error) for s in states]
    got, want = _weights(rd.adapter), _weights(RunDir(sdir).adapter)
    worst = max((got[k].float() - want[k].float()).abs().max().item() for k in got)
    assert worst == 0.0, f"promoted run differs from the straight run by {worst}"


def test_a_cancelled_decider_is_made_up_for_by_the_next_submit(slurm_cluster, tmp_path,
                                                                capsys):
    from core.demo_data import write_demo_data

    train, dev = write_demo_data(tmp_path / "data", n_train=16, n_dev=4)
    doc = {"name": "nodecider", "env": "localci",
           "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.per_device_batch_size": 4,
                    "eval.max_examples": 4, "eval.max_new_tokens": 16},
           "grid": {"train.learning_rate": [0.001, 0.003]},
           "search": {"rungs": [1, 2], "keep": "1/2"}}
    sweep = write_sweep(tmp_path, doc)
    runs = tmp_path / "runs"
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 0
    folder = runs / "nodecider"
    decider = json.loads((folder / DECIDER_FILE).read_text())["job_id"]
    subprocess.run(["scancel", decider], check=True)
    wait_for(folder, all_ended)
    time.sleep(5)
    assert _search(folder)["rungs"] == [], "nothing decided without a decider"
    capsys.readouterr()
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "1 submit" in out, out
    search = _wait_decided(folder, 2)
    assert len(search["rungs"][0]["promoted"]) == 1
    winner = search["rungs"][0]["promoted"][0]
    assert json.loads(RunDir(folder / winner).performance.read_text())["budget"]["rung"] == 1
