"""Adaptive sweeps (core.search, launcher.search): the search: section, the ranking, the
decisions as files (a killed decider picks up where it stopped), promotion as a resume that
ends bit-identical to a straight run, and a whole search through `launcher submit` locally.
The real-Slurm tier is in test_slurm_search.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from core.config import config_from_dict
from core.fileio import atomic_write_json
from core.results import performance_doc
from core.rundir import SEARCH_FILE, TRAIN_SUMMARY, RunDir
from core.search import SearchSpec, budget_from_doc, decide, metric_of, parse_search
from launcher import search as lsearch
from launcher.backends.local import process_start
from launcher.sweep import parse_sweep
from launcher.yamlio import YamlError

from .conftest import ROOT, job_env, run_module


def _sweep(tmp_path: Path, **extra) -> dict:
    doc = {"name": "s", "env": "local", "data": {"demo": True},
           "base": {"model.load_in_4bit": False},
           "grid": {"model.name_or_path": ["scratch:llama-tiny"],
                    "train.learning_rate": [0.001, 0.003, 0.01]},
           "search": {"rungs": [1, 3], "keep": "1/3"}}
    doc.update(extra)
    return doc


def test_every_problem_of_a_search_section_is_reported_at_once(tmp_path):
    doc = _sweep(tmp_path, search={"rungs": [3, 1], "keep": 2, "metric": "f1",
                                   "budget": "train.max_steps", "strategy": "bayes",
                                   "patience": 3})
    doc["base"]["train.num_epochs"] = 5
    with pytest.raises(YamlError) as exc:
        parse_sweep(doc, tmp_path / "s.yaml")
    msg = str(exc.value)
    for want in ("search: unknown key 'patience'; valid keys: strategy, metric, budget, rungs, "
                 "keep", "search.strategy: 'bayes' is not one of successive-halving",
                 "search.metric: 'f1' is not one of dev_exact_f1", "search.budget: ",
                 "search.rungs: budgets must be positive and strictly increasing",
                 "search.keep: must be between 0 and 1",
                 "train.num_epochs is the search's budget"):
        assert want in msg, msg
    assert all(line.startswith(str(tmp_path / "s.yaml")) for line in msg.splitlines())


def test_val_loss_needs_a_validation_file_and_max_steps_is_refused(tmp_path):
    doc = _sweep(tmp_path, search={"rungs": [1, 2], "metric": "val_loss"})
    doc["base"]["train.max_steps"] = 10
    with pytest.raises(YamlError) as exc:
        parse_sweep(doc, tmp_path / "s.yaml")
    assert "val_loss needs data.validation" in str(exc.value)
    assert "train.max_steps: a search budgets epochs" in str(exc.value)


def test_every_run_of_a_search_is_configured_for_the_top_rung(tmp_path):
    sweep = parse_sweep(_sweep(tmp_path), tmp_path / "s.yaml")
    assert sweep.search is not None and sweep.search.rungs == (1.0, 3.0)
    assert {r.config.train.num_epochs for r in sweep.runs} == {3.0}
    grid = parse_sweep({k: v for k, v in _sweep(tmp_path).items() if k != "search"},
                       tmp_path / "s.yaml")
    assert grid.search is None and {r.config.train.num_epochs for r in grid.runs} == {3}


def test_keep_takes_fractions_and_decimals():
    errors: list[str] = []
    assert parse_search({"rungs": [1, 2], "keep": "1/2"}, "f", errors).keep == 0.5
    assert parse_search({"rungs": [1, 2], "keep": 0.25}, "f", errors).keep == 0.25
    assert not errors
    parse_search({"rungs": [1, 2], "keep": "a third"}, "f", errors)
    assert errors == ["f: search.keep: expected a fraction such as 1/3 or 0.5, got 'a third'"]


def test_ranking_promotes_the_best_and_says_why_the_rest_stopped():
    spec = SearchSpec((1, 3, 9))
    scores = {f"r{i}": s for i, s in enumerate([0.1, 0.9, 0.5, 0.7, None, 0.3])}
    d = decide(spec, 0, scores)
    assert d.promoted == ("r1", "r3")  # 6 x 1/3
    assert d.stopped["r2"].startswith("stopped at rung 0: rank 3 of 6 by dev_exact_f1 (0.5000")
    assert d.stopped["r4"] == "failed at rung 0 (no dev_exact_f1)"
    loss = decide(SearchSpec((1, 3), metric="val_loss", keep=0.5), 0, {"a": 0.9, "b": 0.4})
    assert loss.promoted == ("b",)  # lower is better
    top = decide(spec, 2, {"r1": 0.9})
    assert top.promoted == () and top.stopped == {"r1": "finished (top rung)"}
    # Ties break by run id, so a replayed decision is the same decision.
    assert decide(spec, 0, {"b": 0.5, "a": 0.5, "c": 0.1}).promoted == ("a",)


def test_a_budget_file_is_checked_before_the_job_trusts_it():
    with pytest.raises(ValueError, match="not a medsweep budget"):
        budget_from_doc({"rung": 0, "epochs": 1}, "b.json", 3)
    with pytest.raises(ValueError, match="rung True is not a rung number"):
        budget_from_doc({"schema": 1, "rung": True, "epochs": 1}, "b.json", 3)
    with pytest.raises(ValueError, match="epochs -1 is not between 0"):
        budget_from_doc({"schema": 1, "rung": 0, "epochs": -1}, "b.json", 3)


def test_metric_comes_from_the_performance_file():
    spec = SearchSpec((1, 2), metric="dev_overlap_f1")
    assert metric_of(spec, {"metrics": {"total": {"overlap": {"f1": 0.4}}}}) == 0.4
    assert metric_of(spec, {"metrics": {"total": {"exact": {"f1": 0.4}}}}) is None
    assert metric_of(spec, {"metrics": {"total": {"overlap": {"f1": float("nan")}}}}) is None


# --- decisions as files, with fabricated run folders (no training) -------------------------

def _perf(f1: float, rung: int, epochs: float) -> dict:
    prf = {"p": f1, "r": f1, "f1": f1}
    return performance_doc({"total": {"exact": prf}, "labels": {}, "macro": {}},
                           num_examples=1, avg_inference_time=0.0, parse={},
                           hallucination_rate=0.0, config={},
                           extra={"budget": {"schema": 1, "rung": rung, "epochs": epochs}})


def _finished_rung(folder: Path, run_id: str, rung: int, f1: float | None) -> RunDir:
    rd = RunDir(folder / run_id)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.checkpoints.mkdir(exist_ok=True)
    atomic_write_json(rd.budget, {"schema": 1, "rung": rung, "epochs": [1, 3, 9][rung]})
    atomic_write_json(rd.job, {"run_id": run_id, "cluster": "local", "job_id": "1",
                               "pid": 999999999, "pid_start": "1", "rung": rung,
                               "submitted_at": "2026-12-03T00:00:00+00:00"})
    if f1 is None:
        atomic_write_json(rd.error, {"error": "RuntimeError: boom"})
    else:
        atomic_write_json(rd.performance, _perf(f1, rung, [1, 3, 9][rung]))
    return rd


def test_a_rung_is_decided_once_all_its_runs_have_ended_and_winners_move_on(tmp_path):
    spec = SearchSpec((1, 3, 9), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    for i, f1 in enumerate([0.2, 0.6, None, 0.4]):
        _finished_rung(folder, f"r{i}", 0, f1)
    # r0 still runs (its job's process is alive): no decision yet.
    (folder / "r0" / "results" / "performance.json").unlink()
    job = json.loads(RunDir(folder / "r0").job.read_text())
    job.update(pid=os.getpid(), pid_start=process_start(os.getpid()))
    atomic_write_json(RunDir(folder / "r0").job, job)
    assert lsearch.advance(folder, spec) == []
    assert json.loads((folder / SEARCH_FILE).read_text())["rungs"] == []
    atomic_write_json(RunDir(folder / "r0").performance, _perf(0.2, 0, 1))
    assert lsearch.advance(folder, spec) == ["r1", "r3"]
    doc = json.loads((folder / SEARCH_FILE).read_text())
    assert doc["rungs"][0]["promoted"] == ["r1", "r3"] and doc["rungs"][0]["scores"]["r2"] is None
    winner = RunDir(folder / "r1")
    # Promoted: its rung-0 job and results archived, budget raised, checkpoints kept.
    assert json.loads(winner.budget.read_text()) == {"schema": 1, "rung": 1, "epochs": 3.0}
    assert not winner.job.exists() and not winner.performance.exists()
    assert (winner.rung_archive(0) / "job.json").is_file()
    assert (winner.rung_archive(0) / "results" / "performance.json").is_file()
    assert winner.checkpoints.is_dir()
    # Stopped: results kept, checkpoints dropped; never submitted again.
    loser = RunDir(folder / "r0")
    assert loser.performance.is_file() and not loser.checkpoints.exists()
    assert lsearch.stopped_runs(folder) == {"r0", "r2"}
    rungs = lsearch.run_rungs(folder)
    assert rungs["r1"].rung == 1 and rungs["r1"].outcome == "promoted"
    assert rungs["r0"].outcome.startswith("stopped at rung 0: rank 3 of 4")
    # Nothing changes while the promoted runs have not run their rung.
    assert lsearch.advance(folder, spec) == []


def test_a_decider_killed_half_way_is_finished_by_the_next_call(tmp_path, monkeypatch):
    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    for i, f1 in enumerate([0.2, 0.6, 0.5, 0.4]):
        _finished_rung(folder, f"r{i}", 0, f1)
    real = lsearch.apply_decision
    calls = []

    def killed(folder, spec, entry, known=None):  # dies after the decision is written, mid-promotion
        calls.append(1)
        lsearch._archive(RunDir(folder / entry["promoted"][0]), 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(lsearch, "apply_decision", killed)
    with pytest.raises(KeyboardInterrupt):
        lsearch.advance(folder, spec)
    assert json.loads((folder / SEARCH_FILE).read_text())["rungs"][0]["promoted"] == ["r1", "r2"]
    assert not RunDir(folder / "r1").job.exists()  # half moved on
    monkeypatch.setattr(lsearch, "apply_decision", real)
    assert lsearch.advance(folder, spec) == []  # decided already: only finished
    for rid in ("r1", "r2"):
        assert json.loads(RunDir(folder / rid).budget.read_text())["rung"] == 1
        assert (RunDir(folder / rid).rung_archive(0) / "results" / "performance.json").is_file()
    assert len(json.loads((folder / SEARCH_FILE).read_text())["rungs"]) == 1


def test_a_search_with_another_spec_in_the_same_folder_is_refused(tmp_path):
    from launcher.submit import SubmitError

    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, SearchSpec((1, 3)), tmp_path / "s.yaml")
    with pytest.raises(SubmitError, match="holds a search with another spec"):
        lsearch.start_search(folder, SearchSpec((1, 2)), tmp_path / "s.yaml")


def test_dry_run_shows_the_rungs_and_the_most_the_search_can_train(tmp_path):
    path = tmp_path / "s.yaml"
    doc = _sweep(tmp_path)
    doc["grid"]["train.learning_rate"] = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]
    path.write_text(yaml.safe_dump(doc))
    r = run_module("launcher", "submit", str(path), "--dry-run", "--runs-dir",
                   str(tmp_path / "runs"), env=job_env(CUDA_VISIBLE_DEVICES=""))
    assert r.returncode == 0, r.stderr
    assert "rung 0: 6 run(s) to 1 epoch(s)" in r.stdout
    assert "rung 1: 2 run(s) to 3 epoch(s)" in r.stdout
    assert "at most 10 run-epochs of training, against 18 for the full grid (56%)" in r.stdout
    assert not (tmp_path / "runs").exists()


# --- real training on the CPU ---------------------------------------------------------------

def _cfg(train_file: Path, epochs: float) -> object:
    return config_from_dict({
        "model": {"name_or_path": "scratch:llama-tiny", "load_in_4bit": False,
                  "max_seq_length": 512},
        "data": {"train_dataset_file": str(train_file)},
        "train": {"num_epochs": epochs, "per_device_batch_size": 4,
                  "gradient_accumulation_steps": 1, "checkpoint_every_min": 0,
                  "learning_rate": 0.003}}, "t")


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_a_promoted_run_ends_bit_identical_to_a_straight_run(demo_data, tmp_path):
    from jobs.train import train

    train_file, _ = demo_data
    straight = train(_cfg(train_file, 3), tmp_path / "straight")
    out = tmp_path / "promoted"
    rung0 = train(_cfg(train_file, 3), out, budget_epochs=1)
    steps_per_epoch = straight["global_step"] // 3
    assert rung0["budget_epochs"] == 1 and rung0["global_step"] == steps_per_epoch
    assert rung0["epoch"] == 1.0
    (ck,) = (out / "checkpoints").glob("checkpoint-*")
    assert ck.name == f"checkpoint-{steps_per_epoch}"
    # The rung's model was saved and can be evaluated; a second call at that budget trains
    # nothing more.
    assert (out / "adapter_model.safetensors").is_file()
    assert train(_cfg(train_file, 3), out, budget_epochs=1)["global_step"] == steps_per_epoch
    top = train(_cfg(train_file, 3), out)  # promoted to the top rung: resumes
    assert top["resumed_from"] == ck.name and top["global_step"] == straight["global_step"]
    assert top["budget_epochs"] is None
    got, want = _weights(out), _weights(tmp_path / "straight")
    worst = max((got[k].float() - want[k].float()).abs().max().item() for k in got)
    assert worst == 0.0, f"the promoted run differs from the straight run by {worst}"
    assert json.loads((out / TRAIN_SUMMARY).read_text())["final_loss"] == straight["final_loss"]


@pytest.mark.slow
def test_a_search_runs_end_to_end_through_launcher_submit_locally(tmp_path):
    doc = _sweep(tmp_path)
    doc["base"].update({"model.max_seq_length": 256, "train.per_device_batch_size": 8,
                        "train.gradient_accumulation_steps": 1, "eval.batch_size": 8,
                        "eval.max_examples": 8, "model.full_finetuning": True})
    doc["search"] = {"rungs": [1, 2], "keep": "1/3"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    runs = tmp_path / "runs"
    env = job_env(CUDA_VISIBLE_DEVICES="", MEDSWEEP_JOB_FILES=str(tmp_path / "jobs"))
    r = run_module("launcher", "submit", str(path), "--runs-dir", str(runs), env=env,
                   timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "search: rung 1 with 1 run(s)" in r.stdout
    folder = runs / "s"
    search = json.loads((folder / SEARCH_FILE).read_text())
    assert [len(e["promoted"]) for e in search["rungs"]] == [1, 0]
    (winner,) = search["rungs"][0]["promoted"]
    rd = RunDir(folder / winner)
    perf = json.loads(rd.performance.read_text())
    assert perf["budget"] == {"schema": 1, "rung": 1, "epochs": 2.0}
    summary = json.loads((rd.adapter / TRAIN_SUMMARY).read_text())
    assert summary["resumed_from"] is not None and summary["budget_epochs"] is None
    assert json.loads((rd.rung_archive(0) / "results" / "performance.json").read_text()
                      )["budget"]["rung"] == 0
    assert search["rungs"][1]["stopped"] == {winner: "finished (top rung)"}
    losers = [p for p in folder.iterdir() if p.is_dir() and (p / "budget.json").is_file()
              and p.name != winner]
    assert len(losers) == 2 and all(not (p / "checkpoints").exists() for p in losers)
    # A second submit finds the search finished and submits nothing.
    again = run_module("launcher", "submit", str(path), "--runs-dir", str(runs), env=env)
    assert again.returncode == 0 and "started" not in again.stdout, again.stdout
    status = run_module("launcher", "status", str(folder), env=env)
    assert "rungs [1.0, 2.0] epochs, keep 1/3: finished" in status.stdout, status.stdout
    assert "stopped at rung 0: rank" in status.stdout
    board = run_module("launcher", "leaderboard", str(folder), "--format", "json", env=env)
    rows = json.loads(board.stdout)["rows"]
    by_id = {row["run_id"]: row for row in rows}
    assert by_id[winner]["rung"] == 1 and by_id[winner]["search"] == "finished (top rung)"
    assert all(by_id[p.name]["rung"] == 0 for p in losers)
    # Each row also counts every mention (eval.unique_entities true: the seed's pairs above).
    assert all(isinstance(row["mention.exact.f1"], float) for row in rows)
    assert ROOT.is_dir()


def test_a_run_that_ended_without_results_or_an_error_holds_its_rung(tmp_path):
    """Stopped by a Ctrl-C or killed, it can still resume: not counted as failed."""
    from launcher.commands.status import search_line

    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    _finished_rung(folder, "a", 0, 0.5)
    killed = _finished_rung(folder, "b", 0, None)
    killed.error.unlink()  # its process is gone (dead pid), and it recorded no error
    assert lsearch.advance(folder, spec) == []
    line = search_line(folder)
    assert line is not None and "rung 0 (1 epochs): 1 of 2 runs have their outcome" in line
    atomic_write_json(killed.error, {"error": "RuntimeError: boom"})
    assert lsearch.advance(folder, spec) == ["a"]


def test_runs_added_after_the_first_rung_was_decided_are_refused(tmp_path):
    from launcher.submit import SubmitError

    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    for i, f1 in enumerate([0.2, 0.6]):
        _finished_rung(folder, f"r-{i}0000000", 0, f1)
    lsearch.advance(folder, spec)
    lsearch.refuse_new_runs(folder, ["r-00000000", "renamed-10000000"], tmp_path / "s.yaml")
    with pytest.raises(SubmitError, match="decided rung 0 without 1 run"):
        lsearch.refuse_new_runs(folder, ["r-00000000", "r-2aaaaaaa"], tmp_path / "s.yaml")


def test_a_search_started_by_an_older_medsweep_goes_on_after_the_upgrade(tmp_path):
    """Its rung-0 runs are named with the earlier hash (every key); their config.yaml says
    they are the runs the sweep now names with the current hash: not refused as new."""
    from core.config import build_config, config_hash, legacy_config_hash
    from core.fileio import atomic_write_yaml
    from launcher.submit import SubmitError

    spec = SearchSpec((1, 3), keep=0.5, keep_text="1/2")
    folder = tmp_path / "sweep"
    folder.mkdir()
    lsearch.start_search(folder, spec, tmp_path / "s.yaml")
    new_ids = []
    for i, f1 in enumerate([0.2, 0.6]):
        cfg = build_config({"model.name_or_path": "scratch:llama-tiny", "peft.rank": 8 * (i + 1)})
        raw = cfg.to_dict()
        raw["data"].pop("context_after")  # a key the older medsweep did not have
        old_id = f"r{8 * (i + 1)}-{legacy_config_hash(raw)}"
        _finished_rung(folder, old_id, 0, f1)
        atomic_write_yaml(folder / old_id / "config.yaml", raw)
        new_ids.append(f"r{8 * (i + 1)}-{config_hash(cfg)}")
    lsearch.advance(folder, spec)
    assert all(n.rsplit("-", 1)[-1] not in "".join(map(str, folder.iterdir())) for n in new_ids)
    lsearch.refuse_new_runs(folder, new_ids, tmp_path / "s.yaml")  # no error
    with pytest.raises(SubmitError, match="decided rung 0 without 1 run"):
        lsearch.refuse_new_runs(folder, [*new_ids, "r32-2aaaaaaa"], tmp_path / "s.yaml")
