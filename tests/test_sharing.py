"""Runs that differ only in what evaluation reads train one model (launcher.sharing): planned
by submit, carried out by the first run's job, checked against the model's recorded training
identity before another run evaluates it."""

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from core.config import config_from_dict
from core.demo_data import write_demo_data
from core.identity import training_key
from core.rundir import TRAIN_SUMMARY, RunDir
from launcher.cli import main


def _sweep(tmp_path: Path, grid: dict, name: str = "decoding", env: str = "local") -> Path:
    train, dev = write_demo_data(tmp_path / "data", n_train=16, n_dev=4)
    doc = {"name": name, "env": env, "data": {"train": str(train), "eval": str(dev)},
           "base": {"model.name_or_path": "scratch:llama-tiny", "model.load_in_4bit": False,
                    "model.max_seq_length": 256, "train.max_steps": 2,
                    "train.per_device_batch_size": 4, "eval.max_examples": 4},
           "grid": grid}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cfg(tmp_path: Path, **over):
    train, dev = write_demo_data(tmp_path / "data", n_train=8, n_dev=2)
    d = {"model": {"name_or_path": "scratch:llama-tiny"},
         "data": {"train_dataset_file": str(train), "eval_dataset_file": str(dev)}}
    for key, value in over.items():
        section, name = key.split("__")
        d.setdefault(section, {})[name] = value
    return config_from_dict(d, "test")


def test_the_training_key_ignores_what_only_evaluation_reads(tmp_path):
    base = _cfg(tmp_path)
    assert training_key(base) == training_key(_cfg(tmp_path, eval__max_new_tokens=12,
                                                   eval__constrained=True))
    assert training_key(base) != training_key(_cfg(tmp_path, train__learning_rate=1e-3))
    assert training_key(base) != training_key(_cfg(tmp_path, peft__rank=4))


def test_dry_run_names_the_runs_that_train_no_model_of_their_own(tmp_path, capsys):
    sweep = _sweep(tmp_path, {"eval.max_new_tokens": [8, 12],
                              "train.learning_rate": [0.001, 0.003]})
    assert main(["submit", str(sweep), "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) differ from another only in what evaluation reads" in out
    assert out.count("'s model in its job, once it is trained") == 2
    assert out.count("scratch:llama-tiny") == 4  # every run is planned; two train


def test_model_mismatch_accepts_only_the_same_training(tmp_path):
    from jobs.train import identity_of, model_mismatch

    cfg = _cfg(tmp_path)
    model = tmp_path / "model"
    assert model_mismatch(cfg, model) == "it holds no trained model"
    model.mkdir()
    (model / TRAIN_SUMMARY).write_text(json.dumps({"identity": identity_of(cfg),
                                                   "budget_epochs": None}))
    assert model_mismatch(cfg, model) is None
    # Another evaluation of the same training: the same model.
    assert model_mismatch(_cfg(tmp_path, eval__max_new_tokens=7), model) is None
    assert "another configuration" in model_mismatch(_cfg(tmp_path, train__seed=1), model)
    (model / TRAIN_SUMMARY).write_text(json.dumps({"identity": identity_of(cfg),
                                                   "budget_epochs": 1.0}))
    assert "part of its epochs" in model_mismatch(cfg, model)


def test_a_planted_sharing_file_is_refused_in_one_line(tmp_path):
    from jobs.pipeline import shared_model

    rd = RunDir(tmp_path / "sweep" / "run-a")
    rd.path.mkdir(parents=True)
    cfg = _cfg(tmp_path)
    assert shared_model(rd, cfg) is None
    rd.shared_training.write_text(json.dumps({"trained_in": "../../elsewhere"}))
    with pytest.raises(ValueError, match="is not a run id of this sweep"):
        shared_model(rd, cfg)
    # A run named there with no trained model: the run trains its own.
    rd.shared_training.write_text(json.dumps({"trained_in": "run-b"}))
    assert shared_model(rd, cfg) is None


@pytest.mark.slow
def test_eval_only_variants_train_once_and_each_keeps_its_own_results(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep = _sweep(tmp_path, {"eval.max_new_tokens": [8, 12]})
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    folder = runs / "decoding"
    dirs = sorted(d for d in folder.iterdir() if (d / "config.yaml").is_file())
    assert len(dirs) == 2
    (trainer,) = [RunDir(d) for d in dirs if (d / "adapter" / TRAIN_SUMMARY).is_file()]
    (follower,) = [RunDir(d) for d in dirs if d != trainer.path]
    assert f"queued {follower.run_id}: evaluated with {trainer.run_id}'s model" in out
    assert out.count("  started ") == 1, out
    assert f"finished {follower.run_id}" in out and f"finished {trainer.run_id}" in out
    # One model, trained once; each run its own results from its own decoding settings.
    assert not follower.adapter.exists() and not follower.checkpoints.exists()
    perf = {rd.run_id: json.loads(rd.performance.read_text()) for rd in (trainer, follower)}
    assert perf[follower.run_id]["trained_in"] == trainer.run_id
    assert perf[follower.run_id]["model_dir"] == str(trainer.adapter)
    assert perf[trainer.run_id]["trained_in"] is None
    assert sorted(p["generation"]["max_new_tokens"] for p in perf.values()) == [8, 12]
    jobs = {rd.run_id: json.loads(rd.job.read_text()) for rd in (trainer, follower)}
    assert jobs[follower.run_id]["job_id"] == jobs[trainer.run_id]["job_id"]
    assert jobs[follower.run_id]["trained_in"] == trainer.run_id
    assert json.loads(trainer.followers.read_text()) == {"runs": [follower.run_id]}

    # A third decoding setting later: evaluated alone with the model trained already.
    sweep = _sweep(tmp_path, {"eval.max_new_tokens": [8, 12, 16]})
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "1 submit" in out and "2 skip-done" in out, out
    (third,) = [RunDir(d) for d in folder.iterdir()
                if (d / "config.yaml").is_file() and d not in dirs]
    assert not third.adapter.exists()
    doc = json.loads(third.performance.read_text())
    assert doc["trained_in"] == trainer.run_id and doc["generation"]["max_new_tokens"] == 16
    summary = json.loads((trainer.adapter / TRAIN_SUMMARY).read_text())
    assert summary["global_step"] == 2

    assert main(["status", "decoding", "--runs-dir", str(runs)]) == 0
    assert "3 COMPLETED" in capsys.readouterr().out
    # The leaderboard says whose model each shared run was scored with.
    assert main(["leaderboard", "decoding", "--runs-dir", str(runs), "--format", "csv"]) == 0
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows[third.run_id]["trained_in"] == rows[follower.run_id]["trained_in"] \
        == trainer.run_id
    assert rows[trainer.run_id]["trained_in"] == ""


@pytest.mark.slurm
def test_on_slurm_followers_ride_in_the_trainers_job_and_fail_alone(slurm_cluster, tmp_path,
                                                                   capsys):
    from .test_slurm import all_ended, wait_for

    runs = tmp_path / "runs"
    sweep = _sweep(tmp_path, {"eval.max_new_tokens": [8, 12, 16]}, name="shared",
                   env="localci")
    assert main(["submit", str(sweep), "--runs-dir", str(runs)]) == 0
    folder = runs / "shared"
    rds = [RunDir(d) for d in sorted(folder.iterdir()) if (d / "config.yaml").is_file()]
    jobs = {rd.run_id: json.loads(rd.job.read_text()) for rd in rds}
    (trainer,) = [rd for rd in rds if rd.followers.is_file()]
    followers = [rd for rd in rds if rd != trainer]
    assert {j["job_id"] for j in jobs.values()} == {jobs[trainer.run_id]["job_id"]}, jobs
    assert all(jobs[f.run_id]["trained_in"] == trainer.run_id for f in followers)
    # Changed after the submit (shared storage): that follower alone is refused.
    (broken,) = [f for f in followers if "max_new_tokens: 12" in f.config.read_text()]
    (fine,) = [f for f in followers if f != broken]
    broken.config.write_text(broken.config.read_text().replace("max_new_tokens: 12",
                                                               "max_new_tokens: 13"))
    states = {s.run_id: s for s in wait_for(folder, all_ended)}
    assert states[trainer.run_id].state == "COMPLETED", states[trainer.run_id].error
    assert states[fine.run_id].state == "COMPLETED", states[fine.run_id].error
    assert states[broken.run_id].state == "FAILED"
    assert "not the config submit wrote" in states[broken.run_id].error
    assert not any(f.adapter.exists() for f in followers)
    done = json.loads(fine.performance.read_text())
    assert done["trained_in"] == trainer.run_id
    log = Path(jobs[trainer.run_id]["stderr"]).read_text()
    assert f"{fine.run_id}: evaluating {trainer.run_id}'s model" in log
